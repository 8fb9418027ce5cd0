"""Calibration of answer scores: Platt and isotonic fits, the choice between them, ECE and
risk-coverage.

A :class:`Calibrator` maps a raw confidence (a probability among the n-best spans, or a score
difference) to the probability that an event holds (the top answer is exactly right; the
question has an answer). :func:`fit_calibrator` fits Platt scaling (a logistic curve on the
input, which contains temperature scaling of the span logits as a special case) and isotonic
regression (pool adjacent violators) and keeps the one with the lower log loss on held-out
folds of the tuning data. Plain numpy: the fits have two parameters or one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

EPS = 1e-6
KINDS = ("platt", "isotonic")
Transform = Literal["logit", "identity"]


def _as_array(values: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-z))`` without overflow for large ``|z|``."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _transform(x: np.ndarray, transform: Transform) -> np.ndarray:
    if transform == "logit":
        p = np.clip(x, EPS, 1 - EPS)
        return np.log(p) - np.log1p(-p)
    return x


@dataclass(frozen=True)
class Calibrator:
    """A fitted map from a raw confidence to a probability.

    ``kind="platt"``: ``sigmoid(a * t(x) + b)``; ``kind="isotonic"``: the non-decreasing step
    values ``y`` at the sorted inputs ``x``, interpolated linearly between them and held
    constant outside. ``transform`` is ``"logit"`` for inputs that are probabilities (so that
    Platt on them is temperature scaling plus a bias) and ``"identity"`` for score differences.
    """

    kind: str
    transform: Transform = "identity"
    params: dict[str, Any] = field(default_factory=dict)

    def __call__(self, values: Sequence[float] | np.ndarray | float) -> np.ndarray:
        x = _transform(_as_array(values), self.transform)
        if self.kind == "platt":
            return sigmoid(self.params["a"] * x + self.params["b"])
        if self.kind == "isotonic":
            return np.interp(x, self.params["x"], self.params["y"])
        raise ValueError(f"unknown calibrator kind {self.kind!r}; expected one of {KINDS}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "transform": self.transform, "params": dict(self.params)}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Calibrator:
        kind = data.get("kind")
        if kind not in KINDS:
            raise ValueError(f"calibrator kind must be one of {KINDS}, got {kind!r}")
        params = dict(data.get("params") or {})
        needed = ("a", "b") if kind == "platt" else ("x", "y")
        missing = [name for name in needed if name not in params]
        if missing:
            raise ValueError(f"{kind} calibrator without {missing}")
        return Calibrator(kind, data.get("transform", "identity"), params)


def fit_platt(x: np.ndarray, y: np.ndarray, transform: Transform, l2: float = 1e-3) -> Calibrator:
    """Logistic regression of ``y`` on ``t(x)`` (Newton's method, a light L2 on the slope)."""
    t = _transform(_as_array(x), transform)
    y = _as_array(y)
    a, b = 1.0, 0.0
    for _ in range(100):
        p = sigmoid(a * t + b)
        w = np.maximum(p * (1 - p), 1e-12)
        grad = np.array([np.dot(p - y, t) + l2 * a, np.sum(p - y)])
        hess = np.array([[np.dot(w, t * t) + l2, np.dot(w, t)], [np.dot(w, t), np.sum(w)]])
        step = np.linalg.solve(hess + 1e-9 * np.eye(2), grad)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-10:
            break
    return Calibrator("platt", transform, {"a": float(a), "b": float(b)})


def fit_isotonic(x: np.ndarray, y: np.ndarray, transform: Transform) -> Calibrator:
    """Isotonic regression of ``y`` on ``t(x)`` by pooling adjacent violators."""
    t = _transform(_as_array(x), transform)
    y = _as_array(y)
    order = np.argsort(t, kind="stable")
    means: list[float] = []
    weights: list[float] = []
    lows: list[float] = []
    highs: list[float] = []
    for xi, yi in zip(t[order], y[order], strict=True):
        means.append(float(yi))
        weights.append(1.0)
        lows.append(float(xi))
        highs.append(float(xi))
        while len(means) > 1 and means[-2] >= means[-1]:
            w = weights[-2] + weights[-1]
            means[-2] = (means[-2] * weights[-2] + means[-1] * weights[-1]) / w
            weights[-2], highs[-2] = w, highs[-1]
            del means[-1], weights[-1], lows[-1], highs[-1]
    xs = np.array([(lo + hi) / 2 for lo, hi in zip(lows, highs, strict=True)])
    ys = np.clip(np.array(means), EPS, 1 - EPS)
    return Calibrator("isotonic", transform, {"x": xs.tolist(), "y": ys.tolist()})


def log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(_as_array(probs), EPS, 1 - EPS)
    y = _as_array(y)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def fit_calibrator(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    transform: Transform,
    folds: int = 5,
    seed: int = 0,
) -> tuple[Calibrator, dict[str, float]]:
    """The Platt or isotonic fit of ``y`` on ``x`` with the lower held-out log loss.

    Each kind is fitted on ``folds - 1`` folds and scored on the remaining one, in turn; the
    winner is refitted on all of the data. Returns it and the held-out log loss of each kind.
    With fewer than ``2 * folds`` points or a single class, Platt scaling is used as it is.
    """
    x, y = _as_array(x), _as_array(y)
    if len(x) != len(y) or not len(x):
        raise ValueError(f"calibration needs as many labels as inputs (got {len(x)} and {len(y)})")
    fits = {"platt": fit_platt, "isotonic": fit_isotonic}
    if len(x) < 2 * folds or len(np.unique(y)) < 2:
        return fit_platt(x, y, transform), {}
    fold = np.random.default_rng(seed).permutation(len(x)) % folds
    losses = {}
    for kind, fit in fits.items():
        held_out = np.empty(len(x))
        for k in range(folds):
            test = fold == k
            held_out[test] = fit(x[~test], y[~test], transform)(x[test])
        losses[kind] = log_loss(held_out, y)
    best = min(losses, key=losses.__getitem__)
    return fits[best](x, y, transform), losses


def expected_calibration_error(
    probs: Sequence[float] | np.ndarray, correct: Sequence[float] | np.ndarray, bins: int = 10
) -> float:
    """ECE: the |accuracy - mean confidence| of equal-width confidence bins, weighted by size."""
    p, y = _as_array(probs), _as_array(correct)
    if not len(p):
        return float("nan")
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.sum() * abs(y[members].mean() - p[members].mean())
    return float(total / len(p))


def reliability_bins(
    probs: Sequence[float] | np.ndarray, correct: Sequence[float] | np.ndarray, bins: int = 10
) -> list[dict[str, float]]:
    """Per non-empty equal-width bin: mean confidence, accuracy and count (the diagram's data)."""
    p, y = _as_array(probs), _as_array(correct)
    which = np.minimum((p * bins).astype(int), bins - 1)
    return [
        {
            "low": b / bins,
            "high": (b + 1) / bins,
            "confidence": float(p[which == b].mean()),
            "accuracy": float(y[which == b].mean()),
            "count": int((which == b).sum()),
        }
        for b in range(bins)
        if (which == b).any()
    ]


def risk_coverage(
    scores: Sequence[float] | np.ndarray, correct: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """EM of the answered questions against the fraction answered, as the score cut-off falls.

    Questions are answered best score first; returns the coverage (``k / n``), the accuracy of
    the ``k`` answered and the area under that curve (mean over ``k``, the usual AURC
    complement: 1.0 is perfect ranking).
    """
    s, y = _as_array(scores), _as_array(correct)
    if not len(s):
        return np.zeros(0), np.zeros(0), float("nan")
    order = np.argsort(-s, kind="stable")
    hits = np.cumsum(y[order])
    answered = np.arange(1, len(s) + 1)
    accuracy = hits / answered
    return answered / len(s), accuracy, float(accuracy.mean())
