"""Dynamic padding of features into batches."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

# Token-level fields and the value that pads them; anything else is one integer per feature.
POSITION_FIELDS = ("start_positions", "end_positions", "cls_index")


class QACollator:
    """Pad a list of features to the longest one, rounded up to ``pad_to_multiple_of``.

    ``max_length`` set pads every batch to that length instead (the classic tutorials' static
    padding). Respects the tokenizer's padding side: when it pads on the left, token positions
    (answer start/end, CLS index) are shifted by the padding added in front.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        pad_to_multiple_of: int | None = 8,
        max_length: int | None = None,
    ) -> None:
        self.pad_values = {
            "input_ids": tokenizer.pad_token_id,
            "attention_mask": 0,
            "token_type_ids": tokenizer.pad_token_type_id,
            "special_tokens_mask": 1,
            "offset_mapping": -1,
        }
        self.left = tokenizer.padding_side == "left"
        self.pad_to_multiple_of = pad_to_multiple_of
        self.max_length = max_length

    def _padded_length(self, longest: int) -> int:
        if self.max_length is not None:
            return max(self.max_length, longest)
        if self.pad_to_multiple_of:
            return math.ceil(longest / self.pad_to_multiple_of) * self.pad_to_multiple_of
        return longest

    def _pad(self, rows: Sequence[Sequence[Any]], length: int, value: int) -> torch.Tensor:
        first = torch.as_tensor(rows[0])
        out = torch.full((len(rows), length, *first.shape[1:]), value, dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row)
            if n:
                if self.left:
                    out[i, length - n :] = torch.as_tensor(row)
                else:
                    out[i, :n] = torch.as_tensor(row)
        return out

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_ids"]) for f in features]
        length = self._padded_length(max(lengths))
        batch: dict[str, torch.Tensor] = {}
        for key in features[0]:
            values = [f[key] for f in features]
            if key in self.pad_values:
                batch[key] = self._pad(values, length, self.pad_values[key])
            else:
                batch[key] = torch.as_tensor(values, dtype=torch.long)
        if self.left:
            shift = torch.as_tensor([length - n for n in lengths], dtype=torch.long)
            for key in POSITION_FIELDS:
                if key in batch:
                    batch[key] = batch[key] + shift
        return batch
