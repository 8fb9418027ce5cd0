"""The training objective: span start/end cross-entropy, and start/end position accuracy."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def span_loss(
    start_logits: Tensor, end_logits: Tensor, start_positions: Tensor, end_positions: Tensor
) -> Tensor:
    """Mean of the start and end cross-entropies (in float32); positions past the end are ignored."""
    length = start_logits.size(1)

    def ce(logits: Tensor, positions: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), positions.clamp(0, length), ignore_index=length)

    return (ce(start_logits, start_positions) + ce(end_logits, end_positions)) / 2


def position_accuracy(logits: Tensor, positions: Tensor) -> Tensor:
    """Fraction of rows whose argmax token is the gold position (rows with positions in range)."""
    valid = positions < logits.size(1)
    hits = (logits.argmax(dim=1) == positions) & valid
    return hits.sum() / valid.sum().clamp(min=1)
