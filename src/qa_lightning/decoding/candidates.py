"""The values decoding passes along: per-row span candidates, and padding masks for logits."""

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
