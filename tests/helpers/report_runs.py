"""Synthetic run directories for the report tests: real SQuAD questions, made-up predictions,
official scores, and the files a run leaves (metrics.json, questions.jsonl, curves.json)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from qa_lightning.metrics.squad_eval import question_scores, score_predictions
from qa_lightning.report.questions import build_records, write_records
from qa_lightning.utils.io import read_json_file


def examples_of(path: Path, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` questions of an official-layout file as hub-style example rows."""
    rows = []
    for article in read_json_file(path)["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                rows.append(
                    {
                        "id": qa["id"],
                        "question": qa["question"],
                        "context": para["context"],
                        "answers": {
                            "text": [a["text"] for a in qa["answers"]],
                            "answer_start": [a["answer_start"] for a in qa["answers"]],
                        },
                    }
                )
                if len(rows) == limit:
                    return rows
    return rows


def guess(example: dict[str, Any], rng: random.Random, skill: float) -> str:
    """Right (the gold answer) with probability ``skill``, else a near miss, a wrong span or null."""
    texts, context = example["answers"]["text"], example["context"]
    roll = rng.random()
    if texts and roll < skill:
        return texts[0]
    if texts and roll < skill + (1 - skill) / 3:
        start = example["answers"]["answer_start"][0]
        return context[start : start + len(texts[0]) + 12].strip()
    if roll < skill + 2 * (1 - skill) / 3:
        words = context.split()
        first = rng.randrange(max(1, len(words) - 3))
        return " ".join(words[first : first + 3])
    return ""


def make_run(
    run_dir: Path,
    examples: list[dict[str, Any]],
    *,
    version: str,
    seed: int,
    skill: float = 0.6,
    config: str = "model:\n  lr: 3e-5\n",
) -> dict[str, Any]:
    """Write a run directory; returns its metrics (official figures)."""
    rng = random.Random(seed)
    predictions = {e["id"]: guess(e, rng, skill) for e in examples}
    gold = {e["id"]: e["answers"]["text"] for e in examples}
    na_probs = None
    if version == "2.0":
        na_probs = {q: (1.0 if not p else -1.0) + rng.random() for q, p in predictions.items()}
    options = {"na_probs": na_probs, "na_prob_thresh": 0.0} if na_probs else {}
    metrics = score_predictions(gold, predictions, version=version, **options)
    exact, f1 = question_scores(gold, predictions, version=version, **options)
    spans = {q: (0, 0, rng.uniform(0, 10)) for q in predictions}
    records = build_records(
        examples, predictions, exact=exact, f1=f1, spans=spans, na_probs=na_probs
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_records(run_dir, "validation", records, {"version": version, "max_length": 384})
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / ".hydra").mkdir(exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text(config)
    epochs = [
        {"epoch": e, "val/f1": 50.0 + e, "val/exact_match": 40.0 + e, "val/loss": 2.0 - e / 2}
        for e in range(3)
    ]
    steps = [{"step": s, "loss": 5.0 / (s + 1), "lr": 3e-5 * (1 - s / 30)} for s in range(30)]
    (run_dir / "curves.json").write_text(json.dumps({"epochs": epochs, "steps": steps}))
    return metrics
