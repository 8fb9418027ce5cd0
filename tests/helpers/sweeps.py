"""Sweep test helpers: a callback that fails one rank, readers of a sweep's rank records."""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class FailOnRank(Callback):
    """Raise on rank ``rank`` only (``-1``: never), at training batch ``at_batch``."""

    def __init__(self, rank: int, at_batch: int = 1) -> None:
        self.rank, self.at_batch = rank, at_batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and batch_idx == self.at_batch:
            raise ValueError(f"injected failure on rank {self.rank}")


def rank_records(job_dir: Path) -> dict[int, dict]:
    """``ranks/rank<r>.json`` of one job, by rank."""
    records = [json.loads(p.read_text()) for p in (job_dir / "ranks").glob("rank*.json")]
    return {record["rank"]: record for record in records}


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
