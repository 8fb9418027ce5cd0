"""int8 dynamic quantization for CPU inference: of an exported ONNX model, or of a torch module.

``quantize_onnx(dir)`` rewrites ``dir/model.onnx`` with onnxruntime's dynamic quantization
(``onnxruntime.quantization.quantize_dynamic``: int8 weights of the MatMul/Gemm nodes, activations
quantized per batch at run time; the fused attention kernels stay fp32), atomically, and records
it in ``export.json``. Nothing else changes: ``QuestionAnswerer.from_pretrained(dir)`` runs the int8 model like the fp32 one.
``quantize_torch(module)`` is torch's own dynamic quantization of the ``nn.Linear`` layers
(``torch.ao.quantization.quantize_dynamic``), for comparison.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
from torch import nn

from qa_lightning.inference.onnx import INFO_FILE, ONNX_FILE, require_onnxruntime
from qa_lightning.utils.io import atomic_write_json

QUANTIZE_CHOICES = ("int8",)
# The fused attention (onnx_fusion) stays fp32: quantizing it too (QAttention) was faster at
# batch 32 (2.28x against 2.01x PyTorch fp32) but lost 1.38 F1 against 0.79 on the MiniLM below.
QUANTIZED_OPS = ("MatMul", "Gemm")
# One scale per output channel and 7-bit weights: on a fine-tuned MiniLM (1,000 dev-v1.1
# questions, fp32 F1 70.46) per-tensor int8 lost 3.27 F1, per-channel 1.65, per-channel with the
# reduced range 0.56 (measured on this project's CPU, which has VNNI; onnxruntime recommends the
# reduced range where the u8 x s8 products can saturate).
ONNX_OPTIONS = {"per_channel": True, "reduce_range": True}


def quantize_onnx(export_dir: str | Path, mode: str = "int8") -> Path:
    """Replace ``export_dir/model.onnx`` by its int8 dynamic quantization; returns the model path."""
    if mode not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be one of {QUANTIZE_CHOICES}, got {mode!r}")
    require_onnxruntime()
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    export_dir = Path(export_dir)
    model = export_dir / ONNX_FILE
    if not model.is_file():
        raise FileNotFoundError(f"{model}: not found (export the model first)")
    tmp = model.with_name(f".{ONNX_FILE}.int8.tmp")
    quantize_dynamic(
        str(model),
        str(tmp),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=QUANTIZED_OPS,
        # The fused ops' outputs have no inferred type (contrib domain): they are fp32.
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
        **ONNX_OPTIONS,
    )
    os.replace(tmp, model)
    info_path = export_dir / INFO_FILE
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    info["quantization"] = {
        "mode": "int8-dynamic",
        "tool": "onnxruntime",
        "ops": QUANTIZED_OPS,
        **ONNX_OPTIONS,
    }
    atomic_write_json(info_path, info)
    return model


def quantize_torch(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with its ``nn.Linear`` layers dynamically quantized to int8 (CPU)."""
    return torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(module).eval(), {nn.Linear}, dtype=torch.qint8
    )
