"""Sweep jobs under DDP (``training/launcher.py``): the child command, rank records, failures,
the W&B group/run resolvers and the SLURM launcher config, without starting a distributed run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import submitit
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from qa_lightning.paths import config_dir
from qa_lightning.training.launcher import (
    JobScriptLauncher,
    RankFailed,
    SweepDDPStrategy,
    config_flags,
    config_hash,
    job_command,
    sweep_job,
    track_child,
)
from qa_lightning.training.sweep import SweepSummary
from qa_lightning.utils.resolvers import SWEEP_CHILD_ENV, launcher_value, sweep_group, sweep_run


def hydra_job(tmp_path: Path, overrides: list[str], mode: RunMode, job: str = "3"):
    """Compose ``train`` as Hydra would for job ``job`` of a sweep in ``tmp_path/sweep``; the task
    config (``hydra`` removed) with HydraConfig set."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    sweep = tmp_path / "sweep"
    with open_dict(cfg):
        cfg.hydra.mode = mode
        cfg.hydra.sweep.dir = str(sweep)
        cfg.hydra.runtime.output_dir = str(sweep / job)
        cfg.hydra.runtime.cwd = str(tmp_path)
        cfg.hydra.job.name = "train"
        cfg.hydra.job.num = int(job)
        cfg.hydra.overrides.task = overrides
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def test_config_flags_keep_the_config_choice_and_drop_the_sweep():
    argv = ["--multirun", "-cn", "eval", "--config-dir=/x", "lr=1e-4,2e-4", "-m", "a=1"]
    assert config_flags(argv) == ["-cn", "eval", "--config-dir=/x"]


def test_child_command_is_the_current_job_in_single_run_mode(tmp_path, monkeypatch):
    """Rank 1 gets the job's overrides (not the sweep's), the job's directory, RUN mode."""
    overrides = ["model.optimizer.lr=0.0002", "trainer=ddp_sim"]
    hydra_job(tmp_path, overrides, RunMode.MULTIRUN)
    monkeypatch.setattr(sys, "argv", ["qa", "--multirun", "model.optimizer.lr=1e-4,2e-4"])
    command, cwd = job_command(1)
    assert cwd == str(tmp_path)
    args = command[3:] if command[1] == "-m" else command[2:]
    assert args[:2] == overrides
    assert "--multirun" not in command and "model.optimizer.lr=1e-4,2e-4" not in command
    assert f'hydra.run.dir="{tmp_path / "sweep" / "3"}"' in args
    assert "hydra.mode=RUN" in args and "hydra.output_subdir=null" in args


def test_the_child_command_composes_the_parent_job_config(tmp_path):
    """Composed from the child's overrides, the task config hashes as the parent job's."""
    overrides = ["model.optimizer.lr=0.0002", "data.batch_size=4", "logger=wandb"]
    parent = config_hash(hydra_job(tmp_path, overrides, RunMode.MULTIRUN))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SWEEP_CHILD_ENV, "1")
        child = config_hash(hydra_job(tmp_path, overrides, RunMode.RUN))
    assert child == parent
    other = config_hash(hydra_job(tmp_path, [*overrides[:1], "data.batch_size=8"], RunMode.RUN))
    assert other != parent


def test_wandb_group_and_run_name_per_sweep_job(tmp_path, monkeypatch):
    cfg = hydra_job(tmp_path, ["logger=wandb"], RunMode.MULTIRUN, job="2")
    assert cfg.logger.wandb.group == sweep_group("x") == "sweep"
    assert cfg.logger.wandb.name == "train-minilm-sample-2" == sweep_run("train-minilm-sample")
    monkeypatch.setenv(SWEEP_CHILD_ENV, "1")  # a child rank (RUN mode) names it alike
    child = hydra_job(tmp_path, ["logger=wandb"], RunMode.RUN, job="2")
    assert (child.logger.wandb.group, child.logger.wandb.name) == ("sweep", cfg.logger.wandb.name)
    monkeypatch.delenv(SWEEP_CHILD_ENV)
    single = hydra_job(tmp_path, ["logger=wandb"], RunMode.RUN)
    assert (single.logger.wandb.group, single.logger.wandb.name) == (
        "minilm",
        "train-minilm-sample",
    )


def test_sweep_ddp_strategy_uses_the_job_launcher():
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=SweepDDPStrategy(), logger=False)
    assert isinstance(trainer.strategy.launcher, JobScriptLauncher)


def child(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code])


def test_a_job_failing_on_rank_1_fails_on_rank_0_naming_rank_1(tmp_path, monkeypatch):
    """Rank 1 wrote its error and exited 1 while rank 0 went on: the job fails, naming rank 1's
    error; the DDP variables of the job are gone for the next one."""
    cfg = hydra_job(tmp_path, ["trainer=ddp_sim"], RunMode.MULTIRUN)
    ranks = Path(cfg.paths.output_dir) / "ranks"
    monkeypatch.delenv("MASTER_PORT", raising=False)
    failure = {"rank": 1, "time": 0.0, "error": "ValueError: boom", "traceback": ""}
    with pytest.raises(RankFailed, match="rank 1 failed: ValueError: boom"), sweep_job(cfg):
        os.environ["MASTER_PORT"] = "29999"  # as the launcher sets it
        ranks.mkdir(parents=True, exist_ok=True)
        (ranks / "failure_rank1.json").write_text(json.dumps(failure))
        track_child(child("raise SystemExit(1)"))
    assert "MASTER_PORT" not in os.environ
    record = json.loads((ranks / "rank0.json").read_text())
    assert record["rank"] == 0 and record["hydra_mode"] == "MULTIRUN"
    assert record["config_sha256"] == config_hash(cfg)


def test_rank_0_failing_first_is_the_reported_error(tmp_path):
    cfg = hydra_job(tmp_path, ["trainer=ddp_sim"], RunMode.MULTIRUN)
    ranks = Path(cfg.paths.output_dir) / "ranks"
    later = {"rank": 1, "time": 4e9, "error": "RuntimeError: Connection closed by peer"}
    with pytest.raises(RankFailed, match="rank 0 failed: KeyError"), sweep_job(cfg):
        ranks.mkdir(parents=True, exist_ok=True)
        (ranks / "failure_rank1.json").write_text(json.dumps(later))
        track_child(child("raise SystemExit(1)"))
        raise KeyError("first")


def test_a_child_that_dies_silently_fails_the_job(tmp_path):
    cfg = hydra_job(tmp_path, ["trainer=ddp_sim"], RunMode.MULTIRUN)
    with pytest.raises(RankFailed, match=r"exited with codes \[9\]"), sweep_job(cfg):
        track_child(child("raise SystemExit(9)"))
    with sweep_job(cfg):  # the next job starts clean: no child of the last one is counted
        pass


def test_a_child_rank_records_its_error_and_fails(tmp_path, monkeypatch):
    monkeypatch.setenv(SWEEP_CHILD_ENV, "1")
    cfg = hydra_job(tmp_path, ["trainer=ddp_sim"], RunMode.RUN)
    with pytest.raises(ValueError, match="boom"), sweep_job(cfg):
        raise ValueError("boom")
    ranks = Path(cfg.paths.output_dir) / "ranks"
    rank = json.loads((ranks / "rank0.json").read_text())  # LOCAL_RANK unset here: rank 0
    assert rank["hydra_mode"] == "RUN"
    assert json.loads((ranks / "failure_rank0.json").read_text())["error"] == "ValueError: boom"


def test_sweep_summary_names_each_job_wandb_run(tmp_path):
    sweep = tmp_path / "sweep"
    for job, name in (("0", "train-bert-files-0"), ("1", None)):
        (sweep / job / "ranks").mkdir(parents=True)
        (sweep / job / "ranks" / "rank0.json").write_text(json.dumps({"wandb_run": name}))
        (sweep / job / "metrics.json").write_text(json.dumps({"f1": 1.0}))
    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [job["wandb_run"] for job in summary] == ["train-bert-files-0", None]


def test_slurm_launcher_config_becomes_the_sbatch_script(tmp_path, monkeypatch):
    """``hydra/launcher=slurm``: nodes, GPUs per node (one task each), time and partition reach
    the sbatch script submitit writes; trainer=ddp takes devices and num_nodes from them."""
    overrides = [
        "hydra/launcher=slurm",
        "trainer=ddp",
        "hydra.launcher.nodes=2",
        "hydra.launcher.gpus_per_node=4",
        "hydra.launcher.timeout_min=90",
        "hydra.launcher.partition=gpu",
    ]
    cfg = hydra_job(tmp_path, overrides, RunMode.MULTIRUN)
    assert (cfg.trainer.devices, cfg.trainer.num_nodes) == (4, 2)
    assert launcher_value("nodes", 1) == 2
    launcher_cfg = HydraConfig.get().launcher
    assert launcher_cfg._target_.endswith("SlurmLauncher")
    fake_bin = tmp_path / "bin"  # submitit looks for srun before writing the script
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    base = ("timeout_min", "nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task", "mem_gb")
    executor.update_parameters(**{key: launcher_cfg[key] for key in base})
    executor.update_parameters(slurm_partition=launcher_cfg.partition)
    script = executor._executor._make_submission_file_text("python -m x", "uid")
    for line in ("--nodes=2", "--gpus-per-node=4", "--ntasks-per-node=4", "--time=90"):
        assert f"#SBATCH {line}" in script, script
    assert "#SBATCH --partition=gpu" in script
