"""Export a trained model to ONNX and run it with onnxruntime (CLI: ``qa_lightning.cli.export``).

``qa-lightning-export PATH --format onnx [--output DIR] [--opset N]`` writes ``DIR/model.onnx``
(inputs ``input_ids``, ``attention_mask`` and ``token_type_ids`` when the model uses them, outputs
``start_logits`` and ``end_logits``, dynamic batch and sequence axes) beside the tokenizer files
and ``export.json``. ``QuestionAnswerer.from_pretrained(DIR)`` then answers with onnxruntime,
with the same feature preparation and decoding as the PyTorch model.

The legacy TorchScript exporter (``torch.onnx.export(dynamo=False)``) is used: the dynamo exporter
needs ``onnxscript`` and gains nothing for these encoders. Needs the ``export`` extra
(``pip install "qa_lightning[export]"``: onnx, onnxruntime).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from qa_lightning.errors import QALightningError
from qa_lightning.inference.onnx_fusion import export_attention, fuse_transformer_ops
from qa_lightning.metrics.answerability import write_answerability
from qa_lightning.model.model_card import make_tokenizer_portable, write_window

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
INFO_FILE = "export.json"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAMES = ("start_logits", "end_logits")
DEFAULT_OPSET = 17
VERIFY_TOLERANCE = 1e-4
# Families the TorchScript ONNX exporter cannot trace faithfully: refused before exporting.
UNSUPPORTED = {
    "longformer": (
        "its sliding-window attention (chunked, strided views padded to the attention window) "
        "does not survive torch.onnx tracing: onnxruntime's logits differ from PyTorch's by "
        "~2.6e-2 on the tracing inputs themselves (measured with torch 2.13, opset 17). Serve "
        "Longformer with the PyTorch backend (QuestionAnswerer / qa-lightning-serve)."
    )
}


def require_onnxruntime() -> None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ImportError(
            'ONNX support needs the export extra: pip install "qa_lightning[export]"'
        ) from err


class _SpanLogits(nn.Module):
    """Positional inputs -> ``(start_logits, end_logits)`` through the module's own input logic."""

    def __init__(self, module: nn.Module, input_names: Sequence[str]) -> None:
        super().__init__()
        self.module = module
        self.input_names = tuple(input_names)

    def forward(self, *inputs: Tensor) -> tuple[Tensor, Tensor]:
        return self.module(dict(zip(self.input_names, inputs, strict=True)))


def used_inputs(module: nn.Module) -> list[str]:
    """The inputs the model reads (``token_type_ids`` only when it uses them)."""
    probe = {name: torch.ones(1, 4, dtype=torch.long) for name in INPUT_NAMES}
    return [name for name in INPUT_NAMES if name in module.model_inputs(probe)]


def _example_inputs(
    tokenizer: PreTrainedTokenizerBase, input_names: Sequence[str]
) -> tuple[Tensor, ...]:
    """Two padded question/context pairs: tracing with padding keeps the attention mask's path."""
    encoded = tokenizer(
        ["Who wrote it?", "When was the book written and where?"],
        ["The book was written by Ann in 1990.", "Ann wrote it in Paris."],
        padding=True,
        return_token_type_ids=True,
        return_tensors="pt",
    )
    return tuple(encoded[name] for name in input_names)


def export_onnx(
    path: str | Path,
    output: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    fuse: bool = True,
) -> Path:
    """Write the model of ``path`` (``hf_model/``, ``.ckpt`` or hub name) as ONNX into ``output``.

    ``output`` defaults to ``<path>-onnx`` beside the model. With ``fuse`` (default) the families
    onnxruntime's transformer optimizer knows get fused attention, LayerNorm and GELU kernels
    (:mod:`~qa_lightning.inference.onnx_fusion`; the op counts go into ``export.json``). With
    ``verify`` the export is run by onnxruntime on the tracing inputs and must match PyTorch
    within ``1e-4``; a fused graph that does not is replaced by the unfused one.
    """
    from qa_lightning.inference.loading import load_module_and_tokenizer

    module, tokenizer = load_module_and_tokenizer(path)
    model_type = module.model.config.model_type
    if model_type in UNSUPPORTED:
        raise QALightningError(
            f"ONNX export of {model_type} is not supported: {UNSUPPORTED[model_type]}"
        )
    module = module.eval()
    if fuse:
        export_attention(module.model)
    output = Path(output) if output is not None else _default_output(path)
    output.mkdir(parents=True, exist_ok=True)
    input_names = used_inputs(module)
    inputs = _example_inputs(tokenizer, input_names)
    axes = {name: {0: "batch", 1: "sequence"} for name in (*input_names, *OUTPUT_NAMES)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        torch.onnx.export(
            _SpanLogits(module, input_names).eval(),  # the exporter restores the wrapper's mode
            inputs,
            str(output / ONNX_FILE),
            dynamo=False,
            input_names=list(input_names),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
        )
    model_file = output / ONNX_FILE
    fused_file = model_file.with_name(f".{ONNX_FILE}.fused")
    fused = fuse_transformer_ops(model_file, module.model.config, fused_file) if fuse else None
    tokenizer.save_pretrained(output)
    make_tokenizer_portable(output, module.model, tokenizer)
    if module.window is not None:
        write_window(output, module.window)
    info = {
        "inputs": list(input_names),
        "outputs": list(OUTPUT_NAMES),
        "opset": opset,
        "source": str(path),
        "model_type": module.model.config.model_type,
    }
    if module.answerability is not None:
        # The tuned threshold and calibrators travel with the export (QuestionAnswerer reads
        # answerability.json; export.json repeats them for other runtimes).
        info["answerability"] = module.answerability.to_dict()
        write_answerability(output, module.answerability)
    try:
        if verify:
            feeds = dict(zip(input_names, inputs, strict=True))
            if not _verify(module, feeds, model_file, fused_file if fused else None):
                fused = None
        if fused:
            os.replace(fused_file, model_file)
        info["fused_ops"] = fused
    finally:
        fused_file.unlink(missing_ok=True)
    (output / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return output


def _verify(
    module: nn.Module, feeds: dict[str, Tensor], model_file: Path, fused_file: Path | None
) -> bool:
    """Check onnxruntime's logits against PyTorch's on the tracing inputs: those of
    ``fused_file`` when given, else (or when they miss) those of ``model_file``, which must
    match. Returns whether the fused graph passed."""
    with torch.inference_mode():
        expected = module(feeds)
    if fused_file is not None:
        diff = _max_difference(expected, OnnxSpanModel(fused_file)(feeds))
        if diff <= VERIFY_TOLERANCE:
            log.info("Verified %s (fused): max |logit difference| %.2e", model_file, diff)
            return True
        log.warning(
            "%s: the fused graph differs from PyTorch by %.2e; kept the unfused one",
            model_file,
            diff,
        )
    diff = _max_difference(expected, OnnxSpanModel(model_file)(feeds))
    if diff > VERIFY_TOLERANCE:
        raise RuntimeError(f"ONNX logits differ from PyTorch by {diff:.2e} (> {VERIFY_TOLERANCE})")
    log.info("Verified %s: max |logit difference| %.2e", model_file, diff)
    return False


def _max_difference(expected: tuple[Tensor, Tensor], got: tuple[Tensor, Tensor]) -> float:
    return max((a - b).abs().max().item() for a, b in zip(expected, got, strict=True))


def _default_output(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f"{path.stem if path.is_file() else path.name}-onnx")


class OnnxSpanModel:
    """An onnxruntime session as a ``SpanModel``: a batch of features -> start and end logits."""

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None) -> None:
        require_onnxruntime()
        import onnxruntime as ort

        self.session = ort.InferenceSession(
            str(path), providers=list(providers or ["CPUExecutionProvider"])
        )
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        ids = batch["input_ids"]
        feeds = {
            name: (
                batch[name].cpu().numpy().astype(np.int64)
                if name in batch
                else np.zeros(ids.shape, dtype=np.int64)
            )
            for name in self.input_names
        }
        start, end = self.session.run(list(OUTPUT_NAMES), feeds)
        return torch.from_numpy(start).to(ids.device), torch.from_numpy(end).to(ids.device)


def load_onnx(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[OnnxSpanModel, PreTrainedTokenizerBase]:
    """The ONNX model and tokenizer of a directory written by :func:`export_onnx`."""
    from qa_lightning.hub import load_tokenizer

    path = Path(path)
    if not (path / ONNX_FILE).is_file():
        raise FileNotFoundError(f"{path}: no {ONNX_FILE} (write one with qa-lightning-export)")
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda":
        providers.insert(0, "CUDAExecutionProvider")
    return OnnxSpanModel(path / ONNX_FILE, providers), load_tokenizer(str(path))
