"""Answers out of merged candidates: slice the contexts, apply the v2.0 null rule, n-best lists."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any

import numpy as np
import torch
from torch import Tensor

from qa_lightning.decoding.candidates import NEG_INF, NO_SPAN_SCORE, SpanCandidates
from qa_lightning.decoding.merge import merge_candidates


@dataclass
class DecodedPredictions:
    """Answers per question id; ``na_probs`` (score diffs) for v2.0; n-best lists when asked.

    ``span_answers`` (v2.0): the best span of each question whatever the null rule decided, what
    the official best-threshold search needs.
    ``span_probs`` (with several spans per example): the best span's probability among the
    n-best entries (softmax over their scores, the null entry included for v2.0), the raw
    confidence that calibration (:mod:`qa_lightning.metrics.calibration`) maps to a probability.
    ``spans``: per question id, the best span ``(start_char, end_char, score)`` (``(0, 0, score)``
    when the answer is null; score ``-inf`` when there is no valid span).
    """

    predictions: dict[str, str]
    na_probs: dict[str, float] | None = None
    nbest: dict[str, list[dict[str, Any]]] | None = None
    span_probs: dict[str, float] | None = None
    span_answers: dict[str, str] | None = None
    spans: dict[str, tuple[int, int, float]] | None = None


def _to_list(values: Tensor) -> list:
    """``values.tolist()``, through numpy (several times faster for floats)."""
    return values.cpu().numpy().tolist()


def _nbest_table(
    merged: SpanCandidates, version_2: bool, null_score_diff_threshold: float = 0.0
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Each example's n-best entries sorted by score, the null entry inserted for v2.0.

    As in the classic postprocessing, the null entry ranks after spans of equal score and is
    kept (as an extra entry) when it falls outside the top ``K``; it ranks as if its score were
    ``null_score - null_score_diff_threshold`` (the answer rule of :func:`finalize`) but keeps
    its own score. Returns scores, start and end characters, the mask of real entries and
    their probabilities (softmax over each row).
    """
    scores, starts, ends = merged.scores, merged.start_char, merged.end_char
    keep = scores > NEG_INF
    if version_2:
        n_best = scores.shape[1]
        null = merged.null_score[:, None]
        null_rank = (scores >= null - null_score_diff_threshold).sum(1, keepdim=True)
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
    has_features: Tensor,
    ids: Sequence[str],
    contexts: Sequence[str],
    version_2: bool,
    null_score_diff_threshold: float,
) -> dict[str, list[dict[str, Any]]]:
    """``{id: entries}`` for the examples with features, built from the flat kept entries.

    Each kept entry's values are read once (one ``tolist`` per field over all entries), each
    context is sliced once per entry, and each example's list is a slice of the flat list.
    """
    table = _nbest_table(merged, version_2, null_score_diff_threshold)
    scores, starts, ends, keep, probs = (field.cpu().numpy() for field in table)
    keep &= has_features.cpu().numpy()[:, None]
    counts = np.count_nonzero(keep, axis=1).tolist()
    starts, ends = starts[keep].tolist(), ends[keep].tolist()
    per_entry = chain.from_iterable(map(repeat, contexts, counts))  # each entry's context
    texts = [
        context[start:end] for context, start, end in zip(per_entry, starts, ends, strict=True)
    ]
    entries = [
        {"text": text, "score": score, "probability": prob, "start": start, "end": end}
        for text, score, prob, start, end in zip(
            texts, scores[keep].tolist(), probs[keep].tolist(), starts, ends, strict=True
        )
    ]
    rows = np.flatnonzero(has_features.cpu().numpy()).tolist()
    nbest, first = {}, 0
    for r in rows:
        last = first + counts[r]
        nbest[ids[r]] = entries[first:last]
        first = last
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
    returns each question's n-best entries ``{"text", "score", "probability", "start", "end"}``
    (the null entry ranked by the same rule). With several spans per row, ``span_probs``.
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
    scores = _to_list(best_score)
    decoded.spans = {ids[r]: (starts[r], ends[r], scores[r]) for r in rows}
    if version_2:
        diffs = _to_list(score_diff)
        decoded.na_probs = {ids[r]: diffs[r] for r in rows}
        span_starts = _to_list(merged.start_char[:, 0].clamp(min=0))
        span_ends = _to_list(merged.end_char[:, 0].clamp(min=0))
        decoded.span_answers = {ids[r]: contexts[r][span_starts[r] : span_ends[r]] for r in rows}
    if with_nbest:
        decoded.nbest = _nbest_lists(
            merged, has_features, ids, contexts, version_2, null_score_diff_threshold
        )
    if merged.scores.shape[1] > 1:
        probs = _to_list(_best_span_probs(merged, version_2))
        decoded.span_probs = {ids[r]: probs[r] for r in rows}
    return decoded


def _best_span_probs(merged: SpanCandidates, version_2: bool) -> Tensor:
    """The best span's share of the softmax over the n-best spans (and the null entry, v2.0)."""
    scores = merged.scores
    if version_2:
        scores = torch.cat([scores, merged.null_score[:, None]], 1)
    probs = torch.softmax(scores, dim=1).nan_to_num_(0.0)
    return torch.where(merged.scores[:, 0] > NEG_INF, probs[:, 0], 0.0)


def decode(
    candidates: SpanCandidates,
    example_index: Tensor,
    feature_index: Tensor,
    ids: Sequence[str],
    contexts: Sequence[str],
    **options: Any,
) -> DecodedPredictions:
    """Merge per-feature candidates per example and finalize (``ids``/``contexts`` by example row).

    ``options`` are :func:`finalize`'s: ``version_2``, ``null_score_diff_threshold`` and
    ``with_nbest``, which needs candidates with ``n_best_size`` spans per feature (not
    ``num_spans=1``).
    """
    merged, has_features = merge_candidates(candidates, example_index, feature_index, len(ids))
    return finalize(merged, has_features, ids, contexts, **options)
