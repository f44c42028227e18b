"""Data pipeline: collects daily OHLCV bars, validates and cleans them, stores them.

Never imports TensorFlow. Public seams used by the other layers:

* :mod:`data_pipeline.storage.feature_store`: the ``price_bar`` table and its read functions;
* :mod:`data_pipeline.processing.features`: the model feature set and windowing (numpy only).
"""
