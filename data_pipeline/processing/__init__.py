"""Validation, cleaning and feature computation for daily OHLCV bars (pure functions)."""
