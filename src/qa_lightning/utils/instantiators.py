"""Hydra instantiation of config sections that hold several objects (callbacks, loggers)."""

from __future__ import annotations

import logging
from typing import Any

import hydra
from omegaconf import DictConfig

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
