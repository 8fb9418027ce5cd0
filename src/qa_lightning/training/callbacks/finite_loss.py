"""``FiniteLossGuard``: stop at the first NaN or infinite training loss, before its update."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from qa_lightning.errors import QALightningError


class NonFiniteLossError(QALightningError, FloatingPointError):
    """The training loss became NaN or infinite."""


class FiniteLossGuard(Callback):
    """Stop at the first NaN or infinite training loss, naming the global step.

    Checked before the backward pass, so the optimizer never steps on it and no checkpoint is
    written from it: the newest checkpoint stays the last good one. Under DDP every process stops
    together. Gradient overflow under fp16 mixed precision does not reach this check (the loss is
    finite; the precision plugin's gradient scaler skips that step and lowers its scale).
    """

    def on_before_backward(
        self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor
    ) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):
            return
        epoch_loop = trainer.fit_loop.epoch_loop
        where = (
            f"global step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}, batch {epoch_loop.batch_idx})"
        )
        value = (
            float(loss.detach().float().flatten()[0])
            if bad
            else "finite here, not on another process"
        )
        raise NonFiniteLossError(
            f"the training loss is {value} at {where}: training stopped before this step's "
            f"update, so no weights or checkpoints come from it. {_last_good(trainer)} Lower the "
            "learning rate, check the data, or use precision=32-true / bf16-mixed."
        )


def _last_good(trainer: Trainer) -> str:
    paths = {
        Path(p)
        for cb in trainer.checkpoint_callbacks
        if isinstance(cb, ModelCheckpoint)
        for p in (cb.last_model_path, cb.best_model_path)
        if p
    }
    existing = [p for p in paths if p.is_file()]
    if not existing:
        return "No checkpoint was written yet."
    newest = max(existing, key=lambda p: p.stat().st_mtime_ns)
    return f"The newest good checkpoint is {newest}."
