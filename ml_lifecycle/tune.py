"""Hyperparameter search with Optuna, scored on validation folds only.

The search never looks at the backtest's test folds: for each ticker the last
``folds x fold_bars`` bars (what ``backtest`` and the gate test on) are cut off first, and
every trial is scored walk-forward on ``validation_folds`` folds of ``fold_bars`` bars just
before them (refit before each fold, as the backtest does). The score is the relative MAE of
the **network's own** one-step forecast (combination weight 1, training drift removed) against
the naive forecast, averaged over tickers: the combined forecast would tie at 1.0 whenever the
network has no significant skill, which tells the search nothing. Sampler: TPE (Bergstra et
al. 2011); pruner: median stopping after each fold (Golovin et al. 2017, "Google Vizier").
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from sqlalchemy.orm import Session

from common.forecasting import Forecaster
from common.model_contract import Combination
from common.price_store import Bars, read_bars
from common.tickers import normalize_ticker
from ml_lifecycle.config import TrainConfig
from ml_lifecycle.tracking import Tracking

logger = logging.getLogger(__name__)

#: Units per LSTM layer the search chooses from.
UNITS = (16, 32, 64)
#: Feature sets the search chooses from (names of :mod:`common.features`).
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "close": ("rel_log_close",),
    "returns": ("rel_log_close", "log_return", "realized_volatility"),
    "ohlc": ("rel_log_close", "open_log_return", "high_log_return", "low_log_return", "hl_range"),
    "technical": ("rel_log_close", "log_return", "rsi", "macd", "realized_volatility"),
    "all": (
        "rel_log_close", "log_return", "open_log_return", "high_log_return", "low_log_return",
        "hl_range", "volume_zscore", "realized_volatility", "rsi", "macd",
    ),
}  # fmt: skip


@dataclass
class TuneResult:
    """Outcome of a search: the best config, its score and every trial."""

    best_config: TrainConfig
    best_score: float
    baseline_score: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    config_path: Path | None = None
    run_id: str | None = None


def suggest_config(trial: Any, base: TrainConfig) -> TrainConfig:
    """The trial's config: ``base`` with lookback, layers, units, dropout, learning rate and
    feature set drawn from the search space."""
    return base.model_copy(
        update={
            "lookback": trial.suggest_int("lookback", 20, 60, step=10),
            "layers": trial.suggest_int("layers", 1, 2),
            "units": trial.suggest_categorical("units", list(UNITS)),
            "dropout": trial.suggest_float("dropout", 0.0, 0.3),
            "learning_rate": trial.suggest_float("learning_rate", 1e-4, 3e-3, log=True),
            "features": FEATURE_SETS[
                trial.suggest_categorical("feature_set", sorted(FEATURE_SETS))
            ],
        }
    )


def validation_scores(bars: Bars, config: TrainConfig, *, validation_folds: int) -> list[float]:
    """Relative MAE of the network's own one-step forecasts on each validation fold.

    The last ``config.folds x config.fold_bars`` bars are dropped (the test folds); the
    ``validation_folds`` folds of ``fold_bars`` bars before them are forecast walk-forward.

    Raises:
        InsufficientBarsError: too few bars for the test folds, validation folds and a fit.
    """
    from ml_lifecycle.backtest import fit_version, fold_starts, keras_network, require_bars  # noqa: PLC0415

    require_bars(bars, config, folds=config.folds + validation_folds, fold_bars=config.fold_bars)
    cut = len(bars) - config.folds * config.fold_bars
    mapping = {c: np.asarray(v, dtype=np.float64)[:cut] for c, v in bars.as_mapping().items()}
    close = mapping["close"]
    scores: list[float] = []
    for start in fold_starts(cut, validation_folds, config.fold_bars):
        fitted = fit_version(
            {c: v[:start] for c, v in mapping.items()},
            bars.dates[:start],
            config,
            ticker=bars.ticker,
        )
        drift = fitted.metadata.combination.drift
        raw = fitted.metadata.model_copy(
            update={"combination": Combination(weight=1.0, drift=drift)}
        )
        origins = np.arange(start - 1, start + config.fold_bars - 1)
        predicted = Forecaster(raw, keras_network(fitted.model)).forecast_paths(mapping, origins, 1)
        actual, previous = close[origins + 1], close[origins]
        model_mae = float(np.mean(np.abs(actual - predicted.closes[:, 0])))
        scores.append(model_mae / float(np.mean(np.abs(actual - previous))))
    return scores


def tune(
    *,
    session_factory: Callable[[], Session],
    tickers: Sequence[str],
    base: TrainConfig,
    tracking: Tracking,
    trials: int,
    timeout: float | None,
    output: Path,
    validation_folds: int = 3,
) -> TuneResult:
    """Search hyperparameters for ``tickers`` and save the best config as YAML.

    The first trial is ``base`` itself (enqueued) when it lies in the search space, so the
    result says whether the search beat the default. The best config is written to
    ``output`` (a YAML that ``train --config`` takes) and logged, with every trial, to an
    MLflow run (``kind=tune``).

    Args:
        session_factory: price-store sessions.
        tickers: tickers scored together (mean relative MAE).
        base: the config whose other fields (epochs, folds, ...) every trial keeps.
        tracking: MLflow URI and experiment.
        trials: maximum trials; timeout: seconds after which no new trial starts.
        output: path of the YAML written.
        validation_folds: folds per trial.

    Returns:
        A :class:`TuneResult`.

    Raises:
        InsufficientBarsError: a ticker has too few bars.
    """
    import mlflow  # noqa: PLC0415
    import optuna  # noqa: PLC0415

    began = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    all_bars: list[Bars] = []
    with session_factory() as session:
        for ticker in tickers:
            all_bars.append(read_bars(session, ticker=normalize_ticker(ticker)))
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=base.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
    )
    default_set = next((k for k, v in FEATURE_SETS.items() if v == base.features), None)
    in_space = (
        default_set is not None
        and base.lookback in range(20, 61, 10)
        and base.layers in (1, 2)
        and base.units in UNITS
        and 0.0 <= base.dropout <= 0.3
        and 1e-4 <= base.learning_rate <= 3e-3
    )
    if in_space:
        study.enqueue_trial(
            {
                "lookback": base.lookback, "layers": base.layers, "units": base.units,
                "dropout": base.dropout, "learning_rate": base.learning_rate,
                "feature_set": default_set,
            },
            skip_if_exists=True,
        )  # fmt: skip

    def objective(trial: Any) -> float:
        config = suggest_config(trial, base)
        per_fold: list[float] = []
        for bars in all_bars:
            per_fold.extend(validation_scores(bars, config, validation_folds=validation_folds))
            trial.report(float(np.mean(per_fold)), step=len(per_fold))
            if trial.should_prune():
                raise optuna.TrialPruned()
        score = float(np.mean(per_fold))
        logger.info(
            "trial %d: relative MAE %.4f (lookback %d, %d x %d units, dropout %.2f, lr %.1e, "
            "features %s)", trial.number, score, config.lookback, config.layers, config.units,
            config.dropout, config.learning_rate, trial.params["feature_set"],
        )  # fmt: skip
        return score

    study.optimize(objective, n_trials=trials, timeout=timeout, gc_after_trial=True)
    best = suggest_config(optuna.trial.FixedTrial(study.best_trial.params), base)
    baseline = study.trials[0].value if in_space else None
    result = TuneResult(
        best_config=best,
        best_score=float(study.best_value),
        baseline_score=float(baseline) if baseline is not None else math.nan,
        trials=[
            {"number": t.number, "state": t.state.name, "value": t.value, **t.params}
            for t in study.trials
        ],
        seconds=time.perf_counter() - began,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    document = best.model_dump(mode="json")
    header = (
        f"# Tuned by `python -m ml_lifecycle tune` on {', '.join(tickers)} "
        f"({dt.datetime.now(dt.UTC):%Y-%m-%d}): validation relative MAE "
        f"{result.best_score:.4f} (default config {result.baseline_score:.4f}).\n"
    )
    output.write_text(header + yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    result.config_path = output
    with (
        mlflow.start_run(
            experiment_id=tracking.experiment_id(),
            run_name=f"tune-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}",
        ) as run,
        tempfile.TemporaryDirectory(prefix="stockcast-tune-") as tmp,
    ):
        result.run_id = run.info.run_id
        mlflow.set_tags({"kind": "tune", "tickers": ",".join(tickers)})
        mlflow.log_params({f"best_{k}": v for k, v in study.best_trial.params.items()})
        mlflow.log_metrics(
            {"best_validation_relative_mae": result.best_score, "tune_seconds": result.seconds}
        )
        if math.isfinite(result.baseline_score):
            mlflow.log_metric("default_validation_relative_mae", result.baseline_score)
        mlflow.log_artifact(str(output), artifact_path="config")
        trials_path = Path(tmp) / "trials.yaml"
        trials_path.write_text(yaml.safe_dump(result.trials), encoding="utf-8")
        mlflow.log_artifact(str(trials_path), artifact_path="tune")
    return result


def result_dict(result: TuneResult) -> dict[str, Any]:
    """JSON-ready summary of a search."""
    out = dataclasses.asdict(result)
    out["best_config"] = result.best_config.model_dump(mode="json")
    out["config_path"] = str(result.config_path) if result.config_path else None
    return out
