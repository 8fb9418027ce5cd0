"""Callbacks that tests load into runs (also in subprocesses, via ``PYTHONPATH=tests``)."""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from qa_lightning.utils.io import atomic_write


class RecordTraining(Callback):
    """Write ``training.json`` (global step, last step loss, batch size, schedule length, lr)
    to ``path`` from rank 0 when training ends."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.last_loss: float | None = None
        self.batches_seen = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.last_loss = float(outputs["loss"])
        self.batches_seen += 1

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        scheduler = (
            trainer.lr_scheduler_configs[0].scheduler if trainer.lr_scheduler_configs else None
        )
        record = {
            "global_step": trainer.global_step,
            "last_loss": self.last_loss,
            "batches_seen_this_process": self.batches_seen,
            "world_size": trainer.world_size,
            "accumulate_grad_batches": trainer.accumulate_grad_batches,
            "per_device_batch_size": trainer.datamodule.batch_size,
            "train_features": len(trainer.datamodule.features("train")),
            "num_training_batches": trainer.num_training_batches,
            "estimated_stepping_batches": trainer.estimated_stepping_batches,
            "scheduler_last_epoch": getattr(scheduler, "last_epoch", None),
            "final_lr": trainer.optimizers[0].param_groups[0]["lr"],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(record, indent=2))


class SigkillDuringSave(Callback):
    """SIGKILL this process halfway through writing its ``at_save``-th checkpoint (1-based).

    The write goes through the same temporary-file-and-rename path as a real save, so the kill
    lands between "half the bytes are on disk" and the rename.
    """

    def __init__(self, at_save: int) -> None:
        self.at_save = at_save

    def setup(self, trainer, pl_module, stage: str) -> None:
        checkpoint_io = trainer.strategy.checkpoint_io
        original = checkpoint_io.save_checkpoint
        counter = itertools.count(1)

        def save(checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
            if next(counter) == self.at_save:
                buffer = io.BytesIO()
                torch.save(checkpoint, buffer)
                data = buffer.getvalue()

                def half_then_die(tmp: Path) -> None:
                    tmp.write_bytes(data[: len(data) // 2])
                    sys.stdout.flush()
                    os.kill(os.getpid(), signal.SIGKILL)

                atomic_write(path, half_then_die)
            original(checkpoint, path, storage_options)

        checkpoint_io.save_checkpoint = save


class AuditWrites(Callback):
    """On processes other than rank 0, report every file opened for writing under ``roots``.

    Python's audit hooks see ``open``/``os.open``/``os.rename``/``os.replace``/``os.mkdir``; the
    findings are printed as one ``AUDIT-RANK<r>:`` JSON line when the process exits.
    """

    EVENTS = ("os.rename", "os.replace", "os.mkdir", "os.remove", "shutil.rmtree")

    def __init__(self, roots: list[str]) -> None:
        self.roots = [str(Path(r).resolve()) for r in roots]
        self.writes: list[str] = []
        rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
        if rank == 0:
            return
        sys.addaudithook(self._hook)
        import atexit

        atexit.register(lambda: print(f"AUDIT-RANK{rank}:" + json.dumps(self.writes), flush=True))

    def _hook(self, event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = (*args, None, None)[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            )
            if writing and isinstance(path, str | os.PathLike):
                self._note(str(path))
        elif event in self.EVENTS and args and isinstance(args[0], str | os.PathLike):
            self._note(str(args[0]))

    def _note(self, path: str) -> None:
        resolved = str(Path(path).resolve())
        if any(resolved.startswith(root) for root in self.roots):
            self.writes.append(resolved)


class SigkillAt(Callback):
    """SIGKILL this process when the hook ``hook`` runs in epoch ``epoch``."""

    def __init__(self, hook: str, epoch: int = 0) -> None:
        self.hook = hook
        self.epoch = epoch

    def _maybe_die(self, trainer, hook: str) -> None:
        if (
            hook == self.hook
            and trainer.current_epoch == self.epoch
            and not trainer.sanity_checking
        ):
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._maybe_die(trainer, "on_validation_start")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._maybe_die(trainer, "on_train_epoch_start")


class SlowSteps(Callback):
    """Sleep after every training batch (no effect on the numbers; leaves time to kill the run)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import time

        time.sleep(self.seconds)


class SigkillGroupAfterStep(Callback):
    """Rank 0 SIGKILLs its whole process group (every DDP rank) when the batch after optimizer
    step ``step`` starts: the checkpoints of step ``step`` are complete on disk by then."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and trainer.is_global_zero:
            sys.stdout.flush()
            os.killpg(os.getpgrp(), signal.SIGKILL)
