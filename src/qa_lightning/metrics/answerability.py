"""Answerability that ships with a model: the tuned no-answer threshold, the score calibrators and
the decoding settings they were tuned with, as ``answerability.json`` beside ``config.json``.

The file (format 1)::

    {"format": 1, "version": "2.0" | "1.1",
     "null_threshold": float,        # answer "" when null_score - best_span_score > it (v2.0)
     "objective": "f1" | "exact" | "precision@0.9",
     "decoding": {"n_best_size", "max_answer_length", "max_length", "doc_stride"},
     "calibration": {"top_span": Calibrator, "has_answer": Calibrator | null},
     "validation": {figures on the tuning data}}

``top_span`` maps the best span's probability among the n-best to the probability that it is
exactly right; ``has_answer`` (v2.0) maps ``best_span_score - null_score`` to the probability
that the question has an answer, so the empty answer scores ``1 - has_answer``. Tuning reads
only what evaluation decoded (:class:`~qa_lightning.decoding.DecodedPredictions`' ``na_probs``,
``span_probs``, ``span_answers``): the model is never run again.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from qa_lightning.errors import DataFormatError
from qa_lightning.metrics.calibration import (
    Calibrator,
    expected_calibration_error,
    fit_calibrator,
    reliability_bins,
    risk_coverage,
    sigmoid,
)
from qa_lightning.metrics.squad_eval import compute_exact, question_scores, score_predictions
from qa_lightning.utils.io import atomic_write_json, read_json_file

FILE = "answerability.json"
FORMAT = 1
DECODING_KEYS = ("n_best_size", "max_answer_length", "max_length", "doc_stride")
_PRECISION = re.compile(r"^precision@(0?\.\d+|1(\.0*)?)$")


@dataclass(frozen=True)
class Answerability:
    """The tuned threshold, calibrators and decoding settings of one model (see the module doc)."""

    version: str
    null_threshold: float = 0.0
    objective: str = "f1"
    decoding: dict[str, int] = field(default_factory=dict)
    top_span: Calibrator | None = None
    has_answer: Calibrator | None = None
    validation: dict[str, Any] = field(default_factory=dict)

    @property
    def version_2(self) -> bool:
        return self.version == "2.0"

    def span_scores(self, probs: Sequence[float] | np.ndarray) -> np.ndarray:
        """Calibrated scores of span answers from their n-best probabilities."""
        probs = np.asarray(probs, dtype=np.float64)
        return probs if self.top_span is None else self.top_span(probs)

    def null_scores(self, margins: Sequence[float] | np.ndarray) -> np.ndarray:
        """The probability of no answer from ``best_span_score - null_score``."""
        margins = np.asarray(margins, dtype=np.float64)
        if self.has_answer is None:
            return sigmoid(-margins)
        return 1.0 - self.has_answer(margins)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "null_threshold": self.null_threshold,
            "objective": self.objective,
            "decoding": dict(self.decoding),
            "calibration": {
                "top_span": None if self.top_span is None else self.top_span.to_dict(),
                "has_answer": None if self.has_answer is None else self.has_answer.to_dict(),
            },
            "validation": dict(self.validation),
        }

    @staticmethod
    def from_dict(data: Any, source: str = "answerability") -> Answerability:
        """Parse the file's content; a malformed one is a ``DataFormatError`` naming the field."""

        def fail(name: str, message: str) -> DataFormatError:
            return DataFormatError(message, path=source, field=name)

        if not isinstance(data, dict):
            raise fail("(top level)", f"expected an object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise fail("format", f"expected {FORMAT}, got {data.get('format')!r}")
        if data.get("version") not in ("1.1", "2.0"):
            raise fail("version", f"expected '1.1' or '2.0', got {data.get('version')!r}")
        threshold = data.get("null_threshold", 0.0)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise fail("null_threshold", f"expected a number, got {threshold!r:.40}")
        if not math.isfinite(threshold):
            raise fail("null_threshold", f"expected a finite number, got {threshold}")
        decoding = data.get("decoding") or {}
        for key, value in decoding.items():
            if key not in DECODING_KEYS or isinstance(value, bool) or not isinstance(value, int):
                raise fail(f"decoding.{key}", f"expected one of {DECODING_KEYS} as an integer")
        calibration = data.get("calibration") or {}
        calibrators = {}
        for name in ("top_span", "has_answer"):
            raw = calibration.get(name)
            try:
                calibrators[name] = None if raw is None else Calibrator.from_dict(raw)
            except (ValueError, TypeError, AttributeError) as err:
                raise fail(f"calibration.{name}", str(err)) from err
        return Answerability(
            version=data["version"],
            null_threshold=float(threshold),
            objective=str(data.get("objective", "f1")),
            decoding=dict(decoding),
            validation=dict(data.get("validation") or {}),
            **calibrators,
        )


def write_answerability(directory: str | Path, answerability: Answerability) -> Path:
    """Write ``answerability.json`` into ``directory`` (atomically)."""
    return atomic_write_json(Path(directory) / FILE, answerability.to_dict())


def read_answerability(directory: str | Path) -> Answerability | None:
    """The ``answerability.json`` of a model directory; ``None`` when it has none."""
    path = Path(directory) / FILE
    if not path.is_file():
        return None
    return Answerability.from_dict(read_json_file(path), source=str(path))


def check_objective(objective: str) -> str:
    """``"f1"``, ``"exact"`` or ``"precision@P"`` (0 < P <= 1), else a ``ValueError``."""
    if objective in ("f1", "exact") or _PRECISION.match(objective):
        return objective
    raise ValueError(
        f"objective must be 'f1', 'exact' or 'precision@P' (e.g. 0.9), got {objective!r}"
    )


@dataclass(frozen=True)
class DecodedSplit:
    """What tuning and reporting read of one evaluated split: gold texts (empty lists for
    unanswerable questions), each question's best span (whatever the null rule decided), its
    n-best probability, and (v2.0) ``null_score - best_span_score``."""

    gold: Mapping[str, Sequence[str]]
    span_answers: Mapping[str, str]
    span_probs: Mapping[str, float]
    na_probs: Mapping[str, float] | None = None


@dataclass(frozen=True)
class Decisions:
    """Per question: whether the top answer is a span, whether it is exactly right, its raw and
    calibrated scores."""

    answered: np.ndarray
    correct: np.ndarray
    raw: np.ndarray
    calibrated: np.ndarray


def _raw_top_scores(span_probs: np.ndarray, diffs: np.ndarray, answered: np.ndarray) -> np.ndarray:
    """The uncalibrated score of the top answer: its n-best probability (null's for ``""``)."""
    null_probs = np.where(span_probs > 0, span_probs * np.exp(np.minimum(diffs, 50.0)), 1.0)
    return np.where(answered, span_probs, np.minimum(null_probs, 1.0))


def decisions(answerability: Answerability, split: DecodedSplit) -> Decisions:
    """What the model answers under ``answerability`` for each question of the split."""
    gold, span_answers, span_probs, na_probs = (
        split.gold,
        split.span_answers,
        split.span_probs,
        split.na_probs,
    )
    ids = list(gold)
    probs = np.array([span_probs.get(q, 0.0) for q in ids])
    if answerability.version_2 and na_probs is not None:
        diffs = np.array([na_probs[q] for q in ids])
        answered = (diffs <= answerability.null_threshold) & (probs > 0)
    else:
        diffs = np.full(len(ids), -np.inf)
        answered = probs > 0
    texts = [span_answers.get(q, "") if a else "" for q, a in zip(ids, answered, strict=True)]
    correct = np.array(
        [
            max(compute_exact(g, t) for g in (gold[q] or [""]))
            for q, t in zip(ids, texts, strict=True)
        ],
        dtype=np.float64,
    )
    calibrated = np.where(
        answered,
        answerability.span_scores(probs),
        answerability.null_scores(-diffs) if answerability.version_2 else 0.0,
    )
    return Decisions(answered, correct, _raw_top_scores(probs, diffs, answered), calibrated)


def tune_answerability(
    split: DecodedSplit,
    *,
    version_2: bool,
    decoding: Mapping[str, int],
    objective: str = "f1",
) -> Answerability:
    """Fit the threshold (v2.0) and the calibrators on the tuning data's decoded candidates."""
    check_objective(objective)
    gold, span_probs, na_probs = split.gold, split.span_probs, split.na_probs
    ids = list(gold)
    missing = [q for q in ids if q not in span_probs]
    if missing:
        raise ValueError(
            f"{len(missing)} questions have no decoded span probability (first {missing[0]!r}): "
            "evaluate with SquadMetric(keep_nbest=True)"
        )
    threshold, has_answer = 0.0, None
    if version_2:
        if na_probs is None:
            raise ValueError("a v2.0 model needs the no-answer score differences (na_probs)")
        threshold = _threshold(split, objective)
        margins = np.array([-na_probs[q] for q in ids])
        has_gold = np.array([float(bool(gold[q])) for q in ids])
        has_answer, _ = fit_calibrator(margins, has_gold, "identity")
    untuned = Answerability("2.0" if version_2 else "1.1", threshold, objective, dict(decoding))
    found = decisions(untuned, split)
    # The span calibrator learns from the questions the tuned threshold answers with a span.
    x = np.array([span_probs[q] for q in ids])[found.answered]
    top_span, losses = (
        fit_calibrator(x, found.correct[found.answered], "logit")
        if found.answered.any()
        else (None, {})
    )
    tuned = Answerability(
        untuned.version, threshold, objective, dict(decoding), top_span, has_answer
    )
    report = answerability_report(tuned, split)
    report["held_out_log_loss"] = losses
    return replace(tuned, validation=_summary(report))


def _threshold(split: DecodedSplit, objective: str) -> float:
    """The no-answer threshold maximising F1 / EM (the official search), or the largest whose
    answered questions reach the target precision (exact match)."""
    gold, span_answers, span_probs = split.gold, split.span_answers, split.span_probs
    na_probs = split.na_probs or {}
    if objective in ("f1", "exact"):
        return _best_threshold(split, objective)
    target = float(objective.split("@", 1)[1])
    ids = sorted(gold, key=lambda q: na_probs[q])
    best = min(na_probs.values()) - 1.0  # answer nothing
    hits = 0
    for k, qid in enumerate(ids, start=1):
        if span_probs.get(qid, 0.0) > 0:
            hits += max(compute_exact(g, span_answers.get(qid, "")) for g in (gold[qid] or [""]))
        if hits / k >= target:
            best = na_probs[qid]
    return float(best)


def _best_threshold(split: DecodedSplit, objective: str) -> float:
    """The threshold on ``null_score - best_span_score`` with the best total ``objective`` (f1
    or exact): the official search over thresholds at each question's score difference, except
    that equal differences move together (a threshold cannot split them) and "answer nothing" is
    a candidate of its own (below every difference; the official search, written for
    probabilities in [0, 1], reports 0.0 there, which answers every question with a negative
    difference)."""
    gold, span_answers, span_probs = split.gold, split.span_answers, split.span_probs
    na_probs = split.na_probs or {}
    ids = sorted(gold, key=lambda q: na_probs[q])
    if not ids:
        return 0.0
    exact, f1 = question_scores(gold, {q: span_answers.get(q, "") for q in ids}, version="2.0")
    scores = f1 if objective == "f1" else exact
    # Gain of answering with the span over answering "": its score on answerable questions;
    # on unanswerable ones -1 for a span (a question without a candidate is never answered).
    gains = np.array(
        [scores[q] if gold[q] else (scores[q] - 1.0) * (span_probs.get(q, 0.0) > 0) for q in ids]
    )
    diffs = np.array([na_probs[q] for q in ids])
    totals = np.cumsum(gains)
    # A threshold at diffs[k] answers ids[: k + 1] and, with ties, every equal difference after.
    last_of_tie = np.append(diffs[1:] != diffs[:-1], True)
    candidates = np.flatnonzero(last_of_tie)
    best = candidates[np.argmax(totals[candidates])]  # the first (smallest) best threshold
    if totals[best] <= 0:  # answering nothing scores at least as well
        return float(diffs[0] - 1.0)
    return float(diffs[best])


def answerability_report(answerability: Answerability, split: DecodedSplit) -> dict[str, Any]:
    """ECE before/after calibration, reliability bins, risk-coverage and the official figures
    at the threshold, for any split (scored with values tuned on another one)."""
    gold, span_answers, na_probs = split.gold, split.span_answers, split.na_probs
    found = decisions(answerability, split)
    coverage, accuracy, area = risk_coverage(found.calibrated, found.correct)
    predictions = {
        q: (span_answers.get(q, "") if a else "") for q, a in zip(gold, found.answered, strict=True)
    }
    version = "2.0" if answerability.version_2 else "1.1"
    official = score_predictions(gold, predictions, version=version)
    report: dict[str, Any] = {
        "questions": len(gold),
        "null_threshold": answerability.null_threshold,
        "exact": official.get("exact", official.get("exact_match")),
        "f1": official["f1"],
        "answered": float(found.answered.mean()) if len(gold) else 0.0,
        "ece_uncalibrated": expected_calibration_error(found.raw, found.correct),
        "ece_calibrated": expected_calibration_error(found.calibrated, found.correct),
        "risk_coverage_area": area,
        "reliability": {
            "uncalibrated": reliability_bins(found.raw, found.correct),
            "calibrated": reliability_bins(found.calibrated, found.correct),
        },
        "risk_coverage": {"coverage": coverage.tolist(), "exact": accuracy.tolist()},
    }
    if answerability.version_2 and na_probs is not None:
        untuned = score_predictions(
            gold,
            {q: span_answers.get(q, "") for q in gold},
            version="2.0",
            na_probs=na_probs,
            na_prob_thresh=0.0,
        )
        report["f1_at_threshold_0"] = untuned["f1"]
        report["exact_at_threshold_0"] = untuned["exact"]
    return report


def _summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of a report without its curves (what ``answerability.json`` keeps)."""
    return {k: v for k, v in report.items() if k not in ("reliability", "risk_coverage")}
