"""``TrainingCurves``: loss and learning rate per optimizer step, losses, EM/F1 and start/end
accuracy per epoch; saved to ``curves.json`` and plotted to a PNG as training goes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only

from qa_lightning.report.figures import curves_figure
from qa_lightning.report.run_report import CURVES_FILE
from qa_lightning.utils.io import atomic_write, atomic_write_json


class TrainingCurves(Callback):
    """Record the training history; write ``curves.json`` beside ``path`` and plot ``path`` (PNG)
    at the end of each training epoch. ``report.html`` draws the same figure from the JSON."""

    TRAIN_KEYS = ("train/loss_epoch", "train/loss", "train/start_acc_epoch", "train/end_acc_epoch")
    VAL_KEYS = ("val/loss", "val/exact_match", "val/f1", "val/start_acc", "val/end_acc")

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.history: list[dict[str, float]] = []
        self.steps: list[dict[str, float]] = []

    def _record(self, trainer: Trainer, keys: tuple[str, ...]) -> None:
        metrics = trainer.callback_metrics
        row = next((r for r in self.history if r["epoch"] == trainer.current_epoch), None)
        if row is None:
            row = {"epoch": trainer.current_epoch}
            self.history.append(row)
        for key in keys:
            if key in metrics:
                row[key] = float(metrics[key])

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None or (batch_idx + 1) % trainer.accumulate_grad_batches:
            return
        step = {"step": trainer.global_step, "loss": float(loss)}
        if trainer.optimizers:
            step["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        self.steps.append(step)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._record(trainer, self.TRAIN_KEYS)
        self._plot(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._record(trainer, self.VAL_KEYS)
            self._plot(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "steps": self.steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self.steps = list(state_dict.get("steps", []))

    @rank_zero_only
    def _plot(self, trainer: Trainer) -> None:
        if self.history or self.steps:
            atomic_write_json(
                self.path.with_name(CURVES_FILE), {"epochs": self.history, "steps": self.steps}
            )
            plot_curves(self.history, self.path, self.steps)


def plot_curves(
    history: list[dict[str, float]], path: Path, steps: list[dict[str, float]] | None = None
) -> Path:
    """The report's training-curves figure as a PNG at ``path``."""
    import matplotlib.pyplot as plt

    fig = curves_figure(history, steps or [])
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return path
