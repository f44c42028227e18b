"""The price store."""
