"""The feature cache serves exactly the features of the examples at hand (issue 11).

Every subset of one file, every tokenizer and every parameter gets its own key, and features
loaded from one shared cache equal features built without it; an entry built from other
examples, or corrupted, is detected and rebuilt; evaluation with the cache on equals evaluation
with it off, whatever ``max_eval_examples`` ran before.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import datasets
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from qa_lightning.data.cache import (
    RECORD_FILE,
    ExamplesRecord,
    cached_features,
    dataset_digest,
    features_key,
)
from qa_lightning.data.datamodule import SquadDataModule
from qa_lightning.data.features import InputLayout, prepare_train_features
from qa_lightning.data.sources import load_examples, records_to_dataset
from qa_lightning.data.splits import split_examples
from qa_lightning.paths import minilm_dir
from qa_lightning.utils.io import read_json_file

MAX_LENGTH, STRIDE = 128, 48
Examples = datasets.Dataset


@pytest.fixture(scope="module")
def squad_small(tmp_path_factory, shared_data) -> Path:
    """The first paragraph of every dev-v2.0 article (~400 questions), as a file of their own (a whole file with
    many titles, quick to load)."""
    data = read_json_file(shared_data / "squad" / "dev-v2.0.json.gz")
    for article in data["data"]:
        article["paragraphs"] = article["paragraphs"][:1]
    target = tmp_path_factory.mktemp("squad") / "dev-first-paragraphs.json"
    target.write_text(json.dumps(data), encoding="utf-8")
    return target


@pytest.fixture(scope="module")
def examples(squad_small) -> Examples:
    return load_examples(squad_small)


@pytest.fixture(scope="module")
def minilm() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(minilm_dir())


def tokenize(
    split: str,
    examples: Examples,
    tokenizer: PreTrainedTokenizerBase,
    cache: Path | None,
    **options: int,
) -> Examples:
    """``split`` features of ``examples`` as the datamodule makes them (cache off if ``None``)."""
    params = {"max_length": MAX_LENGTH, "doc_stride": STRIDE, **options}
    datamodule = SquadDataModule(
        tokenizer,
        dataset=None,
        cache_dir=str(cache) if cache else None,
        use_cache=cache is not None,
        **params,
    )
    return datamodule.tokenize(split, examples)


def rows(features: Examples) -> dict[str, list]:
    return features.with_format(None).to_dict()


def key_of(
    split: str,
    examples: Examples,
    tokenizer: PreTrainedTokenizerBase,
    layout: InputLayout | None = None,
    **options,
) -> str:
    """The key the datamodule gives (its layout is the tokenizer's unless ``layout`` is given)."""
    params = {"max_length": MAX_LENGTH, "doc_stride": STRIDE, **options}
    layout = layout or InputLayout.of(tokenizer)
    kind = "train" if split == "train" else "eval"
    return features_key(examples, tokenizer, layout, kind=kind, **params)


def subsets(examples: Examples) -> dict[str, Examples]:
    """Subsets of one file: head, middle, whole; shuffled; carved by example and by title."""
    by_example = split_examples(examples, {"train": 0.5, "validation": 0.25}, seed=42)
    by_title = split_examples(examples, {"train": 0.5, "validation": 0.25}, seed=42, by="title")
    return {
        "head 64": examples.select(range(64)),
        "head 100": examples.select(range(100)),
        "middle 100..200": examples.select(range(100, 200)),
        "whole file": examples,
        "shuffled seed 1, 64": examples.shuffle(seed=1).select(range(64)),
        "shuffled seed 2, 64": examples.shuffle(seed=2).select(range(64)),
        "carved by example, train": by_example["train"],
        "carved by example, validation": by_example["validation"],
        "carved by example seed 7, validation": split_examples(
            examples, {"validation": 0.25}, seed=7
        )["validation"],
        "carved by title, train": by_title["train"],
        "carved by title, validation": by_title["validation"],
    }


def test_every_subset_of_one_file_has_its_own_key(examples, minilm):
    """The issue's collision: contiguous slices shared the whole file's Arrow buffers."""
    keys = {name: key_of("validation", ds, minilm) for name, ds in subsets(examples).items()}
    assert len(set(keys.values())) == len(keys), keys
    again = {name: key_of("validation", ds, minilm) for name, ds in subsets(examples).items()}
    assert again == keys  # deterministic: another rank computes the same keys


def test_every_tokenizer_and_parameter_has_its_own_key(examples, minilm, tiny_bert):
    head = examples.select(range(64))
    left = AutoTokenizer.from_pretrained(minilm_dir(), padding_side="left")
    keys = {
        "eval": key_of("validation", head, minilm),
        "train": key_of("train", head, minilm),
        "tiny bert": key_of("validation", head, AutoTokenizer.from_pretrained(tiny_bert)),
        "padding left": key_of("validation", head, left),
        "max_length 96": key_of("validation", head, minilm, max_length=96),
        "stride 32": key_of("validation", head, minilm, doc_stride=32),
    }
    assert len(set(keys.values())) == len(keys), keys


def changed(value: object) -> object:
    """Another value of a layout field."""
    if isinstance(value, bool):
        return not value
    raise AssertionError(f"changed() knows no other value of {value!r}: teach it this field's type")


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(InputLayout)])
def test_layouts_differing_in_one_field_get_different_keys(examples, minilm, field):
    head = examples.select(range(64))
    layout = InputLayout.of(minilm)
    other = dataclasses.replace(layout, **{field: changed(getattr(layout, field))})
    assert key_of("train", head, minilm, layout) != key_of("train", head, minilm, other)


def test_the_key_follows_the_layout_not_the_padding_side(examples, minilm):
    """Features are tokenized unpadded: a tokenizer padding on the other side makes the same
    features in the same layout, and gets the same key."""
    head = examples.select(range(32))
    left = AutoTokenizer.from_pretrained(minilm_dir(), padding_side="left")
    layout = InputLayout.of(minilm)
    assert key_of("train", head, left, layout) == key_of("train", head, minilm, layout)
    batch = head[:]
    built = [prepare_train_features(batch, t, MAX_LENGTH, STRIDE, layout) for t in (minilm, left)]
    assert built[0] == built[1]


@pytest.mark.parametrize("split", ["train", "validation"])
def test_subsets_served_from_one_cache_equal_uncached_features(examples, minilm, split, tmp_path):
    """Tokenized one after another into one cache, each subset gets its own features; a second
    pass loads them from the cache, still equal."""
    cache = tmp_path / "cache"
    expected = {
        name: rows(tokenize(split, ds, minilm, None)) for name, ds in subsets(examples).items()
    }
    for _ in range(2):
        for name, ds in subsets(examples).items():
            assert rows(tokenize(split, ds, minilm, cache)) == expected[name], name
    assert len(list((cache / "features").iterdir())) == len(expected)


def test_tokenizers_and_parameters_served_from_one_cache_equal_uncached_features(
    examples, minilm, tiny_bert, tmp_path
):
    head = examples.select(range(64))
    variants: dict[str, tuple[PreTrainedTokenizerBase, dict[str, int]]] = {
        "minilm": (minilm, {}),
        "tiny bert": (AutoTokenizer.from_pretrained(tiny_bert), {}),
        "padding left": (AutoTokenizer.from_pretrained(minilm_dir(), padding_side="left"), {}),
        "max_length 96": (minilm, {"max_length": 96}),
        "stride 32": (minilm, {"doc_stride": 32}),
    }
    cache = tmp_path / "cache"
    for name, (tokenizer, options) in variants.items():
        for split in ("train", "validation"):
            cached = rows(tokenize(split, head, tokenizer, cache, **options))
            assert cached == rows(tokenize(split, head, tokenizer, None, **options)), (name, split)
    assert len(list((cache / "features").iterdir())) == 2 * len(variants)


def test_the_same_path_with_changed_content_gets_new_features(squad_small, minilm, tmp_path):
    """Same path, same size of text, same modification time: only the content differs."""
    data_file = tmp_path / "dev.json"
    original = squad_small.read_text(encoding="utf-8")
    first_question = json.loads(original)["data"][0]["paragraphs"][0]["qas"][0]["question"]
    changed = original.replace(first_question, first_question[::-1], 1)
    cache = tmp_path / "cache"

    def validation_features(text: str) -> list[list[int]]:
        data_file.write_text(text, encoding="utf-8")
        os.utime(data_file, ns=(0, 0))
        datamodule = SquadDataModule(
            minilm,
            dataset=None,
            validation_file=str(data_file),
            max_eval_examples=32,
            max_length=MAX_LENGTH,
            doc_stride=STRIDE,
            cache_dir=str(cache),
        )
        datamodule.setup("validate")
        return datamodule.features("validation")["input_ids"]

    before, after = validation_features(original), validation_features(changed)
    assert before != after
    uncached = tokenize("validation", load_examples(data_file).select(range(32)), minilm, None)
    assert after == uncached["input_ids"]
    assert len(list((cache / "features").iterdir())) == 2


def test_memory_mapped_data_is_keyed_on_its_rows_not_on_path_and_time(tmp_path):
    """Where ``datasets``' fingerprint is not sound: an Arrow file rewritten in place with the
    same modification time keeps its fingerprint, but the key follows the rows."""

    def arrow_file(question: str) -> datasets.Dataset:
        record = {"id": "q1", "title": "t", "context": "c", "question": question}
        ds = records_to_dataset([record | {"answers": {"text": [], "answer_start": []}}])
        shutil.rmtree(tmp_path / "saved", ignore_errors=True)
        ds.save_to_disk(str(tmp_path / "saved"))
        target = tmp_path / "data.arrow"
        shutil.copyfile(next((tmp_path / "saved").glob("*.arrow")), target)
        os.utime(target, ns=(0, 0))
        return datasets.Dataset.from_file(str(target))

    who = arrow_file("Who?")
    who_fingerprint, who_digest = who._fingerprint, dataset_digest(who)
    del who
    why = arrow_file("Why?")
    assert why._fingerprint == who_fingerprint  # the library's fingerprint cannot tell them apart
    assert dataset_digest(why) != who_digest


# --- defence in depth: a cache entry records what it was built from -------------------------------


def entry_dir(cache: Path, split: str, examples: Examples, tokenizer) -> Path:
    return cache / "features" / key_of(split, examples, tokenizer)


def plant(source: Path, target: Path, *, keep_record: bool = False) -> None:
    """Put the entry at ``source`` where ``target``'s key points; with ``keep_record``, under
    ``target``'s record (its examples, ``source``'s feature count): only the features are wrong."""
    record = json.loads((target / RECORD_FILE).read_text())
    shutil.rmtree(target)
    shutil.copytree(source, target)
    if keep_record:
        record["num_features"] = json.loads((source / RECORD_FILE).read_text())["num_features"]
        (target / RECORD_FILE).write_text(json.dumps(record))


def corrupt_arrow(entry: Path) -> None:
    arrow = next(entry.glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:100])


def drop_record(entry: Path) -> None:
    (entry / RECORD_FILE).unlink()


@pytest.mark.parametrize(
    ("damage", "warning"),
    [
        ("entry of 64 examples", "was built from 64 examples (ids sha256 "),
        ("features of 64 examples, record of 100", "has features of 64 examples"),
        ("truncated arrow file", "cannot be read"),
        ("no record", "has no valid record"),
    ],
)
def test_mismatched_or_corrupted_entry_is_detected_and_rebuilt(
    examples, minilm, damage, warning, tmp_path, caplog
):
    cache = tmp_path / "cache"
    head64, head100 = examples.select(range(64)), examples.select(range(100))
    expected = rows(tokenize("validation", head100, minilm, None))
    tokenize("validation", head64, minilm, cache)
    tokenize("validation", head100, minilm, cache)
    entry64 = entry_dir(cache, "validation", head64, minilm)
    entry100 = entry_dir(cache, "validation", head100, minilm)
    damages: dict[str, Callable[[], None]] = {
        "entry of 64 examples": lambda: plant(entry64, entry100),
        "features of 64 examples, record of 100": lambda: plant(
            entry64, entry100, keep_record=True
        ),
        "truncated arrow file": lambda: corrupt_arrow(entry100),
        "no record": lambda: drop_record(entry100),
    }
    damages[damage]()
    with caplog.at_level(logging.WARNING, logger="qa_lightning.data.cache"):
        assert rows(tokenize("validation", head100, minilm, cache)) == expected
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 1 and str(entry100) in messages[0] and warning in messages[0]
    assert "rebuilding it" in messages[0]
    if damage == "entry of 64 examples":
        assert "the examples at hand are 100 examples (ids sha256 " in messages[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="qa_lightning.data.cache"):
        assert rows(tokenize("validation", head100, minilm, cache)) == expected
    assert not caplog.records  # the rebuilt entry is sound
    assert not [p for p in (cache / "features").iterdir() if p.name.startswith(".")]


def test_entry_records_what_it_was_built_from(examples, minilm, tmp_path):
    head = examples.select(range(100, 164))
    features = cached_features(
        "k", tmp_path, lambda: tokenize("train", head, minilm, None), ExamplesRecord.of(head)
    )
    record = json.loads((tmp_path / "features" / "k" / RECORD_FILE).read_text())
    assert record["num_examples"] == 64 and record["num_features"] == len(features)
    assert (
        record["ids_digest"] == ExamplesRecord.of(examples.select(list(range(100, 164)))).ids_digest
    )
    assert str(ExamplesRecord.of(head)).startswith("64 examples (ids sha256 ")


# --- end to end ------------------------------------------------------------------------------------
