"""Distributed correctness with 2 CPU processes (``trainer=ddp_sim``, gloo), as launched for real.

Each test runs ``python -m qa_lightning[.evaluate] trainer=ddp_sim`` in a subprocess (Lightning
re-launches the command for rank 1 inside the same Hydra run directory) and compares its files
with a single-process evaluation of the same weights on the same data.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import TESTS_DIR
from helpers.app import compose_run_cfg, slice_squad
from qa_lightning.cli import evaluate
from qa_lightning.data.datamodule import SquadDataModule


@pytest.fixture(scope="module")
def files(tmp_path_factory, shared_data) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("squad")
    v1 = shared_data / "squad" / "dev-v1.1.json.gz"
    v2 = shared_data / "squad" / "dev-v2.0.json.gz"
    return {
        "v1_val": slice_squad(v1, root / "v1_val.json", 2000, 48),
        "v2_train": slice_squad(v2, root / "v2_train.json", 0, 64),
        "v2_val": slice_squad(v2, root / "v2_val.json", 3000, 48),
    }


def launch(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [sys.executable, "-m", module, *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def audit(roots: list[Path]) -> list[str]:
    """A callback (as overrides) reporting rank 1's file writes under ``roots``."""
    return [
        "+callbacks.audit._target_=helpers.reliability.AuditWrites",
        f"+callbacks.audit.roots=[{','.join(map(str, roots))}]",
    ]


def rank1_writes(proc: subprocess.CompletedProcess) -> list[str]:
    """Rank 1's report, wherever rank 0's output (shared stdout) cut into its line."""
    parts = proc.stdout.split("AUDIT-RANK1:")
    assert len(parts) == 2, "rank 1 ran and reported once"
    return json.JSONDecoder().raw_decode(parts[1])[0]


def read_unique_json(path: Path) -> dict:
    """A JSON object, failing on a repeated key (a question answered twice)."""

    def no_duplicates(pairs: list[tuple[str, object]]) -> dict:
        keys = [key for key, _ in pairs]
        assert len(keys) == len(set(keys)), f"repeated keys in {path}"
        return dict(pairs)

    return json.loads(path.read_text(), object_pairs_hook=no_duplicates)


def question_ids(path: Path) -> list[str]:
    data = json.loads(path.read_text())["data"]
    return [qa["id"] for a in data for p in a["paragraphs"] for qa in p["qas"]]


def evaluate_single_process(
    ckpt: Path, data_file: Path, cache: Path, out: Path, *extra: str
) -> None:
    overrides = [
        f"ckpt_path={ckpt}",
        "data=files",
        f"data.validation_file={data_file}",
        "data.max_length=128",
        "data.doc_stride=48",
        f"paths.cache_dir={cache}",
        "trainer=cpu",
        *extra,
    ]
    evaluate.run(compose_run_cfg(overrides, out, name="eval"))


def assert_same_evaluation(
    ddp: Path, single: Path, data_file: Path, count: int | None = None
) -> None:
    predictions = read_unique_json(ddp / "predictions.json")
    expected = question_ids(data_file)[:count]
    assert sorted(predictions) == sorted(expected)  # every question exactly once
    assert predictions == read_unique_json(single / "predictions.json")
    assert json.loads((ddp / "metrics.json").read_text()) == json.loads(
        (single / "metrics.json").read_text()
    )


def assert_one_run_directory(cwd: Path, out: Path) -> None:
    assert not (cwd / "outputs").exists(), "a rank made its own Hydra run directory"
    assert not list(out.glob(".pl_hydra*")) and (out / ".hydra" / "config.yaml").is_file()


def test_ddp_training_v2_batch_schedule_single_writer_and_single_process_metrics(
    tiny_bert, files, tmp_path
):
    """2 processes x accumulate 2 with total_batch_size 8: per-device batch 2, optimizer steps and
    the LR schedule from the real sharded loader; rank 0 alone writes; tokenized once; EM/F1 and
    predictions equal a single-process evaluation of the best checkpoint."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    proc = launch(
        "qa_lightning",
        [
            "trainer=ddp_sim",
            f"model.pretrained={tiny_bert}",
            "data=files",
            f"data.train_file={files['v2_train']}",
            f"data.validation_file={files['v2_val']}",
            "data.max_length=128",
            "data.doc_stride=48",
            "total_batch_size=8",
            "trainer.accumulate_grad_batches=2",
            "trainer.max_epochs=1",
            "trainer.num_sanity_val_steps=0",
            "trainer.deterministic=true",
            "callbacks.progress_bar=null",
            "callbacks.model_summary=null",
            f"paths.cache_dir={cache}",
            f"hydra.run.dir={out}",
            "+callbacks.record._target_=helpers.reliability.RecordTraining",
            f"+callbacks.record.path={out / 'training.json'}",
            *audit([out, cache]),
        ],
        tmp_path,
    )
    record = json.loads((out / "training.json").read_text())
    assert (record["world_size"], record["accumulate_grad_batches"]) == (2, 2)
    assert record["per_device_batch_size"] == 8 // (2 * 2)
    per_rank_batches = math.ceil(math.ceil(record["train_features"] / 2) / 2)
    assert record["num_training_batches"] == per_rank_batches
    steps = math.ceil(per_rank_batches / 2)
    assert record["global_step"] == record["estimated_stepping_batches"] == steps
    assert record["scheduler_last_epoch"] == steps and record["final_lr"] == 0.0

    assert rank1_writes(proc) == []
    assert_one_run_directory(tmp_path, out)
    log = (out / "train.log").read_text()
    assert log.count("Tokenizing train") == 1 and log.count("Tokenizing validation") == 1
    assert len(list((cache / "features").iterdir())) == 2

    best = next((out / "checkpoints").glob("epoch*.ckpt"))
    evaluate_single_process(best, files["v2_val"], cache, tmp_path / "single")
    assert_same_evaluation(out, tmp_path / "single", files["v2_val"])
    assert (out / "null_odds.json").is_file()


def test_ddp_evaluation_v1_equals_single_process(tiny_bert, files, tmp_path):
    """Also the cache under DDP: with another subset of the same file already cached
    (``max_eval_examples=20``), rank 0 tokenizes the 40 questions asked for and rank 1 loads
    them (it writes nothing); every one of the 40 is predicted."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    stale = SquadDataModule(
        str(tiny_bert),
        dataset=None,
        validation_file=str(files["v1_val"]),
        max_eval_examples=20,
        max_length=128,
        doc_stride=48,
        cache_dir=str(cache),
    )
    stale.prepare_data()
    proc = launch(
        "qa_lightning.cli.evaluate",
        [
            "trainer=ddp_sim",
            f"ckpt_path={tiny_bert}",
            "data=files",
            f"data.validation_file={files['v1_val']}",
            "data.max_eval_examples=40",
            "data.max_length=128",
            "data.doc_stride=48",
            f"paths.cache_dir={cache}",
            f"hydra.run.dir={out}",
            *audit([out, cache]),
        ],
        tmp_path,
    )
    assert rank1_writes(proc) == []
    assert_one_run_directory(tmp_path, out)
    log = (out / "eval.log").read_text()
    assert log.count("Tokenizing validation: 40 examples") == 1
    assert log.count("Loading cached features") == 2  # rank 0 built it, then both ranks load
    assert log.count("validation: 40 examples -> ") == 3
    assert len(list((cache / "features").iterdir())) == 2
    evaluate_single_process(
        tiny_bert, files["v1_val"], cache, tmp_path / "single", "data.max_eval_examples=40"
    )
    assert_same_evaluation(out, tmp_path / "single", files["v1_val"], count=40)
    assert set(json.loads((out / "metrics.json").read_text())) == {"exact_match", "f1", "bootstrap"}
