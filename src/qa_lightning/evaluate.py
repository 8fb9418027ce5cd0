"""Evaluate a checkpoint or an ``hf_model/`` directory: ``python -m qa_lightning.evaluate ckpt_path=...``.

Writes the same files as training: ``metrics.json``, ``predictions.json``, ``null_odds.json`` (v2.0),
and ``test_*`` counterparts when the data has a test split.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig

from qa_lightning.checkpoints import load_module, tokenizer_for
from qa_lightning.paths import config_dir
from qa_lightning.train import evaluate_splits, instantiate_list
from qa_lightning.utils.malloc import keep_freed_memory

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, dict[str, float]]:
    if cfg.get("keep_freed_memory", True):
        keep_freed_memory()
    L.seed_everything(cfg.seed, workers=True)
    module = load_module(cfg.ckpt_path)
    tokenizer = tokenizer_for(cfg.ckpt_path, module)
    datamodule = hydra.utils.instantiate(cfg.data, tokenizer=tokenizer)
    if not cfg.get("evaluate_test", True):
        datamodule.hub_splits["test"] = datamodule.files["test"] = None
    trainer = hydra.utils.instantiate(
        cfg.trainer, logger=instantiate_list(cfg.get("logger"), "logger") or False
    )
    results = evaluate_splits(trainer, module, datamodule, None, Path(cfg.paths.output_dir))
    for split, metrics in results.items():
        log.info("%s: %s", split, metrics)
    return results


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")
def main(cfg: DictConfig) -> None:
    """Entry point of ``python -m qa_lightning.evaluate`` and ``qa-lightning-eval``."""
    run(cfg)


if __name__ == "__main__":
    main()
