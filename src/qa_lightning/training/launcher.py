"""DDP under a Hydra multirun: every child rank runs its parent's current job, in single-run mode.

Lightning's script launcher starts ranks 1..N-1 with the parent's own command line
(``_hydra_subprocess_cmd`` appends ``sys.argv[1:]``): under ``--multirun`` each child starts a sweep
of its own (Lightning #11300, #2727; Hydra #2070), which an Optuna sampler walks differently on
every rank. This module is the one place that changes it:

- ``SweepDDPStrategy`` (``conf/trainer/ddp*.yaml``) is Lightning's ``DDPStrategy`` with
  ``JobScriptLauncher``, which in a multirun starts each child with the current job's overrides,
  its directory, its sweep directory and ``hydra.mode=RUN`` (outside a multirun: Lightning's
  command). A failing child does not kill the sweep process (Lightning's observer would).
- ``sweep_job`` (the task wrapper, around every sweep job) writes ``ranks/rank<r>.json`` (rank,
  pid, Hydra mode, hash of the resolved config); in a child it records the rank's error in
  ``ranks/failure_rank<r>.json``; in the sweep process it ends the job's process group, waits for
  (then kills) its children, restores the DDP environment variables, finishes the job's W&B run
  and raises :class:`RankFailed` naming the first failing rank, so that a job that fails on one
  rank fails on all and the next job starts cleanly.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_original_cwd, to_absolute_path
from lightning.fabric.utilities.distributed import _set_num_threads_if_needed
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from qa_lightning.errors import QALightningError
from qa_lightning.utils.io import atomic_write_json
from qa_lightning.utils.resolvers import SWEEP_CHILD_ENV, in_sweep_job

log = logging.getLogger(__name__)

DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# Hydra's own flags that choose the config; everything else of the parent's argv is the sweep
CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
CHILD_EXIT_S = float(os.environ.get("QA_LIGHTNING_CHILD_EXIT_S", "120"))
_children: list[subprocess.Popen] = []  # this job's child ranks (sweep process only)


class RankFailed(QALightningError):
    """A job failed on one of its ranks; all its ranks stop and the sweep goes on."""


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def is_sweep_child() -> bool:
    """Whether this process is a child rank started by ``JobScriptLauncher`` for a sweep job."""
    return in_sweep_job() and not in_multirun()


def config_flags(argv: list[str]) -> list[str]:
    """The parent's config-choosing flags (``-cp dir``, ``--config-name=x``), nothing else."""
    kept, take_next = [], False
    for arg in argv:
        if take_next:
            kept.append(arg)
            take_next = False
        elif arg in CONFIG_FLAGS:
            kept.append(arg)
            take_next = True
        elif arg.split("=", 1)[0] in CONFIG_FLAGS:
            kept.append(arg)
    return kept


def job_command(local_rank: int) -> tuple[list[str], str]:
    """The command and working directory of child ``local_rank`` for the current sweep job."""
    import __main__  # as Lightning does (lightning#15218): not at import time

    hydra_cfg = HydraConfig.get()
    if __main__.__spec__ is not None and __main__.__spec__.name.startswith("submitit"):
        raise QALightningError(
            "a submitit job cannot start its own DDP ranks: set hydra.launcher.tasks_per_node "
            "to trainer.devices so that SLURM starts one task per rank (hydra/launcher=slurm)"
        )
    if __main__.__spec__ is None:
        command = [sys.executable, to_absolute_path(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    command += config_flags(sys.argv[1:])
    command += list(hydra_cfg.overrides.task)
    command += [
        f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
        f'hydra.sweep.dir="{hydra_cfg.sweep.dir}"',
        "hydra.mode=RUN",
        "hydra.output_subdir=null",
        f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}",
    ]
    return command, get_original_cwd()


class JobScriptLauncher(_SubprocessScriptLauncher):
    """Lightning's script launcher; in a multirun, children run the current job (``job_command``)."""

    def launch(self, function: Any, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        if not in_multirun() or self.cluster_environment.creates_processes_externally:
            return super().launch(function, *args, trainer=trainer, **kwargs)
        self.cluster_environment.validate_settings(
            num_devices=self.num_processes, num_nodes=self.num_nodes
        )
        self._start_job_children()
        _set_num_threads_if_needed(num_processes=self.num_processes)  # as Lightning does
        return function(*args, **kwargs)

    def _start_job_children(self) -> None:
        self._check_can_spawn_children()
        env = self.cluster_environment
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        os.environ["NODE_RANK"] = str(env.node_rank())
        os.environ["LOCAL_RANK"] = str(env.local_rank())
        os.environ["WORLD_SIZE"] = str(self.num_processes * self.num_nodes)
        for local_rank in range(1, self.num_processes):
            command, cwd = job_command(local_rank)
            child_env = {**os.environ, "LOCAL_RANK": str(local_rank), SWEEP_CHILD_ENV: "1"}
            proc = subprocess.Popen(command, env=child_env, cwd=cwd)
            log.info("Started rank %d of this job (pid %d)", local_rank, proc.pid)
            self.procs.append(proc)
            track_child(proc)
        _watch(list(self.procs))


class SweepDDPStrategy(DDPStrategy):
    """``DDPStrategy`` whose script launcher keeps child ranks on the current sweep job."""

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, _SubprocessScriptLauncher):
            assert self.cluster_environment is not None
            self._launcher = JobScriptLauncher(
                self.cluster_environment, self.num_processes, self.num_nodes
            )


def track_child(proc: subprocess.Popen) -> None:
    """Count ``proc`` as a child rank of the current job (ended by :func:`sweep_job`)."""
    _children.append(proc)


def _watch(procs: list[subprocess.Popen]) -> None:
    """Log a child that exits with an error; unlike Lightning's observer, never kill the sweep.

    A gloo collective fails on its own when a peer exits; an NCCL one is aborted here.
    """

    def watch() -> None:
        while True:
            codes = [p.poll() for p in procs]
            failed = [code for code in codes if code not in (None, 0)]
            if failed:
                log.error("A rank of this job exited with code %d", failed[0])
                if dist.is_initialized() and dist.get_backend() == "nccl":
                    dist.distributed_c10d._abort_process_group()
                return
            if None not in codes:
                return
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True, name="sweep-job-ranks").start()


def config_hash(cfg: DictConfig) -> str:
    """SHA-256 of the resolved task config (what every rank of a job must agree on)."""
    text = OmegaConf.to_yaml(cfg, resolve=True, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def rank_record(cfg: DictConfig, rank: int) -> dict[str, Any]:
    wandb = (cfg.get("logger") or {}).get("wandb")
    return {
        "rank": rank,
        "pid": os.getpid(),
        "hydra_mode": HydraConfig.get().mode.name if HydraConfig.initialized() else None,
        "config_sha256": config_hash(cfg),
        "argv": sys.argv,
        "wandb_run": wandb.get("name") if wandb else None,
    }


def recorded_wandb_run(job_dir: Path) -> str | None:
    """The W&B run name rank 0 of a sweep job recorded (``ranks/rank0.json``), if any."""
    record = job_dir / "ranks" / "rank0.json"
    if not record.is_file():
        return None
    return OmegaConf.load(record).get("wandb_run")


def _finish_children(failed: bool) -> list[int]:
    """End this job's process group and child ranks; the return codes of the children."""
    if failed and dist.is_initialized():
        dist.destroy_process_group()  # a child blocked in a collective now errors out
    deadline = time.monotonic() + CHILD_EXIT_S
    codes = []
    for proc in _children:
        try:
            codes.append(proc.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            log.error("Rank pid %d did not exit within %.0f s; killing it", proc.pid, CHILD_EXIT_S)
            proc.kill()
            codes.append(proc.wait())
    _children.clear()
    if dist.is_initialized():
        dist.destroy_process_group()
    return codes


def _finish_wandb_run(failed: bool) -> None:
    """Close the job's W&B run: else the next job's ``WandbLogger`` logs into it."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


def first_failure(ranks_dir: Path, rank0: dict[str, Any] | None) -> dict[str, Any] | None:
    """The earliest recorded rank failure of a job (rank 0's included)."""
    failures = [rank0] if rank0 else []
    for path in ranks_dir.glob("failure_rank*.json"):
        failures.append(OmegaConf.to_container(OmegaConf.load(path)))
    return min(failures, key=lambda f: f["time"]) if failures else None


def _failure(rank: int, err: BaseException) -> dict[str, Any]:
    return {
        "rank": rank,
        "time": time.time(),
        "error": f"{type(err).__name__}: {err}",
        "traceback": traceback.format_exc(),
    }


@contextmanager
def sweep_job(cfg: DictConfig) -> Iterator[None]:
    """Around one job on every rank: the rank record, failure reporting, clean job ends."""
    child = is_sweep_child()
    if not (child or in_multirun()):
        failed = True
        try:
            yield
            failed = False
        finally:  # a single run's W&B run ends with it: the next run in this process gets its own
            _finish_wandb_run(failed)
        return
    rank = rank_zero_only.rank
    ranks_dir = Path(cfg.paths.output_dir) / "ranks"
    atomic_write_json(ranks_dir / f"rank{rank}.json", rank_record(cfg, rank))
    if child:
        try:
            yield
        except BaseException as err:
            atomic_write_json(ranks_dir / f"failure_rank{rank}.json", _failure(rank, err))
            raise
        return
    saved = {key: os.environ.get(key) for key in DDP_ENV}
    rank0_failure, error = None, None
    try:
        yield
    except Exception as err:
        rank0_failure, error = _failure(rank, err), err
    finally:
        codes = _finish_children(failed=error is not None)
        _finish_wandb_run(failed=error is not None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if error is None and not any(codes):
        return
    first = first_failure(ranks_dir, rank0_failure)
    if first is None:  # a child died without a word (killed, out of memory)
        raise RankFailed(f"a rank of this job exited with codes {codes}") from error
    raise RankFailed(f"rank {first['rank']} failed: {first['error']}") from error
