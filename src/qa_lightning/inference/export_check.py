"""``qa-lightning-export ... --check DATA``: score an exported model against the PyTorch fp32 one.

Both answer the first ``questions`` questions of a SQuAD file (official JSON or JSON lines) through
``QuestionAnswerer`` (the same windows and decoder), are scored with the official script of the
file's version, and are timed at batch 1 (one question per call, median over ``latency_questions``
calls) and batch 32 (32 questions per call, median over the calls). Optionally torch's own dynamic
int8 quantization of the same model is measured too. Rows are measured alternately, call by call,
so that load from other processes hits them alike.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from qa_lightning.data.squad_json import read_squad_file
from qa_lightning.inference.answerer import QuestionAnswerer
from qa_lightning.metrics.squad_eval import score_predictions

LATENCY_BATCHES = (1, 32)


def _answers(
    qa: QuestionAnswerer, questions: Sequence[str], contexts: Sequence[str], v2: bool
) -> list[str]:
    return [a[0]["answer"] for a in qa(questions, contexts, handle_impossible_answer=v2)]


def _latencies(
    rows: dict[str, QuestionAnswerer],
    questions: Sequence[str],
    contexts: Sequence[str],
    batch: int,
    calls: int,
) -> dict[str, float]:
    """Median milliseconds per call of ``batch`` questions, rows interleaved call by call."""
    times: dict[str, list[float]] = {name: [] for name in rows}
    for qa in rows.values():  # one untimed call each (allocator, session warm-up)
        qa.batch_size = batch
        qa(questions[:batch], contexts[:batch])
    for call in range(calls):
        lo = (call * batch) % max(1, len(questions) - batch + 1)
        q, c = questions[lo : lo + batch], contexts[lo : lo + batch]
        for name, qa in rows.items():
            start = time.perf_counter()
            qa(q, c)
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def check_export(
    source: str | Path,
    exported: str | Path,
    data: str | Path,
    questions: int = 1000,
    latency_questions: int = 64,
    latency_calls_32: int = 8,
    torch_int8: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """EM/F1 and latency of ``exported`` (ONNX dir) and of ``source`` (PyTorch fp32) on ``data``."""
    squad = read_squad_file(data)
    records = squad.records[:questions]
    if not records:
        raise ValueError(f"{data}: no questions to check with")
    v2 = squad.version == "2.0"
    qs = [r["question"] for r in records]
    cs = [r["context"] for r in records]
    gold = {r["id"]: r["answers"]["text"] for r in records}
    rows = {
        "torch_fp32": QuestionAnswerer.from_pretrained(source, backend="torch"),
        "onnx": QuestionAnswerer.from_pretrained(exported, backend="onnx"),
    }
    if torch_int8:
        from qa_lightning.inference.quantize import quantize_torch

        base = rows["torch_fp32"]
        rows["torch_int8"] = QuestionAnswerer(quantize_torch(base.module), base.tokenizer)
    result: dict[str, Any] = {
        "data": str(data),
        "questions": len(records),
        "version": squad.version,
    }
    for name, qa in rows.items():
        qa.batch_size = 32
        start = time.perf_counter()
        answers = _answers(qa, qs, cs, v2)
        seconds = time.perf_counter() - start
        scores = score_predictions(
            gold, dict(zip(gold, answers, strict=True)), version=squad.version
        )
        result[name] = {
            "exact_match": scores["exact_match"],
            "f1": scores["f1"],
            "seconds": seconds,
        }
        log(f"{name}: EM {scores['exact_match']:.2f} F1 {scores['f1']:.2f} ({seconds:.1f}s)")
    for batch in LATENCY_BATCHES:
        calls = latency_questions if batch == 1 else latency_calls_32
        for name, ms in _latencies(rows, qs, cs, batch, calls).items():
            result[name][f"latency_ms_batch{batch}"] = ms
    fp32 = result["torch_fp32"]
    for name in rows:
        if name != "torch_fp32":
            row = result[name]
            row["f1_change"] = row["f1"] - fp32["f1"]
            for batch in LATENCY_BATCHES:
                key = f"latency_ms_batch{batch}"
                row[f"speedup_batch{batch}"] = fp32[key] / row[key]
    result["threads"] = {"torch": torch.get_num_threads(), "cpus": os.cpu_count()}
    result["load_average"] = list(os.getloadavg())  # latencies are only as quiet as the machine
    return result
