"""Evaluate a checkpoint or an ``hf_model/`` directory: ``qa-lightning-eval ckpt_path=...``.

Writes the same files as training: ``metrics.json``, ``predictions.json``, ``null_odds.json`` (v2.0),
and ``test_*`` counterparts when the data has a test split (``evaluate_test=false`` skips it).
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig

from qa_lightning.cli.task import task_wrapper
from qa_lightning.inference.loading import load_module, tokenizer_for
from qa_lightning.paths import config_dir
from qa_lightning.training.hparams import log_hyperparameters
from qa_lightning.training.run import evaluate_splits
from qa_lightning.utils.instantiators import instantiate_list

log = logging.getLogger(__name__)


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """Load the model of ``cfg.ckpt_path`` and score it on the configured data."""
    L.seed_everything(cfg.seed, workers=True)
    module = load_module(cfg.ckpt_path)
    tokenizer = tokenizer_for(cfg.ckpt_path, module)
    no_test = {} if cfg.get("evaluate_test", True) else {"test_split": None, "test_file": None}
    datamodule = hydra.utils.instantiate(cfg.data, tokenizer=tokenizer, **no_test)
    trainer = hydra.utils.instantiate(
        cfg.trainer, logger=instantiate_list(cfg.get("logger"), "logger") or False
    )
    log_hyperparameters(trainer, cfg)
    results = evaluate_splits(trainer, module, datamodule, None, Path(cfg.paths.output_dir))
    for split, metrics in results.items():
        log.info("%s: %s", split, metrics)
    return results


run = task_wrapper(evaluate_checkpoint)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")
def main(cfg: DictConfig) -> None:
    """Entry point of ``python -m qa_lightning.cli.evaluate`` and ``qa-lightning-eval``."""
    run(cfg)


if __name__ == "__main__":
    main()
