"""``TrainingCurves``: per-epoch losses and scores, plotted to a PNG as training goes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only

from qa_lightning.utils.io import atomic_write


class TrainingCurves(Callback):
    """Record train loss, val loss, EM and F1 per epoch; plot them to ``path`` (PNG) as training goes."""

    TRAIN_KEYS = ("train/loss_epoch", "train/loss", "train/start_acc_epoch", "train/end_acc_epoch")
    VAL_KEYS = ("val/loss", "val/exact_match", "val/f1")

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.history: list[dict[str, float]] = []

    def _record(self, trainer: Trainer, keys: tuple[str, ...]) -> None:
        metrics = trainer.callback_metrics
        row = next((r for r in self.history if r["epoch"] == trainer.current_epoch), None)
        if row is None:
            row = {"epoch": trainer.current_epoch}
            self.history.append(row)
        for key in keys:
            if key in metrics:
                row[key] = float(metrics[key])

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._record(trainer, self.TRAIN_KEYS)
        self._plot(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._record(trainer, self.VAL_KEYS)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))

    @rank_zero_only
    def _plot(self, trainer: Trainer) -> None:
        if self.history:
            plot_curves(self.history, self.path)


def plot_curves(history: list[dict[str, float]], path: Path) -> Path:
    """Two panels: losses, and EM/F1, per epoch (1-based on the x axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train/loss_epoch", "train loss"), ("val/loss", "val loss")):
        points = [(r["epoch"] + 1, r[key]) for r in history if key in r]
        if points:
            loss_ax.plot(*zip(*points, strict=True), marker="o", label=label)
    for key, label in (("val/exact_match", "EM"), ("val/f1", "F1")):
        points = [(r["epoch"] + 1, r[key]) for r in history if key in r]
        if points:
            score_ax.plot(*zip(*points, strict=True), marker="o", label=label)
    for ax, title in ((loss_ax, "loss"), (score_ax, "validation EM / F1")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return path
