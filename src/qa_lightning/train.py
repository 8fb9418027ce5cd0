"""Train, then evaluate the best checkpoint: ``python -m qa_lightning [overrides]``.

The run directory (``outputs/<task>/runs/<time>/``) receives the resolved config, ``checkpoints/``
(best by ``val/f1`` and ``last.ckpt``), ``metrics.json``, ``predictions.json``, ``null_odds.json``
(v2.0), ``hf_model/`` and ``curves.png``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from qa_lightning.errors import QALightningError
from qa_lightning.outputs import write_eval_outputs
from qa_lightning.paths import config_dir
from qa_lightning.reliability import (
    ensure_writable,
    remove_stale_temp_files,
    replace_directory,
    resume_checkpoint,
)
from qa_lightning.runtime import guard_multirun_job, log_hyperparameters
from qa_lightning.utils.malloc import keep_freed_memory

log = logging.getLogger(__name__)


def instantiate_list(section: DictConfig | None, kind: str) -> list[Any]:
    """Instantiate every ``_target_`` entry of a config section (callbacks or loggers)."""
    items = []
    for name, conf in (section or {}).items():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            log.info("Instantiating %s <%s>", kind, conf._target_)
            items.append(hydra.utils.instantiate(conf))
        elif conf is not None:
            raise ValueError(f"{kind} {name!r} has no _target_: {conf}")
    return items


def apply_total_batch_size(cfg: DictConfig, trainer: L.Trainer, datamodule: Any) -> None:
    """Split ``total_batch_size`` over devices x nodes x gradient accumulation."""
    total = cfg.get("total_batch_size")
    if not total:
        return
    shards = trainer.world_size * trainer.accumulate_grad_batches
    if total % shards:
        raise ValueError(
            f"total_batch_size={total} is not divisible by devices x nodes x accumulate_grad_batches = {shards}"
        )
    datamodule.batch_size = total // shards
    log.info(
        "Per-device batch size %d (total %d over %d shards)", datamodule.batch_size, total, shards
    )


def build(cfg: DictConfig) -> tuple[Any, Any, L.Trainer]:
    """Datamodule, model and trainer from the composed config."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    callbacks: list[Callback] = instantiate_list(cfg.get("callbacks"), "callback")
    loggers: list[Logger] = instantiate_list(cfg.get("logger"), "logger")
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    apply_total_batch_size(cfg, trainer, datamodule)
    return datamodule, model, trainer


def evaluate_splits(
    trainer: L.Trainer, model: Any, datamodule: Any, ckpt_path: str | None, output_dir: Path
) -> dict[str, dict[str, float]]:
    """Evaluate on validation (and test, when the data has it); rank 0 writes the output files."""
    results: dict[str, dict[str, float]] = {}
    for split, run in (("validation", trainer.validate), ("test", trainer.test)):
        if not datamodule.has_split(split):
            continue
        run(model, datamodule=datamodule, ckpt_path=ckpt_path)
        results[split] = dict(model.last_metrics)
        if trainer.is_global_zero:
            write_eval_outputs(
                output_dir, split, model.last_metrics, model.last_predictions, model.last_na_probs
            )
        ckpt_path = None  # the weights are loaded now
    return results


def best_checkpoint(trainer: L.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
        return callback.best_model_path
    return None


def check_required(cfg: DictConfig) -> None:
    """Fail before any work when a required (``???``) value was not given."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise QALightningError(
            f"missing required config values: {', '.join(missing)}; set them as overrides, e.g. {missing[0]}=..."
        )


def checkpoint_dir(trainer: L.Trainer, output_dir: Path) -> Path:
    """Where the checkpoints go: the first ``ModelCheckpoint``'s directory, else ``checkpoints/``."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath:
        return Path(callback.dirpath)
    return output_dir / "checkpoints"


def run(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """The whole job; returns the final metrics per evaluated split."""
    check_required(cfg)
    if cfg.get("keep_freed_memory", True):
        keep_freed_memory()
    output_dir = Path(cfg.paths.output_dir)
    if rank_zero_only.rank == 0:
        ensure_writable(output_dir)
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
        results = evaluate_splits(trainer, model, datamodule, ckpt, output_dir)
    if cfg.get("save_hf_model", True) and trainer.is_global_zero and not trainer.fast_dev_run:
        replace_directory(
            output_dir / "hf_model",
            lambda tmp: model.save_hf_model(tmp, tokenizer=datamodule.tokenizer),
        )
    for split, metrics in results.items():
        log.info(
            "%s: %s",
            split,
            OmegaConf.to_yaml(OmegaConf.create(metrics)).strip().replace("\n", ", "),
        )
    return results


def optimized_value(cfg: DictConfig, results: dict[str, dict[str, float]]) -> float | None:
    """The value a sweeper maximises, e.g. ``val/f1`` -> the validation ``f1``."""
    name = cfg.get("optimized_metric")
    if not name or "validation" not in results:
        return None
    key = name.split("/", 1)[-1]
    value = results["validation"].get(
        key, results["validation"].get("exact" if key == "exact_match" else key)
    )
    return float(value) if value is not None else math.nan


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Entry point of ``python -m qa_lightning`` and the ``qa-lightning`` console script."""
    with guard_multirun_job(cfg) as outcome:
        outcome.value = optimized_value(cfg, run(cfg))
    return outcome.value


if __name__ == "__main__":
    main()
