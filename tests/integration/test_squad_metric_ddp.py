"""SquadMetric in two gloo processes equals one process (spawned ranks, DistributedSampler padding)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from helpers.eval_data import SQUAD_FILES, EvalData, load_eval_data
from helpers.metric_ddp import WORLD_SIZE, ddp_worker, evaluate


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
