"""``qa-lightning-score DATA_FILE PREDICTIONS_FILE``: the official SQuAD EM/F1 figures as JSON.

The version (v1.1 or v2.0) comes from the data file. The output is what the official script
of that version prints: one line for v1.1, ``indent=2`` for v2.0 (compact with ``--out-file``).
Input errors print one line to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from qa_lightning.errors import DataFormatError, QALightningError
from qa_lightning.metrics.squad_eval import (
    MissingPredictionWarning,
    load_gold,
    read_json_file,
    score_predictions,
)
from qa_lightning.utils.io import atomic_write_json

PROG = "qa-lightning-score"
EXIT_INPUT_ERROR = 2


class _UsageError(Exception):
    """Arguments that do not fit the data (reported like an argparse error)."""


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface, mirroring the official evaluation scripts."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Official SQuAD v1.1 / v2.0 exact-match and F1 scores."
    )
    parser.add_argument(
        "data_file", metavar="DATA_FILE", help="SQuAD data JSON (.json or .json.gz)"
    )
    parser.add_argument("pred_file", metavar="PREDICTIONS_FILE", help="JSON {question_id: answer}")
    parser.add_argument(
        "--na-prob-file", metavar="F", help="JSON {question_id: no-answer probability} (v2.0)"
    )
    parser.add_argument(
        "--na-prob-thresh",
        metavar="T",
        type=float,
        default=1.0,
        help='predict "" when the no-answer probability exceeds T (v2.0, default 1.0)',
    )
    parser.add_argument("--out-file", metavar="F", help="write the JSON here instead of stdout")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Score the predictions and print (or write) the JSON; return the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage or help
        return exc.code if isinstance(exc.code, int) else EXIT_INPUT_ERROR
    try:
        result, version = _score(args)
        _emit(result, version, args.out_file)
    except (OSError, QALightningError, _UsageError) as exc:
        print(f"{PROG}: error: {_describe(exc)}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    return 0


def _score(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    gold, version = load_gold(args.data_file)
    predictions = _read_mapping(args.pred_file, (str,), "an answer string")
    na_probs = None
    if args.na_prob_file:
        na_probs = _read_mapping(args.na_prob_file, (int, float), "a number")
    if version == "1.1" and (na_probs is not None or args.na_prob_thresh != 1.0):
        raise _UsageError(
            f"{args.data_file} is SQuAD v1.1; --na-prob-file/--na-prob-thresh apply to v2.0 only"
        )
    sources = {"predictions": args.pred_file, "na_probs": args.na_prob_file}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MissingPredictionWarning)
        try:
            result = score_predictions(
                gold,
                predictions,
                version=version,
                na_probs=na_probs,
                na_prob_thresh=args.na_prob_thresh,
            )
        except DataFormatError as exc:
            raise DataFormatError(str(exc), path=sources.get(exc.field)) from exc
    for warning in caught:
        print(f"{PROG}: warning: {warning.message}", file=sys.stderr)
    return result, version


def _emit(result: dict[str, Any], version: str, out_file: str | None) -> None:
    """Print the JSON as the official script does, or write it compactly to ``out_file``."""
    if out_file:
        atomic_write_json(out_file, result, indent=None)
    else:
        print(json.dumps(result, indent=2 if version == "2.0" else None))


def _read_mapping(path: str, value_types: tuple[type, ...], what: str) -> dict[str, Any]:
    """A JSON object ``{question_id: value}`` whose every value is one of ``value_types``."""
    obj = read_json_file(path)
    if not isinstance(obj, dict):
        raise DataFormatError(f"expected a JSON object mapping question id to {what}", path=path)
    for qid, value in obj.items():
        if not isinstance(value, value_types) or isinstance(value, bool):
            raise DataFormatError(
                f"expected {what}, got {type(value).__name__}", path=path, qid=qid
            )
    return obj


def _describe(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"cannot read {exc.filename}: {exc.strerror}"
    return str(exc)


if __name__ == "__main__":
    raise SystemExit(main())
