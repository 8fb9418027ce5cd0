"""Span search per feature: the best valid spans among the top-k starts x top-k ends.

One span per feature (answers, EM/F1) has a much faster exact path: a window maximum over all
starts and ends, redone with the exact top-k search on the rare rows it cannot settle.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from qa_lightning.decoding.candidates import NEG_INF, SpanCandidates


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


def best_top_span(
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


def best_span_unchecked(
    start_logits: Tensor, end_logits: Tensor, offsets: Tensor, k: int, max_len: int
) -> tuple[Spans, Tensor]:
    """The best valid span over ALL starts and ends, and the rows where it is the best candidate.

    It is when it is certain and its start and end are surely within the top ``k``; the other
    rows (under 1% with random logits, fewer with a trained model's) need
    :func:`best_top_span`.
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
    spans, exact = best_span_unchecked(start_logits, end_logits, offsets, k, max_len)
    return _redo_rows(
        spans,
        exact,
        lambda rows: best_top_span(start_logits[rows], end_logits[rows], offsets[rows], k, max_len),
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
    return SpanCandidates(*spans, null_score=null_scores(start_logits, end_logits, cls_index))


def null_scores(start_logits: Tensor, end_logits: Tensor, cls_index: Tensor) -> Tensor:
    """``start_logits[cls] + end_logits[cls]`` per feature."""
    cls = cls_index.long()[:, None]
    return (start_logits.gather(1, cls) + end_logits.gather(1, cls)).squeeze(1)
