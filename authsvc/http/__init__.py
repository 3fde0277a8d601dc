"""The HTTP surface: one route table per part of API.md."""
