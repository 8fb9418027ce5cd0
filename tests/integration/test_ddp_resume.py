"""DDP mid-epoch resume end to end: 2 gloo processes on CPU (``trainer=ddp_sim``), the whole
process group SIGKILLed after a mid-epoch checkpoint, then ``ckpt_path=last``: the same final
step, weights and EM/F1 as an uninterrupted 2-process run. Slow (three 2-process runs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import TESTS_DIR
from helpers.app import resume_run_overrides, slice_squad

EVERY = 2  # checkpoint_every_n_steps; 64 questions / (2 ranks x 4) -> 8+ steps an epoch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def files(tmp_path_factory, shared_data) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("squad")
    v1 = shared_data / "squad" / "dev-v1.1.json.gz"
    return {
        "train": slice_squad(v1, root / "train.json", 0, 64),
        "val": slice_squad(v1, root / "val.json", 2000, 32),
    }


def ddp_run(model: Path, files, cache: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "qa_lightning",
        *resume_run_overrides(model, files, cache, out, trainer="ddp_sim", batch=4, every=EVERY),
        f"hydra.run.dir={out}",
        *extra,
    ]
    # A session of its own: the kill takes every rank of this run and nothing else.
    return subprocess.run(
        cmd,
        cwd=out.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        start_new_session=True,
    )


def state(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


def test_ddp_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tiny_bert, files, tmp_path):
    cache = tmp_path / "cache"
    whole, run = tmp_path / "whole", tmp_path / "run"
    whole.mkdir(), run.mkdir()
    done = ddp_run(tiny_bert, files, cache, whole)
    assert done.returncode == 0, done.stderr[-4000:]

    killed = ddp_run(
        tiny_bert,
        files,
        cache,
        run,
        "+callbacks.kill._target_=helpers.reliability.SigkillGroupAfterStep",
        f"+callbacks.kill.step={2 * EVERY}",
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-4000:]
    last = run / "checkpoints" / "last.ckpt"
    saved = state(last)
    assert saved["global_step"] == 2 * EVERY and not (run / "metrics.json").exists()
    steps_per_epoch = json.loads((whole / "training.json").read_text())["num_training_batches"]
    assert steps_per_epoch > 2 * EVERY, "the kill must land mid-epoch"

    resumed = ddp_run(tiny_bert, files, cache, run, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    got, expected = (json.loads((d / "training.json").read_text()) for d in (run, whole))
    assert got["global_step"] == expected["global_step"] and got["world_size"] == 2
    final, reference = state(last), state(whole / "checkpoints" / "last.ckpt")
    for key, value in reference["state_dict"].items():
        assert torch.equal(final["state_dict"][key], value), key
    assert json.loads((run / "metrics.json").read_text()) == json.loads(
        (whole / "metrics.json").read_text()
    )
