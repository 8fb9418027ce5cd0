"""ONNX export: ``qa-lightning-export`` writes a model that onnxruntime runs like PyTorch."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from torch import Tensor

from qa_lightning.cli.export import main
from qa_lightning.data.squad_json import read_squad_file
from qa_lightning.hub import load_tokenizer
from qa_lightning.inference import QuestionAnswerer
from qa_lightning.inference.answerer import SpanModel
from qa_lightning.inference.onnx import ONNX_FILE, OnnxSpanModel, export_onnx
from qa_lightning.model.module import QALightningModule

ort = pytest.importorskip("onnxruntime")
N_QUESTIONS = 200


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """MiniLM with a seeded random head (scaled up: decisive logits, as a trained head gives)."""
    tmp = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    module = QALightningModule(pretrained="minilm")
    with torch.no_grad():
        module.model.qa_outputs.weight.mul_(10)
    model_dir = module.save_hf_model(tmp / "hf_model", load_tokenizer("minilm"))
    main([str(model_dir), "--format", "onnx", "--output", str(tmp / "onnx"), "--opset", "17"])
    return model_dir, tmp / "onnx"


@pytest.fixture(scope="module")
def dev(shared_data: Path) -> tuple[list[str], list[str]]:
    records = read_squad_file(shared_data / "squad" / "dev-v1.1.json.gz").records[:N_QUESTIONS]
    return [r["question"] for r in records], [r["context"] for r in records]


def test_export_writes_a_dynamic_onnx_model_and_tokenizer(exported: tuple[Path, Path]) -> None:
    import onnx

    _, onnx_dir = exported
    assert {ONNX_FILE, "tokenizer.json", "tokenizer_config.json", "export.json"} <= {
        p.name for p in onnx_dir.iterdir()
    }
    onnx.checker.check_model(str(onnx_dir / ONNX_FILE))
    session = ort.InferenceSession(str(onnx_dir / ONNX_FILE), providers=["CPUExecutionProvider"])
    inputs = {i.name: i.shape for i in session.get_inputs()}
    assert inputs == {
        name: ["batch", "sequence"] for name in ("input_ids", "attention_mask", "token_type_ids")
    }
    assert [o.name for o in session.get_outputs()] == ["start_logits", "end_logits"]
    info = json.loads((onnx_dir / "export.json").read_text())
    assert (info["opset"], info["model_type"]) == (17, "bert")
    # onnxruntime's transformer optimizer fused each layer's ops (and the logits still match:
    # test_logits_and_answers_match_pytorch).
    layers = 6
    assert info["fused_ops"] == {
        "EmbedLayerNormalization": 1,
        "Attention": layers,
        "BiasGelu": layers,
        "SkipLayerNormalization": 2 * layers,
    }
    ops = {node.op_type for node in onnx.load(str(onnx_dir / ONNX_FILE)).graph.node}
    assert {"Attention", "EmbedLayerNormalization"} <= ops and "Softmax" not in ops


class Recorder:
    """A span model that keeps the logits it returns."""

    def __init__(self, model: SpanModel) -> None:
        self.model, self.logits = model, []

    def __call__(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        start, end = self.model(batch)
        self.logits.append((start, end))
        return start, end


def test_logits_and_answers_match_pytorch(
    exported: tuple[Path, Path], dev: tuple[list[str], list[str]]
) -> None:
    model_dir, onnx_dir = exported
    torch_qa = QuestionAnswerer.from_pretrained(model_dir)
    onnx_qa = QuestionAnswerer.from_pretrained(onnx_dir)
    assert isinstance(onnx_qa.module, OnnxSpanModel)
    recorders = [Recorder(torch_qa.module), Recorder(onnx_qa.module)]
    expected, got = (
        QuestionAnswerer(recorder, torch_qa.tokenizer)(*dev, top_k=2, handle_impossible_answer=True)
        for recorder in recorders
    )
    assert len(recorders[0].logits) == len(recorders[1].logits) > 1
    for (s1, e1), (s2, e2) in zip(recorders[0].logits, recorders[1].logits, strict=True):
        assert (s1 - s2).abs().max().item() < 1e-4
        assert (e1 - e2).abs().max().item() < 1e-4
    assert [[(a["answer"], a["start"], a["end"]) for a in x] for x in got] == [
        [(a["answer"], a["start"], a["end"]) for a in x] for x in expected
    ]
    for x, y in zip(got, expected, strict=True):
        assert [a["score"] for a in x] == pytest.approx([a["score"] for a in y], abs=1e-4)


def test_onnx_backend_in_pipeline_compat_mode(exported: tuple[Path, Path]) -> None:
    model_dir, onnx_dir = exported
    question, context = "Who designed it?", "The tower was designed by Gustave Eiffel in 1887."
    answers = [
        QuestionAnswerer.from_pretrained(path, compat="pipeline").answer(question, context, top_k=3)
        for path in (model_dir, onnx_dir)
    ]
    assert [a["answer"] for a in answers[0]] == [a["answer"] for a in answers[1]]


@pytest.mark.parametrize("family", ["roberta", "deberta"])
def test_fusion_only_where_onnxruntime_knows_the_family(
    tiny_backbones: dict[str, Path], tmp_path: Path, family: str
) -> None:
    """RoBERTa is fused like BERT; DeBERTa (relative attention) is exported as traced. Either
    way the verified export matches PyTorch within 1e-4 (export_onnx raises otherwise)."""
    out = export_onnx(tiny_backbones[family], tmp_path / family)
    fused = json.loads((out / "export.json").read_text())["fused_ops"]
    if family == "roberta":
        assert fused["Attention"] == fused["BiasGelu"] > 0
    else:
        assert fused is None
    assert not list(out.glob(".*"))  # no leftover unfused copy


def test_a_fused_graph_that_fails_verification_is_replaced_by_the_unfused_one(
    tiny_bert: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import onnx
    from onnx import numpy_helper

    from qa_lightning.inference import onnx as onnx_export

    def wrong_fusion(path: Path, config: object, output: Path) -> dict[str, int]:
        """A "fused" graph whose logits are off by 0.5: the start/end head's bias shifted."""
        model = onnx.load(str(path))
        for init in model.graph.initializer:
            if "qa_outputs" in init.name and init.name.endswith("bias"):
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 0.5, init.name))
        onnx.save(model, str(output))
        return {"Attention": 1}

    monkeypatch.setattr(onnx_export, "fuse_transformer_ops", wrong_fusion)
    out = export_onnx(tiny_bert, tmp_path / "out")  # verifies: would raise if the bias stayed
    assert json.loads((out / "export.json").read_text())["fused_ops"] is None
    assert "kept the unfused one" in caplog.text
    assert not list(out.glob(".*"))


def test_no_fuse_keeps_the_traced_graph(tiny_bert: Path, tmp_path: Path) -> None:
    import onnx

    main([str(tiny_bert), "--output", str(tmp_path / "plain"), "--no-fuse"])
    assert json.loads((tmp_path / "plain" / "export.json").read_text())["fused_ops"] is None
    ops = {node.op_type for node in onnx.load(str(tmp_path / "plain" / ONNX_FILE)).graph.node}
    assert "Attention" not in ops and "Softmax" in ops


def test_default_output_and_missing_model(exported: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, _ = exported
    link = tmp_path / "hf_model"
    link.symlink_to(model_dir, target_is_directory=True)
    assert export_onnx(link, verify=False) == tmp_path / "hf_model-onnx"
    assert (tmp_path / "hf_model-onnx" / ONNX_FILE).is_file()
    with pytest.raises(FileNotFoundError, match=r"model\.onnx"):
        QuestionAnswerer.from_pretrained(tmp_path, backend="onnx")
    with pytest.raises(SystemExit):
        main([str(model_dir), "--format", "tflite"])
