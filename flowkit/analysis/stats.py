"""Uncertainty for the kit's headline numbers: bootstrap intervals over questions.

Every mean the chapters and the fidelity report state (a % change at a window, a trough, an
accuracy) is a mean over questions; :func:`bootstrap_ci` resamples those questions with
replacement and returns the percentile interval. Seeds are fixed, so the same numbers give the
same interval on every machine.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: resamples per interval, and the seed that draws them
RESAMPLES = 2000
SEED = 0


def mean_with_interval(values, **extra) -> dict:
    """``{"mean", "ci": [lo, hi], "questions"}`` of one value per question (95 % bootstrap; NaNs dropped),
    plus ``extra``."""
    values = pd.Series(values, dtype=float).dropna()
    return {
        "mean": float(values.mean()),
        "ci": [float(x) for x in bootstrap_ci(values)],
        "questions": int(len(values)),
        **extra,
    }


def tied_with_minimum(values: dict, intervals: dict | None) -> list:
    """The keys (e.g. window centres) whose 95 % interval reaches down to the lowest value: where a curve's
    lowest point lies, as far as its intervals can tell. One key when the minimum stands clear (or
    without intervals); several on a flat stretch, where "the trough is at x" is a tie, not a finding."""
    if not values:
        return []
    lowest_key = min(values, key=values.get)
    lowest = values[lowest_key]
    intervals = intervals or {}
    tied = [
        key
        for key in values
        if key in intervals and intervals[key][0] is not None and intervals[key][0] <= lowest + 1e-9
    ]
    return sorted(set(tied) | {lowest_key})


def bootstrap_ci(values, level: float = 0.95, resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaNs dropped).

    Returns ``(nan, nan)`` for no values and ``(x, x)`` for a single one (nothing to resample).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def mean_with_ci(frame: pd.DataFrame, by, value: str, level: float = 0.95) -> pd.DataFrame:
    """Mean of ``value`` per group of ``by``, with its bootstrap interval (``lo``, ``hi``) and ``n``.

    Each row of ``frame`` is one question's measurement; a group's interval resamples its rows.
    """
    rows = []
    for key, group in frame.groupby(by, sort=True):
        lo, hi = bootstrap_ci(group[value], level)
        key = key if isinstance(key, tuple) else (key,)
        rows.append(
            {
                **dict(zip([by] if isinstance(by, str) else by, key)),
                value: float(group[value].mean()),
                "lo": lo,
                "hi": hi,
                "n": int(group[value].notna().sum()),
            }
        )
    return pd.DataFrame(rows, columns=[*([by] if isinstance(by, str) else by), value, "lo", "hi", "n"])


def accuracy_by(frame: pd.DataFrame, by: str = "task", value: str = "correct") -> dict:
    """Per group of ``by``: the share of rows whose ``value`` is true (an accuracy per task or per
    condition) — the one place the kit turns a per-question table into accuracies."""
    return {key: float(v) for key, v in frame.groupby(by)[value].mean().astype(float).items()}


def intervals_by(
    frame: pd.DataFrame, by: str, value: str = "correct", level: float = 0.95, unit: str | None = None
) -> dict:
    """Per group of ``by``: the bootstrap interval ``[lo, hi]`` of the mean of ``value`` (e.g. the
    share of ``correct`` questions: an accuracy per task or per condition).

    ``unit`` (e.g. ``"sample"``): rows of one unit are averaged first and the units resampled, so a
    question answered under several seeds of a random mask counts once, not once per seed (with
    one row per unit this is the same interval)."""
    out = {}
    for key, group in frame.groupby(by):
        # units in sorted order, as experiments.pathway_accuracy has them: the same resamples, the same interval
        values = group.groupby(unit, sort=True)[value].mean() if unit else group[value]
        out[key] = list(bootstrap_ci(values.astype(float), level))
    return out


__all__ = ["RESAMPLES", "SEED", "accuracy_by", "bootstrap_ci", "intervals_by", "mean_with_ci"]
