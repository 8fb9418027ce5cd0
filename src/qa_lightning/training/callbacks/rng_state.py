"""``RNGStateCheckpoint``: the random generators' states saved in checkpoints, restored on resume."""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lightning import Callback, LightningModule, Trainer

log = logging.getLogger(__name__)


class RNGStateCheckpoint(Callback):
    """Save the Python, NumPy and torch (CPU and CUDA) random states; restore them on resume.

    Restored when training starts (after the data iterators exist), so dropout continues exactly
    as in an uninterrupted run. The state is plain values and tensors (``weights_only``-loadable).
    Under DDP every rank's own states are gathered into the checkpoint (``{"ranks": [...]}``)
    and each rank restores its own: the ranks' generators drift apart (dropout draws as many
    numbers as its batch has elements), so rank 0's state would not do for the others.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        state = self._local_state()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, state)  # every rank saves (dump_checkpoint)
            return {"ranks": gathered}
        return state

    @staticmethod
    def _local_state() -> dict[str, Any]:
        np_state = np.random.get_state()
        state: dict[str, Any] = {
            "python": random.getstate(),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        state, self._pending = self._pending, None
        if not state:
            return
        if "ranks" in state:
            ranks = state["ranks"]
            if len(ranks) != trainer.world_size:
                log.warning(
                    "The checkpoint holds the random states of %d processes, this run has %d: "
                    "each rank restores rank 0's, so dropout will not repeat the interrupted run",
                    len(ranks),
                    trainer.world_size,
                )
            state = ranks[trainer.global_rank] if len(ranks) == trainer.world_size else ranks[0]
        python = state["python"]
        random.setstate((python[0], tuple(python[1]), python[2]))
        kind, keys, *rest = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        log.info("Restored the random generators' states from the checkpoint")
