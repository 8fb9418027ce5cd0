"""Sweeps with DDP (``trainer=ddp_sim``, 2 gloo processes per job), as a user launches them.

Every rank writes ``ranks/rank<r>.json`` (rank, pid, Hydra mode, argv, hash of its resolved
config) in its job directory; the tests read those records, the sweep summary and the logs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import TESTS_DIR
from helpers.app import file_run_overrides, v1_train_val
from helpers.sweeps import job_dirs, rank_records

SWEEP_NAME = "sweep-7f3a"  # the W&B group of the basic sweep
OFFLINE = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}


@pytest.fixture(scope="module")
def files(tmp_path_factory, shared_data) -> dict[str, Path]:
    return v1_train_val(shared_data, tmp_path_factory.mktemp("squad"), 32, 16)


def common(model: Path, files: dict[str, Path], cache: Path) -> list[str]:
    return [
        *file_run_overrides(model, files, cache, batch=4),
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
        "trainer.max_epochs=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.deterministic=true",
    ]


def run_app(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``python -m qa_lightning args`` in a subprocess; it must succeed."""
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    cmd = [sys.executable, "-m", "qa_lightning", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    return proc


def summary_of(sweep: Path) -> list[dict]:
    return json.loads((sweep / "sweep_summary.json").read_text())


def assert_each_rank_ran_its_job(
    proc: subprocess.CompletedProcess, sweep: Path, jobs: int, launches: int
) -> None:
    """One sweep (``launches`` batches, all from the parent); every job on 2 ranks with one
    config hash; rank 1 a fresh single-run process per job: jobs x (ranks - 1) processes."""
    log = proc.stdout + proc.stderr
    assert log.count("[HYDRA] Launching") == launches, "a child rank launched a sweep"
    assert log.count("Started rank 1 of this job") == jobs
    records = [rank_records(job) for job in job_dirs(sweep)]
    assert len(records) == jobs
    sweep_pids = {r[0]["pid"] for r in records}
    child_pids = {r[1]["pid"] for r in records}
    assert len(sweep_pids) == 1 and len(child_pids) == jobs * (2 - 1)
    assert not sweep_pids & child_pids
    for ranks in records:
        assert set(ranks) == {0, 1}
        assert ranks[0]["config_sha256"] == ranks[1]["config_sha256"]
        assert ranks[0]["hydra_mode"] == "MULTIRUN" and ranks[1]["hydra_mode"] == "RUN"
        assert not {"-m", "--multirun"} & set(ranks[1]["argv"])
        assert not any("," in arg and "=" in arg for arg in ranks[1]["argv"][1:]), "a sweep arg"
    assert len({r[0]["config_sha256"] for r in records}) == jobs  # the jobs differ


def assert_equal_to_single_runs(sweep: Path, cwd: Path, **env: str) -> None:
    """Each job's metrics equal those of its overrides run alone with ``trainer=ddp_sim``."""
    for job in summary_of(sweep):
        assert "trainer=ddp_sim" in job["overrides"]
        alone = cwd / f"alone-{job['job']}"
        run_app([*job["overrides"], "hydra.mode=RUN", f"hydra.run.dir={alone}"], cwd, **env)
        assert json.loads((alone / "metrics.json").read_text()) == job["metrics"], job


@pytest.fixture(scope="module")
def basic_sweep(tiny_bert, files, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """``--multirun model.optimizer.lr=1e-4,2e-4 trainer=ddp_sim logger=wandb`` (W&B offline)."""
    root = tmp_path_factory.mktemp("basic")
    sweep = root / SWEEP_NAME
    args = [
        "--multirun",
        "model.optimizer.lr=1e-4,2e-4",
        "trainer=ddp_sim",
        "logger=wandb",
        *common(tiny_bert, files, root / "cache"),
        f"hydra.sweep.dir={sweep}",
    ]
    proc = run_app(args, root, **OFFLINE, WANDB_DIR=str(root))
    return proc, sweep


def test_basic_ddp_sweep_each_rank_runs_its_job(basic_sweep):
    proc, sweep = basic_sweep
    assert_each_rank_ran_its_job(proc, sweep, jobs=2, launches=1)
    assert [job["status"] for job in summary_of(sweep)] == ["ok", "ok"]


def test_wandb_offline_sweep_runs_share_one_group(basic_sweep):
    """One offline W&B run per job (rank 0 only), all in the group named after the sweep
    directory, each with its own name (listed in the summary) and its overrides as config."""
    _, sweep = basic_sweep
    summary = summary_of(sweep)
    names = [job["wandb_run"] for job in summary]
    assert names == [f"train-minilm-files-{job['job']}" for job in summary]
    for job, job_dir in zip(summary, job_dirs(sweep), strict=True):
        runs = list(job_dir.glob("wandb/offline-run-*"))
        assert len(runs) == 1, f"{job_dir}: one W&B run (rank 0 only), got {runs}"
        (record,) = runs[0].glob("*.wandb")
        data = record.read_bytes()  # the offline run's records: group, name, config
        assert SWEEP_NAME.encode() in data and job["wandb_run"].encode() in data
        assert job["overrides"][0].encode() in data  # model.optimizer.lr=... in its config


@pytest.mark.slow
def test_basic_sweep_jobs_equal_single_ddp_runs(basic_sweep, tmp_path):
    _, sweep = basic_sweep
    assert_equal_to_single_runs(sweep, tmp_path, **OFFLINE, WANDB_DIR=str(tmp_path))


@pytest.mark.slow
def test_optuna_ddp_sweep_each_rank_runs_its_trial(tiny_bert, files, tmp_path):
    """3 Optuna trials over lr, batch size and warmup: both ranks of a trial share its sampled
    values (one config hash), and each trial equals its overrides run alone."""
    sweep = tmp_path / "optuna"
    args = [
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.n_startup_trials=2",
        "trainer=ddp_sim",
        *(a for a in common(tiny_bert, files, tmp_path / "cache") if "batch_size" not in a),
        f"hydra.sweep.dir={sweep}",
    ]
    proc = run_app(args, tmp_path)
    assert_each_rank_ran_its_job(proc, sweep, jobs=3, launches=3)
    summary = summary_of(sweep)
    batch_sizes = {o for job in summary for o in job["overrides"] if o.startswith("data.batch_")}
    assert len(batch_sizes) > 1, summary  # the sampled batch size changes between trials
    assert all(job["status"] == "ok" for job in summary)
    assert_equal_to_single_runs(sweep, tmp_path)


@pytest.mark.slow
def test_a_job_failing_on_rank_1_fails_on_all_ranks_and_the_sweep_goes_on(
    tiny_bert, files, tmp_path
):
    sweep = tmp_path / "sweep"
    args = [
        "--multirun",
        "+callbacks.fail._target_=helpers.sweeps.FailOnRank",
        "+callbacks.fail.rank=1,-1",  # job 0 raises on rank 1 only; job 1 never
        "trainer=ddp_sim",
        *common(tiny_bert, files, tmp_path / "cache"),
        f"hydra.sweep.dir={sweep}",
    ]
    start = time.monotonic()
    run_app(args, tmp_path)
    failed, ok = summary_of(sweep)
    assert failed["status"] == "failed"
    assert failed["error"] == "RankFailed: rank 1 failed: ValueError: injected failure on rank 1"
    assert ok["status"] == "ok" and "f1" in ok["metrics"]
    first, second = job_dirs(sweep)
    failed_at = json.loads((first / "ranks" / "failure_rank1.json").read_text())["time"]
    next_started = (second / "ranks" / "rank0.json").stat().st_mtime
    assert next_started - failed_at < 60, "the next job started within a minute of the failure"
    assert time.monotonic() - start < 600
    assert not list(second.glob("ranks/failure_rank*.json"))


@pytest.mark.slow
def test_submitit_local_sweep_runs_to_completion(tiny_bert, files, tmp_path):
    """``hydra/launcher=submitit_local``: each job in its own submitit process, results in the
    sweep summary."""
    sweep = tmp_path / "sweep"
    args = [
        "--multirun",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=15",
        "model.optimizer.lr=1e-4,2e-4",
        "trainer=cpu",
        *common(tiny_bert, files, tmp_path / "cache"),
        f"hydra.sweep.dir={sweep}",
    ]
    run_app(args, tmp_path)
    summary = summary_of(sweep)
    assert [job["status"] for job in summary] == ["ok", "ok"]
    assert all("f1" in job["metrics"] for job in summary)
    assert any((sweep / ".submitit").iterdir())
    pids = {rank_records(job)[0]["pid"] for job in job_dirs(sweep)}
    assert len(pids) == 2 and os.getpid() not in pids  # two submitit processes
