"""The callbacks configs (one file per callback, an always-on core) and the evaluation files."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from lightning import Trainer
from omegaconf import open_dict

from qa_lightning.data.datamodule import SquadDataModule
from qa_lightning.hub import load_tokenizer
from qa_lightning.model.module import QALightningModule
from qa_lightning.paths import SAMPLE_DATA_FILE, config_dir
from qa_lightning.report.questions import read_records
from qa_lightning.training.callbacks.answerability import TuneAnswerability
from qa_lightning.training.callbacks.eval_outputs import EvalOutputs
from qa_lightning.training.callbacks.finite_loss import FiniteLossGuard
from qa_lightning.training.callbacks.rng_state import RNGStateCheckpoint
from qa_lightning.training.callbacks.run_report import RunReportCallback
from qa_lightning.training.run import evaluate_splits
from qa_lightning.utils.instantiators import instantiate_list

CORE = {"finite_loss", "rng_state", "eval_outputs", "answerability", "run_report"}


def callbacks_of(overrides: list[str], name: str = "train"):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(name, overrides=overrides)
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.output_dir = "/tmp/qa-out"
    return cfg.callbacks


def test_every_callback_has_its_file_and_the_core_stays_on():
    default = callbacks_of([])
    assert set(default) == CORE | {
        "model_checkpoint",
        "last_checkpoint",
        "step_checkpoint",
        "lr_monitor",
        "progress_bar",
        "model_summary",
        "sample_answers",
        "curves",
    }
    assert next(iter(default)) == "model_checkpoint"  # trainer.checkpoint_callback: the best
    for name in default:
        assert set(callbacks_of([f"callbacks={name}"])) == CORE | {name}
    assert set(callbacks_of(["callbacks=none"])) == CORE
    assert set(callbacks_of(["callbacks=[curves,lr_monitor]"])) == CORE | {"curves", "lr_monitor"}
    assert "finite_loss" not in callbacks_of(["~callbacks/core"])
    evaluation = callbacks_of(["ckpt_path=x.ckpt"], name="eval")
    assert set(evaluation) == {"eval_outputs", "answerability", "run_report"}
    assert evaluation.answerability.tune is False  # qa-lightning-eval refits only on request
    assert callbacks_of(
        ["ckpt_path=x.ckpt", "tune_answerability=true"], name="eval"
    ).answerability.tune
    kinds = {type(cb) for cb in instantiate_list(callbacks_of(["callbacks=none"]), "callback")}
    assert kinds == {
        FiniteLossGuard,
        RNGStateCheckpoint,
        EvalOutputs,
        TuneAnswerability,
        RunReportCallback,
    }


@pytest.fixture()
def sample_data(tiny_bert) -> SquadDataModule:
    files = {f"{split}_file": str(SAMPLE_DATA_FILE) for split in ("train", "validation", "test")}
    return SquadDataModule(
        tokenizer=load_tokenizer(str(tiny_bert)),
        dataset=None,
        **files,
        max_train_examples=16,
        max_eval_examples=12,
        max_length=128,
        doc_stride=48,
        batch_size=8,
        use_cache=False,
    )


def test_eval_outputs_hold_the_final_evaluation_of_each_split(tiny_bert, sample_data, tmp_path):
    out = tmp_path / "run"
    module = QALightningModule(str(tiny_bert))
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=1,
        num_sanity_val_steps=1,
        callbacks=[EvalOutputs(out)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=sample_data)
    assert module.evaluations["validation"].split == "validation"
    assert not out.exists()  # the sanity check and fit's validation epochs write nothing

    results = evaluate_splits(trainer, module, sample_data, None)
    assert set(results) == {"validation", "test"}
    for split, prefix in (("validation", ""), ("test", "test_")):
        evaluation = module.evaluations[split]
        assert not evaluation.partial and evaluation.na_probs  # the sample is SQuAD v2.0
        metrics = json.loads((out / f"{prefix}metrics.json").read_text())
        intervals = metrics.pop("bootstrap")
        assert metrics == pytest.approx(results[split])
        for key in ("exact", "f1"):
            low, high = intervals[key]
            assert low <= metrics[key] <= high
        records = read_records(out / f"{prefix}questions.jsonl")
        assert [r["id"] for r in records] == list(evaluation.predictions)
        assert 100 * sum(r["f1"] for r in records) / len(records) == pytest.approx(metrics["f1"])
        assert all(r["windows"] >= 1 and r["context_tokens"] > 0 for r in records)
        assert results[split] == evaluation.metrics
        predictions = json.loads((out / f"{prefix}predictions.json").read_text())
        assert predictions == evaluation.predictions
        assert json.loads((out / f"{prefix}null_odds.json").read_text()) == pytest.approx(
            evaluation.na_probs
        )
