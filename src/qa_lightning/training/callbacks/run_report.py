"""``RunReport``: ``report.html`` after each final evaluation, and the same figures and tables in
the W&B / TensorBoard loggers of the run."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.trainer.states import TrainerFn

from qa_lightning.report.html import record_excerpt
from qa_lightning.report.run_report import REPORT_FILE, RunReport, build
from qa_lightning.utils.io import atomic_write

log = logging.getLogger(__name__)
PREDICTION_ROWS = 200  # rows of the W&B predictions table (errors first)


class RunReportCallback(Callback):
    """After ``trainer.validate`` / ``trainer.test`` (not the epochs of ``fit``), build the report
    of ``output_dir`` from its files (``EvalOutputs`` writes them first, so it comes after it)
    and hand its images and tables to the W&B and TensorBoard loggers. Rank 0 only; a failure
    to report is logged, never raised (the evaluation files are already written)."""

    def __init__(self, output_dir: str | Path, log_to_loggers: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.log_to_loggers = log_to_loggers

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._report(trainer, "validation")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._report(trainer, "test")

    def _report(self, trainer: Trainer, split: str) -> None:
        if trainer.sanity_checking or trainer.state.fn == TrainerFn.FITTING:
            return
        if not trainer.is_global_zero:
            return
        try:
            report = build(self.output_dir, split)
            name = REPORT_FILE if split == "validation" else f"{split}_{REPORT_FILE}"
            path = self.output_dir / name
            atomic_write(path, lambda tmp: tmp.write_text(report.html, encoding="utf-8"))
            log.info("Run report: %s", path)
        except Exception as err:  # a report must not fail a finished evaluation
            log.error("Could not write the run report: %s: %s", type(err).__name__, err)
            return
        if self.log_to_loggers:
            prefix = "report" if split == "validation" else f"{split}_report"
            log_report(trainer.loggers, report, prefix, trainer.global_step)


def log_report(loggers: Sequence[Logger], report: RunReport, prefix: str, step: int) -> None:
    """The report's images and tables to every W&B and TensorBoard logger among ``loggers``."""
    for logger in loggers:
        try:
            if isinstance(logger, WandbLogger):
                _to_wandb(logger, report, prefix, step)
            elif isinstance(logger, TensorBoardLogger):
                _to_tensorboard(logger, report, prefix, step)
        except Exception as err:  # offline, disabled or broken logger: the files are the record
            log.warning("Could not log the report to %s: %s", type(logger).__name__, err)


def _image_array(png: bytes) -> Any:
    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(png), format="png")


def _markdown(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        text = f"{value:.2f}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def _to_tensorboard(logger: TensorBoardLogger, report: RunReport, prefix: str, step: int) -> None:
    writer = logger.experiment
    for name, png in report.images.items():
        writer.add_image(f"{prefix}/{name}", _image_array(png), step, dataformats="HWC")
    for name, (headers, rows) in report.tables.items():
        writer.add_text(f"{prefix}/{name}", _markdown(headers, rows), step)
    writer.flush()


def _to_wandb(logger: WandbLogger, report: RunReport, prefix: str, step: int) -> None:
    import wandb

    for name, png in report.images.items():
        logger.log_image(key=f"{prefix}/{name}", images=[_image_array(png)], step=step)
    for name, (headers, rows) in report.tables.items():
        data = [
            [v if isinstance(v, (int, float, str)) or v is None else str(v) for v in row]
            for row in rows
        ]
        logger.log_table(key=f"{prefix}/{name}", columns=list(headers), data=data, step=step)
    records = sorted(report.predictions, key=lambda r: r["f1"])[:PREDICTION_ROWS]
    if records:
        columns = ["id", "question", "prediction", "gold", "exact", "f1", "context"]
        data = [
            [
                r["id"],
                r["question"],
                r["prediction"],
                " | ".join(r["answers"]["text"]),
                r["exact"],
                r["f1"],
                wandb.Html(
                    f"<style>mark.pred{{background:#ffd6d6}}mark.gold{{background:#cdeccd}}mark.both{{background:#bfe0ff}}</style>{record_excerpt(r)}"
                ),
            ]
            for r in records
        ]
        logger.log_table(key=f"{prefix}/predictions", columns=columns, data=data, step=step)
