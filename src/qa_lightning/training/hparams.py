"""The resolved config and the job's overrides, secrets redacted, sent to every logger."""

from __future__ import annotations

import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from qa_lightning.utils.secrets import redact


def log_hyperparameters(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Send the resolved config (secrets redacted) to every logger."""
    params = redact(OmegaConf.to_container(cfg, resolve=True))
    if HydraConfig.initialized():  # a sweep's runs differ by these: shown in W&B's run config
        params["overrides"] = redact(list(HydraConfig.get().overrides.task))
    for logger in trainer.loggers:
        logger.log_hyperparams(params)
