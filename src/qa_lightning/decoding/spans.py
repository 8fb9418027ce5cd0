"""Span search on token indices: the best valid spans among the top-k starts x top-k ends.

The search knows tokens only: which spans are valid comes in as :class:`SpanRules` (for
evaluation features, :func:`qa_lightning.decoding.offsets.offset_rules` reads them from the
offset mapping) and spans come out as :class:`TokenSpans`. One span per row (answers, EM/F1) has
a much faster exact path: a window maximum over all starts and ends, redone with the exact top-k
search on the rare rows it cannot settle.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from qa_lightning.decoding.candidates import NEG_INF, TOKEN_FILLS, SpanRules, TokenSpans
from qa_lightning.decoding.nbest_search import top_spans_numpy


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


def top_spans(
    start_logits: Tensor,
    end_logits: Tensor,
    rules: SpanRules,
    k: int,
    num_spans: int,
    max_len: int,
    use_numpy: bool = True,
) -> TokenSpans:
    """The ``num_spans`` best valid spans among the top ``k`` starts x top ``k`` ends.

    On CPU the search runs in numpy (:func:`~qa_lightning.decoding.nbest_search.top_spans_numpy`:
    the same spans, about 1.5x faster on evaluation batches); ``use_numpy=False`` keeps it in torch.
    """
    if use_numpy and start_logits.device.type == "cpu":
        bounds = (rules.start_bound, rules.end_bound)
        if rules.start_bound is None or rules.end_bound is None:
            bounds = (None, None)
        found = top_spans_numpy(
            start_logits.detach().float().numpy(),
            end_logits.detach().float().numpy(),
            rules.allowed.numpy(),
            *(None if bound is None else bound.numpy() for bound in bounds),
            k,
            num_spans,
            max_len,
        )
        return TokenSpans(*(torch.from_numpy(field) for field in found))
    starts, ends = _top_positions(start_logits, k), _top_positions(end_logits, k)
    length = ends[:, None, :] - starts[:, :, None]
    valid = (
        rules.allowed.gather(1, starts)[:, :, None]
        & rules.allowed.gather(1, ends)[:, None, :]
        & (length >= 0)
        & (length < max_len)
    )
    if rules.start_bound is not None and rules.end_bound is not None:
        start_bound = rules.start_bound.gather(1, starts)[:, :, None]
        valid &= start_bound < rules.end_bound.gather(1, ends)[:, None, :]
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
    spans = TokenSpans(
        scores=scores,
        start_token=starts.gather(1, rank_start).masked_fill_(empty, -1),
        end_token=ends.gather(1, rank_end).masked_fill_(empty, -1),
        start_logit=start_logit.gather(1, rank_start).masked_fill_(empty, NEG_INF),
        end_logit=end_logit.gather(1, rank_end).masked_fill_(empty, NEG_INF),
    )
    return TokenSpans(
        *(
            _pad_columns(field, num_spans, fill)
            for field, fill in zip(spans, TOKEN_FILLS, strict=True)
        )
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


def _first_max(values: Tensor) -> Tensor:
    """The first position of each row's maximum, ``[B, 1]``.

    On CPU, numpy's ``argmax`` (documented to take the first of equal maxima) is several times
    faster than ``torch.max`` with indices.
    """
    if values.device.type != "cpu":
        return values.max(1, keepdim=True).indices
    return torch.from_numpy(np.argmax(values.detach().numpy(), axis=1)[:, None])


def _window_best(
    start_logits: Tensor,
    end_logits: Tensor,
    rules: SpanRules,
    max_len: int,
    start_bias: Tensor,
    end_bias: Tensor,
) -> tuple[TokenSpans, Tensor]:
    """The best span over the allowed starts and ends (:func:`_mask_bias`), by a window maximum.

    Also returns whether it is certain: no other start reaches its score and it keeps to the
    bounds of ``rules``. Among equal ends, the first is taken, as a stable sort ranks them.
    """
    batch, length = start_logits.shape
    ends = start_logits.new_full((batch, length + max_len - 1), NEG_INF)
    torch.add(end_logits, end_bias, out=ends[:, :length])
    totals = (start_logits + start_bias).add_(_window_max(ends, max_len))
    start = _first_max(totals)
    score = totals.gather(1, start)
    totals.scatter_(1, start, NEG_INF)
    window = ends.gather(1, start + _positions(max_len, start.device))
    end = start + _first_max(window)
    start_logit, end_logit = start_logits.gather(1, start), end_logits.gather(1, end)
    certain = totals.amax(1, keepdim=True) < score
    if rules.start_bound is not None and rules.end_bound is not None:
        certain &= rules.start_bound.gather(1, start) < rules.end_bound.gather(1, end)
    found = score > NEG_INF
    if not found.all():
        start, end = start.masked_fill(~found, -1), end.masked_fill(~found, -1)
        start_logit = start_logit.masked_fill(~found, NEG_INF)
        end_logit = end_logit.masked_fill(~found, NEG_INF)
    return TokenSpans(score, start, end, start_logit, end_logit), certain


def _kth_largest(values: Tensor, k: int) -> Tensor:
    """The ``k``-th largest value of each row, ``[B, 1]``.

    On CPU, numpy's partition (introselect) is several times faster than ``torch.topk``.
    """
    if values.device.type != "cpu":
        return values.topk(k, 1, sorted=False).values.amin(1, keepdim=True)
    position = values.shape[1] - k
    kth = np.partition(values.detach().numpy(), position, axis=1)[:, position : position + 1]
    return torch.from_numpy(kth)


def _redo_rows(
    spans: TokenSpans, exact: Tensor, redo: Callable[[Tensor], TokenSpans]
) -> TokenSpans:
    """``spans`` with the rows that are not ``exact`` replaced by ``redo(rows)``."""
    if exact.all():
        return spans
    rows = (~exact).nonzero()[:, 0]
    for field, value in zip(spans, redo(rows), strict=True):
        field[rows] = value
    return spans


def best_top_span(
    start_logits: Tensor, end_logits: Tensor, rules: SpanRules, k: int, max_len: int
) -> TokenSpans:
    """The best candidate span: the window search over the exact top-``k`` starts and ends.

    Rows where the ``k``-th value is tied (the top-``k`` set is then not a threshold) or the
    result is not certain are decoded by :func:`top_spans`.
    """
    start_kth, end_kth = _kth_largest(start_logits, k), _kth_largest(end_logits, k)
    spans, certain = _window_best(
        start_logits,
        end_logits,
        rules,
        max_len,
        _mask_bias(rules.allowed & (start_logits >= start_kth)),
        _mask_bias(rules.allowed & (end_logits >= end_kth)),
    )
    exact = (
        (_count_at_least(start_logits, start_kth) <= k)
        & (_count_at_least(end_logits, end_kth) <= k)
        & (certain | (spans.scores == NEG_INF))
    )
    return _redo_rows(
        spans,
        exact,
        lambda rows: top_spans(
            start_logits[rows], end_logits[rows], rules.select(rows), k, 1, max_len
        ),
    )


def best_span_unchecked(
    start_logits: Tensor, end_logits: Tensor, rules: SpanRules, k: int, max_len: int
) -> tuple[TokenSpans, Tensor]:
    """The best valid span over ALL starts and ends, and the rows where it is the best candidate.

    It is when it is certain and its start and end are surely within the top ``k``; the other
    rows (under 1% with random logits, fewer with a trained model's) need
    :func:`best_top_span`.
    """
    bias = _mask_bias(rules.allowed)
    spans, certain = _window_best(start_logits, end_logits, rules, max_len, bias, bias)
    in_top = (_count_at_least(start_logits, spans.start_logit) <= k) & (
        _count_at_least(end_logits, spans.end_logit) <= k
    )
    return spans, (certain & in_top) | (spans.scores == NEG_INF)


def best_span(
    start_logits: Tensor, end_logits: Tensor, rules: SpanRules, k: int, max_len: int
) -> TokenSpans:
    """The best candidate span of each row, without ranking every start x end pair."""
    spans, exact = best_span_unchecked(start_logits, end_logits, rules, k, max_len)
    return _redo_rows(
        spans,
        exact,
        lambda rows: best_top_span(
            start_logits[rows], end_logits[rows], rules.select(rows), k, max_len
        ),
    )


def token_spans(
    start_logits: Tensor, end_logits: Tensor, rules: SpanRules, k: int, num_spans: int, max_len: int
) -> TokenSpans:
    """The best ``num_spans`` valid spans of each row among the top ``k`` (``<= L``) starts x ends.

    A span is valid when ``rules`` allow it, the end is not before the start and it has at most
    ``max_len`` tokens. Scores are computed in float32. ``num_spans=1`` (all that answers and
    EM/F1 need) takes a much faster path.
    """
    start_logits, end_logits = start_logits.float(), end_logits.float()
    if num_spans == 1:
        return best_span(start_logits, end_logits, rules, k, max_len)
    return top_spans(start_logits, end_logits, rules, k, num_spans, max_len)


def null_scores(start_logits: Tensor, end_logits: Tensor, cls_index: Tensor) -> Tensor:
    """``start_logits[cls] + end_logits[cls]`` per row, in float32."""
    cls = cls_index.long()[:, None]
    return (start_logits.gather(1, cls).float() + end_logits.gather(1, cls).float()).squeeze(1)
