"""Test-window metrics, the naive baseline and plots."""
