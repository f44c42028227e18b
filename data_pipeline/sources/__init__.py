"""Where bars come from: Yahoo Finance (yfinance) or a CSV snapshot."""
