"""Next-trading-day close forecasts from each ticker's champion model."""
