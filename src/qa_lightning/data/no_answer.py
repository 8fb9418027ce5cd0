"""Fewer training windows without an answer: a seeded subsample of the CLS-target features.

A long context becomes several windows, and every window that does not hold the answer (and
every window of an unanswerable question) is trained to point at the CLS token. On data with long
contexts these are a large share of the features (42% of the bundled sample's at 384 tokens)
and a model first learns to answer "no answer" everywhere, escaping only after many steps.
Keeping a fraction of them, as the Natural Questions baselines do (Alberti et al., 2019), speeds
up learning to find spans; the kept ones still teach the no-answer decision. Evaluation features
are never subsampled.
"""

from __future__ import annotations

import datasets
import numpy as np


def no_answer_rows(features: datasets.Dataset, cls_token_id: int | None) -> np.ndarray:
    """Rows of training features whose target start is the CLS token."""
    rows: list[int] = []
    columns = features.select_columns(["input_ids", "start_positions"])
    offset = 0
    for batch in columns.iter(batch_size=1024):
        for i, (ids, start) in enumerate(
            zip(batch["input_ids"], batch["start_positions"], strict=True)
        ):
            cls_index = ids.index(cls_token_id) if cls_token_id in ids else 0
            if start == cls_index:
                rows.append(offset + i)
        offset += len(batch["start_positions"])
    return np.asarray(rows, dtype=np.int64)


def keep_no_answer_fraction(
    features: datasets.Dataset, cls_token_id: int | None, keep: float, seed: int
) -> tuple[datasets.Dataset, int, int]:
    """``features`` with a seeded ``keep`` fraction of its no-answer rows (order kept).

    Returns the features and the numbers of no-answer rows kept and found.
    """
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep_no_answer_features must be within [0, 1], got {keep}")
    negatives = no_answer_rows(features, cls_token_id)
    kept = round(keep * len(negatives))
    rng = np.random.default_rng(seed)
    dropped = rng.choice(negatives, size=len(negatives) - kept, replace=False)
    rows = np.setdiff1d(np.arange(len(features)), dropped, assume_unique=True)
    return features.select(rows), kept, len(negatives)
