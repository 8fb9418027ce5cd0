"""Run-level plumbing: hyperparameter logging without secrets, multirun fault isolation, sweep summary."""

from __future__ import annotations

import json
import logging
import os
import re
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback as HydraCallback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from qa_lightning.utils.io import atomic_write_json

log = logging.getLogger(__name__)

SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|passwd)", re.IGNORECASE)
# environment variables holding secrets: WANDB_API_KEY, HF_TOKEN, AWS_SECRET_ACCESS_KEY, ...
SECRET_ENV = re.compile(r"(api_?key|access_?key|token|secret|password|passwd)$", re.IGNORECASE)
MIN_SECRET_LENGTH = 8
REDACTED = "<redacted>"
FAILURE_FILE = "failure.json"


def secret_env_values(environ: Mapping[str, str] | None = None) -> set[str]:
    """Values of the environment variables whose names mark them as secrets."""
    environ = os.environ if environ is None else environ
    return {
        value
        for name, value in environ.items()
        if SECRET_ENV.search(name) and len(value) >= MIN_SECRET_LENGTH
    }


def redact(obj: Any, secrets: set[str] | None = None) -> Any:
    """A copy of a plain config with values of secret-looking keys replaced, and any string
    holding the value of a secret environment variable (e.g. via ``${oc.env:...}``) too."""
    secrets = secret_env_values() if secrets is None else secrets
    if isinstance(obj, dict):
        return {
            k: REDACTED if SECRET_KEY.search(str(k)) else redact(v, secrets) for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [redact(v, secrets) for v in obj]
    if isinstance(obj, str) and any(secret in obj for secret in secrets):
        return REDACTED
    return obj


def log_hyperparameters(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Send the resolved config (secrets redacted) to every logger."""
    params = redact(OmegaConf.to_container(cfg, resolve=True))
    for logger in trainer.loggers:
        logger.log_hyperparams(params)


def _is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@dataclass
class JobOutcome:
    value: float | None = None


@contextmanager
def guard_multirun_job(cfg: DictConfig) -> Iterator[JobOutcome]:
    """In a multirun, a failing job is recorded in ``failure.json`` and the sweep goes on.

    A single run re-raises as usual. The failed job reports NaN to the sweeper.
    """
    outcome = JobOutcome()
    try:
        yield outcome
    except Exception as err:
        if not _is_multirun():
            raise
        output_dir = Path(cfg.paths.output_dir)
        log.error("Job %s failed: %s: %s", output_dir, type(err).__name__, err)
        atomic_write_json(
            output_dir / FAILURE_FILE,
            {
                "overrides": list(HydraConfig.get().overrides.task),
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc(),
            },
        )
        outcome.value = float("nan")


class SweepSummary(HydraCallback):
    """After a multirun, write ``sweep_summary.json`` naming each job, its status and its error."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = []
        for job_dir in sorted(
            (p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()),
            key=lambda p: int(p.name),
        ):
            overrides_file = job_dir / ".hydra" / "overrides.yaml"
            overrides = (
                OmegaConf.to_container(OmegaConf.load(overrides_file))
                if overrides_file.exists()
                else []
            )
            failure = job_dir / FAILURE_FILE
            metrics = job_dir / "metrics.json"
            if failure.exists():
                error = json.loads(failure.read_text())["error"]
                jobs.append(
                    {
                        "job": job_dir.name,
                        "overrides": overrides,
                        "status": "failed",
                        "error": error,
                    }
                )
            else:
                figures = json.loads(metrics.read_text()) if metrics.exists() else None
                jobs.append(
                    {
                        "job": job_dir.name,
                        "overrides": overrides,
                        "status": "ok",
                        "metrics": figures,
                    }
                )
        atomic_write_json(sweep_dir / "sweep_summary.json", jobs)
        failed = [j for j in jobs if j["status"] == "failed"]
        log.info("Sweep finished: %d jobs, %d failed", len(jobs), len(failed))
        for job in failed:
            log.error(
                "  job %s (%s) failed: %s", job["job"], " ".join(job["overrides"]), job["error"]
            )
