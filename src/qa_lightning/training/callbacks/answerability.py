"""``TuneAnswerability``: fit the no-answer threshold and the score calibrators on validation and
report them, on every split, in ``calibration.json``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lightning import Callback, Trainer
from lightning.pytorch.trainer.states import TrainerFn

from qa_lightning.metrics.answerability import (
    DecodedSplit,
    answerability_report,
    check_objective,
    tune_answerability,
    write_answerability,
)
from qa_lightning.model.module import Evaluation, QALightningModule
from qa_lightning.training.calibration_report import write_calibration_report

log = logging.getLogger(__name__)


class TuneAnswerability(Callback):
    """After each full validation pass, tune ``pl_module.answerability`` on its decoded candidates.

    The model is never run again: the fit reads the module's published
    :class:`~qa_lightning.model.module.Evaluation` (span probabilities, no-answer score
    differences, best spans). The values go into the checkpoints saved after it
    (``on_save_checkpoint``) and into ``hf_model/answerability.json``. After the final
    ``trainer.validate`` / ``trainer.test`` (not the validation epochs of ``fit``), rank 0 writes
    ``calibration.json``, ``reliability.png`` and ``risk_coverage.png``: the test figures use the
    values tuned on validation. With ``tune=False`` (``qa-lightning-eval`` by default) nothing is
    refitted: a model's shipped values are reported as they are.

    Args:
        output_dir: the run directory.
        objective: ``"f1"`` (default), ``"exact"`` or ``"precision@P"`` (the largest threshold
            whose answered questions reach exact-match precision ``P``).
        tune: refit on validation (else report the module's own values, if any).
    """

    def __init__(self, output_dir: str | Path, objective: str = "f1", tune: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.objective = check_objective(objective)
        self.tune = tune
        self.reports: dict[str, dict[str, Any]] = {}

    def on_validation_end(self, trainer: Trainer, pl_module: QALightningModule) -> None:
        evaluation = pl_module.evaluations.get("validation")
        if trainer.sanity_checking or evaluation is None or evaluation.partial:
            return
        if self.tune:
            pl_module.answerability = tune_answerability(
                _decoded_split(trainer, evaluation, pl_module.version_2),
                version_2=pl_module.version_2,
                decoding=_decoding(trainer, pl_module),
                objective=self.objective,
            )
            figures = pl_module.answerability.validation
            log.info(
                "Answerability tuned on %d questions: threshold %.3f (F1 %.2f), ECE %.3f -> %.3f",
                figures["questions"],
                pl_module.answerability.null_threshold,
                figures["f1"],
                figures["ece_uncalibrated"],
                figures["ece_calibrated"],
            )
        if trainer.state.fn != TrainerFn.FITTING:
            self._report(trainer, pl_module, evaluation)
            if self.tune and trainer.is_global_zero and pl_module.answerability is not None:
                write_answerability(self.output_dir, pl_module.answerability)

    def on_test_end(self, trainer: Trainer, pl_module: QALightningModule) -> None:
        evaluation = pl_module.evaluations.get("test")
        if evaluation is not None and not evaluation.partial:
            self._report(trainer, pl_module, evaluation)

    def _report(
        self, trainer: Trainer, pl_module: QALightningModule, evaluation: Evaluation
    ) -> None:
        answerability = pl_module.answerability
        if answerability is None or not trainer.is_global_zero:
            return
        self.reports[evaluation.split] = answerability_report(
            answerability, _decoded_split(trainer, evaluation, answerability.version_2)
        )
        write_calibration_report(self.output_dir, self.reports, tuned_on="validation")


def _decoded_split(trainer: Trainer, evaluation: Evaluation, version_2: bool) -> DecodedSplit:
    """The evaluation's decoded candidates with the split's gold answers."""
    examples = trainer.datamodule.examples(evaluation.split)
    gold = {
        qid: list(answers["text"])
        for qid, answers in zip(examples["id"], examples["answers"], strict=True)
    }
    return DecodedSplit(
        gold,
        evaluation.span_answers or evaluation.predictions,
        evaluation.span_probs,
        evaluation.na_probs if version_2 else None,
    )


def _decoding(trainer: Trainer, pl_module: QALightningModule) -> dict[str, int]:
    datamodule = trainer.datamodule
    settings = {
        "n_best_size": pl_module.hparams.n_best_size,
        "max_answer_length": pl_module.hparams.max_answer_length,
        "max_length": getattr(datamodule, "max_length", None),
        "doc_stride": getattr(datamodule, "doc_stride", None),
    }
    return {k: int(v) for k, v in settings.items() if v is not None}
