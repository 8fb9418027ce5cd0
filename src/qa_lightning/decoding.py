"""Decode start/end logits into answer spans: vectorised per feature, merged per example.

Three steps, all batched in torch:

1. :func:`feature_candidates` keeps, per feature, its best ``n_best_size`` valid spans out of the
   top ``n_best_size`` start tokens x top ``n_best_size`` end tokens (the classic candidate set),
   plus the feature's null (CLS) score. Only these few numbers need to be kept per feature; only
   one span when just the answers are needed (EM/F1), which has a much faster exact path.
2. :func:`merge_candidates` gathers the candidates of every example's features (they may come
   from different batches and processes), drops duplicated features (DistributedSampler pads by
   repeating samples) and keeps each example's best ``n_best_size`` spans and minimum null score.
3. :func:`finalize` slices the answers out of the contexts; for SQuAD v2.0 it answers ``""`` when
   ``null_score - best_span_score`` exceeds the threshold, and reports that difference as the
   no-answer probability (``na_prob``) the official v2.0 script reads.

Order is deterministic and matches a plain loop with stable sorts: among equal logits the lower
token index ranks first; among equal span scores the earlier feature, then the better-ranked
start, then the better-ranked end. An example without any valid span answers ``""``; for v2.0 its
missing span counts as scoring :data:`NO_SPAN_SCORE`, so its ``na_prob`` is
``null_score - NO_SPAN_SCORE`` (large and finite, so that ``null_odds.json`` stays valid JSON).
A span whose score is ``-inf`` counts as no span.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

NO_SPAN_SCORE = -1e4
NEG_INF = float("-inf")


def mask_padding(logits: Tensor, attention_mask: Tensor) -> Tensor:
    """Padded positions get the lowest logit, so answers never depend on how a batch was padded."""
    return logits.masked_fill(attention_mask == 0, torch.finfo(logits.dtype).min)


class SpanCandidates(NamedTuple):
    """Best spans per row (a feature or an example), best first; empty slots score ``-inf``.

    ``scores``, ``start_char``, ``end_char`` (exclusive), ``start_logit``, ``end_logit`` are
    ``[N, K]``; ``null_score`` is ``[N]``. Empty slots have character offsets ``-1``.
    """

    scores: Tensor
    start_char: Tensor
    end_char: Tensor
    start_logit: Tensor
    end_logit: Tensor
    null_score: Tensor

    def select(self, index: Tensor) -> SpanCandidates:
        """The rows at ``index``."""
        return SpanCandidates(*(field[index] for field in self))

    @staticmethod
    def cat(parts: Sequence[SpanCandidates]) -> SpanCandidates:
        """Concatenate candidates of several batches along the rows."""
        return SpanCandidates(*(torch.cat(fields) for fields in zip(*parts, strict=True)))


@dataclass
class DecodedPredictions:
    """Answers per question id; ``na_probs`` (score diffs) for v2.0; n-best lists when asked."""

    predictions: dict[str, str]
    na_probs: dict[str, float] | None = None
    nbest: dict[str, list[dict[str, Any]]] | None = None


def _top_positions(values: Tensor, k: int) -> Tensor:
    """Positions of the ``k`` largest values per row, largest first, as a stable sort ranks them.

    ``topk`` is fast but leaves the order of equal values open; the rare rows where that matters
    (ties within the selection or at its boundary, ``-inf`` ignored) are redone with a stable sort.
    """
    top = torch.topk(values, k, dim=1)
    kth = top.values[:, -1:]
    finite = top.values > NEG_INF
    tied = ((top.values[:, 1:] == top.values[:, :-1]) & finite[:, 1:]).any(1)
    tied |= ((values >= kth).sum(1) > k) & finite[:, -1]
    if not tied.any():
        return top.indices
    rows = tied.nonzero().squeeze(1)
    indices = top.indices.clone()
    indices[rows] = torch.sort(values[rows], dim=1, descending=True, stable=True).indices[:, :k]
    return indices


def _pad_columns(x: Tensor, width: int, value: float) -> Tensor:
    if x.shape[1] >= width:
        return x
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)


Spans = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]
"""``scores, start_char, end_char, start_logit, end_logit``, each ``[B, num_spans]``."""


def _top_spans(
    start_logits: Tensor, end_logits: Tensor, offsets: Tensor, k: int, num_spans: int, max_len: int
) -> Spans:
    """The ``num_spans`` best valid spans among the top ``k`` starts x top ``k`` ends."""
    starts, ends = _top_positions(start_logits, k), _top_positions(end_logits, k)
    token_start = offsets[..., 0]
    start_char = token_start.gather(1, starts)
    end_char = offsets[..., 1].gather(1, ends)
    length = ends[:, None, :] - starts[:, :, None]
    valid = (
        (start_char >= 0)[:, :, None]
        & (token_start.gather(1, ends) >= 0)[:, None, :]
        & (length >= 0)
        & (length < max_len)
        & (start_char[:, :, None] < end_char[:, None, :])
    )
    start_logit, end_logit = start_logits.gather(1, starts), end_logits.gather(1, ends)
    pair_scores = start_logit[:, :, None] + end_logit[:, None, :]
    pair_scores = pair_scores.masked_fill_(~valid, NEG_INF).flatten(1)
    if num_spans == 1:  # argmax takes the first of equal scores, as a stable sort would
        best = pair_scores.argmax(1, keepdim=True)
    else:
        best = _top_positions(pair_scores, min(num_spans, k * k))
    rank_start, rank_end = best.div(k, rounding_mode="floor"), best.remainder(k)
    scores = pair_scores.gather(1, best)
    empty = scores == NEG_INF
    return (
        _pad_columns(scores, num_spans, NEG_INF),
        _pad_columns(start_char.gather(1, rank_start).masked_fill_(empty, -1), num_spans, -1),
        _pad_columns(end_char.gather(1, rank_end).masked_fill_(empty, -1), num_spans, -1),
        _pad_columns(start_logit.gather(1, rank_start), num_spans, NEG_INF),
        _pad_columns(end_logit.gather(1, rank_end), num_spans, NEG_INF),
    )


@functools.cache
def _positions(length: int, device: torch.device) -> Tensor:
    """``arange(length)`` on ``device``, made once."""
    return torch.arange(length, device=device)


def _window_max(padded: Tensor, width: int) -> Tensor:
    """``out[:, i] = padded[:, i : i + width].max()`` for every full window (doubling steps)."""
    out, span = padded, 1
    while span * 2 <= width:
        out = torch.maximum(out[:, :-span], out[:, span:])
        span *= 2
    if span < width:
        out = torch.maximum(out[:, : out.shape[1] - (width - span)], out[:, width - span :])
    return out


def _count_at_least(values: Tensor, threshold: Tensor) -> Tensor:
    """``(values >= threshold).sum(1, keepdim=True)`` in float ops (faster than bool sums on CPU)."""
    return (values - threshold).sign_().add_(1).clamp_(max=1).sum(1, keepdim=True)


def _mask_bias(allowed: Tensor) -> Tensor:
    """0.0 where ``allowed``, ``-inf`` elsewhere (adding it is cheaper than masking twice)."""
    return torch.where(allowed, 0.0, NEG_INF)


def _window_best(
    start_logits: Tensor,
    end_logits: Tensor,
    offsets: Tensor,
    max_len: int,
    start_bias: Tensor,
    end_bias: Tensor,
) -> tuple[Spans, Tensor]:
    """The best span over the allowed starts and ends (:func:`_mask_bias`), by a window maximum.

    Also returns whether it is certain: no other start reaches its score and its character span
    is non-empty. Among equal ends, ``argmax`` takes the first, as a stable sort ranks them.
    """
    batch, length = start_logits.shape
    ends = start_logits.new_full((batch, length + max_len - 1), NEG_INF)
    torch.add(end_logits, end_bias, out=ends[:, :length])
    totals = (start_logits + start_bias).add_(_window_max(ends, max_len))
    score, start = totals.max(1, keepdim=True)
    totals.scatter_(1, start, NEG_INF)
    window = ends.gather(1, start + _positions(max_len, start.device))
    end = start + window.max(1, keepdim=True).indices  # the first of equal maxima
    start_logit, end_logit = start_logits.gather(1, start), end_logits.gather(1, end)
    start_char, end_char = offsets[..., 0].gather(1, start), offsets[..., 1].gather(1, end)
    certain = (totals.amax(1, keepdim=True) < score) & (start_char < end_char)
    found = score > NEG_INF
    if not found.all():
        start_char, end_char = start_char.masked_fill(~found, -1), end_char.masked_fill(~found, -1)
        start_logit = start_logit.masked_fill(~found, NEG_INF)
        end_logit = end_logit.masked_fill(~found, NEG_INF)
    return (score, start_char, end_char, start_logit, end_logit), certain


def _kth_largest(values: Tensor, k: int) -> Tensor:
    """The ``k``-th largest value of each row, ``[B, 1]``.

    On CPU, numpy's partition (introselect) is several times faster than ``torch.topk``.
    """
    if values.device.type != "cpu":
        return values.topk(k, 1, sorted=False).values.amin(1, keepdim=True)
    position = values.shape[1] - k
    kth = np.partition(values.detach().numpy(), position, axis=1)[:, position : position + 1]
    return torch.from_numpy(kth)


def _redo_rows(spans: Spans, exact: Tensor, redo: Callable[[Tensor], Spans]) -> Spans:
    """``spans`` with the rows that are not ``exact`` replaced by ``redo(rows)``."""
    if exact.all():
        return spans
    rows = (~exact).nonzero()[:, 0]
    for field, value in zip(spans, redo(rows), strict=True):
        field[rows] = value
    return spans


def _best_top_span(
    start_logits: Tensor, end_logits: Tensor, offsets: Tensor, k: int, max_len: int
) -> Spans:
    """The best candidate span: the window search over the exact top-``k`` starts and ends.

    Rows where the ``k``-th value is tied (the top-``k`` set is then not a threshold) or the
    result is not certain are decoded by :func:`_top_spans`.
    """
    start_kth, end_kth = _kth_largest(start_logits, k), _kth_largest(end_logits, k)
    context = offsets[..., 0] >= 0
    spans, certain = _window_best(
        start_logits,
        end_logits,
        offsets,
        max_len,
        _mask_bias(context & (start_logits >= start_kth)),
        _mask_bias(context & (end_logits >= end_kth)),
    )
    exact = (
        (_count_at_least(start_logits, start_kth) <= k)
        & (_count_at_least(end_logits, end_kth) <= k)
        & (certain | (spans[0] == NEG_INF))
    )
    return _redo_rows(
        spans,
        exact,
        lambda rows: _top_spans(start_logits[rows], end_logits[rows], offsets[rows], k, 1, max_len),
    )


def _best_span_unchecked(
    start_logits: Tensor, end_logits: Tensor, offsets: Tensor, k: int, max_len: int
) -> tuple[Spans, Tensor]:
    """The best valid span over ALL starts and ends, and the rows where it is the best candidate.

    It is when it is certain and its start and end are surely within the top ``k``; the other
    rows (under 1% with random logits, fewer with a trained model's) need
    :func:`_best_top_span`.
    """
    bias = _mask_bias(offsets[..., 0] >= 0)
    spans, certain = _window_best(start_logits, end_logits, offsets, max_len, bias, bias)
    in_top = (_count_at_least(start_logits, spans[3]) <= k) & (
        _count_at_least(end_logits, spans[4]) <= k
    )
    return spans, (certain & in_top) | (spans[0] == NEG_INF)


def _best_span(
    start_logits: Tensor, end_logits: Tensor, offsets: Tensor, k: int, max_len: int
) -> Spans:
    """The best candidate span of each feature, without ranking every start x end pair."""
    spans, exact = _best_span_unchecked(start_logits, end_logits, offsets, k, max_len)
    return _redo_rows(
        spans,
        exact,
        lambda rows: _best_top_span(
            start_logits[rows], end_logits[rows], offsets[rows], k, max_len
        ),
    )


def feature_candidates(
    start_logits: Tensor,
    end_logits: Tensor,
    offsets: Tensor,
    cls_index: Tensor,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    num_spans: int | None = None,
) -> SpanCandidates:
    """The best ``num_spans`` (default ``n_best_size``) valid spans of each feature, best first.

    Candidates are the top ``k = min(n_best_size, L)`` starts x top ``k`` ends over the whole
    sequence. A span is valid when both tokens are context (``offsets[..., 0] >= 0``), the end is
    not before the start, it has at most ``max_answer_length`` tokens and a non-empty character
    span. ``null_score = start_logits[cls] + end_logits[cls]``. Scores are computed in float32.
    ``num_spans=1`` (all that answers and EM/F1 need) takes a much faster path.
    """
    start_logits, end_logits = start_logits.float(), end_logits.float()
    k = min(n_best_size, start_logits.shape[1])
    num_spans = n_best_size if num_spans is None else num_spans
    if num_spans == 1:
        spans = _best_span(start_logits, end_logits, offsets, k, max_answer_length)
    else:
        spans = _top_spans(start_logits, end_logits, offsets, k, num_spans, max_answer_length)
    return SpanCandidates(*spans, null_score=_null_scores(start_logits, end_logits, cls_index))


def _null_scores(start_logits: Tensor, end_logits: Tensor, cls_index: Tensor) -> Tensor:
    """``start_logits[cls] + end_logits[cls]`` per feature."""
    cls = cls_index.long()[:, None]
    return (start_logits.gather(1, cls) + end_logits.gather(1, cls)).squeeze(1)


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
    """
    if candidates.scores.shape[1] == 1:
        return _merge_single_spans(candidates, example_index.long(), feature_index, num_examples)
    order = _unique_features(example_index, feature_index)
    features = candidates.select(order)
    examples = example_index[order].long()
    num_slots = features.scores.shape[1]
    flat_examples = examples.repeat_interleave(num_slots)
    by_score = torch.sort(features.scores.flatten(), descending=True, stable=True).indices
    grouped = by_score[torch.sort(flat_examples[by_score], stable=True).indices]
    slot_examples = flat_examples[grouped]
    counts = _example_counts(examples, num_examples)
    group_start = torch.cumsum(counts * num_slots, 0) - counts * num_slots
    rank = torch.arange(len(grouped), device=grouped.device) - group_start[slot_examples]
    keep = rank < num_slots
    rows, cols, source = slot_examples[keep], rank[keep], grouped[keep]
    merged = []
    for field, fill in zip(features[:-1], (NEG_INF, -1, -1, NEG_INF, NEG_INF), strict=True):
        out = field.new_full((num_examples, num_slots), fill)
        out[rows, cols] = field.flatten()[source]
        merged.append(out)
    null = features.null_score.new_full((num_examples,), float("inf"))
    null = null.scatter_reduce(0, examples, features.null_score, reduce="amin")
    return SpanCandidates(*merged, null_score=null), counts > 0


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
    merged = [
        torch.where(found, field[row], fill)
        if len(field)
        else field.new_full((num_examples, 1), fill)
        for field, fill in zip(candidates[:-1], (NEG_INF, -1, -1, NEG_INF, NEG_INF), strict=True)
    ]
    null = candidates.null_score.new_full((num_examples,), float("inf"))
    null = null.scatter_reduce(0, examples, candidates.null_score, reduce="amin")
    return SpanCandidates(*merged, null_score=null), counts > 0


def _to_list(values: Tensor) -> list:
    """``values.tolist()``, through numpy (several times faster for floats)."""
    return values.cpu().numpy().tolist()


def _nbest_table(
    merged: SpanCandidates, version_2: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Each example's n-best entries sorted by score, the null entry inserted for v2.0.

    As in the classic postprocessing, the null entry ranks after spans of equal score and is
    kept (as an extra entry) when it falls outside the top ``K``. Returns scores, start and end
    characters, the mask of real entries and their probabilities (softmax over each row).
    """
    scores, starts, ends = merged.scores, merged.start_char, merged.end_char
    keep = scores > NEG_INF
    if version_2:
        n_best = scores.shape[1]
        null = merged.null_score[:, None]
        null_rank = (scores >= null).sum(1, keepdim=True)
        position = torch.arange(n_best + 1, device=scores.device)[None, :]
        is_null = position == null_rank
        span = (position - (position > null_rank).long()).clamp_(max=n_best - 1)
        scores = torch.where(is_null, null, scores.gather(1, span))
        starts = starts.gather(1, span).masked_fill_(is_null, 0)
        ends = ends.gather(1, span).masked_fill_(is_null, 0)
        in_top = position < (null_rank + 1).clamp(min=n_best)
        keep = is_null | (keep.gather(1, span) & in_top)
    probs = torch.softmax(scores.masked_fill(~keep, NEG_INF), dim=1).nan_to_num_(0.0)
    return scores, starts, ends, keep, probs


def _nbest_lists(
    merged: SpanCandidates,
    rows: Sequence[int],
    ids: Sequence[str],
    contexts: Sequence[str],
    version_2: bool,
) -> dict[str, list[dict[str, Any]]]:
    scores, starts, ends, keep, probs = map(_to_list, _nbest_table(merged, version_2))
    nbest = {}
    for r in rows:
        context = contexts[r]
        nbest[ids[r]] = [
            {"text": context[s:e], "score": sc, "probability": p, "start": s, "end": e}
            for sc, s, e, p, kept in zip(
                scores[r], starts[r], ends[r], probs[r], keep[r], strict=True
            )
            if kept
        ]
    return nbest


def finalize(
    merged: SpanCandidates,
    has_features: Tensor,
    ids: Sequence[str],
    contexts: Sequence[str],
    *,
    version_2: bool = False,
    null_score_diff_threshold: float = 0.0,
    with_nbest: bool = False,
) -> DecodedPredictions:
    """Answer text per question with features: v1.1 the best span; v2.0 ``""`` when null wins.

    v2.0: ``na_prob = null_score - best_span_score`` (float32); the answer is ``""`` when it
    exceeds ``null_score_diff_threshold`` or there is no valid span. With ``with_nbest`` also
    returns each question's n-best entries ``{"text", "score", "probability", "start", "end"}``.
    """
    best_score = merged.scores[:, 0]
    has_span = best_score > NEG_INF
    answer_null = ~has_span
    if version_2:
        score_diff = merged.null_score - torch.where(has_span, best_score, NO_SPAN_SCORE)
        answer_null |= score_diff > null_score_diff_threshold
    # A null answer is the empty slice [0:0]; so is a missing span (offsets -1).
    starts = _to_list(merged.start_char[:, 0].masked_fill(answer_null, 0))
    ends = _to_list(merged.end_char[:, 0].masked_fill(answer_null, 0))
    texts = [context[start:end] for context, start, end in zip(contexts, starts, ends, strict=True)]
    if bool(has_features.all()):
        rows = range(len(ids))
        predictions = dict(zip(ids, texts, strict=True))
    else:
        rows = _to_list(has_features.nonzero().squeeze(1))
        predictions = {ids[r]: texts[r] for r in rows}
    decoded = DecodedPredictions(predictions)
    if version_2:
        diffs = _to_list(score_diff)
        decoded.na_probs = {ids[r]: diffs[r] for r in rows}
    if with_nbest:
        decoded.nbest = _nbest_lists(merged, rows, ids, contexts, version_2)
    return decoded


def decode(
    candidates: SpanCandidates,
    example_index: Tensor,
    feature_index: Tensor,
    ids: Sequence[str],
    contexts: Sequence[str],
    *,
    version_2: bool = False,
    null_score_diff_threshold: float = 0.0,
    with_nbest: bool = False,
) -> DecodedPredictions:
    """Merge per-feature candidates per example and finalize (``ids``/``contexts`` by example row).

    ``with_nbest`` needs candidates with ``n_best_size`` spans per feature (not ``num_spans=1``).
    """
    merged, has_features = merge_candidates(candidates, example_index, feature_index, len(ids))
    return finalize(
        merged,
        has_features,
        ids,
        contexts,
        version_2=version_2,
        null_score_diff_threshold=null_score_diff_threshold,
        with_nbest=with_nbest,
    )


class _Unchecked(NamedTuple):
    """Rows whose fast-path span still needs the exact top-``k`` search, with their inputs."""

    rows: Tensor
    start_logits: Tensor
    end_logits: Tensor
    offsets: Tensor
    k: int


def _pad_rows(parts: Sequence[Tensor], value: float) -> Tensor:
    """Concatenate ``[n, L, ...]`` tensors of different ``L`` along the rows, padding with value."""
    length = max(part.shape[1] for part in parts)
    first = parts[0]
    out = first.new_full((sum(len(part) for part in parts), length, *first.shape[2:]), value)
    row = 0
    for part in parts:
        out[row : row + len(part), : part.shape[1]] = part
        row += len(part)
    return out


class _Batch(NamedTuple):
    """One ``update``'s inputs, waiting to be decoded with the next few batches."""

    start_logits: Tensor
    end_logits: Tensor
    offsets: Tensor
    cls_index: Tensor
    example_index: Tensor
    feature_index: Tensor


class StreamingDecoder:
    """Accumulates per-feature candidates batch by batch (never all logits); decodes at the end.

    Keeps one span per feature, or ``n_best_size`` when ``with_nbest`` asks for n-best lists.
    Pass ``feature_index`` with every batch or with none (features are then numbered in the
    order they arrive). Small batches wait until ``chunk_rows`` features have come (at most
    that many rows of logits are held), then are decoded together: the work per call of a
    vectorised op is what costs on CPU, so chunks of a few hundred rows decode several times
    faster per feature than batches of 32. With one span per feature, the few rows the fast path
    cannot settle (under 1% with random logits) keep their logits until ``max_unchecked`` of
    them wait or :meth:`decode` runs, and are then searched together. Padding rows with ``-inf``
    logits and non-context offsets, to join them, changes no answer.
    """

    def __init__(
        self,
        n_best_size: int = 20,
        max_answer_length: int = 30,
        with_nbest: bool = False,
        max_unchecked: int = 1024,
        chunk_rows: int = 256,
    ) -> None:
        self.n_best_size = n_best_size
        self.max_answer_length = max_answer_length
        self.with_nbest = with_nbest
        self.max_unchecked = max_unchecked
        self.chunk_rows = chunk_rows
        self._candidates: list[SpanCandidates] = []
        self._example_index: list[Tensor] = []
        self._feature_index: list[Tensor] = []
        self._unchecked: list[_Unchecked] = []
        self._unchecked_rows = 0
        self._waiting: list[_Batch] = []
        self._waiting_rows = 0
        self._seen = 0  # features received
        self._decoded = 0  # features turned into candidates

    def update(
        self,
        start_logits: Tensor,
        end_logits: Tensor,
        offsets: Tensor,
        cls_index: Tensor,
        example_index: Tensor,
        feature_index: Tensor | None = None,
    ) -> None:
        """Take one batch of features; decodes once ``chunk_rows`` features wait."""
        batch = len(example_index)
        if feature_index is None:
            feature_index = torch.arange(
                self._seen, self._seen + batch, device=example_index.device
            )
        self._seen += batch
        self._waiting.append(
            _Batch(
                start_logits.detach().float(),
                end_logits.detach().float(),
                offsets,
                cls_index,
                example_index,
                feature_index,
            )
        )
        self._waiting_rows += batch
        if self._waiting_rows >= self.chunk_rows:
            self._decode_waiting()

    def _decode_waiting(self) -> None:
        """Candidates of every waiting batch, in one chunk padded to its longest row."""
        if not self._waiting:
            return
        parts = self._waiting
        self._waiting, self._waiting_rows = [], 0
        if len(parts) == 1:
            chunk = parts[0]
        else:
            chunk = _Batch(
                _pad_rows([part.start_logits for part in parts], NEG_INF),
                _pad_rows([part.end_logits for part in parts], NEG_INF),
                _pad_rows([part.offsets for part in parts], -1),
                *(torch.cat(fields) for fields in zip(*(part[3:] for part in parts), strict=True)),
            )
        with torch.no_grad():
            if self.with_nbest:
                candidates = feature_candidates(
                    chunk.start_logits,
                    chunk.end_logits,
                    chunk.offsets,
                    chunk.cls_index,
                    self.n_best_size,
                    self.max_answer_length,
                )
            else:
                candidates = SpanCandidates(
                    *self._best_spans(chunk.start_logits, chunk.end_logits, chunk.offsets),
                    null_score=_null_scores(chunk.start_logits, chunk.end_logits, chunk.cls_index),
                )
        self._decoded += len(chunk.example_index)
        self._candidates.append(candidates)
        self._example_index.append(chunk.example_index)
        self._feature_index.append(chunk.feature_index)
        if self._unchecked_rows >= self.max_unchecked:
            self._check()

    def _best_spans(self, start_logits: Tensor, end_logits: Tensor, offsets: Tensor) -> Spans:
        k = min(self.n_best_size, start_logits.shape[1])
        spans, exact = _best_span_unchecked(
            start_logits, end_logits, offsets, k, self.max_answer_length
        )
        if not exact.all():
            rows = (~exact).nonzero()[:, 0]
            self._unchecked.append(
                _Unchecked(
                    rows + self._decoded, start_logits[rows], end_logits[rows], offsets[rows], k
                )
            )
            self._unchecked_rows += len(rows)
        return spans

    def _check(self) -> None:
        """Settle the waiting rows with the exact search, all rows of one ``k`` at once."""
        if not self._unchecked:
            return
        merged = SpanCandidates.cat(self._candidates)
        for k in sorted({part.k for part in self._unchecked}):
            parts = [part for part in self._unchecked if part.k == k]
            spans = _best_top_span(
                _pad_rows([part.start_logits for part in parts], NEG_INF),
                _pad_rows([part.end_logits for part in parts], NEG_INF),
                _pad_rows([part.offsets for part in parts], -1),
                k,
                self.max_answer_length,
            )
            rows = torch.cat([part.rows for part in parts])
            for field, value in zip(merged, spans, strict=False):
                field[rows] = value
        self._candidates = [merged]
        self._unchecked, self._unchecked_rows = [], 0

    def decode(
        self,
        ids: Sequence[str],
        contexts: Sequence[str],
        *,
        version_2: bool = False,
        null_score_diff_threshold: float = 0.0,
    ) -> DecodedPredictions:
        """Decode every question seen so far; ``ids``/``contexts`` are indexed by example_index."""
        self._decode_waiting()
        if not self._candidates:
            return DecodedPredictions(
                {}, {} if version_2 else None, {} if self.with_nbest else None
            )
        self._check()
        return decode(
            SpanCandidates.cat(self._candidates),
            torch.cat(self._example_index),
            torch.cat(self._feature_index),
            ids,
            contexts,
            version_2=version_2,
            null_score_diff_threshold=null_score_diff_threshold,
            with_nbest=self.with_nbest,
        )
