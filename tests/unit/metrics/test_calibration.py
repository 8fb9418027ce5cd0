"""Calibration fits, ECE and risk-coverage, and tuning the shipped answerability on decoded
candidates (synthetic, so that the right values are known)."""

from __future__ import annotations

import numpy as np
import pytest

from qa_lightning.metrics.answerability import (
    Answerability,
    DecodedSplit,
    answerability_report,
    tune_answerability,
)
from qa_lightning.metrics.calibration import (
    Calibrator,
    expected_calibration_error,
    fit_calibrator,
    fit_isotonic,
    fit_platt,
    risk_coverage,
)
from qa_lightning.metrics.squad_eval import score_predictions


def test_platt_recovers_a_logistic_curve() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 2, 20_000)
    y = (rng.random(len(x)) < 1 / (1 + np.exp(-(1.5 * x - 0.5)))).astype(float)
    fitted = fit_platt(x, y, "identity")
    assert fitted.params["a"] == pytest.approx(1.5, abs=0.08)
    assert fitted.params["b"] == pytest.approx(-0.5, abs=0.08)


def test_isotonic_is_monotone_and_fits_steps() -> None:
    x = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    y = np.array([0, 1, 0, 1, 1, 1.0])
    fitted = fit_isotonic(x, y, "identity")
    out = fitted(np.linspace(0, 1, 50))
    assert np.all(np.diff(out) >= 0)
    assert fitted(0.6)[0] == pytest.approx(1.0, abs=1e-5)


def test_the_calibrator_with_lower_held_out_loss_is_chosen() -> None:
    rng = np.random.default_rng(1)
    x = rng.random(4000)
    # A step the logistic curve cannot follow: isotonic wins.
    y = (rng.random(len(x)) < np.where(x > 0.5, 0.9, 0.1)).astype(float)
    fitted, losses = fit_calibrator(x, y, "identity")
    assert fitted.kind == "isotonic" and losses["isotonic"] < losses["platt"]
    # A logistic truth: Platt does at least as well.
    y = (rng.random(len(x)) < 1 / (1 + np.exp(-(4 * x - 2)))).astype(float)
    fitted, losses = fit_calibrator(x, y, "identity")
    assert losses["platt"] <= losses["isotonic"] + 1e-3
    assert Calibrator.from_dict(fitted.to_dict()) == fitted


def test_ece_and_risk_coverage_on_known_values() -> None:
    assert expected_calibration_error([0.9, 0.9, 0.1, 0.1], [1, 1, 0, 0]) == pytest.approx(0.1)
    assert expected_calibration_error([0.75] * 4, [1, 1, 1, 0]) == pytest.approx(0.0)
    coverage, accuracy, area = risk_coverage([0.9, 0.8, 0.1], [1, 0, 1])
    assert coverage.tolist() == pytest.approx([1 / 3, 2 / 3, 1])
    assert accuracy.tolist() == pytest.approx([1, 0.5, 2 / 3])
    assert area == pytest.approx((1 + 0.5 + 2 / 3) / 3)


def synthetic(n: int, seed: int):
    """v2.0 questions whose span is right with probability sqrt(p) and whose null margin
    separates answerable from unanswerable ones."""
    rng = np.random.default_rng(seed)
    gold, spans, probs, na = {}, {}, {}, {}
    for i in range(n):
        qid = f"q{i}"
        has = rng.random() < 0.5
        gold[qid] = ["paris"] if has else []
        na[qid] = -rng.normal(1.0 if has else -1.0, 1.5)
        probs[qid] = rng.random()
        spans[qid] = "paris" if rng.random() < probs[qid] ** 0.5 else "london"
    return DecodedSplit(gold, spans, probs, na)


DECODING = {"n_best_size": 20, "max_answer_length": 30, "max_length": 384, "doc_stride": 128}


def test_tuning_uses_the_official_threshold_and_calibrates_held_out_data() -> None:
    split = synthetic(3000, seed=0)
    gold, spans, na = split.gold, split.span_answers, split.na_probs
    tuned = tune_answerability(split, version_2=True, decoding=DECODING)
    official = score_predictions(gold, spans, version="2.0", na_probs=na)
    assert tuned.null_threshold == official["best_f1_thresh"]
    assert tuned.validation["f1"] == pytest.approx(official["best_f1"])
    assert tuned.decoding == DECODING and tuned.has_answer is not None
    held_out = answerability_report(tuned, synthetic(3000, seed=1))
    assert held_out["ece_calibrated"] <= 0.05 < held_out["ece_uncalibrated"]
    assert held_out["f1"] >= held_out["f1_at_threshold_0"]
    assert Answerability.from_dict(tuned.to_dict()) == tuned


def test_answering_nothing_is_a_threshold_of_its_own_and_ties_move_together() -> None:
    """The official search starts at 0.0 (made for probabilities); with score differences a
    model whose spans are all wrong must answer nothing, not every negative difference."""
    gold = {"a": ["x"], "b": [], "c": [], "d": ["y"]}
    wrong = DecodedSplit(gold, dict.fromkeys(gold, "zzz"), dict.fromkeys(gold, 0.5),
                         {"a": -2.0, "b": -1.0, "c": 0.5, "d": 3.0})  # fmt: skip
    official = score_predictions(gold, wrong.span_answers, version="2.0", na_probs=wrong.na_probs)
    assert official["best_f1_thresh"] == 0.0  # which would answer a and b: F1 25, not 50
    tuned = tune_answerability(wrong, version_2=True, decoding=DECODING)
    assert tuned.null_threshold < -2.0
    assert tuned.validation["f1"] == pytest.approx(50.0) == official["best_f1"]
    assert tuned.validation["answered"] == 0.0

    # c (right) and b (unanswerable, answered) tie at -1.0: no threshold answers c without b.
    # The official search, one question at a time, counts c alone: 50 at -1.0, which no
    # threshold reaches (-1.0 answers both: 25, the same as answering nothing).
    gold = {"a": ["x"], "c": ["w"], "b": [], "d": ["y"]}
    tied = DecodedSplit(gold, {"a": "zzz", "c": "w", "b": "zzz", "d": "zzz"},
                        dict.fromkeys(gold, 0.5), {"a": -2.0, "c": -1.0, "b": -1.0, "d": 3.0})  # fmt: skip
    official = score_predictions(gold, tied.span_answers, version="2.0", na_probs=tied.na_probs)
    assert official["best_f1_thresh"] == -1.0 and official["best_f1"] == pytest.approx(50.0)
    tuned = tune_answerability(tied, version_2=True, decoding=DECODING)
    assert tuned.null_threshold < -2.0 and tuned.validation["f1"] == pytest.approx(25.0)
    tied.span_answers["a"] = "x"  # now answering a (alone below the tie) gains
    tuned = tune_answerability(tied, version_2=True, decoding=DECODING)
    assert tuned.null_threshold == -2.0 and tuned.validation["f1"] == pytest.approx(50.0)


def test_objectives() -> None:
    split = synthetic(2000, seed=2)
    gold, spans, na = split.gold, split.span_answers, split.na_probs
    exact = tune_answerability(split, version_2=True, decoding=DECODING, objective="exact")
    official = score_predictions(gold, spans, version="2.0", na_probs=na)
    assert exact.null_threshold == official["best_exact_thresh"]
    strict = tune_answerability(split, version_2=True, decoding=DECODING, objective="precision@0.9")
    report = answerability_report(Answerability("2.0", strict.null_threshold), split)
    answered = [q for q in gold if na[q] <= strict.null_threshold]
    precision = np.mean([float(spans[q] in gold[q]) for q in answered])
    assert precision >= 0.9 and report["answered"] < 1.0
    with pytest.raises(ValueError, match="objective"):
        tune_answerability(split, version_2=True, decoding={}, objective="auc")


def test_v1_models_get_a_span_calibrator_only() -> None:
    split = synthetic(1000, seed=3)
    v1 = DecodedSplit({q: ["paris"] for q in split.gold}, split.span_answers, split.span_probs)
    tuned = tune_answerability(v1, version_2=False, decoding=DECODING)
    assert tuned.version == "1.1" and tuned.null_threshold == 0.0 and tuned.has_answer is None
    assert tuned.validation["ece_calibrated"] < tuned.validation["ece_uncalibrated"]
