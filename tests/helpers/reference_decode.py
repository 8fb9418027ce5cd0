"""The straightforward decoding loop of the classic Hugging Face QA tutorials, as a test oracle.

Per example: loop over its features, take the ``n_best_size`` best start and end tokens,
try every start x end pair in nested Python loops, collect the valid spans, sort them by score;
the null score is the minimum over the features of ``start_logits[cls] + end_logits[cls]``.

Deliberate differences from ``postprocess_qa_predictions`` (transformers' ``utils_qa.py``):

- top tokens come from a stable sort (``np.argsort(-logits, kind="stable")``), so equal logits
  rank by token index instead of by the unspecified order of ``np.argsort(...)[::-1]``;
- non-context tokens are those with offset start ``< 0`` (the project's ``[-1, -1]``) rather
  than ``None`` offsets; the null score uses each feature's ``cls_index`` rather than token 0;
- a span must have a non-empty character span (``start_char < end_char``), so there are no
  empty-text non-null predictions to skip when looking for the best non-null answer;
- no ``"empty"`` placeholder: an example without a valid span answers ``""``, and for v2.0 its
  missing span counts as scoring ``NO_SPAN_SCORE`` in ``score_diff``;
- ``score_diff = null_score - (start_logit + end_logit)`` of the best span, in float32 (the
  tutorial subtracts the two logits one after the other, which can round differently);
- no ``token_is_max_context`` filter (the tutorials' feature pipeline does not produce it).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

NO_SPAN_SCORE = np.float32(-1e4)


def _feature_spans(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    offsets: Sequence[Sequence[int]],
    n_best_size: int,
    max_answer_length: int,
) -> list[dict[str, Any]]:
    """Every valid span among the top starts x top ends of one feature, in loop order."""
    start_indexes = np.argsort(-start_logits, kind="stable")[:n_best_size].tolist()
    end_indexes = np.argsort(-end_logits, kind="stable")[:n_best_size].tolist()
    spans = []
    for start_index in start_indexes:
        for end_index in end_indexes:
            if start_index >= len(offsets) or end_index >= len(offsets):
                continue
            if offsets[start_index][0] < 0 or offsets[end_index][0] < 0:
                continue
            if end_index < start_index or end_index - start_index + 1 > max_answer_length:
                continue
            start_char, end_char = offsets[start_index][0], offsets[end_index][1]
            if start_char >= end_char:
                continue
            spans.append(
                {
                    "offsets": (start_char, end_char),
                    "score": start_logits[start_index] + end_logits[end_index],
                }
            )
    return spans


def _nbest_list(
    spans: list[dict[str, Any]],
    null_score: np.float32,
    context: str,
    version_2_with_negative: bool,
    n_best_size: int,
) -> list[dict[str, Any]]:
    """The best spans (and the null answer for v2.0), with softmax probabilities over them."""
    null_prediction = {"offsets": (0, 0), "score": null_score}
    candidates = [*spans, null_prediction] if version_2_with_negative else spans
    predictions = sorted(candidates, key=lambda p: p["score"], reverse=True)[:n_best_size]
    if version_2_with_negative and not any(p is null_prediction for p in predictions):
        predictions.append(null_prediction)
    if not predictions:
        return []
    scores = np.array([p["score"] for p in predictions])
    exp_scores = np.exp(scores - np.max(scores))
    probs = exp_scores / exp_scores.sum()
    return [
        {
            "text": context[p["offsets"][0] : p["offsets"][1]],
            "score": float(p["score"]),
            "probability": float(prob),
            "start": p["offsets"][0],
            "end": p["offsets"][1],
        }
        for p, prob in zip(predictions, probs, strict=True)
    ]


def logits_by_feature(batches: Sequence[Mapping[str, Any]]) -> tuple[list, list]:
    """Each feature's start and end logits rows (as its batch padded them), by ``feature_index``.

    ``batches`` hold ``start_logits``, ``end_logits`` and ``feature_index`` tensors, in any order
    of features (length-sorted evaluation batches, say); together they cover features 0..n-1.
    """
    order = [i for batch in batches for i in batch["feature_index"].tolist()]
    starts, ends = [None] * len(order), [None] * len(order)
    rows = (
        pair
        for batch in batches
        for pair in zip(batch["start_logits"].numpy(), batch["end_logits"].numpy(), strict=True)
    )
    for index, (start, end) in zip(order, rows, strict=True):
        starts[index], ends[index] = start, end
    return starts, ends


def postprocess_qa_predictions(
    ids: Sequence[str],
    contexts: Sequence[str],
    features: Sequence[Mapping[str, Any]],
    all_start_logits: Sequence[np.ndarray],
    all_end_logits: Sequence[np.ndarray],
    *,
    version_2_with_negative: bool = False,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    null_score_diff_threshold: float = 0.0,
    with_nbest: bool = True,
) -> tuple[dict[str, str], dict[str, float], dict[str, list[dict[str, Any]]]]:
    """Predictions, v2.0 score diffs (``{}`` for v1.1) and n-best lists (``{}`` unless asked).

    ``features[i]`` has ``example_index``, ``offset_mapping`` and ``cls_index``; its float32
    logits are ``all_start_logits[i]`` / ``all_end_logits[i]`` (may be longer than its offsets).
    """
    features_per_example = collections.defaultdict(list)
    for i, feature in enumerate(features):
        features_per_example[feature["example_index"]].append(i)

    all_predictions, scores_diff, all_nbest = {}, {}, {}
    for example_index, qid in enumerate(ids):
        feature_indices = features_per_example[example_index]
        if not feature_indices:
            continue
        min_null_score = None
        prelim_predictions = []
        for feature_index in feature_indices:
            start_logits = all_start_logits[feature_index]
            end_logits = all_end_logits[feature_index]
            cls = features[feature_index]["cls_index"]
            feature_null_score = start_logits[cls] + end_logits[cls]
            if min_null_score is None or feature_null_score < min_null_score:
                min_null_score = feature_null_score
            prelim_predictions += _feature_spans(
                start_logits,
                end_logits,
                features[feature_index]["offset_mapping"],
                n_best_size,
                max_answer_length,
            )
        context = contexts[example_index]
        if with_nbest:
            all_nbest[qid] = _nbest_list(
                prelim_predictions, min_null_score, context, version_2_with_negative, n_best_size
            )

        best_span = max(prelim_predictions, key=lambda p: p["score"], default=None)

        best_text = context[best_span["offsets"][0] : best_span["offsets"][1]] if best_span else ""
        if not version_2_with_negative:
            all_predictions[qid] = best_text
            continue
        best_score = best_span["score"] if best_span else NO_SPAN_SCORE
        score_diff = min_null_score - best_score
        scores_diff[qid] = float(score_diff)
        all_predictions[qid] = "" if score_diff > null_score_diff_threshold else best_text
    return all_predictions, scores_diff, all_nbest
