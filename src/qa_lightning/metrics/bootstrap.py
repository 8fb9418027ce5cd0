"""Bootstrap confidence intervals over questions, vectorised with a seeded numpy Generator.

One resample draws ``n`` question indices with replacement; all ``samples`` resamples are drawn
at once (``rng.integers(0, n, size=(samples, n))``) and averaged in one ``take``/``mean``. The
plain loop ``for _ in range(samples): values[rng.integers(0, n, size=n)].mean()`` draws the
same numbers in the same order, so both give the same interval for the same seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

SAMPLES = 1000
SEED = 0
LEVEL = 0.95
_CHUNK = 2_000_000  # index cells drawn at a time (memory bound for large dev sets)


@dataclass(frozen=True)
class Interval:
    """A mean with its percentile bootstrap interval (same unit as the values)."""

    mean: float
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``b - a`` per shared question, its interval and a two-sided bootstrap p-value."""

    mean: float
    low: float
    high: float
    p_value: float
    n: int


def resample_means(
    values: Sequence[float] | np.ndarray, samples: int = SAMPLES, seed: int = SEED
) -> np.ndarray:
    """``samples`` bootstrap means of ``values`` (questions resampled with replacement)."""
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1 or data.size == 0:
        raise ValueError("the bootstrap needs a non-empty 1-D array of per-question values")
    rng = np.random.default_rng(seed)
    n = data.size
    rows = max(1, _CHUNK // n)
    means = np.empty(samples, dtype=np.float64)
    for first in range(0, samples, rows):
        count = min(rows, samples - first)
        means[first : first + count] = data[rng.integers(0, n, size=(count, n))].mean(axis=1)
    return means


def bootstrap_interval(
    values: Sequence[float] | np.ndarray,
    samples: int = SAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> Interval:
    """The mean of ``values`` and its percentile bootstrap interval at ``level``."""
    means = resample_means(values, samples, seed)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return Interval(float(np.mean(values)), float(low), float(high))


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    samples: int = SAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> PairedDifference:
    """The difference ``b - a`` over the same questions (same order): interval and p-value.

    The p-value is two-sided: twice the smaller share of resampled differences on either side
    of 0 (capped at 1); a run compared with itself gets the interval [0, 0] and p = 1.
    """
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    means = resample_means(diff, samples, seed)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    below, above = np.mean(means <= 0.0), np.mean(means >= 0.0)
    p_value = float(min(1.0, 2.0 * min(below, above)))
    return PairedDifference(float(diff.mean()), float(low), float(high), p_value, int(diff.size))


def metric_intervals(
    per_question: Mapping[str, Mapping[str, float]],
    samples: int = SAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> dict:
    """``{"exact_match": [low, high], "f1": [...], ...}`` (in %, as the official figures) from
    per-question 0..1 scores, with the settings that made them."""
    out: dict = {"level": level, "samples": samples, "seed": seed}
    for name, scores in per_question.items():
        if scores:
            interval = bootstrap_interval(list(scores.values()), samples, seed, level)
            out[name] = [100.0 * interval.low, 100.0 * interval.high]
    return out


def as_dict(result: Interval | PairedDifference) -> dict:
    return asdict(result)
