"""Pydantic schemas shared across features (tokens, users)."""
