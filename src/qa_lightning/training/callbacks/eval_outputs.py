"""``EvalOutputs``: the official-format files of each final evaluation, written by rank 0."""

from __future__ import annotations

from pathlib import Path

from lightning import Callback, Trainer
from lightning.pytorch.trainer.states import TrainerFn

from qa_lightning.model.module import QALightningModule
from qa_lightning.training.outputs import write_eval_outputs


class EvalOutputs(Callback):
    """Write ``metrics.json``, ``predictions.json`` and ``null_odds.json`` (v2.0) into
    ``output_dir`` after ``trainer.validate``, and their ``test_*`` counterparts after
    ``trainer.test``, from the module's published :class:`~qa_lightning.model.module.Evaluation`.

    The validation epochs of ``trainer.fit`` (and the sanity check) write nothing: the files hold
    the final evaluation. Under DDP only rank 0 writes (every rank holds the gathered results).
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)

    def on_validation_end(self, trainer: Trainer, pl_module: QALightningModule) -> None:
        self._write(trainer, pl_module, "validation")

    def on_test_end(self, trainer: Trainer, pl_module: QALightningModule) -> None:
        self._write(trainer, pl_module, "test")

    def _write(self, trainer: Trainer, pl_module: QALightningModule, split: str) -> None:
        if trainer.sanity_checking or trainer.state.fn == TrainerFn.FITTING:
            return
        evaluation = pl_module.evaluations.get(split)
        if evaluation is None or not trainer.is_global_zero:
            return
        write_eval_outputs(
            self.output_dir,
            evaluation.split,
            evaluation.metrics,
            evaluation.predictions,
            evaluation.na_probs,
        )
