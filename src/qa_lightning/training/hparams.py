"""The resolved config, secrets redacted, sent to every logger."""

from __future__ import annotations

import lightning as L
from omegaconf import DictConfig, OmegaConf

from qa_lightning.utils.secrets import redact


def log_hyperparameters(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Send the resolved config (secrets redacted) to every logger."""
    params = redact(OmegaConf.to_container(cfg, resolve=True))
    for logger in trainer.loggers:
        logger.log_hyperparams(params)
