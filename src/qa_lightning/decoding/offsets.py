"""From token spans to character spans through the offset mapping, and the rules it implies.

Evaluation features carry each token's ``[start_char, end_char)`` in ``offset_mapping``, and
``[-1, -1]`` for the tokens outside the context (question, special and padding tokens). That
mapping decides which token spans can be answers (:func:`offset_rules`): both tokens in the
context (offset start ``>= 0``) and a non-empty character span. :func:`char_candidates` then
reads the characters of the spans the search (:mod:`qa_lightning.decoding.spans`) chose.
"""

from __future__ import annotations

from torch import Tensor

from qa_lightning.decoding.candidates import SpanCandidates, SpanRules, TokenSpans
from qa_lightning.decoding.spans import null_scores, token_spans


def offset_rules(offsets: Tensor) -> SpanRules:
    """Valid spans of ``offsets`` ``[B, L, 2]``: context tokens, ``start_char < end_char``."""
    starts = offsets[..., 0]
    return SpanRules(starts >= 0, starts, offsets[..., 1])


def char_candidates(spans: TokenSpans, offsets: Tensor, null_score: Tensor) -> SpanCandidates:
    """``spans`` as character offsets (``-1`` in empty slots), with each row's ``null_score``."""
    start_token, end_token = spans.start_token, spans.end_token
    # Empty slots are rare with one span per row: skip three ops per side then.
    any_empty = start_token.numel() > 0 and int(start_token.min()) < 0
    if any_empty:
        start_token, end_token = start_token.clamp(min=0), end_token.clamp(min=0)
    start_char = offsets[..., 0].gather(1, start_token)
    end_char = offsets[..., 1].gather(1, end_token)
    if any_empty:
        empty = spans.start_token < 0
        start_char, end_char = start_char.masked_fill_(empty, -1), end_char.masked_fill_(empty, -1)
    return SpanCandidates(
        scores=spans.scores,
        start_char=start_char,
        end_char=end_char,
        start_logit=spans.start_logit,
        end_logit=spans.end_logit,
        null_score=null_score,
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
    """Each feature's best valid spans as character candidates, with its null score.

    Candidates are the top ``k = min(n_best_size, L)`` starts x top ``k`` ends; the best
    ``num_spans`` (default ``n_best_size``) valid ones are kept, best first:
    :func:`~qa_lightning.decoding.spans.token_spans` under :func:`offset_rules` (both tokens in
    the context, a non-empty character span), mapped by :func:`char_candidates`.
    ``null_score = start_logits[cls] + end_logits[cls]``.
    """
    k = min(n_best_size, start_logits.shape[1])
    num_spans = n_best_size if num_spans is None else num_spans
    spans = token_spans(
        start_logits, end_logits, offset_rules(offsets), k, num_spans, max_answer_length
    )
    return char_candidates(spans, offsets, null_scores(start_logits, end_logits, cls_index))
