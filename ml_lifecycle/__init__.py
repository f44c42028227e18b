"""The ML lifecycle: train one LSTM per ticker, judge it against the naive baseline, and
register it in the MLflow model registry (``python -m ml_lifecycle train|evaluate|report``).

Nothing happens at import time; TensorFlow is imported only by the modules that train.
"""
