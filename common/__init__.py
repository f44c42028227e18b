"""Pieces every layer shares: settings base, database layer, ticker syntax, model contract.

Nothing here imports pandas, TensorFlow or FastAPI, so every container can use it.
"""
