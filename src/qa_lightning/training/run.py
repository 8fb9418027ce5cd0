"""The recipes: train (datamodule, model and trainer from a config; fit; evaluate; save) and
evaluate a checkpoint.

``cli/train.py`` wraps :func:`train_and_evaluate` and ``cli/evaluate.py`` wraps
:func:`evaluate_checkpoint` in the shared task wrapper. The evaluation files are written by the
``EvalOutputs`` callback (``conf/callbacks/core``), not here.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from qa_lightning.data.datamodule import SquadDataModule
from qa_lightning.inference.loading import load_module, tokenizer_for
from qa_lightning.model.module import QALightningModule
from qa_lightning.training.hparams import log_hyperparameters
from qa_lightning.training.resume import resume_checkpoint
from qa_lightning.utils.instantiators import instantiate_list
from qa_lightning.utils.io import remove_stale_temp_files, replace_directory

log = logging.getLogger(__name__)


def apply_total_batch_size(
    cfg: DictConfig, trainer: L.Trainer, datamodule: SquadDataModule
) -> None:
    """Split ``total_batch_size`` over devices x nodes x gradient accumulation."""
    total = cfg.get("total_batch_size")
    if not total:
        return
    shards = trainer.world_size * trainer.accumulate_grad_batches
    if total % shards:
        raise ValueError(
            f"total_batch_size={total} is not divisible by devices x nodes x "
            f"accumulate_grad_batches = {shards}"
        )
    datamodule.batch_size = total // shards
    log.info(
        "Per-device batch size %d (total %d over %d shards)", datamodule.batch_size, total, shards
    )


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The trainer of ``cfg.trainer`` with the callbacks of ``cfg.callbacks`` and the loggers."""
    callbacks: list[Callback] = instantiate_list(cfg.get("callbacks"), "callback")
    loggers: list[Logger] = instantiate_list(cfg.get("logger"), "logger")
    return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def build(cfg: DictConfig) -> tuple[SquadDataModule, QALightningModule, L.Trainer]:
    """Datamodule, model and trainer from the composed config."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    trainer = build_trainer(cfg)
    apply_total_batch_size(cfg, trainer, datamodule)
    return datamodule, model, trainer


def evaluate_splits(
    trainer: L.Trainer,
    model: QALightningModule,
    datamodule: SquadDataModule,
    ckpt_path: str | None,
) -> dict[str, dict[str, float]]:
    """Evaluate on validation (and test, when the data has it); the figures per split."""
    results: dict[str, dict[str, float]] = {}
    for split, run in (("validation", trainer.validate), ("test", trainer.test)):
        if not datamodule.has_split(split):
            continue
        run(model, datamodule=datamodule, ckpt_path=ckpt_path)
        results[split] = dict(model.evaluations[split].metrics)
        ckpt_path = None  # the weights are loaded now
    return results


def log_results(results: dict[str, dict[str, float]]) -> None:
    """One line of figures per evaluated split."""
    for split, metrics in results.items():
        log.info(
            "%s: %s",
            split,
            OmegaConf.to_yaml(OmegaConf.create(metrics)).strip().replace("\n", ", "),
        )


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """The best checkpoint the first ``ModelCheckpoint`` kept, if any."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
        return callback.best_model_path
    return None


def checkpoint_dir(trainer: L.Trainer, output_dir: Path) -> Path:
    """Where the checkpoints go: the first ``ModelCheckpoint``'s directory, else ``checkpoints/``."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath:
        return Path(callback.dirpath)
    return output_dir / "checkpoints"


def train_and_evaluate(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """The whole training job; returns the final metrics per evaluated split."""
    output_dir = Path(cfg.paths.output_dir)
    datamodule, model, trainer = build(cfg)
    log_hyperparameters(trainer, cfg)
    if cfg.get("train", True):
        checkpoints = checkpoint_dir(trainer, output_dir)
        if trainer.is_global_zero:
            remove_stale_temp_files(checkpoints)
        ckpt_path = resume_checkpoint(
            cfg.get("ckpt_path"), bool(cfg.get("auto_resume", False)), checkpoints
        )
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        if trainer.interrupted:
            log.warning(
                "Training was interrupted; resume with ckpt_path=last and hydra.run.dir=%s",
                output_dir,
            )
            return {}
    results: dict[str, dict[str, float]] = {}
    if cfg.get("evaluate", True) and not trainer.fast_dev_run:
        ckpt = best_checkpoint(trainer) if cfg.get("train", True) else cfg.get("ckpt_path")
        log.info("Evaluating %s", ckpt or "the current weights")
        results = evaluate_splits(trainer, model, datamodule, ckpt)
    if cfg.get("save_hf_model", True) and trainer.is_global_zero and not trainer.fast_dev_run:
        replace_directory(
            output_dir / "hf_model",
            lambda tmp: model.save_hf_model(tmp, tokenizer=datamodule.tokenizer),
        )
    log_results(results)
    return results


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """Load the model of ``cfg.ckpt_path`` (``.ckpt`` or ``hf_model/``) and score it on the
    configured data: validation, and test unless ``evaluate_test=false``."""
    L.seed_everything(cfg.seed, workers=True)
    module = load_module(cfg.ckpt_path)
    tokenizer = tokenizer_for(cfg.ckpt_path, module)
    no_test = {} if cfg.get("evaluate_test", True) else {"test_split": None, "test_file": None}
    datamodule = hydra.utils.instantiate(cfg.data, tokenizer=tokenizer, **no_test)
    trainer = build_trainer(cfg)
    log_hyperparameters(trainer, cfg)
    results = evaluate_splits(trainer, module, datamodule, None)
    log_results(results)
    return results


def optimized_value(cfg: DictConfig, results: dict[str, dict[str, float]] | None) -> float | None:
    """The value a sweeper maximises, e.g. ``val/f1`` -> the validation ``f1``; NaN for a failed job."""
    if results is None:
        return math.nan
    name = cfg.get("optimized_metric")
    if not name or "validation" not in results:
        return None
    key = name.split("/", 1)[-1]
    value = results["validation"].get(
        key, results["validation"].get("exact" if key == "exact_match" else key)
    )
    return float(value) if value is not None else math.nan
