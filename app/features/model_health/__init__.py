"""Drift and staleness of the served champions, reported with every forecast and as metrics."""
