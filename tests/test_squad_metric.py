"""SquadMetric: streaming decoding plus official scores, in one process and under DDP (gloo)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

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
from test_decoding import SQUAD_FILES, EvalData, load_eval_data, random_batches, reference_outputs

WORLD_SIZE = 2


def metric_inputs(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    keys = ("start_logits", "end_logits", "offset_mapping", "cls_index", "example_index")
    return (*(batch[key] for key in keys), batch["feature_index"])


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


# --- DDP -----------------------------------------------------------------------------------------


def collate_with_logits(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Pad each feature's own logits with -1e4 and offsets with -1: results cannot depend on batching."""
    length = max(len(f["offset_mapping"]) for f in features)
    batch = {
        "offset_mapping": torch.full((len(features), length, 2), -1, dtype=torch.long),
        "start_logits": torch.full((len(features), length), -1e4),
        "end_logits": torch.full((len(features), length), -1e4),
    }
    for i, feature in enumerate(features):
        n = len(feature["offset_mapping"])
        batch["offset_mapping"][i, :n] = torch.tensor(feature["offset_mapping"])
        batch["start_logits"][i, :n] = feature["start_logits"]
        batch["end_logits"][i, :n] = feature["end_logits"]
    for key in ("cls_index", "example_index", "feature_index"):
        batch[key] = torch.tensor([f[key] for f in features])
    return batch


def evaluate(case: dict[str, Any], sampler: DistributedSampler | None = None) -> dict[str, Any]:
    loader = DataLoader(
        case["features"], batch_size=8, sampler=sampler, collate_fn=collate_with_logits
    )
    metric = SquadMetric(version_2=case["version_2"])
    metric.set_examples(case["ids"], case["contexts"], case["answers"])
    seen = []
    for batch in loader:
        metric.update(*metric_inputs(batch))
        seen += batch["feature_index"].tolist()
    scores = metric.compute()
    return {
        "scores": scores,
        "predictions": metric.predictions,
        "na_probs": metric.na_probs,
        "seen": seen,
    }


def ddp_worker(rank: int, init_file: str, data_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        cases = torch.load(data_file, weights_only=False)
        results = {
            name: evaluate(
                case, DistributedSampler(case["features"], WORLD_SIZE, rank, shuffle=False)
            )
            for name, case in cases.items()
        }
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def ddp_case(data: EvalData, version_2: bool, seed: int) -> dict[str, Any]:
    """Features with their own random logits, an odd number of them (the sampler must pad)."""
    generator = torch.Generator().manual_seed(seed)
    features = [
        f
        | {
            "start_logits": torch.randn(len(f["offset_mapping"]), generator=generator),
            "end_logits": torch.randn(len(f["offset_mapping"]), generator=generator),
        }
        for f in data.features
    ]
    features = features[: len(features) - 1 + len(features) % 2]
    return {
        "features": features,
        "ids": data.ids,
        "contexts": data.contexts,
        "answers": data.answers,
        "version_2": version_2,
    }


def test_ddp_two_processes_equal_single_process(shared_data: Path, tmp_path: Path) -> None:
    cases = {
        name: ddp_case(
            load_eval_data(shared_data / "squad" / file, 250, 96, 32), version_2, seed=11
        )
        for name, (file, version_2) in SQUAD_FILES.items()
    }
    data_file = tmp_path / "cases.pt"
    torch.save(cases, data_file)
    torch.multiprocessing.spawn(
        ddp_worker,
        args=(str(tmp_path / "init"), str(data_file), str(tmp_path)),
        nprocs=WORLD_SIZE,
        join=True,
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]
    for name, case in cases.items():
        expected = evaluate(case)
        num_features = len(case["features"])
        assert num_features % WORLD_SIZE == 1
        seen = [index for result in ranks for index in result[name]["seen"]]
        assert len(seen) == num_features + 1 and len(set(seen)) == num_features  # one duplicate
        examples_of_rank = [
            {case["features"][i]["example_index"] for i in result[name]["seen"]} for result in ranks
        ]
        assert examples_of_rank[0] & examples_of_rank[1]  # examples split across the processes
        for result in ranks:
            assert result[name]["scores"] == expected["scores"]
            assert result[name]["predictions"] == expected["predictions"]
            assert result[name]["na_probs"] == expected["na_probs"]
