"""SquadMetric: streaming decoding plus official scores, in one process and under DDP (gloo)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from torchmetrics.utilities import dim_zero_cat

from helpers.eval_data import (
    SQUAD_FILES,
    EvalData,
    load_eval_data,
    random_batches,
    reference_outputs,
)
from helpers.metric_ddp import metric_inputs
from qa_lightning.decoding import mask_padding
from qa_lightning.errors import IncompleteEvaluationError
from qa_lightning.metrics.squad_eval import (
    compute_exact,
    compute_f1,
    exact_match_score,
    f1_score,
    normalize_answer,
    score_predictions,
)
from qa_lightning.metrics.squad_metric import SquadMetric


def run_metric(
    data: EvalData, batches: list, version_2: bool, **kwargs: Any
) -> tuple[dict, SquadMetric]:
    metric = SquadMetric(version_2=version_2, **kwargs)
    metric.set_examples(data.ids, data.contexts, data.answers)
    for batch in batches:
        metric.update(*metric_inputs(batch))
    return metric.compute(), metric


@pytest.mark.parametrize("name", SQUAD_FILES)
def test_scores_equal_reference_decoding_scored_officially(shared_data: Path, name: str) -> None:
    file, version_2 = SQUAD_FILES[name]
    data = load_eval_data(shared_data / "squad" / file, 600, 96, 32)
    batches = random_batches(data.features, batch_size=40, seed=7)
    predictions, diffs, _ = reference_outputs(data, batches, version_2_with_negative=version_2)
    gold = dict(zip(data.ids, data.answers, strict=True))
    if version_2:
        expected = score_predictions(
            gold, predictions, version="2.0", na_probs=diffs, na_prob_thresh=0.0
        )
        assert "best_f1_thresh" in expected and expected["NoAns_total"] > 0
    else:
        expected = score_predictions(gold, predictions, version="1.1")
    result, metric = run_metric(data, batches, version_2)
    assert result == expected
    assert metric.predictions == predictions
    assert metric.na_probs == diffs

    metric.reset()
    for batch in batches:
        metric.update(*metric_inputs(batch))
    assert metric.compute() == result


def _official_per_question(
    golds: list[str], prediction: str, version_2: bool
) -> tuple[float, float]:
    """One question's EM and F1 as the official script of the version computes them."""
    if version_2:
        kept = [g for g in golds if normalize_answer(g)] or [""]
        return max(compute_exact(g, prediction) for g in kept), max(
            compute_f1(g, prediction) for g in kept
        )
    return max(exact_match_score(prediction, g) for g in golds), max(
        f1_score(prediction, g) for g in golds
    )


@pytest.mark.parametrize("name", SQUAD_FILES)
def test_questions_without_features_are_an_error_or_unscored_when_partial(
    shared_data: Path, name: str
) -> None:
    """A question without a prediction is never scored: an error naming the counts, or with
    ``partial`` (Lightning ran some of the batches) figures over the predicted questions alone."""
    file, version_2 = SQUAD_FILES[name]
    data = load_eval_data(shared_data / "squad" / file, 400, 96, 32)
    kept = [f for f in data.features if f["example_index"] % 3]
    batches = random_batches(kept, batch_size=40, seed=2)
    predicted = len({f["example_index"] for f in kept})
    with pytest.raises(IncompleteEvaluationError, match=f"cover {predicted} of the 400 evaluated"):
        run_metric(data, batches, version_2)

    result, metric = run_metric(data, batches, version_2, partial=True)
    assert len(metric.predictions) == predicted < len(data.ids)
    per_question = {
        qid: _official_per_question(golds, metric.predictions[qid], version_2)
        for qid, golds in zip(data.ids, data.answers, strict=True)
        if qid in metric.predictions
    }
    gold = dict(zip(data.ids, data.answers, strict=True))
    groups = {"": list(per_question)}
    if version_2:
        groups["HasAns_"] = [q for q in per_question if gold[q]]
        groups["NoAns_"] = [q for q in per_question if not gold[q]]
    exact_key = "exact" if version_2 else "exact_match"
    for prefix, qids in groups.items():
        exact = 100 * sum(per_question[q][0] for q in qids) / len(qids)
        f1 = 100 * sum(per_question[q][1] for q in qids) / len(qids)
        assert result[prefix + exact_key] == pytest.approx(exact, rel=1e-9)
        assert result[prefix + "f1"] == pytest.approx(f1, rel=1e-9)
        if version_2:
            assert result[prefix + "total"] == len(qids)


def test_features_of_other_examples_are_an_error(shared_data: Path) -> None:
    """Features whose example rows lie beyond the evaluated examples (served for a larger set)."""
    data = load_eval_data(shared_data / "squad" / "dev-v1.1.json.gz", 120, 96, 32)
    batches = random_batches(data.features, batch_size=40, seed=3)
    fewer = EvalData(data.ids[:100], data.contexts[:100], data.answers[:100], data.features)
    with pytest.raises(IncompleteEvaluationError, match="example row 119, but 100 questions"):
        run_metric(fewer, batches, version_2=False)


def test_compute_needs_examples_and_updates() -> None:
    before_update = pytest.warns(UserWarning, match="before the ``update``")
    with pytest.raises(RuntimeError, match="set_examples"), before_update:
        SquadMetric().compute()
    metric = SquadMetric()
    metric.set_examples(["q"], ["ctx"], [["ctx"]])
    with pytest.raises(RuntimeError, match="update"), before_update:
        metric.compute()
    with pytest.raises(ValueError, match="same length"):
        metric.set_examples(["q"], [], [])


def test_padding_masked_by_the_metric_or_the_caller_and_reset_drops_pending_rows(
    shared_data: Path,
) -> None:
    """``update(..., attention_mask=...)`` scores as masked logits do; batches still waiting in
    the decoder are part of the states once ``sync`` ran, and ``reset`` drops them."""
    data = load_eval_data(shared_data / "squad" / "dev-v2.0.json.gz", 300, 96, 32)
    batches = random_batches(data.features, batch_size=24, seed=9)
    masked = [
        batch
        | {
            name: mask_padding(batch[name], batch["attention_mask"])
            for name in ("start_logits", "end_logits")
        }
        for batch in batches
    ]
    expected, _ = run_metric(data, masked, version_2=True)

    metric = SquadMetric(version_2=True)
    metric.set_examples(data.ids, data.contexts, data.answers)
    for batch in batches[:5]:  # 120 features: fewer than a chunk, all still in the decoder
        metric.update(*metric_inputs(batch), attention_mask=batch["attention_mask"])
    metric.sync()
    assert len(dim_zero_cat(metric.feature_index)) == 120
    metric.reset()
    for batch in batches:
        metric.update(*metric_inputs(batch), attention_mask=batch["attention_mask"])
    assert metric.compute() == expected
    assert len(dim_zero_cat(metric.feature_index)) == len(data.features)


# --- DDP -----------------------------------------------------------------------------------------
