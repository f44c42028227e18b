"""Leak-free preprocessing, hyperparameters and the training loop."""
