"""Data sources: SQuAD file reading and validation, answer alignment, loading, splits, limits."""

from __future__ import annotations

import copy
import gzip
import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers.examples import make_dataset
from qa_lightning.data import sources
from qa_lightning.data.alignment import align_answers
from qa_lightning.data.sources import (
    SQUAD_FEATURES,
    count_unanswerable,
    detect_version,
    load_examples,
    records_to_dataset,
)
from qa_lightning.data.splits import limit_examples, split_examples
from qa_lightning.data.squad_json import read_squad_file
from qa_lightning.errors import DataFormatError, OfflineError

ALIGNMENT_LOGGER = "qa_lightning.data.alignment"


# ---------------------------------------------------------------- helpers


def nested(version: str = "1.1") -> dict[str, Any]:
    """A small valid official-layout file: two articles, three paragraphs, four questions."""
    return {
        "version": version,
        "data": [
            {
                "title": "Paris",
                "paragraphs": [
                    {
                        "context": "Paris is the capital of France.",
                        "qas": [
                            {
                                "id": "q1",
                                "question": "What is the capital of France?",
                                "answers": [{"text": "Paris", "answer_start": 0}],
                            },
                            {
                                "id": "q2",
                                "question": "Paris is the capital of which country?",
                                "answers": [
                                    {"text": "France", "answer_start": 24},
                                    {"text": "France.", "answer_start": 24},
                                ],
                            },
                        ],
                    },
                    {
                        "context": "The Seine flows through Paris.",
                        "qas": [
                            {
                                "id": "q3",
                                "question": "Which river flows through Paris?",
                                "answers": [{"text": "Seine", "answer_start": 4}],
                            }
                        ],
                    },
                ],
            },
            {
                "title": "Rome",
                "paragraphs": [
                    {
                        "context": "Rome is in Italy.",
                        "qas": [
                            {
                                "id": "q4",
                                "question": "Where is Rome?",
                                "answers": [{"text": "Italy", "answer_start": 11}],
                            }
                        ],
                    }
                ],
            },
        ],
    }


def nested_v2() -> dict[str, Any]:
    """The small file as v2.0, with one unanswerable question carrying plausible answers."""
    data = nested("v2.0")
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                qa["is_impossible"] = False
    data["data"][1]["paragraphs"][0]["qas"].append(
        {
            "id": "q5",
            "question": "What is the capital of Rome?",
            "answers": [],
            "is_impossible": True,
            "plausible_answers": [{"text": "Italy", "answer_start": 11}],
        }
    )
    return data


def write(path: Path, content: Any) -> Path:
    """Write JSON (or raw bytes / text) to ``path``, gzip-compressed when it ends in ``.gz``."""
    if isinstance(content, bytes):
        raw = content
    elif isinstance(content, str):
        raw = content.encode()
    else:
        raw = json.dumps(content).encode()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    return write(path, "\n".join(json.dumps(r) for r in records) + "\n")


def qa(data: dict[str, Any], article: int = 0, paragraph: int = 0, index: int = 0) -> dict:
    return data["data"][article]["paragraphs"][paragraph]["qas"][index]


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == ALIGNMENT_LOGGER and r.levelno == logging.WARNING
    ]


def all_exact(records: list[dict[str, Any]]) -> bool:
    return all(
        r["context"][s : s + len(t)] == t
        for r in records
        for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"], strict=True)
    )


# ---------------------------------------------------------------- real SQuAD files


@pytest.fixture(scope="module")
def squad_dir(shared_data: Path) -> Path:
    return shared_data / "squad"


@pytest.fixture(scope="module")
def dev_v2(squad_dir: Path) -> datasets.Dataset:
    return load_examples(squad_dir / "dev-v2.0.json.gz")


@pytest.fixture(scope="module")
def train_records(squad_dir: Path) -> list[dict[str, Any]]:
    return read_squad_file(squad_dir / "train-v1.1.reconstructed.json.gz").records


def test_official_dev_v11(squad_dir: Path) -> None:
    squad_file = read_squad_file(squad_dir / "dev-v1.1.json.gz", expected_version="1.1")
    assert (squad_file.version, squad_file.declared_version) == ("1.1", "1.1")
    assert len(squad_file.records) == 10_570 and squad_file.num_unanswerable == 0
    ds = load_examples(squad_dir / "dev-v1.1.json.gz")
    assert len(ds) == 10_570 and ds.features == SQUAD_FEATURES
    assert ds.column_names == ["id", "title", "context", "question", "answers"]
    assert detect_version(ds) == "1.1"
    assert ds[0]["id"] == "56be4db0acb8001400a502ec" and ds[0]["title"] == "Super_Bowl_50"


def test_official_dev_v20(squad_dir: Path, dev_v2: datasets.Dataset) -> None:
    squad_file = read_squad_file(squad_dir / "dev-v2.0.json.gz", expected_version="2.0")
    assert (squad_file.version, squad_file.declared_version) == ("2.0", "v2.0")
    assert squad_file.num_unanswerable == 5_945
    assert len(dev_v2) == 11_873 and dev_v2.features == SQUAD_FEATURES
    assert detect_version(dev_v2) == "2.0" and count_unanswerable(dev_v2) == 5_945
    impossible = next(r for r in squad_file.records if r["id"] == "5ad39d53604f3c001a3fe8d1")
    assert impossible["answers"] == {"text": [], "answer_start": []}  # plausible_answers ignored


def test_version_mismatch_is_detected(squad_dir: Path) -> None:
    with pytest.raises(DataFormatError, match=r"dev-v2\.0\.json\.gz.*expected SQuAD v1\.1.*5,945"):
        read_squad_file(squad_dir / "dev-v2.0.json.gz", expected_version="1.1")
    with pytest.raises(DataFormatError, match=r"dev-v1\.1\.json\.gz.*expected SQuAD v2\.0"):
        read_squad_file(squad_dir / "dev-v1.1.json.gz", expected_version="2.0")


def test_reconstructed_train_alignment(
    train_records: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """Every start already points at its text; the wrong-occurrence ones are undetectable."""
    assert len(train_records) == 87_599
    with caplog.at_level(logging.WARNING, logger=ALIGNMENT_LOGGER):
        fixed, report = align_answers(train_records, source="train")
    assert len(fixed) == 87_599 and all_exact(fixed)
    assert (report.realigned, report.realigned_fuzzy, report.dropped_questions) == (0, 0, 0)
    assert warnings_logged(caplog) == []
    repeated = sum(r["context"].count(t) > 1 for r in train_records for t in r["answers"]["text"])
    assert repeated == 9_438  # the ambiguous answers of the data README


def test_reconstructed_train_realigns_shifted_starts(
    train_records: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """Shift the start of every answer whose text recurs; alignment recovers them, fast."""
    shifted = copy.deepcopy(train_records)
    originals = {}
    for record in shifted:
        text, start = record["answers"]["text"][0], record["answers"]["answer_start"][0]
        if record["context"].count(text) > 1:
            originals[record["id"]] = start
            record["answers"]["answer_start"][0] = start + 1
    with caplog.at_level(logging.WARNING, logger=ALIGNMENT_LOGGER):
        began = time.perf_counter()
        fixed, report = align_answers(shifted, source="train-v1.1.reconstructed.json.gz")
        elapsed = time.perf_counter() - began
    assert elapsed < 2.0
    assert all_exact(fixed) and report.dropped_questions == 0
    misaligned = sum(
        not r["context"].startswith(r["answers"]["text"][0], r["answers"]["answer_start"][0])
        for r in shifted
    )
    assert report.realigned == misaligned > 9_400  # a few texts overlap their own shift
    recovered = sum(
        r["answers"]["answer_start"][0] == originals[r["id"]] for r in fixed if r["id"] in originals
    )
    assert recovered / len(originals) > 0.99
    (message,) = warnings_logged(caplog)
    assert message.startswith(f"train-v1.1.reconstructed.json.gz: {misaligned:,} answers realigned")


def test_split_dev_v2_by_title(dev_v2: datasets.Dataset) -> None:
    splits = split_examples(dev_v2, {"train": 0.8, "validation": 0.2}, seed=13, by="title")
    train, validation = splits["train"], splits["validation"]
    assert len(train) + len(validation) == len(dev_v2)
    assert len(train) >= round(0.8 * len(dev_v2))
    assert not set(train["title"]) & set(validation["title"])
    assert not set(train["context"]) & set(validation["context"])
    assert count_unanswerable(train) + count_unanswerable(validation) == 5_945


# ---------------------------------------------------------------- reading files


def test_nested_plain_and_gzip_read_the_same(tmp_path: Path) -> None:
    plain = read_squad_file(write(tmp_path / "small.json", nested()))
    packed = read_squad_file(write(tmp_path / "small.json.gz", nested()))
    assert plain.records == packed.records
    assert [r["id"] for r in plain.records] == ["q1", "q2", "q3", "q4"]
    assert plain.records[1] == {
        "id": "q2",
        "title": "Paris",
        "context": "Paris is the capital of France.",
        "question": "Paris is the capital of which country?",
        "answers": {"text": ["France", "France."], "answer_start": [24, 24]},
    }
    assert (plain.version, plain.num_unanswerable) == ("1.1", 0)


def test_v2_file_counts_unanswerable_and_ignores_plausible_answers(tmp_path: Path) -> None:
    path = write(tmp_path / "v2.json", nested_v2())
    squad_file = read_squad_file(path)
    assert (squad_file.version, squad_file.declared_version) == ("2.0", "v2.0")
    assert squad_file.num_unanswerable == 1
    assert squad_file.records[-1]["answers"] == {"text": [], "answer_start": []}
    ds = load_examples(path)
    assert detect_version(ds) == "2.0" and count_unanswerable(ds) == 1
    assert detect_version(ds.select([0, 1])) == "1.1"
    assert count_unanswerable(ds.shuffle(seed=0)) == 1


def test_jsonl_round_trip(tmp_path: Path) -> None:
    ds = load_examples(write(tmp_path / "v2.json", nested_v2()))
    ds.to_json(tmp_path / "hub_style.jsonl")  # answers as {"text": [...], "answer_start": [...]}
    as_list = [
        {
            **row,
            "answers": [
                {"text": t, "answer_start": s}
                for t, s in zip(*row["answers"].values(), strict=True)
            ],
        }
        for row in ds
    ]
    write_jsonl(tmp_path / "list_style.jsonl.gz", as_list)
    for name in ("hub_style.jsonl", "list_style.jsonl.gz"):
        again = load_examples(tmp_path / name)
        assert again.features == SQUAD_FEATURES and again.to_list() == ds.to_list()


def test_jsonl_title_is_optional(tmp_path: Path) -> None:
    record = {"id": "x", "context": "abc def", "question": "q?", "answers": []}
    (read,) = read_squad_file(write_jsonl(tmp_path / "x.jsonl", [record])).records
    assert read["title"] == "" and read["answers"] == {"text": [], "answer_start": []}


def _set(path: tuple, value: Any) -> Callable[[dict], None]:
    """A mutation setting ``value`` at ``path`` (keys and indices) of the nested file."""

    def mutate(data: dict) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: tuple) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


Q1 = ("data", 0, "paragraphs", 0, "qas", 0)
P0 = ("data", 0, "paragraphs", 0)

# (case id, mutation of the valid nested file, question id, field, message fragment)
NESTED_CASES = [
    ("question-number", _set((*Q1, "question"), 42), "q1", "question", "must be a string, got int"),
    ("question-missing", _delete((*Q1, "question")), "q1", "question", "has no 'question'"),
    ("question-blank", _set((*Q1, "question"), "  \t"), "q1", "question", "whitespace-only"),
    ("answers-not-list", _set((*Q1, "answers"), {"text": "Paris"}), "q1", "answers", "a list"),
    ("answers-missing", _delete((*Q1, "answers")), "q1", "answers", "has no 'answers'"),
    (
        "answer-start-str",
        _set((*Q1, "answers", 0, "answer_start"), "0"),
        "q1",
        "answers[0].answer_start",
        "must be an integer, got str",
    ),
    (
        "answer-start-bool",
        _set((*Q1, "answers", 0, "answer_start"), True),
        "q1",
        "answers[0].answer_start",
        "must be an integer, got bool",
    ),
    (
        "answer-text-missing",
        _delete((*Q1, "answers", 0, "text")),
        "q1",
        "answers[0].text",
        "has no 'text'",
    ),
    ("answer-not-object", _set((*Q1, "answers", 0), "Paris"), "q1", "answers[0]", "an object"),
    ("id-number", _set((*Q1, "id"), 7), None, "id", "must be a string, got int"),
    ("id-missing", _delete((*Q1, "id")), None, "id", "qas[0] has no 'id'"),
    (
        "id-duplicate",
        _set(("data", 1, "paragraphs", 0, "qas", 0, "id"), "q1"),
        "q1",
        "id",
        "duplicate",
    ),
    ("context-blank", _set((*P0, "context"), " "), None, "context", "paragraphs[0]: context"),
    ("context-missing", _delete((*P0, "context")), None, "context", "has no 'context'"),
    ("qas-not-list", _set((*P0, "qas"), {}), None, "qas", "must be a list"),
    ("paragraphs-missing", _delete(("data", 1, "paragraphs")), None, "paragraphs", "data[1]"),
    ("data-missing", _delete(("data",)), None, "data", "has no 'data'"),
    ("data-not-list", _set(("data",), {}), None, "data", "must be a list"),
    ("title-number", _set(("data", 0, "title"), 1), None, "title", "must be a string"),
    (
        "answerable-without-answers",
        _set((*Q1, "answers"), []),
        "q1",
        "answers",
        "answerable question with no answers",
    ),
    (
        "impossible-with-answers",
        _set((*Q1, "is_impossible"), True),
        "q1",
        "answers",
        "is_impossible is true but the question has 1 answers",
    ),
    ("impossible-not-bool", _set((*Q1, "is_impossible"), "no"), "q1", "is_impossible", "a bool"),
]


@pytest.mark.parametrize(
    ("mutate", "qid", "field", "fragment"),
    [pytest.param(*case[1:], id=case[0]) for case in NESTED_CASES],
)
def test_nested_validation_errors(
    tmp_path: Path, mutate: Callable, qid: str | None, field: str, fragment: str
) -> None:
    data = nested()
    mutate(data)
    path = write(tmp_path / "bad.json", data)
    with pytest.raises(DataFormatError) as info:
        read_squad_file(path)
    message = str(info.value)
    assert f"file {path}" in message and f"field {field!r}" in message and fragment in message
    assert (info.value.path, info.value.qid, info.value.field) == (str(path), qid, field)
    if qid is not None:
        assert f"question id {qid!r}" in message


JSONL_GOOD = {"id": "j1", "title": "T", "context": "abc def", "question": "q?"}
JSONL_CASES = [
    (
        "answers-lengths",
        {"answers": {"text": ["abc"], "answer_start": []}},
        "answers",
        "1 texts but 0",
    ),
    ("answers-str", {"answers": "abc"}, "answers", "got str"),
    (
        "answers-text-not-list",
        {"answers": {"text": "abc", "answer_start": [0]}},
        "answers.text",
        "a list",
    ),
    ("answers-missing", {}, "answers", "has no 'answers'"),
    (
        "question-number",
        {"question": 3.5, "answers": []},
        "question",
        "must be a string, got float",
    ),
    ("context-empty", {"context": "", "answers": []}, "context", "whitespace-only"),
    ("answer-empty", {"answers": [{"text": " ", "answer_start": 0}]}, "answers[0].text", "empty"),
]


@pytest.mark.parametrize(
    ("update", "field", "fragment"), [pytest.param(*case[1:], id=case[0]) for case in JSONL_CASES]
)
def test_jsonl_validation_errors(tmp_path: Path, update: dict, field: str, fragment: str) -> None:
    record = dict(JSONL_GOOD)
    record.update(update)
    path = write_jsonl(tmp_path / "bad.jsonl", [{**JSONL_GOOD, "id": "j0", "answers": []}, record])
    with pytest.raises(DataFormatError) as info:
        read_squad_file(path)
    message = str(info.value)
    assert f"file {path}" in message and "question id 'j1'" in message
    assert f"field {field!r}" in message and "line 2" in message and fragment in message


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("truncated.json", json.dumps(nested())[:300], "line 1, column 296: Unterminated string"),
        ("invalid.json", '{"data": [\n  {"title": "x",,}\n]}', "line 2, column 17"),
        ("bad_line.jsonl", json.dumps({**JSONL_GOOD, "answers": []}) + '\n{"id": \n', "on line 2"),
        ("top_list.json", "[]", "top level must be a JSON object"),
        ("not_object.jsonl", "[1, 2]\n", "line 1 must be an object"),
        ("latin1.json", '{"data": [], "version": "caf\xe9"}'.encode("latin-1"), "invalid UTF-8"),
        ("latin1.jsonl.gz", '{"id": "\xe9"}'.encode("latin-1"), "invalid UTF-8 at byte 8"),
    ],
)
def test_malformed_files(tmp_path: Path, name: str, content: str | bytes, fragment: str) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(DataFormatError, match="^file " + re.escape(str(path))) as info:
        read_squad_file(path)
    assert fragment in str(info.value)


def test_truncated_json_says_so(tmp_path: Path) -> None:
    path = write(tmp_path / "cut.json", json.dumps(nested())[:-20])
    with pytest.raises(DataFormatError, match="truncated"):
        read_squad_file(path)


def test_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "cut.json.gz"
    path.write_bytes(gzip.compress(json.dumps(nested()).encode())[:-30])
    with pytest.raises(DataFormatError, match=f"file {path}: corrupt or truncated gzip"):
        read_squad_file(path)


# ---------------------------------------------------------------- alignment


def record(context: str, answers: list[tuple[str, int]], qid: str = "r") -> dict[str, Any]:
    return {
        "id": qid,
        "title": "",
        "context": context,
        "question": "q?",
        "answers": {"text": [t for t, _ in answers], "answer_start": [s for _, s in answers]},
    }


def aligned(context: str, answers: list[tuple[str, int]]) -> list[tuple[str, int]]:
    (fixed,), _ = align_answers([record(context, answers)])
    return list(zip(fixed["answers"]["text"], fixed["answers"]["answer_start"], strict=True))


def test_aligned_records_are_untouched(caplog: pytest.LogCaptureFixture) -> None:
    records = [record("a cat", [("cat", 2)]), record("none here", [], qid="u")]
    with caplog.at_level(logging.WARNING, logger=ALIGNMENT_LOGGER):
        fixed, report = align_answers(records)
    assert fixed[0] is records[0] and fixed[1] is records[1]
    assert not report.changed and report.answers == 1 and warnings_logged(caplog) == []


@pytest.mark.parametrize(
    ("start", "expected"),
    [(10, 9), (15, 16), (6, 9), (5, 2), (-1, 2), (999, 16)],  # "a cat, a cat, a cat": 2, 9, 16
)
def test_realigns_to_nearest_occurrence(start: int, expected: int) -> None:
    assert aligned("a cat, a cat, a cat", [("cat", start)]) == [("cat", expected)]


def test_nearest_occurrence_tie_goes_to_the_earlier_one() -> None:
    assert aligned("a cat,  cat", [("cat", 5)]) == [("cat", 2)]


def test_fuzzy_realignment_uses_the_context_span() -> None:
    _, report = align_answers([record("The  Eiffel\nTower is tall.", [("eiffel tower", 3)])])
    assert aligned("The  Eiffel\nTower is tall.", [("eiffel tower", 3)]) == [("Eiffel\nTower", 5)]
    assert report.realigned_fuzzy == 1 and report.fuzzy_ids == ["r"]
    assert "ignoring case/whitespace" in report.summary()


def test_drops_missing_answers_and_empty_questions(caplog: pytest.LogCaptureFixture) -> None:
    records = [
        record("a cat sat", [("dog", 2), ("cat", 3)], qid="keep"),
        record("a cat sat", [("dog", 2)], qid="gone"),
        record("nothing", [], qid="unanswerable"),
    ]
    with caplog.at_level(logging.WARNING, logger=ALIGNMENT_LOGGER):
        fixed, report = align_answers(records, source="f.json")
    assert [r["id"] for r in fixed] == ["keep", "unanswerable"]
    assert fixed[0]["answers"] == {"text": ["cat"], "answer_start": [2]}
    assert records[0]["answers"]["text"] == ["dog", "cat"]  # input not modified
    assert (report.realigned, report.dropped_answers, report.dropped_questions) == (1, 2, 1)
    assert report.dropped_ids == ["gone"]
    (message,) = warnings_logged(caplog)
    assert message == (
        "f.json: 1 answers realigned to the nearest occurrence (e.g. keep), "
        "2 answers dropped (answer text not in context), "
        "1 questions dropped (no answer left): ids gone"
    )


def test_load_file_applies_alignment(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = nested()
    qa(data)["answers"][0]["answer_start"] = 3
    qa(data, 1)["answers"][0]["text"] = "Milan"
    with caplog.at_level(logging.WARNING, logger=ALIGNMENT_LOGGER):
        ds = load_examples(write(tmp_path / "misaligned.json", data))
    assert ds["id"] == ["q1", "q2", "q3"] and ds[0]["answers"]["answer_start"] == [0]
    (message,) = warnings_logged(caplog)
    assert message.startswith("misaligned.json: 1 answers realigned") and "ids q4" in message


@given(
    context=st.text(alphabet="ab cB", min_size=1, max_size=40),
    text=st.text(alphabet="ab cB", min_size=1, max_size=6),
    start=st.integers(-5, 45),
)
def test_alignment_always_exact(context: str, text: str, start: int) -> None:
    fixed, report = align_answers([record(context, [(text, start)])])
    assert all_exact(fixed)
    if text in context:
        (answer,) = aligned(context, [(text, start)])
        distances = [abs(p - start) for p in range(len(context)) if context.startswith(text, p)]
        assert answer[0] == text and abs(answer[1] - start) == min(distances)
    else:
        assert len(fixed) == report.realigned_fuzzy == 1 - report.dropped_questions


# ---------------------------------------------------------------- load_examples


def test_sample_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sources, "SAMPLE_DATA_FILE", write(tmp_path / "sample.json", nested_v2()))
    ds = load_examples("sample")
    assert len(ds) == 5 and ds.features == SQUAD_FEATURES and detect_version(ds) == "2.0"


def test_bundled_sample() -> None:
    if not sources.SAMPLE_DATA_FILE.is_file():
        pytest.skip(f"bundled sample not written yet: {sources.SAMPLE_DATA_FILE}")
    ds = load_examples("sample")
    assert len(ds) > 0 and ds.features == SQUAD_FEATURES


def test_missing_path_is_not_a_hub_name(tmp_path: Path) -> None:
    for source in (tmp_path / "nope.json", "data/train.jsonl.gz", "./squad"):
        with pytest.raises(FileNotFoundError, match="data file not found"):
            load_examples(source)


def test_hub_offline_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    saved = datasets.config.HF_HUB_OFFLINE
    began = time.perf_counter()
    for name in ("squad", "someone/squad_like"):
        with pytest.raises(OfflineError) as info:
            load_examples(name, split="validation", cache_dir=str(tmp_path))
        message = str(info.value)
        assert repr(name) in message and "data=sample" in message
        assert "data=files data.train_file=" in message and "data.validation_file=" in message
    assert time.perf_counter() - began < 10
    assert saved is datasets.config.HF_HUB_OFFLINE


def test_hub_connection_error_becomes_offline_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Couldn't reach 'squad' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(OfflineError, match="data=sample"):
        load_examples("squad", split="train")


def test_hub_needs_a_split() -> None:
    with pytest.raises(ValueError, match="needs a split"):
        load_examples("squad")


def _fake_hub(monkeypatch: pytest.MonkeyPatch, dataset: datasets.Dataset) -> list[dict]:
    calls: list[dict] = []

    def load_dataset(name: str, **kwargs: Any) -> datasets.Dataset:
        calls.append({"name": name, **kwargs})
        return dataset

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_dataset_is_cast_to_squad_features(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = {
        "id": ["a"],
        "title": ["t"],
        "context": ["abc"],
        "question": ["q?"],
        "answers": [{"text": ["abc"], "answer_start": [0]}],
        "extra": [1],
    }
    calls = _fake_hub(monkeypatch, datasets.Dataset.from_dict(rows))  # answer_start: int64
    ds = load_examples("owner/name", split="train", cache_dir="/tmp/cache")
    assert calls == [{"name": "owner/name", "split": "train", "cache_dir": "/tmp/cache"}]
    assert ds.features == SQUAD_FEATURES and ds[0]["answers"] == rows["answers"][0]


def test_hub_dataset_with_other_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_hub(monkeypatch, datasets.Dataset.from_dict({"text": ["x"], "label": [0]}))
    with pytest.raises(DataFormatError, match=r"owner/name.*lacks the SQuAD columns \['id'"):
        load_examples("owner/name", split="train")


# ---------------------------------------------------------------- splits and limits


def test_split_by_example_counts_and_determinism() -> None:
    ds = make_dataset()
    sizes = {"train": 100, "validation": 20, "test": 14}
    splits = split_examples(ds, sizes, seed=7)
    assert {name: len(split) for name, split in splits.items()} == sizes
    ids = {name: split["id"] for name, split in splits.items()}
    assert sum(map(len, ids.values())) == len(set().union(*ids.values()))
    assert {n: s["id"] for n, s in split_examples(ds, sizes, seed=7).items()} == ids
    assert split_examples(ds, sizes, seed=8)["train"]["id"] != ids["train"]


def test_split_by_fractions() -> None:
    ds = make_dataset(titles=5, paragraphs=1, questions=3)  # 15 examples
    splits = split_examples(ds, {"a": 0.5, "b": 0.5}, seed=0)
    assert (len(splits["a"]), len(splits["b"])) == (8, 7)
    assert len(split_examples(ds, {"a": 0.6}, seed=0)["a"]) == 9


def test_split_by_title_whole_articles() -> None:
    ds = make_dataset()  # 12 titles x 12 questions
    splits = split_examples(ds, {"train": 100, "validation": 20, "test": 10}, seed=3, by="title")
    assert [len(s) for s in splits.values()] == [108, 24, 12]
    titles = [set(s["title"]) for s in splits.values()]
    contexts = [set(s["context"]) for s in splits.values()]
    for first in range(3):
        for second in range(first + 1, 3):
            assert not titles[first] & titles[second]
            assert not contexts[first] & contexts[second]
    again = split_examples(ds, {"train": 100, "validation": 20, "test": 10}, seed=3, by="title")
    assert again["test"]["id"] == splits["test"]["id"]


def test_split_by_title_merges_shared_contexts_and_untitled() -> None:
    rows = [
        ("a", "A", "shared context"),
        ("b", "B", "shared context"),
        ("c", "", "lonely context"),
        ("d", "", "lonely context"),
        ("e", "", "other context"),
        ("f", "C", "c context"),
    ]
    ds = records_to_dataset(
        [
            {
                "id": i,
                "title": t,
                "context": c,
                "question": "q?",
                "answers": {"text": [], "answer_start": []},
            }
            for i, t, c in rows
        ]
    )
    for seed in range(10):
        splits = split_examples(ds, {"x": 3, "y": 1}, seed=seed, by="title")
        x, y = set(splits["x"]["id"]), set(splits["y"]["id"])
        assert not x & y
        for together in ({"a", "b"}, {"c", "d"}):
            assert together <= x or together <= y or not together & (x | y)


@pytest.mark.parametrize(
    ("sizes", "by", "fragment"),
    [
        ({"train": 140, "test": 5}, "example", "need 145 examples but the dataset has only 144"),
        ({"train": 0.7, "test": 0.4}, "example", "sum to at most 1"),
        ({"train": 10, "test": 0.1}, "example", "all counts or all fractions"),
        ({"train": -1}, "example", "non-negative"),
        ({}, "example", "at least one split"),
        ({"train": 10}, "paragraph", "by must be one of"),
        ({"train": 133, "test": 11}, "title", "no whole article is left for split 'test'"),
    ],
)
def test_split_errors(sizes: dict, by: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        split_examples(make_dataset(), sizes, seed=0, by=by)


def test_limit_examples() -> None:
    ds = make_dataset(titles=2, paragraphs=1, questions=5)
    shuffled = split_examples(ds, {"train": 8}, seed=1)["train"]
    assert limit_examples(shuffled, 3)["id"] == shuffled["id"][:3]
    assert limit_examples(shuffled, None) is shuffled and limit_examples(shuffled, 99) is shuffled
    assert len(limit_examples(shuffled, 0)) == 0
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="max_examples"):
            limit_examples(shuffled, bad)
