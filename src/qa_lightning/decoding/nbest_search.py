"""The n-best span search on CPU in numpy: the same spans, in the same order, as the torch search.

:func:`~qa_lightning.decoding.spans.top_spans` keeps the best ``num_spans`` valid spans among
the top ``k`` starts x top ``k`` ends. On CPU most of its time went to ``torch.topk`` and to the
many small ops on the ``[B, k, k]`` pair scores; here the top ``k`` of a row is a threshold
(``np.partition``'s ``k``-th value: about 3x cheaper than ``topk``) whose selected positions come
out in index order, then a stable sort of just those ``k`` values. Rows where the threshold
selects more than ``k`` positions (the ``k``-th value is tied) fall back to a stable sort of the
whole row. Invalid pairs get distinct sentinels below every float32 value, so that the pair
threshold stays exact and ``np.partition`` stays fast (it slows down badly on many equal values).
"""

from __future__ import annotations

import numpy as np

from qa_lightning.decoding.candidates import NEG_INF

_SENTINEL_STEP = -1e39
"""Invalid pair ``i`` of a row scores ``(i + 1) * _SENTINEL_STEP`` (float64): below every float32."""


def stable_top(values: np.ndarray, k: int, *, exact_ties_only: bool = False) -> np.ndarray:
    """Positions of the ``k`` largest values of each row, largest first, as a stable sort ranks
    them (equal values by position). ``k`` must not exceed the row length.

    Rows whose ``k``-th value is tied with a value outside the top ``k`` are sorted whole; so are
    rows whose ``k``-th value is ``-inf``, unless ``exact_ties_only`` (the caller then does not
    care which ``-inf`` positions are chosen, nor in which order).
    """
    rows, length = values.shape
    if k >= length:
        return np.argsort(-values, axis=1, kind="stable")
    kth = np.partition(values, length - k, axis=1)[:, length - k, None]
    chosen = values >= kth
    exact = np.count_nonzero(chosen, axis=1) == k
    if not exact_ties_only:
        exact &= kth[:, 0] > NEG_INF
    if exact.all():
        top = np.nonzero(chosen)[1].reshape(rows, k)
    else:
        top = np.empty((rows, k), dtype=np.intp)
        settled, other = np.flatnonzero(exact), np.flatnonzero(~exact)
        top[settled] = np.nonzero(chosen[settled])[1].reshape(len(settled), k)
        top[other] = np.argsort(-values[other], axis=1, kind="stable")[:, :k]
    top_values = np.take_along_axis(values, top, 1)
    return np.take_along_axis(top, np.argsort(-top_values, axis=1, kind="stable"), 1)


def _row_take(table: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``table[r, positions[r, j]]`` for every row ``r`` (flat ``take``: cheaper than fancy indexing)."""
    rows, width = table.shape
    flat = positions + (np.arange(rows) * width)[:, None]
    return np.take(table.ravel(), flat)


def top_spans_numpy(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    allowed: np.ndarray,
    start_bound: np.ndarray | None,
    end_bound: np.ndarray | None,
    k: int,
    num_spans: int,
    max_len: int,
) -> tuple[np.ndarray, ...]:
    """Scores, start and end tokens, start and end logits of the best ``num_spans`` valid spans
    of each row among its top ``k`` starts x top ``k`` ends, best first, each ``[B, num_spans]``.

    Float32 logits ``[B, L]``; ``allowed`` (bool) and the optional bounds are
    :class:`~qa_lightning.decoding.candidates.SpanRules`' fields. Equal scores rank by start rank,
    then end rank (a stable sort of the flattened ``[k, k]`` pairs). Empty slots (fewer valid
    spans, or a ``-inf`` score) score ``-inf``, with tokens ``-1`` and logits ``-inf``.
    """
    rows = len(start_logits)
    starts, ends = stable_top(start_logits, k), stable_top(end_logits, k)
    start_logit, end_logit = _row_take(start_logits, starts), _row_take(end_logits, ends)
    # Disallowed tokens become -inf logits: their pairs then score -inf, hence invalid.
    masked_start = np.where(_row_take(allowed, starts), start_logit, NEG_INF)
    masked_end = np.where(_row_take(allowed, ends), end_logit, NEG_INF)
    pairs = masked_start[:, :, None] + masked_end[:, None, :]
    length = ends[:, None, :] - starts[:, :, None]
    valid = length.astype(np.uintp) < max_len  # 0 <= length < max_len (negatives wrap around)
    if start_bound is not None and end_bound is not None:
        valid &= _row_take(start_bound, starts)[:, :, None] < _row_take(end_bound, ends)[:, None, :]
    valid &= pairs > NEG_INF
    sentinels = (np.arange(1, k * k + 1) * _SENTINEL_STEP)[None, :]
    keyed = np.where(valid.reshape(rows, -1), pairs.reshape(rows, -1), sentinels)
    width = min(num_spans, k * k)
    best = stable_top(keyed, width, exact_ties_only=True)
    empty = ~_row_take(valid.reshape(rows, -1), best)
    rank_start, rank_end = best // k, best % k
    scores = np.where(empty, NEG_INF, _row_take(keyed, best)).astype(np.float32)
    out = (
        scores,
        np.where(empty, -1, _row_take(starts, rank_start)),
        np.where(empty, -1, _row_take(ends, rank_end)),
        np.where(empty, NEG_INF, _row_take(start_logit, rank_start)),
        np.where(empty, NEG_INF, _row_take(end_logit, rank_end)),
    )
    if width == num_spans:
        return out
    fills = (NEG_INF, -1, -1, NEG_INF, NEG_INF)
    pad = [(0, 0), (0, num_spans - width)]
    return tuple(np.pad(x, pad, constant_values=f) for x, f in zip(out, fills, strict=True))
