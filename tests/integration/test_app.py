"""End-to-end runs of the Hydra application on CPU: every family, outputs, resume, W&B, multirun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForQuestionAnswering

from helpers.app import compose_run_cfg, slice_squad
from helpers.tiny_backbones import FAMILIES
from qa_lightning.cli import score, train


@pytest.fixture(scope="module")
def squad_files(tmp_path_factory, shared_data) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("squad")
    v1 = shared_data / "squad" / "dev-v1.1.json.gz"
    v2 = shared_data / "squad" / "dev-v2.0.json.gz"
    return {
        "v1_train": slice_squad(v1, root / "v1_train.json", 0, 96),
        "v1_val": slice_squad(v1, root / "v1_val.json", 2000, 64),
        "v2_train": slice_squad(v2, root / "v2_train.json", 0, 96),
        "v2_val": slice_squad(v2, root / "v2_val.json", 3000, 64),
    }


@pytest.fixture(scope="module")
def tiny_models(tiny_backbones: dict[str, Path]) -> dict[str, Path]:
    return tiny_backbones


def overrides_for(
    model_dir: Path | str, files: dict[str, Path], version: str, cache: Path
) -> list[str]:
    return [
        f"model.pretrained={model_dir}",
        "data=files",
        f"data.train_file={files[f'{version}_train']}",
        f"data.validation_file={files[f'{version}_val']}",
        "data.max_length=128",
        "data.doc_stride=48",
        "data.batch_size=8",
        f"paths.cache_dir={cache}",
        "trainer=cpu",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_dev_run_every_family(family, tiny_models, squad_files, tmp_path):
    cfg = compose_run_cfg(
        [*overrides_for(tiny_models[family], squad_files, "v2", tmp_path / "cache"), "debug=fdr"],
        tmp_path,
    )
    assert train.run(cfg) == {}  # fast_dev_run: one batch of each loop, no evaluation files


def run_limited(model_dir, files, version, out: Path, *extra: str) -> dict:
    overrides = [
        *overrides_for(model_dir, files, version, out.parent / "cache"),
        "trainer.max_epochs=2",
        "trainer.num_sanity_val_steps=0",
        "trainer.deterministic=true",
        *extra,
    ]
    return train.run(compose_run_cfg(overrides, out))


def score_files(data_file: Path, out: Path, capsys, na_prob: bool = False) -> dict:
    args = [str(data_file), str(out / "predictions.json")]
    if na_prob:
        args += ["--na-prob-file", str(out / "null_odds.json")]
    assert score.main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_minilm_trains_and_scored_predictions_equal_metrics(squad_files, tmp_path, capsys):
    out = tmp_path / "run"
    results = run_limited(
        "minilm",
        squad_files,
        "v1",
        out,
        "trainer.max_epochs=1",
        "model.optimizer.lr=1e-4",
        "data.max_length=256",
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics.pop("bootstrap")) == {"level", "samples", "seed", "exact_match", "f1"}
    assert metrics == pytest.approx(results["validation"])
    assert set(metrics) == {"exact_match", "f1"}
    capsys.readouterr()
    assert score_files(squad_files["v1_val"], out, capsys) == pytest.approx(metrics, abs=1e-9)
    predictions = json.loads((out / "predictions.json").read_text())
    assert len(predictions) == 64
    checkpoints = {p.name for p in (out / "checkpoints").iterdir()}
    assert "last.ckpt" in checkpoints and any(name.startswith("epoch") for name in checkpoints)
    assert (out / "curves.png").stat().st_size > 1000
    model = AutoModelForQuestionAnswering.from_pretrained(out / "hf_model")
    assert model.config.hidden_size == 384 and (out / "hf_model" / "tokenizer.json").exists()


def test_v2_run_writes_null_odds_that_the_scorer_reads(tiny_models, squad_files, tmp_path, capsys):
    out = tmp_path / "run"
    run_limited(tiny_models["bert"], squad_files, "v2", out, "trainer.max_epochs=1")
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics.pop("bootstrap")) == {"level", "samples", "seed", "exact", "f1"}
    assert {"exact", "f1", "HasAns_exact", "NoAns_exact", "best_exact", "best_f1"} <= set(metrics)
    capsys.readouterr()
    scored = score_files(squad_files["v2_val"], out, capsys, na_prob=True)
    assert scored == pytest.approx(metrics, abs=1e-9)


def test_resume_reaches_the_same_step_and_metrics(tiny_models, squad_files, tmp_path):
    no_dropout = [
        "+model.config_overrides.hidden_dropout_prob=0.0",
        "+model.config_overrides.attention_probs_dropout_prob=0.0",
    ]
    whole = tmp_path / "whole"
    run_limited(tiny_models["bert"], squad_files, "v1", whole, *no_dropout)
    resumed = tmp_path / "resumed"
    interrupt = "+callbacks.interrupt._target_=helpers.app.StopAfterFirstEpoch"
    run_limited(tiny_models["bert"], squad_files, "v1", resumed, *no_dropout, interrupt)
    last = resumed / "checkpoints" / "last.ckpt"
    first_step = torch.load(last, weights_only=True, map_location="cpu")["global_step"]
    run_limited(tiny_models["bert"], squad_files, "v1", resumed, *no_dropout, f"ckpt_path={last}")
    state = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    expected = torch.load(
        whole / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu"
    )
    assert state["global_step"] == expected["global_step"] == 2 * first_step
    assert state["epoch"] == expected["epoch"]
    assert json.loads((resumed / "metrics.json").read_text()) == json.loads(
        (whole / "metrics.json").read_text()
    )
    for key, value in expected["state_dict"].items():
        torch.testing.assert_close(state["state_dict"][key], value, msg=key)


def test_wandb_offline_run_directory_and_no_secret_on_disk(
    tiny_models, squad_files, tmp_path, monkeypatch
):
    secret = "wandb-secret-0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", secret)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    run_limited(tiny_models["bert"], squad_files, "v1", out, "logger=wandb", "trainer.max_epochs=1")
    runs = list(out.glob("wandb/offline-run-*"))
    assert runs and any(runs[0].glob("*.wandb")), "W&B offline run files expected"
    for path in out.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), f"secret leaked into {path}"


def test_multirun_over_two_tiny_models_survives_a_failing_job(tiny_models, squad_files, tmp_path):
    sweep = tmp_path / "sweep"
    models = f"{tiny_models['bert']},{tiny_models['roberta']},{tmp_path / 'does-not-exist'}"
    cmd = [
        sys.executable,
        "-m",
        "qa_lightning",
        "--multirun",
        f"model.pretrained={models}",
        *overrides_for("x", squad_files, "v1", tmp_path / "cache")[1:],
        "debug=limit",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep}",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [job["status"] for job in summary] == ["ok", "ok", "failed"]
    assert "does-not-exist" in summary[2]["error"] or "does-not-exist" in " ".join(
        summary[2]["overrides"]
    )
    for job in summary[:2]:
        assert job["metrics"] and "f1" in job["metrics"]
    page = (sweep / "sweep_report.html").read_text()
    assert "Failed jobs: 1" in page and "does-not-exist" in page and "<img" in page
    for job in summary[:2]:
        assert f"{job['metrics']['f1']:.2f}" in page
