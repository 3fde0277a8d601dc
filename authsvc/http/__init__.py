"""The HTTP surface (docs/api.md, openapi.json): one route table per part of it."""
