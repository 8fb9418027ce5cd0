"""Model inputs from a batch: Longformer's global attention on the question tokens."""

from __future__ import annotations

from torch import Tensor


def global_attention_mask(
    input_ids: Tensor, attention_mask: Tensor, sep_token_id: int, question_first: bool = True
) -> Tensor:
    """Longformer's global attention on the question tokens and the first (CLS) token.

    Question first (``<s> q </s></s> c </s>``): the tokens before the first separator. Context
    first: the tokens between the last two separators. Works with either padding side.
    """
    sep = (input_ids == sep_token_id).long()  # cumsum over int64: ONNX has no bool CumSum
    attended = attention_mask.bool()
    if question_first:
        question = sep.cumsum(dim=1) == 0
    else:
        question = (sep.flip(1).cumsum(dim=1).flip(1) == 1) & (sep == 0)
    first = (attended.long().cumsum(dim=1) == 1) & attended
    return ((question | first) & attended).long()
