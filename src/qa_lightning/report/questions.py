"""Per-question records of one evaluation (``questions.jsonl``): what the report reads.

One JSON object per question: id, question, context, gold answers, the prediction with its
characters and score, the no-answer probability (v2.0), per-question EM/F1 (0..1), and where the
question sits in the model's windows (number of windows, context tokens, feature lengths, the
gold answer's distance to the nearest window edge, or ``gold_in_window: false`` when no single
window holds it). ``questions.meta.json`` beside it holds the split, version and max_length.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qa_lightning.errors import DataFormatError
from qa_lightning.utils.io import atomic_write, atomic_write_json

REQUIRED = ("id", "question", "context", "answers", "prediction", "exact", "f1")


def file_names(split: str) -> tuple[str, str]:
    """``questions.jsonl`` / ``questions.meta.json``, ``test_``-prefixed for the test split."""
    prefix = "" if split == "validation" else f"{split}_"
    return f"{prefix}questions.jsonl", f"{prefix}questions.meta.json"


@dataclass(frozen=True)
class WindowStats:
    """Where one question sits in its windows (``None`` fields when it has no gold answer)."""

    windows: int
    context_tokens: int
    feature_lengths: list[int]
    gold_in_window: bool | None
    gold_edge_tokens: int | None


def window_stats(
    offsets: Sequence[np.ndarray],
    lengths: Sequence[int],
    gold_start: int | None,
    gold_end: int | None,
) -> WindowStats:
    """Stats of one question from its features' ``offset_mapping`` (``[-1, -1]`` outside the
    context) and lengths. The edge distance is the number of context tokens between the gold
    answer and the nearer window edge, in the window where that distance is largest."""
    seen: set[tuple[int, int]] = set()
    best: int | None = None
    for window in offsets:
        ctx = window[window[:, 0] >= 0]
        seen.update(map(tuple, ctx.tolist()))
        if gold_start is None or gold_end is None or not len(ctx):
            continue
        inside_start = np.nonzero((ctx[:, 0] <= gold_start) & (ctx[:, 1] > gold_start))[0]
        inside_end = np.nonzero((ctx[:, 0] < gold_end) & (ctx[:, 1] >= gold_end))[0]
        if len(inside_start) and len(inside_end):
            edge = int(min(inside_start[0], len(ctx) - 1 - inside_end[-1]))
            best = edge if best is None else max(best, edge)
    has_gold = gold_start is not None
    return WindowStats(
        windows=len(offsets),
        context_tokens=len(seen),
        feature_lengths=[int(n) for n in lengths],
        gold_in_window=(best is not None) if has_gold else None,
        gold_edge_tokens=best,
    )


def features_by_example(
    example_index: Sequence[int], offsets: Iterable[Any], lengths: Sequence[int]
) -> dict[int, tuple[list[np.ndarray], list[int]]]:
    """Group the features' offsets and lengths by example row."""
    grouped: dict[int, tuple[list[np.ndarray], list[int]]] = {}
    for row, offset, length in zip(example_index, offsets, lengths, strict=True):
        windows, sizes = grouped.setdefault(int(row), ([], []))
        windows.append(np.asarray(offset, dtype=np.int64).reshape(-1, 2))
        sizes.append(int(length))
    return grouped


def build_records(
    examples: Sequence[Mapping[str, Any]],
    predictions: Mapping[str, str],
    *,
    exact: Mapping[str, float],
    f1: Mapping[str, float],
    spans: Mapping[str, tuple[int, int, float]] | None = None,
    na_probs: Mapping[str, float] | None = None,
    windows: Mapping[int, tuple[list[np.ndarray], list[int]]] | None = None,
) -> list[dict[str, Any]]:
    """One record per predicted example (``examples`` rows: id, question, context, answers)."""
    records = []
    for row, example in enumerate(examples):
        qid = example["id"]
        if qid not in predictions:
            continue
        answers = example["answers"]
        texts, starts = list(answers["text"]), [int(s) for s in answers["answer_start"]]
        start, end, score = (spans or {}).get(qid, (None, None, None))
        record: dict[str, Any] = {
            "id": qid,
            "question": example["question"],
            "context": example["context"],
            "answers": {"text": texts, "answer_start": starts},
            "prediction": predictions[qid],
            "pred_start": start,
            "pred_end": end,
            "score": None if score is None or not np.isfinite(score) else float(score),
            "na_prob": None if not na_probs else float(na_probs.get(qid, 0.0)),
            "exact": float(exact[qid]),
            "f1": float(f1[qid]),
        }
        if windows is not None and row in windows:
            gold = (starts[0], starts[0] + len(texts[0])) if texts else (None, None)
            stats = window_stats(*windows[row], *gold)
            record.update(stats.__dict__)
        records.append(record)
    return records


def write_records(
    output_dir: str | Path, split: str, records: Sequence[Mapping[str, Any]], meta: Mapping
) -> Path:
    """``questions.jsonl`` (atomically) and its ``questions.meta.json``; returns the JSONL path."""
    rows_name, meta_name = file_names(split)
    path = Path(output_dir) / rows_name

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    atomic_write(path, write)
    atomic_write_json(Path(output_dir) / meta_name, dict(meta))
    return path


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``questions.jsonl``; a bad line is an error naming the file and line."""
    return list(_iter_records(Path(path)))


def _iter_records(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataFormatError(f"line {number} is not JSON: {err}", path=str(path)) from err
            missing = [k for k in REQUIRED if k not in record] if isinstance(record, dict) else []
            if not isinstance(record, dict) or missing:
                raise DataFormatError(
                    f"line {number} lacks {missing}",
                    path=str(path),
                    qid=record.get("id") if isinstance(record, dict) else None,
                    field=missing[0] if missing else None,
                )
            yield record
