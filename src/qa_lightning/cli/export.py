"""``qa-lightning-export PATH --format onnx [--output DIR] [--opset N] [--quantize int8]
[--check DATA]``: write an ONNX model, optionally int8, and score it against PyTorch fp32."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence

from qa_lightning.hub import set_models_dir
from qa_lightning.inference.onnx import DEFAULT_OPSET, export_onnx, require_onnxruntime
from qa_lightning.inference.quantize import QUANTIZE_CHOICES, quantize_onnx
from qa_lightning.utils.io import atomic_write_text

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``qa-lightning-export``."""
    parser = argparse.ArgumentParser(
        prog="qa-lightning-export",
        description="Export a trained QA model (hf_model/ directory, .ckpt or hub name).",
    )
    parser.add_argument("path", help="hf_model/ directory, Lightning checkpoint or hub name")
    parser.add_argument("--format", choices=["onnx"], default="onnx", help="export format")
    parser.add_argument("--output", help="output directory (default: <path>-onnx)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset version")
    parser.add_argument(
        "--no-verify", action="store_true", help="skip comparing onnxruntime with PyTorch"
    )
    parser.add_argument(
        "--no-fuse",
        action="store_true",
        help="keep the exported graph as traced (no onnxruntime transformer-op fusion)",
    )
    parser.add_argument(
        "--models-dir",
        help="local folder of hub model folders (default: $QA_LIGHTNING_MODELS_DIR)",
    )
    parser.add_argument(
        "--quantize",
        choices=QUANTIZE_CHOICES,
        help="dynamic quantization of the exported model (onnxruntime; CPU inference)",
    )
    parser.add_argument(
        "--check",
        metavar="DATA",
        help="SQuAD file: score the export against the PyTorch fp32 model (EM/F1, latency); "
        "the JSON goes to stdout and DIR/check.json",
    )
    parser.add_argument("--check-questions", type=int, default=1000, help="questions to score")
    parser.add_argument(
        "--check-torch-int8",
        action="store_true",
        help="also measure torch's dynamic int8 quantization in the check",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    require_onnxruntime()
    set_models_dir(args.models_dir or None)
    output = export_onnx(
        args.path, args.output, opset=args.opset, verify=not args.no_verify, fuse=not args.no_fuse
    )
    if args.quantize:
        quantize_onnx(output, args.quantize)
        log.info("Quantized %s (%s dynamic)", output, args.quantize)
    print(output)
    if args.check:
        from qa_lightning.inference.export_check import check_export

        result = check_export(
            args.path,
            output,
            args.check,
            questions=args.check_questions,
            torch_int8=args.check_torch_int8,
            log=log.info,
        )
        result["quantize"] = args.quantize
        text = json.dumps(result)
        atomic_write_text(output / "check.json", text + "\n")
        print(text)


if __name__ == "__main__":
    main()
