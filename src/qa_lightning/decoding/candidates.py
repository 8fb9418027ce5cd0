"""The values decoding passes along: token spans, per-row span candidates, padding masks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

NO_SPAN_SCORE = -1e4
NEG_INF = float("-inf")


def mask_padding(logits: Tensor, attention_mask: Tensor) -> Tensor:
    """Padded positions get the lowest logit, so answers never depend on how a batch was padded."""
    return logits.masked_fill(attention_mask == 0, torch.finfo(logits.dtype).min)


class SpanRules(NamedTuple):
    """Which token spans ``(s, e)`` are valid, besides ``e >= s`` and the maximum length.

    Both tokens must be ``allowed`` (``[B, L]`` bool); with ``start_bound`` and ``end_bound``
    (``[B, L]``), also ``start_bound[s] < end_bound[e]`` (a non-empty extent, e.g. characters).
    """

    allowed: Tensor
    start_bound: Tensor | None = None
    end_bound: Tensor | None = None

    def select(self, index: Tensor) -> SpanRules:
        """The rows at ``index``."""
        return SpanRules(*(None if field is None else field[index] for field in self))


class TokenSpans(NamedTuple):
    """Best spans per row as token indices, best first, each field ``[B, num_spans]``.

    ``end_token`` is inclusive; ``scores = start_logit + end_logit``. Empty slots score ``-inf``
    and have tokens ``-1``.
    """

    scores: Tensor
    start_token: Tensor
    end_token: Tensor
    start_logit: Tensor
    end_logit: Tensor


TOKEN_FILLS = TokenSpans(NEG_INF, -1, -1, NEG_INF, NEG_INF)
"""The value of each :class:`TokenSpans` field in an empty slot."""


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

    def put(self, rows: Tensor, values: SpanCandidates) -> None:
        """Overwrite the rows at ``rows`` with ``values`` (in place)."""
        for field, value in zip(self, values, strict=True):
            field[rows] = value

    @staticmethod
    def cat(parts: Sequence[SpanCandidates]) -> SpanCandidates:
        """Concatenate candidates of several batches along the rows."""
        return SpanCandidates(*(torch.cat(fields) for fields in zip(*parts, strict=True)))


SLOT_FILLS: dict[str, float] = {
    "scores": NEG_INF,
    "start_char": -1,
    "end_char": -1,
    "start_logit": NEG_INF,
    "end_logit": NEG_INF,
}
"""The value of each span field of :class:`SpanCandidates` in an empty slot."""


class FeatureCandidates(NamedTuple):
    """Candidates of features, with the example and feature each row belongs to."""

    candidates: SpanCandidates
    example_index: Tensor
    feature_index: Tensor
