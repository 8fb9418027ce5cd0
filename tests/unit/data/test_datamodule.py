"""``SquadDataModule`` tokenizes each split once per run, with the feature cache on or off, in one
process and as DDP runs it (``prepare_data`` on rank 0 only, ``setup`` on every rank)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from qa_lightning.data.datamodule import SquadDataModule

OPTIONS = {
    "dataset": "sample",
    "max_train_examples": 16,
    "max_eval_examples": 8,
    "max_length": 128,
    "doc_stride": 48,
}


@pytest.fixture
def tokenizations(monkeypatch) -> Counter:
    """Splits tokenized (``_build_features`` calls) from now on, counted per split."""
    counts: Counter = Counter()
    build = SquadDataModule._build_features

    def counting(self, split, examples):
        counts[split] += 1
        return build(self, split, examples)

    monkeypatch.setattr(SquadDataModule, "_build_features", counting)
    return counts


def datamodule(tokenizer, cache: Path, use_cache: bool) -> SquadDataModule:
    return SquadDataModule(tokenizer, cache_dir=str(cache), use_cache=use_cache, **OPTIONS)


def rows(dm: SquadDataModule, split: str) -> dict[str, list]:
    return dm.features(split).with_format(None).to_dict()


@pytest.mark.parametrize("use_cache", [False, True])
def test_one_process_tokenizes_each_split_once(
    minilm_tokenizer, tmp_path, tokenizations, use_cache
):
    """What ``Trainer.fit`` then ``validate`` call: prepare_data, setup('fit'), setup('validate')."""
    dm = datamodule(minilm_tokenizer, tmp_path / "cache", use_cache)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("validate")
    assert tokenizations == {"train": 1, "validation": 1}
    assert (tmp_path / "cache" / "features").is_dir() == use_cache


@pytest.mark.parametrize("use_cache", [False, True])
def test_ddp_ranks_tokenize_once_each_without_cache_and_once_in_all_with_it(
    minilm_tokenizer, tmp_path, tokenizations, use_cache
):
    """Rank 0 runs prepare_data then setup, rank 1 only setup: without the cache each rank
    tokenizes each split once; with it rank 0 fills the cache and both load it. The features are
    the same on both ranks either way."""
    rank0, rank1 = (datamodule(minilm_tokenizer, tmp_path / "cache", use_cache) for _ in range(2))
    rank0.prepare_data()
    rank0.setup("fit")
    rank1.setup("fit")
    per_split = 2 if not use_cache else 1
    assert tokenizations == {"train": per_split, "validation": per_split}
    for split in ("train", "validation"):
        assert rows(rank0, split) == rows(rank1, split)
