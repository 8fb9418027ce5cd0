"""``SquadDataModule``: SQuAD examples in, padded feature batches out."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import datasets
import numpy as np
import pyarrow.compute as pc
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from qa_lightning.data.cache import (
    ExamplesRecord,
    cached_features,
    default_cache_dir,
    features_key,
)
from qa_lightning.data.collate import QACollator
from qa_lightning.data.features import (
    InputLayout,
    prepare_eval_features,
    prepare_train_features,
)
from qa_lightning.data.loader import ResumableDataLoader
from qa_lightning.data.no_answer import keep_no_answer_fraction
from qa_lightning.data.samplers import LengthGroupedSampler, SeededRandomSampler, sorted_by_length
from qa_lightning.data.sources import count_unanswerable, detect_version, load_examples
from qa_lightning.data.splits import limit_examples, split_examples
from qa_lightning.errors import DataFormatError

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


class SquadDataModule(LightningDataModule):
    """Loads SQuAD-style examples, tokenizes them into overlapping windows, and batches them.

    Examples come from ``dataset`` (a hub name such as ``squad`` / ``squad_v2``, a local file, or
    ``sample`` for the bundled data), one hub split per stage, or from ``train_file`` /
    ``validation_file`` / ``test_file``. With ``carve`` (e.g. ``{train: 5000, validation: 1000,
    test: 2000}`` or fractions) the splits are instead carved out of the ``train_split`` of the
    source by a seeded shuffle of questions (``carve_by: example``) or of article titles
    (``carve_by: title``, no paragraph shared by two splits). ``max_*_examples`` cut examples
    before tokenization, so an example's features are never split. ``keep_no_answer_features``
    keeps a seeded fraction of the training windows whose target is CLS (see
    :mod:`qa_lightning.data.no_answer`). It provides what ``QALightningModule`` reads from its
    datamodule (``qa_lightning.model.module.EvalData``): ``version_2``, ``input_layout``,
    ``has_split()`` and ``examples()``.
    """

    def __init__(
        self,
        tokenizer: str | PreTrainedTokenizerBase,
        dataset: str | None = "sample",
        train_split: str | None = "train",
        validation_split: str | None = "validation",
        test_split: str | None = None,
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        carve: Mapping[str, float] | None = None,
        carve_by: str = "example",
        seed: int = 42,
        max_train_examples: int | None = None,
        max_eval_examples: int | None = None,
        max_length: int = 384,
        doc_stride: int = 128,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        pad_to_multiple_of: int | None = 8,
        pad_to_max_length: bool = False,
        group_by_length: bool = True,
        sort_eval_by_length: bool = True,
        num_proc: int | None = None,
        keep_no_answer_features: float = 1.0,
        cache_dir: str | None = None,
        use_cache: bool = True,
        version_2: bool | None = None,
    ) -> None:
        super().__init__()
        if doc_stride >= max_length:
            raise ValueError(
                f"doc_stride ({doc_stride}) must be smaller than max_length ({max_length})"
            )
        if not 0.0 <= keep_no_answer_features <= 1.0:
            raise ValueError(
                f"keep_no_answer_features must be within [0, 1], got {keep_no_answer_features}"
            )
        if carve_by not in ("example", "title"):
            raise ValueError(f"carve_by must be 'example' or 'title', got {carve_by!r}")
        self._tokenizer_arg = tokenizer
        self.dataset = dataset
        self.hub_splits = {"train": train_split, "validation": validation_split, "test": test_split}
        self.files = {"train": train_file, "validation": validation_file, "test": test_file}
        self.carve = dict(carve) if carve else None
        self.carve_by = carve_by
        self.seed = seed
        self.limits = {
            "train": max_train_examples,
            "validation": max_eval_examples,
            "test": max_eval_examples,
        }
        self.max_length = max_length
        self.doc_stride = doc_stride
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.loader_options = {
            "num_workers": num_workers,
            "pin_memory": pin_memory,
            "persistent_workers": persistent_workers and num_workers > 0,
        }
        self.pad_to_multiple_of = pad_to_multiple_of
        self.pad_to_max_length = pad_to_max_length
        self.group_by_length = group_by_length
        self.sort_eval_by_length = sort_eval_by_length
        self.num_proc = num_proc
        self.keep_no_answer_features = keep_no_answer_features
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.use_cache = use_cache
        self._version_2 = version_2
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._input_layout: InputLayout | None = None
        self._examples: dict[str, datasets.Dataset] = {}
        self._features: dict[str, datasets.Dataset] = {}

    # ----------------------------------------------------------------- examples
    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        if self._tokenizer is None:
            if isinstance(self._tokenizer_arg, str):
                from qa_lightning.hub import load_tokenizer

                self._tokenizer = load_tokenizer(self._tokenizer_arg)
            else:
                self._tokenizer = self._tokenizer_arg
        return self._tokenizer

    @property
    def input_layout(self) -> InputLayout:
        """The question/context order of every feature this datamodule makes (from its tokenizer)."""
        if self._input_layout is None:
            self._input_layout = InputLayout.of(self.tokenizer)
        return self._input_layout

    def _source(self, split: str) -> str | None:
        return self.files[split] or (self.dataset if self.hub_splits[split] else None)

    def _load_split(self, split: str) -> datasets.Dataset | None:
        if self.files[split]:
            return load_examples(self.files[split])
        if self.dataset and self.hub_splits[split]:
            return load_examples(self.dataset, split=self.hub_splits[split])
        return None

    def _load_all_examples(self) -> dict[str, datasets.Dataset]:
        if self.carve:
            base = self._load_split("train")
            if base is None:
                raise ValueError(
                    "carve needs a source: set dataset (with train_split) or train_file"
                )
            carved = split_examples(base, self.carve, seed=self.seed, by=self.carve_by)
            examples = {name: carved[name] for name in SPLITS if name in carved}
        else:
            examples = {name: ds for name in SPLITS if (ds := self._load_split(name)) is not None}
        return {name: limit_examples(ds, self.limits[name]) for name, ds in examples.items()}

    def examples(self, split: str) -> datasets.Dataset:
        """The examples of ``split`` ("train", "validation" or "test")."""
        if split not in self._examples:
            raise KeyError(
                f"no {split!r} examples: available {sorted(self._examples)} (call setup first)"
            )
        return self._examples[split]

    def has_split(self, split: str) -> bool:
        """Whether the data has examples for ``split`` (loads the examples, not the features)."""
        self._ensure_examples()
        return split in self._examples

    def _ensure_examples(self) -> None:
        if not self._examples:
            self._examples.update(self._load_all_examples())
            self._check_version()

    @property
    def version_2(self) -> bool:
        """Whether the data has unanswerable questions (SQuAD v2.0), unless set explicitly."""
        if self._version_2 is not None:
            return self._version_2
        return any(detect_version(ds) == "2.0" for ds in self._examples.values())

    def _check_version(self) -> None:
        """An explicit ``version_2`` that contradicts the data: an error (v1.1 asked, v2.0 given)
        or a warning (v2.0 asked, no unanswerable question: scored by the v2.0 rules)."""
        if self._version_2 is None:
            return
        counts = {split: count_unanswerable(ds) for split, ds in self._examples.items()}
        if self._version_2 is False:
            for split, count in counts.items():
                if count:
                    raise DataFormatError(
                        f"version_2=false (SQuAD v1.1) but the {split} data has {count:,} "
                        "unanswerable questions: it is SQuAD v2.0 data. Set data.version_2=true, "
                        "or null to detect the version.",
                        path=str(self._source(split)),
                    )
        elif counts and not any(counts.values()):
            log.warning(
                "version_2=true but no question is unanswerable (SQuAD v1.1 data): the model may "
                "still answer '' and is scored by the v2.0 rules (HasAns figures only)."
            )

    # ----------------------------------------------------------------- features
    def tokenize(self, split: str, examples: datasets.Dataset) -> datasets.Dataset:
        """Features of ``examples`` for ``split`` (train or eval features), through the cache."""
        for_train = split == "train"
        features = self._cached_features(split, examples)
        if not for_train:
            features = features.add_column("feature_index", np.arange(len(features)))
        log.info("%s: %d examples -> %d features", split, len(examples), len(features))
        if for_train and self.keep_no_answer_features < 1.0:
            features, kept, found = keep_no_answer_fraction(
                features, self.tokenizer.cls_token_id, self.keep_no_answer_features, self.seed
            )
            log.info(
                "train: kept %d of %d no-answer features (keep_no_answer_features=%s): %d features",
                kept,
                found,
                self.keep_no_answer_features,
                len(features),
            )
        return features

    def _cached_features(self, split: str, examples: datasets.Dataset) -> datasets.Dataset:
        """Features of ``examples`` from the cache, keyed on exactly these rows (or built)."""
        for_train = split == "train"
        params = {
            "kind": "train" if for_train else "eval",
            "max_length": self.max_length,
            "doc_stride": self.doc_stride,
        }
        return cached_features(
            features_key(examples, self.tokenizer, self.input_layout, **params),
            self.cache_dir if self.use_cache else None,
            partial(self._build_features, split, examples),
            ExamplesRecord.of(examples),
            check=None if for_train else partial(_check_example_index, num_examples=len(examples)),
        )

    def _build_features(self, split: str, examples: datasets.Dataset) -> datasets.Dataset:
        log.info("Tokenizing %s: %d examples", split, len(examples))
        for_train = split == "train"
        fn = prepare_train_features if for_train else _eval_features_with_indices
        return examples.map(
            partial(
                fn,
                tokenizer=self.tokenizer,
                max_length=self.max_length,
                doc_stride=self.doc_stride,
                layout=self.input_layout,
            ),
            batched=True,
            with_indices=not for_train,
            remove_columns=examples.column_names,
            num_proc=self.num_proc if self.num_proc and self.num_proc > 1 else None,
            load_from_cache_file=False,
            desc=f"Tokenizing {split} ({len(examples)} examples)",
        )

    def prepare_data(self) -> None:
        """Load (download once, where the source is the hub) and tokenize into the cache: rank 0
        only. Without the cache (``use_cache=False``) there is nothing to fill: features made here
        would be thrown away, so only :meth:`setup` tokenizes (each split once, on every rank)."""
        loaded = self._load_all_examples()
        if not self.use_cache:
            return
        for split, examples in loaded.items():
            self.tokenize(split, examples)

    def setup(self, stage: str | None = None) -> None:
        self._ensure_examples()
        wanted = {
            "fit": ("train", "validation"),
            "validate": ("validation",),
            "test": ("test",),
        }.get(stage or "", tuple(self._examples))
        for split in wanted:
            if split in self._examples and split not in self._features:
                self._features[split] = self.tokenize(split, self._examples[split])

    def features(self, split: str) -> datasets.Dataset:
        if split not in self._features:
            raise KeyError(
                f"no {split!r} features: available {sorted(self._features)} (call setup first)"
            )
        return self._features[split]

    # -------------------------------------------------------------- dataloaders
    def collator(self) -> QACollator:
        return QACollator(
            self.tokenizer,
            pad_to_multiple_of=self.pad_to_multiple_of,
            max_length=self.max_length if self.pad_to_max_length else None,
        )

    def train_dataloader(self) -> DataLoader:
        """Seeded order per epoch; resumable mid-epoch (see ``ResumableDataLoader``)."""
        features = self.features("train")
        if self.group_by_length:
            sampler = LengthGroupedSampler(_lengths(features), self.batch_size, seed=self.seed)
        else:
            sampler = SeededRandomSampler(len(features), seed=self.seed)
        return ResumableDataLoader(
            features,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=False,
            generator=torch.Generator().manual_seed(self.seed),
            progress=self._trained_batches_this_epoch,
            collate_fn=self.collator(),
            drop_last=False,
            **self.loader_options,
        )

    def _trained_batches_this_epoch(self) -> int:
        """Batches of the current epoch the fit loop has trained on (after a mid-epoch resume)."""
        if self.trainer is None:
            return 0
        return int(self.trainer.fit_loop.epoch_loop.batch_progress.current.ready)

    def _eval_dataloader(self, split: str) -> DataLoader:
        features = self.features(split)
        if self.sort_eval_by_length:
            features = sorted_by_length(features, _lengths(features))
        return DataLoader(
            features,
            batch_size=self.eval_batch_size,
            shuffle=False,
            collate_fn=self.collator(),
            **self.loader_options,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_dataloader("validation")

    def test_dataloader(self) -> DataLoader:
        return self._eval_dataloader("test")


def _eval_features_with_indices(
    examples: dict[str, list], indices: list[int], **kwargs: object
) -> dict:
    """``prepare_eval_features`` in the argument order of ``datasets.map(with_indices=True)``."""
    return prepare_eval_features(examples, indices=indices, **kwargs)


def _check_example_index(features: datasets.Dataset, num_examples: int) -> str | None:
    """Why eval features do not cover exactly rows ``0..num_examples-1`` of their examples, if so."""
    column = features.with_format("arrow")["example_index"]
    if len(column) == 0:
        return f"holds no features for {num_examples:,} examples" if num_examples else None
    bounds = pc.min_max(column).as_py()
    distinct = pc.count_distinct(column).as_py()
    if (bounds["min"], bounds["max"], distinct) == (0, num_examples - 1, num_examples):
        return None
    return (
        f"has features of {distinct:,} examples (rows {bounds['min']}..{bounds['max']}), "
        f"but {num_examples:,} examples are at hand"
    )


def _lengths(features: datasets.Dataset) -> np.ndarray:
    """Token count of every feature, read from the Arrow list offsets (no row decoding)."""
    if features._indices is None:
        column = features.data.column("input_ids").combine_chunks()
        return np.diff(column.offsets.to_numpy())
    return np.fromiter((len(ids) for ids in features["input_ids"]), dtype=np.int64)
