"""Merge per-feature candidates per example: best spans over all its windows, minimum null score."""

from __future__ import annotations

import torch
from torch import Tensor

from qa_lightning.decoding.candidates import NEG_INF, SLOT_FILLS, SpanCandidates


def _unique_features(example_index: Tensor, feature_index: Tensor) -> Tensor:
    """Row order grouping features by example, in feature order, keeping one of each duplicate."""
    by_feature = torch.sort(feature_index, stable=True).indices
    sorted_features = feature_index[by_feature]
    first = torch.ones_like(sorted_features, dtype=torch.bool)
    first[1:] = sorted_features[1:] != sorted_features[:-1]
    by_feature = by_feature[first]
    return by_feature[torch.sort(example_index[by_feature], stable=True).indices]


def merge_candidates(
    candidates: SpanCandidates,
    example_index: Tensor,
    feature_index: Tensor,
    num_examples: int,
) -> tuple[SpanCandidates, Tensor]:
    """Per example: its best ``K`` spans over all its features and their minimum null score.

    Rows sharing a ``feature_index`` are the same feature and count once. Returns the merged
    candidates (``num_examples`` rows, ``null_score`` ``+inf`` for examples without features)
    and a boolean mask of the examples that had at least one feature.

    An example with one feature whose row is sorted best first and holds distinct character
    spans (most examples: contexts are mostly shorter than one window) takes that row as it is,
    which is what the general merge (:func:`_merge_rows`) gives it; only the others are merged.
    """
    if candidates.scores.shape[1] == 1:
        return _merge_single_spans(candidates, example_index.long(), feature_index, num_examples)
    order = _unique_features(example_index, feature_index)
    features = candidates.select(order)
    examples = example_index[order].long()
    counts = _example_counts(examples, num_examples)
    num_slots = features.scores.shape[1]
    merged = {
        name: getattr(features, name).new_full((num_examples, num_slots), fill)
        for name, fill in SLOT_FILLS.items()
    }
    alone = (counts[examples] == 1) & _sorted_distinct_rows(features)
    if bool(alone.any()):
        rows = examples[alone]
        for name in SLOT_FILLS:
            merged[name][rows] = getattr(features, name)[alone]
    if not bool(alone.all()):
        rest = (~alone).nonzero().squeeze(1)
        _merge_rows(features.select(rest), examples[rest], merged)
    null = _min_null_scores(features.null_score, examples, num_examples)
    return SpanCandidates(**merged, null_score=null), counts > 0


def _sorted_distinct_rows(features: SpanCandidates) -> Tensor:
    """Rows whose scores never rise and whose valid slots hold distinct character spans."""
    scores = features.scores
    ordered = (scores[:, 1:] <= scores[:, :-1]).all(1)
    valid = scores > NEG_INF
    width = int(features.end_char.max()) + 2 if features.end_char.numel() else 1
    keys = features.start_char.long() * width + features.end_char.long()
    slots = torch.arange(scores.shape[1], device=scores.device)
    keys = torch.where(valid, keys, -1 - slots).sort(1).values  # empty slots: distinct keys
    return ordered & (keys[:, 1:] != keys[:, :-1]).all(1)


def _merge_rows(features: SpanCandidates, examples: Tensor, merged: dict[str, Tensor]) -> None:
    """Write each example's best ``K`` spans over its rows (grouped by example, in feature order)
    into its row of ``merged``: a stable sort by score, the repeated spans dropped first."""
    num_slots = features.scores.shape[1]
    flat_examples = examples.repeat_interleave(num_slots)
    flat = _without_repeated_spans(features, flat_examples)
    by_score = torch.sort(flat["scores"], descending=True, stable=True).indices
    grouped = by_score[torch.sort(flat_examples[by_score], stable=True).indices]
    slot_examples = flat_examples[grouped]
    counts = torch.bincount(examples, minlength=len(merged["scores"]))
    group_start = torch.cumsum(counts * num_slots, 0) - counts * num_slots
    rank = torch.arange(len(grouped), device=grouped.device) - group_start[slot_examples]
    keep = rank < num_slots
    rows, cols, source = slot_examples[keep], rank[keep], grouped[keep]
    for name in SLOT_FILLS:
        merged[name][rows, cols] = flat[name][source]


def _span_groups(flat_examples: Tensor, start_char: Tensor, end_char: Tensor) -> Tensor:
    """The same number for the slots of the same (example, start, end), distinct otherwise."""
    starts, ends = start_char.long() + 1, end_char.long() + 1  # empty slots' -1 becomes 0
    width = int(ends.max()) + 1 if len(ends) else 1
    if (int(flat_examples.max()) + 1) * width * width < 2**62:
        return torch.unique((flat_examples * width + starts) * width + ends, return_inverse=True)[1]
    keys = torch.stack([flat_examples, starts, ends], 1)
    return torch.unique(keys, dim=0, return_inverse=True)[1]


def _without_repeated_spans(features: SpanCandidates, flat_examples: Tensor) -> dict[str, Tensor]:
    """The span fields flattened, each character span of an example kept once (its best score).

    Overlapping windows reach the same characters with different logits: the copies after the
    best-scoring one (the earliest feature among equal scores) become empty slots, so an
    example's ``K`` slots hold ``K`` distinct spans whenever that many exist.
    """
    flat = {name: getattr(features, name).flatten() for name in SLOT_FILLS}
    scores = flat["scores"]
    valid = scores > NEG_INF
    if not bool(valid.any()):
        return flat
    group = _span_groups(flat_examples, flat["start_char"], flat["end_char"])
    best = scores.new_full((int(group.max()) + 1,), NEG_INF)
    best = best.scatter_reduce(0, group, scores, reduce="amax")
    is_best = valid & (scores == best[group])
    slot = torch.arange(len(scores), device=scores.device)
    first = torch.full_like(best, len(scores), dtype=torch.long)
    first = first.scatter_reduce(0, group, slot.masked_fill(~is_best, len(scores)), reduce="amin")
    repeated = valid & (slot != first[group])
    if bool(repeated.any()):
        for name, fill in SLOT_FILLS.items():
            flat[name] = flat[name].masked_fill(repeated, fill)
    return flat


def _min_null_scores(null_score: Tensor, examples: Tensor, num_examples: int) -> Tensor:
    """Per example the minimum null score of its rows, ``+inf`` for examples without rows."""
    null = null_score.new_full((num_examples,), float("inf"))
    return null.scatter_reduce(0, examples, null_score, reduce="amin")


def _example_counts(examples: Tensor, num_examples: int) -> Tensor:
    counts = torch.bincount(examples, minlength=num_examples)
    if len(counts) > num_examples:
        raise ValueError(
            f"example_index {len(counts) - 1} is out of range ({num_examples} examples)"
        )
    return counts


def _merge_single_spans(
    candidates: SpanCandidates, examples: Tensor, feature_index: Tensor, num_examples: int
) -> tuple[SpanCandidates, Tensor]:
    """:func:`merge_candidates` for one span per feature, without sorting.

    Per example the best score wins, the lowest ``feature_index`` among equal scores; rows that
    repeat a feature hold the same values, so which of them is read does not matter.
    """
    counts = _example_counts(examples, num_examples)
    scores = candidates.scores[:, 0]
    best = scores.new_full((num_examples,), NEG_INF)
    best = best.scatter_reduce(0, examples, scores, reduce="amax")
    is_best = scores == best[examples]
    no_feature = int(feature_index.max()) + 1 if len(feature_index) else 0
    first = feature_index.new_full((num_examples,), no_feature)
    first = first.scatter_reduce(
        0, examples, feature_index.masked_fill(~is_best, no_feature), reduce="amin"
    )
    chosen = (is_best & (feature_index == first[examples])).nonzero().squeeze(1)
    row = examples.new_full((num_examples,), -1).scatter_(0, examples[chosen], chosen)
    found = (row >= 0)[:, None]
    row = row.clamp(min=0)
    merged = {}
    for name, fill in SLOT_FILLS.items():
        field = getattr(candidates, name)
        if len(field):
            merged[name] = torch.where(found, field[row], fill)
        else:
            merged[name] = field.new_full((num_examples, 1), fill)
    null = _min_null_scores(candidates.null_score, examples, num_examples)
    return SpanCandidates(**merged, null_score=null), counts > 0
