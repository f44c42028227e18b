"""`tune`: an Optuna search scored on validation folds, whose best config `train` can read."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ml_lifecycle.config import load_config
from ml_lifecycle.tracking import Tracking
from ml_lifecycle.tune import FEATURE_SETS, tune
from tests.ml_lifecycle.conftest import TICKER, tiny_config

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_tune_writes_the_best_config_as_yaml_train_accepts_and_logs_it(
    ml_session_factory, tracking_uri, tmp_path: Path
):
    base = tiny_config(epochs=1, folds=1, units=16)
    output = tmp_path / "tuned.yaml"
    result = tune(
        session_factory=ml_session_factory,
        tickers=[TICKER],
        base=base,
        tracking=Tracking(tracking_uri),
        trials=2,
        timeout=None,
        output=output,
        validation_folds=1,
    )
    assert len(result.trials) == 2
    assert result.trials[0]["lookback"] == base.lookback  # the default is trial 0
    assert result.best_score == min(t["value"] for t in result.trials if t["value"] is not None)
    loaded = load_config(output)
    assert loaded == result.best_config
    assert loaded.features in FEATURE_SETS.values()
    assert (loaded.epochs, loaded.folds, loaded.seed) == (base.epochs, base.folds, base.seed)
    assert "validation relative MAE" in output.read_text().splitlines()[0]
    assert result.run_id is not None
    run = MlflowClient(tracking_uri=tracking_uri).get_run(result.run_id)
    assert run.data.tags["kind"] == "tune"
    assert run.data.metrics["best_validation_relative_mae"] == pytest.approx(result.best_score)
