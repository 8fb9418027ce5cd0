"""Multirun plumbing: a failing job is recorded and the sweep goes on; ``sweep_summary.json``."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback as HydraCallback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from qa_lightning.training.launcher import recorded_wandb_run
from qa_lightning.utils.io import atomic_write_json

log = logging.getLogger(__name__)

FAILURE_FILE = "failure.json"


def _is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@dataclass
class JobOutcome:
    value: Any = None


@contextmanager
def guard_multirun_job(cfg: DictConfig) -> Iterator[JobOutcome]:
    """In a multirun, a failing job is recorded in ``failure.json`` and the sweep goes on.

    A single run re-raises as usual. The failed job's outcome stays ``None``.
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
                        "wandb_run": recorded_wandb_run(job_dir),
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
                        "wandb_run": recorded_wandb_run(job_dir),
                    }
                )
        atomic_write_json(sweep_dir / "sweep_summary.json", jobs)
        failed = [j for j in jobs if j["status"] == "failed"]
        log.info("Sweep finished: %d jobs, %d failed", len(jobs), len(failed))
        for job in failed:
            log.error(
                "  job %s (%s) failed: %s", job["job"], " ".join(job["overrides"]), job["error"]
            )
