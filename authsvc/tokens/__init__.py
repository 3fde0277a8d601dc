"""Tokens: access tokens (signed JWTs and the verified cache), refresh tokens and their
sealing, signing keys and their rotation.

Imports nothing of store/, http/, server/ or config: what it needs is passed in.
"""
