"""Property-based fuzz of data loading along the path ``python -m qa_lightning data=files``
takes: ``SquadDataModule(train_file=..., validation_file=...)`` -> ``sources.load_file`` ->
``squad_json.read_squad_file`` -> alignment -> features.

Generated SQuAD JSON and JSON-lines files with missing, extra, wrongly typed and empty fields:
every outcome is a load whose fixes are counted in the log, or a ``DataFormatError`` that names
the file (and the field and question id where one is at fault). Never another exception.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from qa_lightning.data.datamodule import SquadDataModule
from qa_lightning.data.sources import load_file
from qa_lightning.errors import DataFormatError

CONTEXT = "Rollo led the Normans to Normandy in 911."
# Answer texts: in the context (some at a wrong offset, some only up to case), or not in it.
WORDS = st.sampled_from(["Rollo", "Normandy", "911", "the Normans", "rollo", "Paris"])
WRONG = st.none() | st.booleans() | st.integers(-5, 60) | st.just([]) | st.just({}) | st.just(["x"])
BROKEN = WRONG | st.sampled_from(["", "  ", "\u200b"])

answer = st.fixed_dictionaries({"text": WORDS, "answer_start": st.integers(-3, 50)})
question = st.fixed_dictionaries(
    {
        "question": st.sampled_from(["Who led them?", "When?", "Where to?"]),
        "answers": st.lists(answer, min_size=1, max_size=3),
    }
)
nested = st.lists(st.lists(question, min_size=1, max_size=3), min_size=1, max_size=3).map(
    lambda paragraphs: {
        "version": "1.1",
        "data": [
            {
                "title": "Normans",
                "paragraphs": [
                    {
                        "context": CONTEXT,
                        "qas": [{"id": f"p{p}q{q}", **qa} for q, qa in enumerate(qas)],
                    }
                    for p, qas in enumerate(paragraphs)
                ],
            }
        ],
    }
)
flat_answers = st.lists(answer, max_size=2).flatmap(
    lambda pairs: st.sampled_from(
        [
            pairs,
            {
                "text": [a["text"] for a in pairs],
                "answer_start": [a["answer_start"] for a in pairs],
            },
        ]
    )
)
jsonl = st.lists(
    st.fixed_dictionaries(
        {"context": st.just(CONTEXT), "question": st.just("Who?"), "answers": flat_answers},
        optional={"title": st.just("Normans")},
    ),
    min_size=1,
    max_size=4,
).map(lambda records: [{"id": f"r{i}", **r} for i, r in enumerate(records)])


def mutate(data: st.DataObject, value: Any, depth: int = 0) -> Any:
    """``value`` with one field somewhere inside removed, added, emptied or wrongly typed."""
    if isinstance(value, list) and value and depth < 8 and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(value) - 1))
        return [*value[:i], mutate(data, value[i], depth + 1), *value[i + 1 :]]
    if isinstance(value, dict) and value:
        key = data.draw(st.sampled_from(sorted(value)))
        inner = value[key]
        if isinstance(inner, (dict, list)) and inner and data.draw(st.booleans()):
            return {**value, key: mutate(data, inner, depth + 1)}
        kind = data.draw(st.sampled_from(["drop", "break", "extra"]))
        if kind == "drop":
            return {k: v for k, v in value.items() if k != key}
        if kind == "extra":
            return {
                **value,
                data.draw(
                    st.sampled_from(["extra", "is_impossible", "plausible_answers"])
                ): data.draw(BROKEN),
            }
        return {**value, key: data.draw(BROKEN)}
    return data.draw(BROKEN)


def mutated(data: st.DataObject, valid: Any) -> Any:
    for _ in range(data.draw(st.integers(0, 2))):
        valid = mutate(data, valid)
    return valid


def run_datamodule(path: Path, tokenizer, features: bool) -> SquadDataModule:
    dm = SquadDataModule(
        tokenizer,
        dataset=None,
        train_file=str(path),
        validation_file=str(path),
        max_length=64,
        doc_stride=16,
        batch_size=2,
        use_cache=False,
    )
    if features:
        dm.setup("fit")
    else:
        dm.has_split("train")  # loads (and checks) the examples of every split
    return dm


def check_outcome(
    path: Path, tokenizer, caplog: pytest.LogCaptureFixture, questions: int, features: bool
) -> None:
    caplog.clear()
    try:
        dm = run_datamodule(path, tokenizer, features)
    except DataFormatError as err:
        event(f"DataFormatError field={err.field}")
        assert err.path == str(path) and str(path) in str(err)
        if err.qid is not None:
            assert repr(err.qid) in str(err)
        return
    loaded = len(dm.examples("train"))
    event("loaded" if loaded == questions else "loaded with questions dropped")
    assert 0 < loaded <= questions
    if features:
        assert len(dm.features("train")) >= loaded
    if loaded < questions:  # the fix is counted in the log
        assert any("questions dropped" in r.getMessage() for r in caplog.records)


def listed(obj: Any, key: str) -> list:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, list) else []


def count_questions(top: Any) -> int:
    """Questions in a nested file (an upper bound of what may load)."""
    return sum(len(listed(p, "qas")) for a in listed(top, "data") for p in listed(a, "paragraphs"))


HEALTH = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
# The default run loads the examples; the slow one goes on to the features (setup("fit")).
LANES = [
    pytest.param(False, 80, id="examples"),
    pytest.param(True, 60, id="features", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("features", "examples"), LANES)
def test_nested_files_load_or_raise_the_data_error(features, examples, minilm_tokenizer, caplog):
    settings(max_examples=examples, deadline=None, suppress_health_check=HEALTH)(
        given(valid=nested, data=st.data())(check_nested)
    )(minilm_tokenizer=minilm_tokenizer, caplog=caplog, features=features)


@pytest.mark.parametrize(("features", "examples"), LANES)
def test_jsonl_files_load_or_raise_the_data_error(features, examples, minilm_tokenizer, caplog):
    settings(max_examples=examples, deadline=None, suppress_health_check=HEALTH)(
        given(valid=jsonl, data=st.data())(check_jsonl)
    )(minilm_tokenizer=minilm_tokenizer, caplog=caplog, features=features)


def check_nested(valid, data, minilm_tokenizer, caplog, features) -> None:
    top = mutated(data, valid)
    caplog.set_level(logging.WARNING, "qa_lightning")
    questions = count_questions(top)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.json"
        path.write_text(json.dumps(top))
        check_outcome(path, minilm_tokenizer, caplog, questions, features)


def check_jsonl(valid, data, minilm_tokenizer, caplog, features) -> None:
    lines = mutated(data, valid)
    lines = lines if isinstance(lines, list) else [lines]
    caplog.set_level(logging.WARNING, "qa_lightning")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        check_outcome(path, minilm_tokenizer, caplog, len(lines), features)


def test_every_question_dropped_names_the_file_counts_and_why(tmp_path: Path) -> None:
    path = tmp_path / "dev.json"
    qa = {"id": "q1", "question": "Who?", "answers": [{"text": "Charles", "answer_start": 0}]}
    top = {
        "version": "1.1",
        "data": [{"title": "t", "paragraphs": [{"context": CONTEXT, "qas": [qa]}]}],
    }
    path.write_text(json.dumps(top))
    with pytest.raises(DataFormatError) as err:
        load_file(path)
    message = str(err.value)
    assert str(path) in message and "all 1 questions were dropped" in message
    assert "answer text not in context" in message and "q1" in message
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataFormatError, match="holds no question"):
        load_file(empty)
