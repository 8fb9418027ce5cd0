"""Where examples come from: the bundled sample, local SQuAD files, or the Hugging Face hub.

Every source yields a ``datasets.Dataset`` with exactly the hub ``squad`` columns and features
(:data:`SQUAD_FEATURES`). Local files are validated (:mod:`qa_lightning.data.squad_json`) and
their answers aligned (:mod:`qa_lightning.data.alignment`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import datasets
import httpx
import pyarrow.compute as pc
from datasets import Features, List, Value
from huggingface_hub.errors import LocalEntryNotFoundError

from qa_lightning.data.alignment import align_answers
from qa_lightning.data.squad_json import Record, read_squad_file
from qa_lightning.errors import DataFormatError, OfflineError
from qa_lightning.hub import looks_like_path, offline_mode
from qa_lightning.paths import SAMPLE_DATA_FILE

logger = logging.getLogger(__name__)

SQUAD_FEATURES = Features(
    {
        "id": Value("string"),
        "title": Value("string"),
        "context": Value("string"),
        "question": Value("string"),
        "answers": {"text": List(Value("string")), "answer_start": List(Value("int32"))},
    }
)
SAMPLE = "sample"
_HUB_ERRORS = (ConnectionError, TimeoutError, LocalEntryNotFoundError, httpx.TransportError)


def load_examples(
    source: str | os.PathLike[str],
    *,
    split: str | None = None,
    cache_dir: str | None = None,
) -> datasets.Dataset:
    """Load examples from ``"sample"``, a local file, or a hub dataset name.

    ``split`` selects the split of a hub dataset (required there, e.g. ``"validation"`` or
    ``"train[:1000]"``); a file is one split, so it is ignored for files and the sample.
    """
    if str(source) == SAMPLE:
        return load_file(SAMPLE_DATA_FILE)
    path = Path(source).expanduser()
    if path.is_file():
        return load_file(path)
    if looks_like_path(str(source)):
        raise FileNotFoundError(f"data file not found: {path}")
    return load_hub(str(source), split=split, cache_dir=cache_dir)


def load_file(path: str | os.PathLike[str]) -> datasets.Dataset:
    """Read, validate and align a local SQuAD JSON / JSON-lines file (plain or ``.gz``).

    A file left with no question (none in it, or every one dropped by the alignment) is a
    ``DataFormatError`` naming the file, the counts and why they were dropped.
    """
    squad_file = read_squad_file(path)
    records, report = align_answers(squad_file.records, source=squad_file.path.name)
    if not records:
        if not squad_file.records:
            reason = "it holds no question"
        else:
            reason = (
                f"all {len(squad_file.records):,} questions were dropped: "
                f"{report.summary().split(': ', 1)[-1]}"
            )
        raise DataFormatError(f"no usable question left: {reason}", path=str(squad_file.path))
    logger.info(
        "%s: SQuAD v%s, %s questions (%s unanswerable)",
        squad_file.path,
        squad_file.version,
        f"{len(records):,}",
        f"{squad_file.num_unanswerable:,}",
    )
    return records_to_dataset(records)


def records_to_dataset(records: list[Record]) -> datasets.Dataset:
    """Flat records -> a ``Dataset`` with :data:`SQUAD_FEATURES`."""
    columns = {name: [record[name] for record in records] for name in SQUAD_FEATURES}
    return datasets.Dataset.from_dict(columns, features=SQUAD_FEATURES)


def load_hub(name: str, *, split: str | None, cache_dir: str | None = None) -> datasets.Dataset:
    """``datasets.load_dataset(name, split=split)``, with an :class:`OfflineError` when offline.

    ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` are honoured even when set after import.
    """
    if split is None:
        raise ValueError(f"loading the hub dataset {name!r} needs a split, e.g. split='train'")
    with offline_mode():
        try:
            dataset = datasets.load_dataset(name, split=split, cache_dir=cache_dir)
        except _HUB_ERRORS as err:
            raise OfflineError(_offline_message(name, err)) from err
    return _check_columns(dataset, name)


def detect_version(dataset: datasets.Dataset) -> str:
    """``"2.0"`` if any example has no answer, else ``"1.1"``."""
    return "2.0" if count_unanswerable(dataset) else "1.1"


def count_unanswerable(dataset: datasets.Dataset) -> int:
    """The number of examples with no gold answer."""
    if len(dataset) == 0:
        return 0
    answers = dataset.with_format("arrow")["answers"].combine_chunks()
    lengths = pc.list_value_length(pc.struct_field(answers, "text"))
    return int(pc.sum(pc.equal(lengths, 0)).as_py())


def _offline_message(name: str, err: Exception) -> str:
    return (
        f"cannot load the dataset {name!r} from the Hugging Face hub: it is unreachable or "
        f"offline mode is on, and the dataset is not cached ({type(err).__name__}: {err}). "
        "Use local files instead: data=files data.train_file=PATH data.validation_file=PATH "
        "(SQuAD JSON or JSON lines, optionally .gz), or the bundled sample: data=sample."
    )


def _check_columns(dataset: datasets.Dataset, name: str) -> datasets.Dataset:
    """Require the squad columns; drop any others and cast to :data:`SQUAD_FEATURES`."""
    missing = [column for column in SQUAD_FEATURES if column not in dataset.column_names]
    if missing:
        raise DataFormatError(
            f"the hub dataset lacks the SQuAD columns {missing} (it has {dataset.column_names}; "
            f"expected {list(SQUAD_FEATURES)})",
            path=name,
        )
    extra = [column for column in dataset.column_names if column not in SQUAD_FEATURES]
    if extra:
        logger.info("%s: ignoring the non-SQuAD columns %s", name, extra)
        dataset = dataset.remove_columns(extra)
    if dataset.features != SQUAD_FEATURES:
        try:
            dataset = dataset.cast(SQUAD_FEATURES)
        except (TypeError, ValueError) as err:
            raise DataFormatError(
                f"the hub dataset's features {dataset.features} cannot be cast to the SQuAD "
                f"features {SQUAD_FEATURES} ({err})",
                path=name,
            ) from err
    return dataset
