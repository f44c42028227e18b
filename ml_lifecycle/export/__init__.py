"""Logging the model to MLflow, registering it and the promotion gate."""
