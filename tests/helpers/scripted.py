"""A scripted span model: logits that peak on chosen tokens, to decide which answer wins."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


class TokenModel:
    """Scripted logits: ``peak`` on the tokens ``start_ids`` / ``end_ids``, 0 elsewhere, ``cls`` at 0."""

    def __init__(
        self, start_ids: list[int], end_ids: list[int], peak: float = 10.0, cls: float = 0
    ):
        self.start_ids, self.end_ids = torch.tensor(start_ids), torch.tensor(end_ids)
        self.peak, self.cls = peak, cls

    def __call__(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        ids = batch["input_ids"]
        start = torch.isin(ids, self.start_ids).float() * self.peak
        end = torch.isin(ids, self.end_ids).float() * self.peak
        start[:, 0], end[:, 0] = self.cls, self.cls
        return start, end
