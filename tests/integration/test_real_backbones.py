"""Every backbone family end to end with its published tokenizer and config (``../shared/models``)
and random weights: train a few steps on real questions, reload ``hf_model/``, answer, export to
ONNX. The default lane runs one thin layer of each real config; the real sizes are ``slow``.

ONNX export in the default lane: one family per way the export differs (:data:`ONNX_FAST_LANE`);
the real-size tests export every family."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

from helpers.app import compose_run_cfg, slice_squad
from helpers.real_backbones import FAMILIES, run_overrides
from qa_lightning.cli import train
from qa_lightning.errors import QALightningError
from qa_lightning.hub import set_models_dir
from qa_lightning.inference import QuestionAnswerer
from qa_lightning.inference.onnx import OnnxSpanModel, export_onnx
from qa_lightning.model.model_card import read_window

RUN_OUTPUTS = ("metrics.json", "predictions.json", "null_odds.json", "checkpoints/last.ckpt")
CONTEXT = (
    "The Normans were the people who in the 10th and 11th centuries gave their name to "
    "Normandy, a region in France. They were descended from Norse raiders and pirates."
)
# bert: inputs with token_type_ids; deberta: without them, and relative-position attention whose
# trace depends on the sequence length (the dynamic axes are checked on a longer input).
# distilbert and roberta export like bert without token_type_ids: under the slow tests only.
ONNX_FAST_LANE = frozenset({"bert", "deberta"})


@pytest.fixture(scope="module")
def squad_files(tmp_path_factory, shared_data) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("squad")
    v2 = shared_data / "squad" / "dev-v2.0.json.gz"
    return {
        "train": slice_squad(v2, root / "train.json", 0, 8),
        "val": slice_squad(v2, root / "val.json", 3000, 8),
    }


@pytest.fixture(autouse=True)
def _forget_models_dir():
    yield
    set_models_dir(None)


def run_family(family: str, shared_models: Path, files: dict, out: Path, thin: bool) -> Path:
    overrides = [
        *run_overrides(family, shared_models, files, out.parent / "cache", thin),
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
    ]
    torch.manual_seed(0)
    train.run(compose_run_cfg(overrides, out))
    return out


def check_family_run(family: str, out: Path, tmp_path: Path, onnx: bool = True) -> None:
    """The run's files, ``hf_model/`` through transformers and ``QuestionAnswerer``; with ``onnx``
    its export (longformer: the refusal, always checked)."""
    missing = [name for name in RUN_OUTPUTS if not (out / name).is_file()]
    assert not missing, f"{family}: run outputs missing: {missing}"
    predictions = json.loads((out / "predictions.json").read_text())
    assert len(predictions) == 8  # every validation question answered (v2.0: "" allowed)
    hf_model = out / "hf_model"
    model = AutoModelForQuestionAnswering.from_pretrained(hf_model)
    tokenizer = AutoTokenizer.from_pretrained(hf_model)
    assert tokenizer.is_fast and model.config.vocab_size >= len(tokenizer) - 1
    window = read_window(hf_model)
    expected = 1024 if family == "longformer" else 384
    assert window is not None and window.max_length == expected

    qa = QuestionAnswerer.from_pretrained(hf_model)
    assert qa.window == window
    answers = qa.answer("Where is Normandy?", CONTEXT, top_k=3)
    assert answers, f"{family}: no answer"
    for answer in answers:
        assert CONTEXT[answer["start"] : answer["end"]] == answer["answer"]

    if family == "longformer":  # the exporter limitation written in the README
        with pytest.raises(QALightningError, match="ONNX export of longformer is not supported"):
            export_onnx(hf_model, tmp_path / f"{family}-onnx")
        return
    if not onnx:
        return
    onnx_dir = export_onnx(hf_model, tmp_path / f"{family}-onnx")  # verifies within 1e-4
    assert read_window(onnx_dir) == window
    batch = tokenizer(["Where is Normandy?"], [CONTEXT], return_tensors="pt")
    onnx_start, onnx_end = OnnxSpanModel(onnx_dir / "model.onnx")(dict(batch))
    from_onnx = QuestionAnswerer.from_pretrained(onnx_dir)
    assert from_onnx.answer("Where is Normandy?", CONTEXT)[0]["answer"] == answers[0]["answer"]
    assert onnx_start.shape == batch["input_ids"].shape == onnx_end.shape


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_thin_real_config_end_to_end(family, shared_models, squad_files, tmp_path):
    out = run_family(family, shared_models, squad_files, tmp_path / "run", thin=True)
    check_family_run(family, out, tmp_path, onnx=family in ONNX_FAST_LANE)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_real_size_end_to_end(family, shared_models, squad_files, tmp_path):
    out = run_family(family, shared_models, squad_files, tmp_path / "run", thin=False)
    check_family_run(family, out, tmp_path)


@pytest.mark.slow
def test_multirun_over_the_four_backbones(shared_models, squad_files, tmp_path):
    """``--multirun model=bert,roberta,deberta,longformer`` with the local models folder and
    random init (one thin layer each): one run directory per backbone and a sweep summary."""
    sweep = tmp_path / "sweep"
    # the same thin config for the four (all name their layers num_hidden_layers); the models
    # folder comes from the environment
    shared = run_overrides("bert", shared_models, squad_files, tmp_path / "cache")
    shared = [o for o in shared if not o.startswith(("model=", "paths.models_dir="))]
    cmd = [
        sys.executable, "-m", "qa_lightning", "--multirun",
        "model=bert,roberta,deberta,longformer", *shared, f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    env = {**os.environ, "QA_LIGHTNING_MODELS_DIR": str(shared_models)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [job["status"] for job in summary] == ["ok"] * 4, summary
    for job, family in zip(summary, ("bert", "roberta", "deberta", "longformer"), strict=True):
        assert f"model={family}" in job["overrides"]
        assert job["metrics"] and "f1" in job["metrics"]
        assert (sweep / job["job"] / "hf_model" / "qa_window.json").is_file()
