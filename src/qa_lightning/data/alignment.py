"""The misaligned gold answer policy: make every ``answer_start`` point at its answer text.

For each answer where ``context[answer_start:answer_start + len(text)] != text``:

1. if ``text`` occurs in the context, move it to the occurrence nearest to ``answer_start``
   (ties go to the earlier one): counted as *realigned*;
2. otherwise search again ignoring case and treating every run of whitespace as one space; on
   a match the answer's text becomes the matched context span: counted as *realigned_fuzzy*;
3. otherwise drop the answer. A question that loses all of its answers is dropped.

Questions without answers to begin with (unanswerable) are kept as they are. The input records
are not modified. Any change is summarised in one warning per call, never silently.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from qa_lightning.data.squad_json import Record

logger = logging.getLogger(__name__)

MAX_EXAMPLE_IDS = 5


@dataclass
class AlignmentReport:
    """What :func:`align_answers` changed, with a few example question ids per kind of change."""

    source: str = ""
    questions: int = 0
    answers: int = 0
    realigned: int = 0
    realigned_fuzzy: int = 0
    dropped_answers: int = 0
    dropped_questions: int = 0
    realigned_ids: list[str] = field(default_factory=list)
    fuzzy_ids: list[str] = field(default_factory=list)
    dropped_ids: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether any answer was moved or dropped."""
        return bool(self.realigned or self.realigned_fuzzy or self.dropped_answers)

    def summary(self) -> str:
        """One line naming the source, the counts and example ids of every kind of change."""
        parts = []
        if self.realigned:
            parts.append(
                f"{self.realigned:,} answers realigned to the nearest occurrence"
                f"{_examples(self.realigned_ids, self.realigned)}"
            )
        if self.realigned_fuzzy:
            parts.append(
                f"{self.realigned_fuzzy:,} answers found only ignoring case/whitespace "
                f"(text replaced by the context span){_examples(self.fuzzy_ids, self.realigned_fuzzy)}"
            )
        if self.dropped_answers:
            parts.append(f"{self.dropped_answers:,} answers dropped (answer text not in context)")
        if self.dropped_questions:
            parts.append(
                f"{self.dropped_questions:,} questions dropped (no answer left): ids "
                f"{_id_list(self.dropped_ids, self.dropped_questions)}"
            )
        body = ", ".join(parts) if parts else "all answers aligned"
        return f"{self.source or 'answers'}: {body}"

    def note(self, ids: list[str], qid: str) -> None:
        """Remember ``qid`` as an example in ``ids`` (at most ``MAX_EXAMPLE_IDS``, no repeats)."""
        if len(ids) < MAX_EXAMPLE_IDS and qid not in ids:
            ids.append(qid)


def align_answers(
    records: Sequence[Record], *, source: str = ""
) -> tuple[list[Record], AlignmentReport]:
    """Apply the alignment policy; ``source`` (e.g. a file name) prefixes the summary."""
    report = AlignmentReport(source=source, questions=len(records))
    fixed = []
    for record in records:
        report.answers += len(record["answers"]["text"])
        aligned = _align_record(record, report)
        if aligned is not None:
            fixed.append(aligned)
    if report.changed:
        logger.warning(report.summary())
    return fixed, report


def _align_record(record: Record, report: AlignmentReport) -> Record | None:
    context, answers, qid = record["context"], record["answers"], record["id"]
    pairs = list(zip(answers["text"], answers["answer_start"], strict=True))
    if all(_is_at(context, text, start) for text, start in pairs):
        return record
    normalised: _Normalised | None = None
    kept = []
    for text, start in pairs:
        if _is_at(context, text, start):
            kept.append((text, start))
            continue
        nearest = _nearest(_occurrences(context, text), start)
        if nearest is not None:
            kept.append((text, nearest))
            report.realigned += 1
            report.note(report.realigned_ids, qid)
            continue
        normalised = normalised or _Normalised(context)
        span = normalised.find_nearest(text, start)
        if span is not None:
            kept.append((context[span[0] : span[1]], span[0]))
            report.realigned_fuzzy += 1
            report.note(report.fuzzy_ids, qid)
        else:
            report.dropped_answers += 1
    if not kept:
        report.dropped_questions += 1
        report.note(report.dropped_ids, qid)
        return None
    texts, starts = zip(*kept, strict=True)
    return {**record, "answers": {"text": list(texts), "answer_start": list(starts)}}


def _is_at(context: str, text: str, start: int) -> bool:
    # A negative start would index from the end of the context: never aligned.
    return start >= 0 and context.startswith(text, start)


def _occurrences(haystack: str, needle: str) -> Iterator[int]:
    position = haystack.find(needle)
    while position != -1:
        yield position
        position = haystack.find(needle, position + 1)


def _nearest(positions: Iterable[int], target: int) -> int | None:
    return min(positions, key=lambda p: (abs(p - target), p), default=None)


class _Normalised:
    """A context lower-cased with whitespace runs collapsed, mapped back to original offsets."""

    def __init__(self, context: str) -> None:
        self.text, self.origin = _normalise(context)

    def find_nearest(self, answer: str, start: int) -> tuple[int, int] | None:
        """The original ``(start, end)`` of the match nearest to ``start``, if any."""
        needle = _normalise(answer.strip())[0]
        if not needle:
            return None
        best = min(
            _occurrences(self.text, needle),
            key=lambda p: (abs(self.origin[p] - start), p),
            default=None,
        )
        if best is None:
            return None
        return self.origin[best], self.origin[best + len(needle) - 1] + 1


def _normalise(text: str) -> tuple[str, list[int]]:
    chars: list[str] = []
    origin: list[int] = []
    previous_space = False
    for index, char in enumerate(text):
        if char.isspace():
            if not previous_space:
                chars.append(" ")
                origin.append(index)
            previous_space = True
            continue
        lower = char.lower()
        chars.append(lower)
        origin.extend([index] * len(lower))
        previous_space = False
    return "".join(chars), origin


def _examples(ids: list[str], count: int) -> str:
    return f" (e.g. {_id_list(ids, count)})" if ids else ""


def _id_list(ids: list[str], count: int) -> str:
    return ", ".join(ids) + (" ..." if count > len(ids) else "")
