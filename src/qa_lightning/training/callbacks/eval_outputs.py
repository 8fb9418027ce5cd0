"""``EvalOutputs``: the files of each final evaluation, written by rank 0."""

from __future__ import annotations

from pathlib import Path

from lightning import Callback, Trainer
from lightning.pytorch.trainer.states import TrainerFn

from qa_lightning.metrics.bootstrap import SAMPLES, SEED, metric_intervals
from qa_lightning.metrics.squad_eval import question_scores
from qa_lightning.model.module import Evaluation, QALightningModule
from qa_lightning.report.questions import build_records, features_by_example, write_records
from qa_lightning.training.outputs import write_eval_outputs


class EvalOutputs(Callback):
    """Write ``metrics.json`` (official figures and their bootstrap intervals),
    ``predictions.json``, ``null_odds.json`` (v2.0) and the per-question records
    ``questions.jsonl`` (+ ``questions.meta.json``, what ``report.html`` reads) into
    ``output_dir`` after ``trainer.validate``, and their ``test_*`` counterparts after
    ``trainer.test``, from the module's published :class:`~qa_lightning.model.module.Evaluation`.

    The validation epochs of ``trainer.fit`` (and the sanity check) write nothing: the files hold
    the final evaluation. Under DDP only rank 0 writes (every rank holds the gathered results).
    ``bootstrap_samples=0`` leaves the intervals out.
    """

    def __init__(
        self, output_dir: str | Path, bootstrap_samples: int = SAMPLES, seed: int = SEED
    ) -> None:
        self.output_dir = Path(output_dir)
        self.bootstrap_samples = bootstrap_samples
        self.seed = seed

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
        version = "2.0" if pl_module.version_2 else "1.1"
        exact, f1 = question_scores(
            evaluation.gold_answers,
            evaluation.predictions,
            version=version,
            na_probs=evaluation.na_probs if version == "2.0" else None,
            na_prob_thresh=pl_module.hparams.null_score_diff_threshold if version == "2.0" else 1.0,
        )
        intervals = None
        if self.bootstrap_samples and exact:
            intervals = metric_intervals(
                {"exact_match" if version == "1.1" else "exact": exact, "f1": f1},
                self.bootstrap_samples,
                self.seed,
            )
        write_eval_outputs(
            self.output_dir,
            evaluation.split,
            evaluation.metrics,
            evaluation.predictions,
            evaluation.na_probs,
            intervals,
        )
        self._write_records(trainer, evaluation, version, exact, f1)

    def _write_records(
        self, trainer: Trainer, evaluation: Evaluation, version: str, exact: dict, f1: dict
    ) -> None:
        data = trainer.datamodule
        if data is None or not hasattr(data, "examples"):
            return
        examples = data.examples(evaluation.split)
        windows = None
        meta = {"split": evaluation.split, "version": version, "partial": evaluation.partial}
        if hasattr(data, "features"):
            features = data.features(evaluation.split)
            lengths = [len(ids) for ids in features["input_ids"]]
            windows = features_by_example(
                features["example_index"], features["offset_mapping"], lengths
            )
            meta["max_length"] = getattr(data, "max_length", None)
        rows = [
            {"id": i, "question": q, "context": c, "answers": a}
            for i, q, c, a in zip(
                examples["id"],
                examples["question"],
                examples["context"],
                examples["answers"],
                strict=True,
            )
        ]
        records = build_records(
            rows,
            evaluation.predictions,
            exact=exact,
            f1=f1,
            spans=evaluation.spans,
            na_probs=evaluation.na_probs,
            windows=windows,
        )
        write_records(self.output_dir, evaluation.split, records, meta)
