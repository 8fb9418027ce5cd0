"""The project's train features against run_qa.py's (loaded from ../shared/reference and run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import hf_reference
from qa_lightning.data.features import prepare_train_features
from qa_lightning.data.squad_json import read_squad_file

N_QUESTIONS = 40


@pytest.fixture(scope="module")
def columns(shared_data: Path) -> dict[str, list]:
    reason = hf_reference.missing_reason()
    if reason:
        pytest.skip(reason)
    records = read_squad_file(shared_data / "squad" / "dev-v1.1.json.gz").records[:N_QUESTIONS]
    return {key: [r[key] for r in records] for key in records[0]}


def test_run_qa_train_features_match_the_project(
    columns: dict[str, list], minilm_tokenizer
) -> None:
    prepare = hf_reference.prepare_functions(minilm_tokenizer, 384, 128, pad_to_max_length=False)
    theirs = prepare["prepare_train_features"](dict(columns))
    ours = prepare_train_features(dict(columns), minilm_tokenizer, 384, 128)
    assert len(theirs["input_ids"]) == len(ours["input_ids"]) >= N_QUESTIONS
    assert list(theirs["input_ids"]) == list(ours["input_ids"])
    assert theirs["start_positions"] == ours["start_positions"]
    assert theirs["end_positions"] == ours["end_positions"]
