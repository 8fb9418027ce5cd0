"""Seeded subsampling of the training windows whose target is CLS (no answer in the window)."""

from __future__ import annotations

import datasets
import pytest

from helpers.tokenizers import minilm_tokenizer
from qa_lightning.data.datamodule import SquadDataModule
from qa_lightning.data.no_answer import keep_no_answer_fraction, no_answer_rows

CLS = 101


def _features() -> datasets.Dataset:
    """Rows 0, 2, 3, 5, 7 point at CLS (row 7's CLS is not first); the others at a span."""
    rows = [
        ([CLS, 7, 102, 9, 9, 102], 0),
        ([CLS, 7, 102, 9, 9, 102], 3),
        ([CLS, 8, 102, 9, 102], 0),
        ([CLS, 8, 102, 9, 102], 0),
        ([CLS, 8, 102, 9, 102], 4),
        ([CLS, 8, 102, 9, 102], 0),
        ([CLS, 8, 102, 9, 9, 102], 4),
        ([0, 0, CLS, 8, 102, 9, 102], 2),  # left-padded
    ]
    return datasets.Dataset.from_dict(
        {"input_ids": [ids for ids, _ in rows], "start_positions": [s for _, s in rows]}
    )


def test_no_answer_rows_are_the_cls_targets() -> None:
    assert no_answer_rows(_features(), CLS).tolist() == [0, 2, 3, 5, 7]


@pytest.mark.parametrize(("keep", "kept"), [(0.0, 0), (0.4, 2), (0.6, 3), (1.0, 5)])
def test_keeps_every_answer_and_a_seeded_share_of_the_rest(keep: float, kept: int) -> None:
    features = _features()
    subset, n_kept, found = keep_no_answer_fraction(features, CLS, keep, seed=3)
    starts = subset["start_positions"]
    assert [s for s in starts if s not in (0, 2)] == [3, 4, 4]  # answers kept, in order
    assert len(subset) == 3 + kept
    assert (n_kept, found) == (kept, 5)
    again, _, _ = keep_no_answer_fraction(features, CLS, keep, seed=3)
    assert again["input_ids"] == subset["input_ids"]


def test_another_seed_keeps_other_windows() -> None:
    picks = {
        tuple(map(tuple, keep_no_answer_fraction(_features(), CLS, 0.4, seed)[0]["input_ids"]))
        for seed in range(20)
    }
    assert len(picks) > 1


def test_datamodule_subsamples_training_features_only() -> None:
    tokenizer = minilm_tokenizer()
    kwargs = {
        "tokenizer": tokenizer,
        "dataset": "sample",
        "carve": {"train": 0.8, "validation": 0.2},
        "validation_split": None,
        "use_cache": False,
        "seed": 42,
    }
    full = SquadDataModule(**kwargs)
    half = SquadDataModule(**kwargs, keep_no_answer_features=0.5)
    for dm in (full, half):
        dm.setup("fit")
    negatives = len(no_answer_rows(full.features("train"), tokenizer.cls_token_id))
    assert negatives > 300
    assert len(half.features("train")) == len(full.features("train")) - (
        negatives - round(negatives / 2)
    )
    assert len(no_answer_rows(half.features("train"), tokenizer.cls_token_id)) == round(
        negatives / 2
    )
    assert len(half.features("validation")) == len(full.features("validation"))
    with pytest.raises(ValueError, match="keep_no_answer_features"):
        SquadDataModule(**kwargs, keep_no_answer_features=1.5)
