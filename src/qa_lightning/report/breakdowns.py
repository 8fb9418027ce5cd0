"""Breakdowns of per-question records: EM/F1 and counts by question word, answer length, context
length, windows and the gold answer's distance to a window edge; the error tables."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qa_lightning.metrics.bootstrap import bootstrap_interval

Record = Mapping[str, Any]
QUESTION_WORDS = ("what", "who", "when", "where", "which", "how", "why")
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class Row:
    """One bucket of a breakdown: its label, how many questions, and their EM / F1 (%)."""

    label: str
    count: int
    exact: float
    f1: float


def question_word(question: str) -> str:
    """The first of what/who/when/where/which/how/why in the question, else ``"other"``."""
    for word in _WORD.findall(question.lower()):
        if word in QUESTION_WORDS:
            return word
    return "other"


def _bucket(value: float, edges: Sequence[tuple[float, str]], last: str) -> str:
    return next((label for upper, label in edges if value <= upper), last)


def answer_length(record: Record) -> str:
    texts = record["answers"]["text"]
    if not texts:
        return "no answer"
    words = len(texts[0].split())
    return _bucket(words, ((1, "1"), (2, "2"), (3, "3"), (5, "4-5"), (10, "6-10")), ">10")


def context_length(record: Record) -> str:
    tokens = record.get("context_tokens")
    if tokens is None:
        return "unknown"
    return _bucket(
        tokens, ((99, "<100"), (199, "100-199"), (299, "200-299"), (399, "300-399")), "400+"
    )


def window_count(record: Record) -> str:
    windows = record.get("windows")
    return "unknown" if windows is None else _bucket(windows, ((1, "1"), (2, "2"), (3, "3")), "4+")


def edge_distance(record: Record) -> str:
    if not record["answers"]["text"]:
        return "no answer"
    if record.get("gold_in_window") is False:
        return "in no window"
    edge = record.get("gold_edge_tokens")
    if edge is None:
        return "unknown"
    return _bucket(edge, ((2, "0-2"), (9, "3-9"), (29, "10-29")), "30+")


BREAKDOWNS: dict[str, tuple[str, Callable[[Record], str], tuple[str, ...]]] = {
    "question_word": ("Question word", lambda r: question_word(r["question"]), (*QUESTION_WORDS, "other")),
    "answer_length": ("Gold answer length (words)", answer_length, ("1", "2", "3", "4-5", "6-10", ">10", "no answer")),
    "context_length": ("Context length (tokens)", context_length, ("<100", "100-199", "200-299", "300-399", "400+", "unknown")),
    "windows": ("Windows per question", window_count, ("1", "2", "3", "4+", "unknown")),
    "edge_distance": ("Gold answer's distance to the nearest window edge (tokens)", edge_distance, ("0-2", "3-9", "10-29", "30+", "in no window", "no answer", "unknown")),
}  # fmt: skip


def breakdown(
    records: Sequence[Record], key: Callable[[Record], str], order: Sequence[str]
) -> list[Row]:
    """EM/F1 (%) and counts per bucket, in ``order``; empty buckets left out."""
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(key(record), []).append(record)
    rows = []
    for label in [*order, *sorted(set(groups) - set(order))]:
        group = groups.get(label)
        if group:
            rows.append(
                Row(
                    label,
                    len(group),
                    100.0 * float(np.mean([r["exact"] for r in group])),
                    100.0 * float(np.mean([r["f1"] for r in group])),
                )
            )
    return rows


def all_breakdowns(records: Sequence[Record]) -> dict[str, tuple[str, list[Row]]]:
    """Every breakdown of :data:`BREAKDOWNS` that the records can fill."""
    out = {}
    for name, (title, key, order) in BREAKDOWNS.items():
        rows = breakdown(records, key, order)
        if not all(row.label == "unknown" for row in rows):
            out[name] = (title, rows)
    return out


def lost_to_truncation(records: Sequence[Record]) -> int:
    """Questions whose gold answer fits in no single window (the model cannot point at it)."""
    return sum(1 for r in records if r.get("gold_in_window") is False)


def feature_lengths(records: Sequence[Record]) -> list[int]:
    return [n for r in records for n in r.get("feature_lengths") or ()]


def headline_intervals(
    records: Sequence[Record], samples: int, seed: int, version_2: bool
) -> dict[str, tuple[float, float]]:
    """95% bootstrap intervals (%) of EM/F1, and of HasAns/NoAns for v2.0, from the records."""
    groups = {"": records}
    if version_2:
        groups["HasAns_"] = [r for r in records if r["answers"]["text"]]
        groups["NoAns_"] = [r for r in records if not r["answers"]["text"]]
    out = {}
    for prefix, group in groups.items():
        for name in ("exact", "f1"):
            if group:
                ci = bootstrap_interval([r[name] for r in group], samples, seed)
                out[f"{prefix}{name}"] = (100.0 * ci.low, 100.0 * ci.high)
    return out


# --- error tables ------------------------------------------------------------------------------


def _score(record: Record) -> float:
    score = record.get("score")
    return -np.inf if score is None else float(score)


def worst(records: Sequence[Record], limit: int = 20) -> list[Record]:
    """Answers with F1 0, the most confident first."""
    wrong = [r for r in records if r["f1"] == 0 and r["prediction"]]
    return sorted(wrong, key=_score, reverse=True)[:limit]


def near_misses(records: Sequence[Record], limit: int = 20) -> list[Record]:
    """0 < F1 < 1, the closest first."""
    return sorted((r for r in records if 0 < r["f1"] < 1), key=lambda r: -r["f1"])[:limit]


def false_no_answer(records: Sequence[Record], limit: int = 20) -> list[Record]:
    """v2.0: answerable questions answered "no answer", the most confident null first."""
    found = [r for r in records if r["answers"]["text"] and not r["prediction"]]
    return sorted(found, key=lambda r: -(r.get("na_prob") or 0.0))[:limit]


def false_answers(records: Sequence[Record], limit: int = 20) -> list[Record]:
    """v2.0: unanswerable questions given an answer, the most confident answer first."""
    found = [r for r in records if not r["answers"]["text"] and r["prediction"]]
    return sorted(found, key=lambda r: r.get("na_prob") or 0.0)[:limit]


def error_tables(records: Sequence[Record], version_2: bool) -> dict[str, list[Record]]:
    tables = {"Worst answers (F1 0, most confident first)": worst(records)}
    tables["Near misses (0 < F1 < 1)"] = near_misses(records)
    if version_2:
        tables['False "no answer" (answerable, answered null)'] = false_no_answer(records)
        tables["False answers (unanswerable, answered)"] = false_answers(records)
    return tables
