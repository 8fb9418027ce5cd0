"""The project's features and decoding against run_qa.py's and utils_qa.py's (loaded from
../shared/reference and run), as ``bench/train_vs_hf.py`` and ``bench/eval_throughput.py`` use them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import hf_reference
from qa_lightning.data.collate import QACollator
from qa_lightning.data.features import NOT_CONTEXT, prepare_eval_features, prepare_train_features
from qa_lightning.data.squad_json import read_squad_file

N_QUESTIONS = 40
HIGH, LOW = 10.0, -10.0


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


def test_run_qa_validation_features_are_the_project_windows_padded(
    columns: dict[str, list], minilm_tokenizer
) -> None:
    prepare = hf_reference.prepare_functions(minilm_tokenizer, 384, 128)
    theirs = prepare["prepare_validation_features"](dict(columns))
    ours = prepare_eval_features(dict(columns), minilm_tokenizer, 384, 128)
    assert len(theirs["input_ids"]) == len(ours["input_ids"]) >= N_QUESTIONS
    assert {len(ids) for ids in theirs["input_ids"]} == {384}
    for i, ids in enumerate(ours["input_ids"]):
        n = len(ids)
        assert list(theirs["input_ids"][i][:n]) == list(ids)
        assert sum(theirs["attention_mask"][i]) == n
        assert theirs["example_id"][i] == columns["id"][ours["example_index"][i]]
        context = [o if o != NOT_CONTEXT else None for o in map(tuple, ours["offset_mapping"][i])]
        assert [None if o is None else tuple(o) for o in theirs["offset_mapping"][i][:n]] == context
        assert all(o is None for o in theirs["offset_mapping"][i][n:])


def test_utils_qa_and_the_project_decode_the_same_answers(
    columns: dict[str, list], minilm_tokenizer
) -> None:
    """Logits peaked on each window's gold tokens: utils_qa's postprocess_qa_predictions on
    run_qa's padded features and SquadMetric on the project's give the same texts, covering the gold."""
    import datasets

    from qa_lightning.metrics.squad_metric import SquadMetric

    ours = prepare_eval_features(
        dict(columns), minilm_tokenizer, 384, 128, indices=list(range(N_QUESTIONS))
    )
    n = len(ours["input_ids"])
    start, end = np.full((n, 384), LOW, np.float32), np.full((n, 384), LOW, np.float32)
    start[np.arange(n), ours["start_positions"]] = HIGH
    end[np.arange(n), ours["end_positions"]] = HIGH

    prepare = hf_reference.prepare_functions(minilm_tokenizer, 384, 128)
    examples = datasets.Dataset.from_dict(columns)
    features = examples.map(
        prepare["prepare_validation_features"], batched=True, remove_columns=examples.column_names
    )
    theirs = hf_reference.utils_qa().postprocess_qa_predictions(
        examples, features, (start, end), n_best_size=20, max_answer_length=30
    )

    rows = [{k: v[i] for k, v in ours.items()} | {"feature_index": i} for i in range(n)]
    batch = QACollator(minilm_tokenizer)(rows)
    width = batch["input_ids"].shape[1]
    metric = SquadMetric(n_best_size=20, max_answer_length=30)
    metric.set_examples(columns["id"], columns["context"], [a["text"] for a in columns["answers"]])
    metric.update(
        torch.from_numpy(start[:, :width]),
        torch.from_numpy(end[:, :width]),
        *(batch[k] for k in ("offset_mapping", "cls_index", "example_index", "feature_index")),
        attention_mask=batch["attention_mask"],
    )
    metric.compute()
    assert dict(theirs) == metric.predictions
    for qid, answers in zip(columns["id"], columns["answers"], strict=True):
        assert answers["text"][0] in theirs[qid]
