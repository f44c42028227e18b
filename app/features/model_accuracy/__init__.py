"""Realized accuracy of the served models: ``GET /models/{ticker}/accuracy`` and the gauges."""
