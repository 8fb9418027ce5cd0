"""The n-best span search on CPU in numpy: the same spans, in the same order, as the torch search.

:func:`~qa_lightning.decoding.spans.top_spans` keeps the best ``num_spans`` valid spans among
the top ``k`` starts x top ``k`` ends. On CPU most of its time went to ``torch.topk`` (whose
order of equal values is unspecified, hence a tie check and re-sorts) and to the many ops on the
``[B, k, k]`` pair scores. Here every value of a row becomes a distinct int64 key that sorts as a
stable descending sort ranks the values (value first, then position), so one ``np.partition``
(SIMD on x86) and a sort of the ``k`` chosen keys give exactly the stable top ``k``, ties and
``-inf`` included, with no check and no fallback.
"""

from __future__ import annotations

import numpy as np

from qa_lightning.decoding.candidates import NEG_INF

_POSITION_BITS = 32
_POSITION_MASK = (1 << _POSITION_BITS) - 1


def descending_keys(values: np.ndarray) -> np.ndarray:
    """Int64 keys of float32 ``values`` ``[B, L]``: ascending keys are descending values, equal
    values (``-0.0`` and ``0.0`` too) by ascending position; the low 32 bits are the position."""
    bits = (values.astype(np.float32, copy=False) + np.float32(0.0)).view(np.int32)
    flip = bits >> 31
    flip &= 0x7FFFFFFF
    bits ^= flip  # ascending ints = ascending floats
    np.invert(bits, out=bits)  # ascending ints = descending floats
    keys = bits.astype(np.int64)
    keys <<= _POSITION_BITS
    keys |= np.arange(values.shape[1], dtype=np.int64)
    return keys


def stable_top(values: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest values of each row, largest first, as a stable sort ranks
    them (equal values by position): ``np.argsort(-values, kind="stable")[:, :k]``, faster."""
    keys = descending_keys(values)
    if k < keys.shape[1]:
        keys = np.partition(keys, k - 1, axis=1)[:, :k]
    keys.sort(axis=1)
    return (keys & _POSITION_MASK).astype(np.intp)


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
    rows, length = start_logits.shape
    if not 1 <= k <= length:
        raise ValueError(f"k must be between 1 and the row length {length}, got {k}")
    starts, ends = stable_top(start_logits, k), stable_top(end_logits, k)
    start_logit, end_logit = _row_take(start_logits, starts), _row_take(end_logits, ends)
    # Disallowed tokens become -inf logits: their pairs then score -inf, hence invalid.
    masked_start = np.where(_row_take(allowed, starts), start_logit, NEG_INF)
    masked_end = np.where(_row_take(allowed, ends), end_logit, NEG_INF)
    pairs = masked_start[:, :, None] + masked_end[:, None, :]
    length = ends[:, None, :] - starts[:, :, None]
    valid = length.view(np.uintp) < max_len  # 0 <= length < max_len (negatives wrap around)
    if start_bound is not None and end_bound is not None:
        valid &= _row_take(start_bound, starts)[:, :, None] < _row_take(end_bound, ends)[:, None, :]
    pairs = np.where(valid, pairs, NEG_INF).reshape(rows, k * k)
    width = min(num_spans, k * k)
    best = stable_top(pairs, width)
    scores = _row_take(pairs, best)
    empty = scores == NEG_INF
    rank_start, rank_end = best // k, best % k
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
