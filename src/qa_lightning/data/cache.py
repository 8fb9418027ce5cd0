"""On-disk cache of tokenized features, keyed on the data, the tokenizer and the parameters."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import datasets
from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# Bump when feature preparation changes, so stale caches are never reused.
FEATURES_VERSION = 1


def default_cache_dir() -> Path:
    """``$QA_LIGHTNING_CACHE`` or ``~/.cache/qa_lightning``."""
    root = os.environ.get("QA_LIGHTNING_CACHE") or Path.home() / ".cache" / "qa_lightning"
    return Path(root)


def dataset_digest(ds: datasets.Dataset) -> str:
    """Content hash of a dataset's Arrow buffers (fast: no conversion to Python objects)."""
    h = hashlib.sha256()
    table = ds.with_format(None).data.table
    if ds._indices is not None:  # a shuffled/selected view: hash the rows it selects
        table = ds.flatten_indices().data.table
    for name in table.column_names:
        h.update(name.encode())
        for chunk in table.column(name).chunks:
            for buf in chunk.buffers():
                if buf is not None:
                    h.update(buf)
    return h.hexdigest()


def tokenizer_digest(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash of everything about a tokenizer that changes its output."""
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    h.update(tokenizer.padding_side.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(
        backend.to_str().encode() if backend is not None else repr(tokenizer.get_vocab()).encode()
    )
    return h.hexdigest()


def features_key(ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, **params: object) -> str:
    """Cache key of the features of ``ds`` tokenized by ``tokenizer`` with ``params``."""
    h = hashlib.sha256()
    h.update(dataset_digest(ds).encode())
    h.update(tokenizer_digest(tokenizer).encode())
    h.update(json.dumps({"version": FEATURES_VERSION, **params}, sort_keys=True).encode())
    return h.hexdigest()[:24]


def cached_features(
    key: str, cache_dir: Path | None, build: Callable[[], datasets.Dataset]
) -> datasets.Dataset:
    """Load features for ``key`` from ``cache_dir``, or build and save them there atomically.

    ``cache_dir=None`` disables the cache (features are built every time).
    """
    if cache_dir is None:
        return build()
    target = Path(cache_dir) / "features" / key
    if target.is_dir():
        log.info("Loading cached features %s", target)
        return datasets.load_from_disk(str(target))
    features = build()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=target.parent))
    try:
        features.save_to_disk(str(tmp))
        os.replace(tmp, target)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.is_dir():  # another process may have won the race: that is fine
            log.warning(
                "Could not cache features in %s (%s); continuing without cache", target, err
            )
            return features
    return datasets.load_from_disk(str(target))
