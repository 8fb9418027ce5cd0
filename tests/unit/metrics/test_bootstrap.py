"""Bootstrap intervals: the vectorised draw equals a plain loop; paired differences; the
per-question scores average to the official figures."""

from __future__ import annotations

import random

import numpy as np
import pytest

from helpers.report_runs import examples_of, guess
from qa_lightning.metrics.bootstrap import (
    bootstrap_interval,
    metric_intervals,
    paired_bootstrap,
    resample_means,
)
from qa_lightning.metrics.squad_eval import question_scores, score_predictions
from qa_lightning.paths import SAMPLE_DATA_FILE


def plain_loop_interval(values, samples, seed, level=0.95):
    rng = np.random.default_rng(seed)
    values = np.asarray(values, dtype=float)
    means = []
    for _ in range(samples):
        sample = values[rng.integers(0, len(values), size=len(values))]
        means.append(sum(sample) / len(sample))
    tail = 100 * (1 - level) / 2
    return np.percentile(means, [tail, 100 - tail]), np.array(means)


@pytest.mark.parametrize("n", [1, 7, 64, 5001])  # 5001: the draw is split into chunks
def test_vectorised_bootstrap_equals_a_plain_loop_on_the_same_seed(n):
    values = np.random.default_rng(1).random(n).round(2)
    (low, high), loop_means = plain_loop_interval(values, 1000, seed=7)
    np.testing.assert_allclose(resample_means(values, 1000, seed=7), loop_means, rtol=1e-12)
    interval = bootstrap_interval(values, 1000, seed=7)
    assert (interval.low, interval.high) == pytest.approx((low, high), rel=1e-12)
    assert interval.mean == pytest.approx(values.mean())
    assert interval.contains(values.mean())


def test_seed_changes_the_interval_and_same_seed_repeats_it():
    values = np.random.default_rng(2).random(300)
    assert bootstrap_interval(values, seed=0) == bootstrap_interval(values, seed=0)
    assert bootstrap_interval(values, seed=0) != bootstrap_interval(values, seed=1)


def test_paired_bootstrap_of_a_run_with_itself_holds_zero():
    a = np.random.default_rng(3).random(200)
    same = paired_bootstrap(a, a)
    assert (same.mean, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    better = paired_bootstrap(a, np.minimum(a + 0.2, 1.0))
    assert better.low > 0 and better.p_value < 0.01 and better.n == 200


def test_paired_interval_matches_a_plain_loop_over_differences():
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 2, 150), rng.integers(0, 2, 150)
    (low, high), means = plain_loop_interval(b - a, 1000, seed=0)
    diff = paired_bootstrap(a, b)
    assert (diff.low, diff.high) == pytest.approx((low, high))
    expected_p = min(1.0, 2 * min(np.mean(means <= 0), np.mean(means >= 0)))
    assert diff.p_value == pytest.approx(expected_p)


def test_empty_values_are_refused():
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_interval([])


@pytest.mark.parametrize("version", ["1.1", "2.0"])
def test_question_scores_average_to_the_official_figures(version):
    examples = examples_of(SAMPLE_DATA_FILE, 300)
    if version == "1.1":
        examples = [e for e in examples if e["answers"]["text"]]
    rng = random.Random(0)
    predictions = {e["id"]: guess(e, rng, 0.5) for e in examples}
    gold = {e["id"]: e["answers"]["text"] for e in examples}
    na = {q: rng.random() - 0.5 for q in gold} if version == "2.0" else None
    kwargs = {"na_probs": na, "na_prob_thresh": 0.1} if na else {}
    official = score_predictions(gold, predictions, version=version, **kwargs)
    exact, f1 = question_scores(gold, predictions, version=version, **kwargs)
    em_key = "exact" if version == "2.0" else "exact_match"
    assert 100 * np.mean(list(exact.values())) == pytest.approx(official[em_key])
    assert 100 * np.mean(list(f1.values())) == pytest.approx(official["f1"])
    saved = metric_intervals({em_key: exact, "f1": f1}, samples=500, seed=0)
    assert saved["samples"] == 500 and saved[em_key][0] <= official[em_key] <= saved[em_key][1]
