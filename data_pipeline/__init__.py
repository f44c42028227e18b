"""Data pipeline: collects daily OHLCV bars, validates and cleans them, stores them.

Never imports TensorFlow. It writes the price store (:mod:`common.price_store`, through
:mod:`data_pipeline.storage.upsert`); the other layers read it through :mod:`common` only.
"""
