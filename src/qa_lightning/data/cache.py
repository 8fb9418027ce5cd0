"""On-disk cache of tokenized features, keyed on the rows used, the tokenizer and the parameters.

The key (:func:`features_key`) hashes the examples actually tokenized (:func:`dataset_digest`),
the tokenizer (:func:`tokenizer_digest`), the question/context layout (every field of
:class:`~qa_lightning.data.features.InputLayout`), every parameter and :data:`FEATURES_VERSION`. Each
entry also records what it was built from (:class:`ExamplesRecord`: the number of examples and
a digest of their ids) and how many features it holds. Loading checks that record against the
examples at hand (and an optional ``check`` of the features); an entry that does not match or
cannot be read is rebuilt, with a warning that names both sides.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import pyarrow as pa
import tokenizers
from datasets.table import InMemoryTable
from transformers import PreTrainedTokenizerBase

from qa_lightning.data.features import InputLayout

log = logging.getLogger(__name__)

# Bump when feature preparation or the key changes, so stale caches are never reused.
# 2: keys hash the rows used (1 gave every contiguous subset of a file the whole file's key).
# 3: keys hash the InputLayout's fields instead of the tokenizer's padding side.
FEATURES_VERSION = 3
RECORD_FILE = "qa_lightning_entry.json"

FeatureCheck = Callable[[datasets.Dataset], "str | None"]


@dataclass(frozen=True)
class ExamplesRecord:
    """What a cache entry was built from: the number of examples and a digest of their ids."""

    num_examples: int
    ids_digest: str

    @classmethod
    def of(cls, examples: datasets.Dataset) -> ExamplesRecord:
        """The record of ``examples`` (their ``id`` column, in order)."""
        ids = examples.with_format("arrow")["id"].to_pylist() if len(examples) else []
        digest = hashlib.sha256("\0".join(ids).encode("utf-8", "surrogatepass")).hexdigest()
        return cls(len(examples), digest)

    def __str__(self) -> str:
        return f"{self.num_examples:,} examples (ids sha256 {self.ids_digest[:12]})"


def default_cache_dir() -> Path:
    """``$QA_LIGHTNING_CACHE`` or ``~/.cache/qa_lightning``."""
    root = os.environ.get("QA_LIGHTNING_CACHE") or Path.home() / ".cache" / "qa_lightning"
    return Path(root)


def dataset_digest(ds: datasets.Dataset) -> str:
    """Hash of the rows ``ds`` holds, in order.

    ``datasets``' fingerprint covers every transform (a slice's offset and length, an index
    mapping) and, for in-memory data (``Dataset.from_dict``, how local files are read), the
    content. For memory-mapped data (the hub, Arrow files) it rests on paths and modification
    times, so the rows' own bytes are hashed too. The ids' digest is always added.
    """
    h = hashlib.sha256()
    h.update(str(ds._fingerprint).encode())
    h.update(json.dumps(asdict(ExamplesRecord.of(ds))).encode())
    if not isinstance(ds.data, InMemoryTable):
        h.update(rows_digest(ds).encode())
    return h.hexdigest()


class _HashSink:
    """A write-only file object that hashes what is written to it."""

    closed = False

    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def rows_digest(ds: datasets.Dataset) -> str:
    """Hash of the Arrow IPC serialization of exactly the rows ``ds`` selects (slices truncated)."""
    table = ds.with_format("arrow")[:]
    sink = _HashSink()
    with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), table.schema) as writer:
        writer.write_table(table)
    return sink.hash.hexdigest()


def tokenizer_digest(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash of everything about a tokenizer that changes its (unpadded) output. The padding side
    changes features only through the question/context order, which the key takes from the
    :class:`InputLayout`."""
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    h.update(tokenizer.truncation_side.encode())
    h.update(tokenizers.__version__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(
        backend.to_str().encode() if backend is not None else repr(tokenizer.get_vocab()).encode()
    )
    return h.hexdigest()


def features_key(
    ds: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    layout: InputLayout,
    **params: object,
) -> str:
    """Cache key of the features of ``ds`` tokenized by ``tokenizer`` in ``layout`` with ``params``."""
    h = hashlib.sha256()
    h.update(dataset_digest(ds).encode())
    h.update(tokenizer_digest(tokenizer).encode())
    keyed = {"version": FEATURES_VERSION, "layout": asdict(layout), **params}
    h.update(json.dumps(keyed, sort_keys=True).encode())
    return h.hexdigest()[:24]


def cached_features(
    key: str,
    cache_dir: Path | None,
    build: Callable[[], datasets.Dataset],
    record: ExamplesRecord,
    check: FeatureCheck | None = None,
) -> datasets.Dataset:
    """Load features for ``key`` from ``cache_dir``, or build and save them there atomically.

    ``record`` describes the examples at hand; ``check(features)`` may name a further problem
    of loaded features. An entry built from other examples, failing ``check`` or unreadable is
    rebuilt with a warning. ``cache_dir=None`` disables the cache (features built every time).
    """
    if cache_dir is None:
        return build()
    target = Path(cache_dir) / "features" / key
    if target.exists():
        features, problem = _load_entry(target, record, check)
        if features is not None:
            log.info("Loading cached features %s", target)
            return features
        log.warning("Feature cache entry %s %s: rebuilding it", target, problem)
    return _save_entry(target, build(), record)


def _load_entry(
    target: Path, record: ExamplesRecord, check: FeatureCheck | None
) -> tuple[datasets.Dataset | None, str | None]:
    """The entry's features if they were built from ``record``'s examples, else the problem."""
    try:
        stored = json.loads((target / RECORD_FILE).read_text(encoding="utf-8"))
        built_from = ExamplesRecord(int(stored["num_examples"]), str(stored["ids_digest"]))
        num_features = int(stored["num_features"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        return None, f"has no valid record of what it was built from ({type(err).__name__}: {err})"
    if built_from != record:
        return None, f"was built from {built_from}, but the examples at hand are {record}"
    try:
        features = datasets.load_from_disk(str(target))
    except Exception as err:  # any corruption: unreadable state, truncated or garbled Arrow
        return None, f"cannot be read ({type(err).__name__}: {err})"
    if len(features) != num_features:
        return None, f"holds {len(features):,} features, but its record says {num_features:,}"
    problem = check(features) if check is not None else None
    return (None, problem) if problem else (features, None)


def _save_entry(
    target: Path, features: datasets.Dataset, record: ExamplesRecord
) -> datasets.Dataset:
    """Write ``features`` and their record to ``target`` atomically (replacing a stale entry)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        features.save_to_disk(str(tmp))
        entry = {**asdict(record), "num_features": len(features), "version": FEATURES_VERSION}
        (tmp / RECORD_FILE).write_text(json.dumps(entry), encoding="utf-8")
        _replace_directory(tmp, target)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if _load_entry(target, record, None)[0] is None:  # another process may have won the race
            log.warning(
                "Could not cache features in %s (%s); continuing without cache", target, err
            )
            return features
    return datasets.load_from_disk(str(target))


def _replace_directory(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``; a stale ``target`` is moved aside first, then removed."""
    stale = None
    if target.exists():
        stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.stale.", dir=target.parent))
        os.replace(target, stale / "entry")
    os.replace(source, target)
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)
