"""``SampleAnswers``: a few seeded questions with predicted and gold answers after each validation."""

from __future__ import annotations

import logging
import random

from lightning import Callback, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from qa_lightning.model.module import EvalData, QALightningModule

log = logging.getLogger(__name__)


class SampleAnswers(Callback):
    """After each validation epoch, show a few questions with the predicted and gold answers.

    Printed to the log; also a W&B table when a ``WandbLogger`` is attached. The same seeded
    questions every epoch, so one can watch the answers improve. The predictions are the module's
    published validation :class:`~qa_lightning.model.module.Evaluation`; the questions and gold
    answers come from the datamodule's examples.
    """

    def __init__(self, num_samples: int = 3, seed: int = 0, max_context_chars: int = 160) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.max_context_chars = max_context_chars

    @rank_zero_only
    def on_validation_end(self, trainer: Trainer, pl_module: QALightningModule) -> None:
        evaluation = pl_module.evaluations.get("validation")
        data: EvalData | None = trainer.datamodule
        if trainer.sanity_checking or evaluation is None or data is None:
            return
        predictions = evaluation.predictions
        if not predictions:
            return
        examples = data.examples("validation")
        rng = random.Random(self.seed)
        rows = [
            examples[i]
            for i in sorted(rng.sample(range(len(examples)), min(self.num_samples, len(examples))))
        ]
        table = [
            (
                ex["id"],
                ex["question"],
                predictions.get(ex["id"], ""),
                " | ".join(ex["answers"]["text"]) or "<no answer>",
            )
            for ex in rows
        ]
        lines = [f"Sample answers after epoch {trainer.current_epoch}:"]
        for qid, question, predicted, gold in table:
            lines.append(
                f"  [{qid}] Q: {question}\n      predicted: {predicted or '<no answer>'!s}\n      gold: {gold}"
            )
        log.info("\n".join(lines))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(
                    key="val/samples",
                    columns=["id", "question", "predicted", "gold"],
                    data=[list(row) for row in table],
                    step=trainer.global_step,
                )
