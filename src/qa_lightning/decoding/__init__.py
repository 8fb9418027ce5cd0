"""Decode start/end logits into answer spans: vectorised per feature, merged per example.

Three steps, all batched in torch:

1. :func:`feature_candidates` keeps, per feature, its best ``n_best_size`` valid spans out of the
   top ``n_best_size`` start tokens x top ``n_best_size`` end tokens (the classic candidate set),
   plus the feature's null (CLS) score. Only these few numbers need to be kept per feature; only
   one span when just the answers are needed (EM/F1), which has a much faster exact path. It is
   two steps: :func:`token_spans` searches token indices under :class:`SpanRules`, and
   :func:`char_candidates` maps the chosen tokens to characters through the offset mapping (which
   also gives the rules, :func:`offset_rules`).
2. :func:`merge_candidates` gathers the candidates of every example's features (they may come
   from different batches and processes), drops duplicated features (DistributedSampler pads by
   repeating samples) and keeps each example's best ``n_best_size`` spans and minimum null score.
3. :func:`finalize` slices the answers out of the contexts; for SQuAD v2.0 it answers ``""`` when
   ``null_score - best_span_score`` exceeds the threshold, and reports that difference as the
   no-answer probability (``na_prob``) the official v2.0 script reads.

Order is deterministic and matches a plain loop with stable sorts: among equal logits the lower
token index ranks first; among equal span scores the earlier feature, then the better-ranked
start, then the better-ranked end. An example without any valid span answers ``""``; for v2.0 its
missing span counts as scoring :data:`NO_SPAN_SCORE`, so its ``na_prob`` is
``null_score - NO_SPAN_SCORE`` (large and finite, so that ``null_odds.json`` stays valid JSON).
A span whose score is ``-inf`` counts as no span.
"""

from qa_lightning.decoding.candidates import (
    NEG_INF,
    NO_SPAN_SCORE,
    FeatureCandidates,
    SpanCandidates,
    SpanRules,
    TokenSpans,
    mask_padding,
)
from qa_lightning.decoding.finalize import DecodedPredictions, decode, finalize
from qa_lightning.decoding.merge import merge_candidates
from qa_lightning.decoding.offsets import char_candidates, feature_candidates, offset_rules
from qa_lightning.decoding.spans import token_spans
from qa_lightning.decoding.streaming import StreamingDecoder

__all__ = [
    "NEG_INF",
    "NO_SPAN_SCORE",
    "DecodedPredictions",
    "FeatureCandidates",
    "SpanCandidates",
    "SpanRules",
    "StreamingDecoder",
    "TokenSpans",
    "char_candidates",
    "decode",
    "feature_candidates",
    "finalize",
    "mask_padding",
    "merge_candidates",
    "offset_rules",
    "token_spans",
]
