"""How a model's shipped answerability (``answerability.json``) turns into answers: the rules one
call uses (explicit arguments win over the tuned values), calibrated n-best scores, and the
ranking of answers across several documents."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qa_lightning.metrics.answerability import Answerability


@dataclass(frozen=True)
class AnswerabilityRules:
    """The answer rules of one call: whether ``""`` competes, its threshold, calibrated scores."""

    handle_impossible_answer: bool = False
    null_threshold: float = 0.0
    calibration: Answerability | None = None

    @staticmethod
    def resolve(
        answerability: Answerability | None,
        *,
        handle_impossible_answer: bool | None = None,
        null_threshold: float | None = None,
        calibrated: bool | None = None,
    ) -> AnswerabilityRules:
        """Explicit arguments first, then the tuned values, then the untuned defaults.

        ``handle_impossible_answer`` defaults to the model's v2.0-ness; ``null_threshold`` to the
        tuned threshold when impossible answers are handled (0 otherwise); ``calibrated`` to
        whether the model has calibrators (asking for it without them is an error).
        """
        tuned = answerability
        if handle_impossible_answer is None:
            handle_impossible_answer = bool(tuned is not None and tuned.version_2)
        if null_threshold is None:
            null_threshold = tuned.null_threshold if tuned is not None and tuned.version_2 else 0.0
        has_calibrators = tuned is not None and (
            tuned.top_span is not None or tuned.has_answer is not None
        )
        if calibrated and not has_calibrators:
            raise ValueError(
                "calibrated=True needs a model with tuned calibrators (answerability.json)"
            )
        use = has_calibrators if calibrated is None else calibrated
        return AnswerabilityRules(
            bool(handle_impossible_answer), float(null_threshold), tuned if use else None
        )

    def rescore(self, nbest: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The n-best entries with calibrated ``probability`` (order kept: the threshold rule
        already placed the empty answer). Spans: the probability of being exactly right, from
        their n-best probability; ``""``: the probability of no answer, from the best span's
        score minus the null score."""
        if self.calibration is None or not nbest:
            return nbest
        spans = [e for e in nbest if e["end"] > e["start"]]
        span_scores = self.calibration.span_scores([e["probability"] for e in spans])
        best_span = max((e["score"] for e in spans), default=None)
        out, k = [], 0
        for entry in nbest:
            if entry["end"] > entry["start"]:
                out.append({**entry, "probability": float(span_scores[k])})
                k += 1
            else:
                margin = -1e4 if best_span is None else best_span - entry["score"]
                out.append({**entry, "probability": float(self.calibration.null_scores(margin)[0])})
        return out


def answer_documents(
    per_document: Sequence[list[dict[str, Any]]], top_k: int
) -> list[dict[str, Any]]:
    """One ranking of the answers of several documents, each with its ``"document"`` index.

    Spans of every document are ranked by score. ``""`` is the answer only when no document
    answers with a span at its top (``"document": None``, the lowest of their no-answer
    scores); otherwise the documents' empty answers are dropped.
    """
    spans, nulls, any_top_span = [], [], False
    for index, answers in enumerate(per_document):
        for rank, answer in enumerate(answers):
            if answer["end"] > answer["start"]:
                spans.append({**answer, "document": index})
                any_top_span |= rank == 0
            else:
                nulls.append(answer["score"])
    ranked = sorted(spans, key=lambda a: -a["score"])
    if not any_top_span and nulls and len(nulls) == len(per_document):
        ranked.insert(
            0, {"answer": "", "score": min(nulls), "start": 0, "end": 0, "document": None}
        )
    return ranked[:top_k]
