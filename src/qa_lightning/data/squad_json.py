"""Read SQuAD data files into flat, validated records with the hub ``squad`` columns.

Layouts (either may be gzip-compressed; compression is detected from the file's magic bytes):

- official nested JSON, v1.1 or v2.0:
  ``{"version", "data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}``;
- JSON lines (``.jsonl``, ``.ndjson``, optionally ``.gz``): one flat record per line with ``id``,
  ``title`` (optional), ``context``, ``question`` and ``answers``, the latter either
  ``{"text": [...], "answer_start": [...]}`` (as on the hub) or ``[{"text", "answer_start"}]``.

Answerability (contradictions are errors, never guessed):

- nested layout: a question is unanswerable iff ``is_impossible`` is true, and then ``answers``
  must be empty (``plausible_answers`` are not gold answers and are discarded). Every other
  question, including every question of a v1.1 file (which has no ``is_impossible``), must have
  at least one answer;
- JSON lines: a record with empty ``answers`` is unanswerable.

The detected version is ``"2.0"`` when at least one question is unanswerable, else ``"1.1"``;
pass ``expected_version`` to turn a mismatch (a v2.0 file where v1.1 is expected, or the
reverse) into an error. Answer positions are only type-checked here: misaligned ``answer_start``
values are fixed by :mod:`qa_lightning.data.alignment`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from qa_lightning.errors import DataFormatError
from qa_lightning.utils.io import parse_json, read_text

Record = dict[str, Any]
VERSIONS = ("1.1", "2.0")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
_REQUIRED: Any = object()


@dataclass(frozen=True)
class SquadFile:
    """The flat records of one file, with its detected and declared SQuAD version."""

    path: Path
    records: list[Record]
    version: str
    declared_version: str | None
    num_unanswerable: int


def read_squad_file(
    path: str | os.PathLike[str], *, expected_version: str | None = None
) -> SquadFile:
    """Read and validate a nested SQuAD JSON or a JSON-lines file (plain or gzip)."""
    if expected_version not in (None, *VERSIONS):
        raise ValueError(f"expected_version must be one of {VERSIONS} or None")
    path = Path(path)
    text = read_text(path)
    if is_jsonl(path):
        records, declared = _parse_jsonl(text, path), None
    else:
        records, declared = _parse_nested(text, path)
    unanswerable = [r["id"] for r in records if not r["answers"]["text"]]
    version = "2.0" if unanswerable else "1.1"
    _check_version(path, version, expected_version, unanswerable)
    return SquadFile(path, records, version, declared, len(unanswerable))


def is_jsonl(path: Path) -> bool:
    """Whether ``path`` names a JSON-lines file (``.jsonl``/``.ndjson``, optionally ``.gz``)."""
    name = path.name.lower().removesuffix(".gz")
    return name.endswith(JSONL_SUFFIXES)


def _parse_nested(text: str, path: Path) -> tuple[list[Record], str | None]:
    check = _Checker(path)
    top = parse_json(text, path)
    if not isinstance(top, dict):
        raise DataFormatError(
            f"the top level must be a JSON object with a 'data' list, got {type(top).__name__}"
            " (flat records belong in a .jsonl file, one per line)",
            path=str(path),
        )
    declared = top.get("version")
    records: list[Record] = []
    for a, article in enumerate(check.get(top, "data", list, "the file")):
        where = f"data[{a}]"
        check.is_object(article, where)
        title = check.get(article, "title", str, where, default="")
        for p, paragraph in enumerate(check.get(article, "paragraphs", list, where)):
            pwhere = f"{where}.paragraphs[{p}]"
            check.is_object(paragraph, pwhere)
            context = check.text(paragraph, "context", pwhere)
            for q, qa in enumerate(check.get(paragraph, "qas", list, pwhere)):
                records.append(check.nested_question(qa, f"{pwhere}.qas[{q}]", title, context))
    return records, declared if isinstance(declared, str) else None


def _parse_jsonl(text: str, path: Path) -> list[Record]:
    check = _Checker(path)
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            record = parse_json(line, path, where=f" on line {number}")
            records.append(check.flat_record(record, f"line {number}"))
    return records


def _check_version(path: Path, version: str, expected: str | None, unanswerable: list[str]) -> None:
    if expected is None or expected == version:
        return
    if expected == "1.1":
        message = (
            f"expected SQuAD v1.1 but {len(unanswerable):,} questions are unanswerable "
            f"(e.g. {', '.join(unanswerable[:3])}): this is a v2.0 file"
        )
    else:
        message = "expected SQuAD v2.0 but no question is unanswerable: this looks like v1.1"
    raise DataFormatError(message, path=str(path))


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    list: "a list",
    dict: "an object",
    bool: "a bool",
}


class _Checker:
    """Validates the objects of one file; errors name the file, question id and field."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.seen: dict[str, str] = {}

    def fail(self, message: str, *, qid: str | None = None, field: str | None = None) -> NoReturn:
        raise DataFormatError(message, path=self.path, qid=qid, field=field)

    def is_object(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            self.fail(f"{where} must be an object, got {type(value).__name__}")

    def check_type(
        self, value: Any, kind: type, where: str, field: str, qid: str | None = None
    ) -> None:
        # bool is a subclass of int, but `"answer_start": true` is a type error.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(
                f"{where}: {field} must be {_TYPE_NAMES[kind]}, "
                f"got {type(value).__name__} {_preview(value)}",
                qid=qid,
                field=field,
            )

    def get(
        self,
        obj: Record,
        key: str,
        kind: type,
        where: str,
        qid: str | None = None,
        default: Any = _REQUIRED,
    ) -> Any:
        if key not in obj:
            if default is not _REQUIRED:
                return default
            self.fail(f"{where} has no {key!r}", qid=qid, field=key)
        self.check_type(obj[key], kind, where, key, qid)
        return obj[key]

    def text(self, obj: Record, key: str, where: str, qid: str | None = None) -> str:
        value = self.get(obj, key, str, where, qid)
        if not value.strip():
            self.fail(f"{where}: {key} is empty or whitespace-only", qid=qid, field=key)
        return value

    def qid(self, obj: Record, where: str) -> str:
        qid = self.text(obj, "id", where)
        if qid in self.seen:
            self.fail(
                f"{where}: duplicate question id (first at {self.seen[qid]})", qid=qid, field="id"
            )
        self.seen[qid] = where
        return qid

    def answer(self, text: Any, start: Any, where: str, field: str, qid: str) -> tuple[str, int]:
        self.check_type(text, str, where, f"{field}.text", qid)
        self.check_type(start, int, where, f"{field}.answer_start", qid)
        if not text.strip():
            self.fail(f"{where}: the answer text is empty", qid=qid, field=f"{field}.text")
        return text, start

    def answer_list(self, answers: list, where: str, qid: str) -> list[tuple[str, int]]:
        pairs = []
        for i, answer in enumerate(answers):
            field = f"answers[{i}]"
            if not isinstance(answer, dict):
                self.fail(f"{where}: {field} must be an object", qid=qid, field=field)
            for key in ("text", "answer_start"):
                if key not in answer:
                    self.fail(f"{where}: {field} has no {key!r}", qid=qid, field=f"{field}.{key}")
            pairs.append(self.answer(answer["text"], answer["answer_start"], where, field, qid))
        return pairs

    def answer_columns(self, answers: Record, where: str, qid: str) -> list[tuple[str, int]]:
        for key in ("text", "answer_start"):
            if key not in answers:
                self.fail(f"{where}: answers has no {key!r}", qid=qid, field=f"answers.{key}")
            self.check_type(answers[key], list, where, f"answers.{key}", qid)
        texts, starts = answers["text"], answers["answer_start"]
        if len(texts) != len(starts):
            self.fail(
                f"{where}: answers has {len(texts)} texts but {len(starts)} answer_start values",
                qid=qid,
                field="answers",
            )
        return [
            self.answer(t, s, where, f"answers[{i}]", qid)
            for i, (t, s) in enumerate(zip(texts, starts, strict=True))
        ]

    def nested_question(self, qa: Any, where: str, title: str, context: str) -> Record:
        self.is_object(qa, where)
        qid = self.qid(qa, where)
        question = self.text(qa, "question", where, qid)
        answers = self.answer_list(self.get(qa, "answers", list, where, qid), where, qid)
        impossible = self.get(qa, "is_impossible", bool, where, qid, default=False)
        if impossible and answers:
            self.fail(
                f"{where}: is_impossible is true but the question has {len(answers)} answers",
                qid=qid,
                field="answers",
            )
        if not impossible and not answers:
            self.fail(
                f"{where}: answerable question with no answers (mark unanswerable questions "
                "with is_impossible: true, as in SQuAD v2.0)",
                qid=qid,
                field="answers",
            )
        return _record(qid, title, context, question, answers)

    def flat_record(self, record: Any, where: str) -> Record:
        self.is_object(record, where)
        qid = self.qid(record, where)
        title = self.get(record, "title", str, where, qid, default="")
        context = self.text(record, "context", where, qid)
        question = self.text(record, "question", where, qid)
        if "answers" not in record:
            self.fail(f"{where} has no 'answers'", qid=qid, field="answers")
        answers = record["answers"]
        if isinstance(answers, dict):
            pairs = self.answer_columns(answers, where, qid)
        elif isinstance(answers, list):
            pairs = self.answer_list(answers, where, qid)
        else:
            self.fail(
                f"{where}: answers must be a list of {{text, answer_start}} objects or "
                f"{{text: [...], answer_start: [...]}}, got {type(answers).__name__}",
                qid=qid,
                field="answers",
            )
        return _record(qid, title, context, question, pairs)


def _record(
    qid: str, title: str, context: str, question: str, answers: list[tuple[str, int]]
) -> Record:
    return {
        "id": qid,
        "title": title,
        "context": context,
        "question": question,
        "answers": {
            "text": [text for text, _ in answers],
            "answer_start": [start for _, start in answers],
        },
    }


def _preview(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."
