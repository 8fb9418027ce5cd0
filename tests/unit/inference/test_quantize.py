"""int8 export: ``qa-lightning-export --quantize int8 --check DATA`` and torch's dynamic quantization."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from qa_lightning.cli.export import main
from qa_lightning.data.squad_json import read_squad_file
from qa_lightning.inference import QuestionAnswerer
from qa_lightning.inference.onnx import ONNX_FILE, export_onnx
from qa_lightning.inference.quantize import quantize_onnx, quantize_torch
from qa_lightning.model.module import QALightningModule

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
N_QUESTIONS = 12


@pytest.fixture(scope="module")
def dev_slice(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first dev-v1.1 questions as JSON lines."""
    records = read_squad_file(shared_data / "squad" / "dev-v1.1.json.gz").records[:N_QUESTIONS]
    path = tmp_path_factory.mktemp("dev") / "dev.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_int8_export_is_quantized_checked_and_answers(
    tiny_bert: Path, dev_slice: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fp32 = export_onnx(tiny_bert, tmp_path / "fp32", verify=False) / ONNX_FILE
    out = tmp_path / "int8"
    check = ["--check", str(dev_slice), "--check-questions", str(N_QUESTIONS), "--check-torch-int8"]
    main([str(tiny_bert), "--output", str(out), "--quantize", "int8", *check])
    model = out / ONNX_FILE
    assert {"DynamicQuantizeLinear", "MatMulInteger", "Attention"} <= op_types(model)
    assert "QAttention" not in op_types(model)  # the fused attention stays fp32
    assert "MatMulInteger" not in op_types(fp32)
    weights = {i.data_type for i in onnx.load(str(model)).graph.initializer}
    assert onnx.TensorProto.INT8 in weights
    recorded = json.loads((out / "export.json").read_text())["quantization"]
    assert (
        recorded["mode"] == "int8-dynamic" and recorded["per_channel"] and recorded["reduce_range"]
    )
    graph = onnx.load(str(model)).graph
    scales = [i for i in graph.initializer if i.name.endswith("_scale") and i.dims]
    assert scales and all(s.dims[0] > 1 for s in scales)  # one scale per output channel
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads((out / "check.json").read_text())
    assert (printed["questions"], printed["quantize"]) == (N_QUESTIONS, "int8")
    for row in ("torch_fp32", "onnx", "torch_int8"):
        assert 0 <= printed[row]["exact_match"] <= printed[row]["f1"] <= 100
        assert printed[row]["latency_ms_batch1"] > 0 and printed[row]["latency_ms_batch32"] > 0
    assert printed["onnx"]["f1_change"] == pytest.approx(
        printed["onnx"]["f1"] - printed["torch_fp32"]["f1"]
    )
    qa = QuestionAnswerer.from_pretrained(out)
    context = "The tower was designed by Gustave Eiffel in 1887."
    answer = qa.answer("Who designed it?", context)[0]
    assert context[answer["start"] : answer["end"]] == answer["answer"] != ""


def test_int8_logits_stay_close_to_fp32(tiny_bert: Path, tmp_path: Path) -> None:
    """Dynamic int8 changes the logits a little, not the model: both quantizations track fp32."""
    module = QALightningModule(pretrained=str(tiny_bert)).eval()
    batch = {
        "input_ids": torch.randint(5, 100, (2, 24)),
        "attention_mask": torch.ones(2, 24, dtype=torch.long),
        "token_type_ids": torch.zeros(2, 24, dtype=torch.long),
    }
    with torch.inference_mode():
        start, _ = module(batch)
        quantized = quantize_torch(module)
        start_q, _ = quantized(batch)
    assert any("quantized" in type(m).__module__ for m in quantized.modules())
    assert not any("quantized" in type(m).__module__ for m in module.modules())
    spread = start.std().item()
    assert (start - start_q).abs().max().item() < 0.5 * spread + 1e-3


def test_quantize_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"model\.onnx"):
        quantize_onnx(tmp_path)
    with pytest.raises(ValueError, match="int4"):
        quantize_onnx(tmp_path, "int4")
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--quantize", "int4"])
