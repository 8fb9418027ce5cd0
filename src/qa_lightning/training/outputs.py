"""The files a run leaves behind: metrics, predictions and no-answer odds (evaluation), n-best
answers (predict), written atomically."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from qa_lightning.utils.io import atomic_write_json


def eval_file_names(split: str) -> dict[str, str]:
    """``metrics.json`` / ``predictions.json`` / ``null_odds.json`` for validation, ``test_``-prefixed for test."""
    prefix = "" if split == "validation" else f"{split}_"
    return {name: f"{prefix}{name}.json" for name in ("metrics", "predictions", "null_odds")}


def write_eval_outputs(
    output_dir: str | Path,
    split: str,
    metrics: Mapping[str, float],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    intervals: Mapping[str, object] | None = None,
) -> dict[str, Path]:
    """Write the official-format files of one evaluated split; returns what was written.

    ``intervals`` (bootstrap confidence intervals) go into ``metrics.json`` under ``bootstrap``,
    after the official figures.
    """
    output_dir = Path(output_dir)
    names = eval_file_names(split)
    figures: dict[str, object] = {k: _number(v) for k, v in metrics.items()}
    if intervals:
        figures["bootstrap"] = dict(intervals)
    written = {
        "metrics": atomic_write_json(output_dir / names["metrics"], figures),
        "predictions": atomic_write_json(output_dir / names["predictions"], dict(predictions)),
    }
    if na_probs:
        written["null_odds"] = atomic_write_json(output_dir / names["null_odds"], dict(na_probs))
    return written


def write_answers(path: str | Path, answers: Mapping[str, list[dict]]) -> Path:
    """``{id: [{"answer", "score", "start", "end"}, ...]}`` to ``path`` and ``{id: best answer}``
    (``""`` when there is none) beside it as ``predictions.json``; returns ``path``."""
    path = atomic_write_json(path, dict(answers))
    best = {qid: found[0]["answer"] if found else "" for qid, found in answers.items()}
    atomic_write_json(Path(path).with_name("predictions.json"), best)
    return Path(path)


def _number(value: object) -> float | int:
    if hasattr(value, "item"):
        value = value.item()
    return int(value) if isinstance(value, int) else float(value)
