"""``SquadMetric`` fed batch by batch, in one process or as a rank of a gloo group (spawned)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from qa_lightning.metrics.squad_metric import SquadMetric

WORLD_SIZE = 2


def metric_inputs(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    keys = ("start_logits", "end_logits", "offset_mapping", "cls_index", "example_index")
    return (*(batch[key] for key in keys), batch["feature_index"])


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
