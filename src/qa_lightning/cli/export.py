"""``qa-lightning-export PATH --format onnx [--output DIR] [--opset N]``: write an ONNX model."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from qa_lightning.hub import set_models_dir
from qa_lightning.inference.onnx import DEFAULT_OPSET, export_onnx, require_onnxruntime


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
        "--models-dir",
        help="local folder of hub model folders (default: $QA_LIGHTNING_MODELS_DIR)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    require_onnxruntime()
    set_models_dir(args.models_dir or None)
    output = export_onnx(args.path, args.output, opset=args.opset, verify=not args.no_verify)
    print(output)


if __name__ == "__main__":
    main()
