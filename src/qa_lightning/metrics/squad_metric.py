"""``SquadMetric``: streaming span decoding plus the official SQuAD v1.1 / v2.0 scores, DDP-safe.

``update`` reduces each batch of features to its best span and null score at once (the logits
are never kept). ``compute`` gathers those from every process (``dist_reduce_fx="cat"``), drops
the features that DistributedSampler repeated to pad its shards, decodes all features of a
question together and scores the answers with :mod:`qa_lightning.metrics.squad_eval`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from qa_lightning.decoding import SpanCandidates, decode, feature_candidates
from qa_lightning.metrics.squad_eval import score_predictions

_STATES = (*(f"cand_{name}" for name in SpanCandidates._fields), "example_index", "feature_index")


class SquadMetric(Metric):
    """Exact match and F1 of decoded answers, as the official SQuAD scripts compute them.

    Call :meth:`set_examples` with the full list of evaluation examples (on every process) before
    ``compute``; ``example_index`` in ``update`` indexes into it. After ``compute``,
    ``predictions`` holds ``{question id: answer}`` and, for v2.0, ``na_probs`` holds
    ``{question id: null_score - best_span_score}`` (the official ``--na-prob-file`` content).
    Questions none of whose features were seen get no prediction and score 0.

    ``compute`` returns the official figures as floats: v1.1 ``exact_match``, ``f1``; v2.0
    ``exact``, ``f1``, ``total``, ``HasAns_*``, ``NoAns_*`` and ``best_exact``/``best_f1`` with
    their thresholds. Only the best span of each feature is kept (``n_best_size`` still sets the
    candidate starts and ends). Decoding ranks the logits of padded positions too (the classic
    rule): mask them (e.g. to -1e4) so that the results cannot depend on batch composition.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        version_2: bool = False,
        n_best_size: int = 20,
        max_answer_length: int = 30,
        null_score_diff_threshold: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.version_2 = version_2
        self.n_best_size = n_best_size
        self.max_answer_length = max_answer_length
        self.null_score_diff_threshold = null_score_diff_threshold
        for name in _STATES:
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.ids: list[str] = []
        self.contexts: list[str] = []
        self.gold_answers: dict[str, list[str]] = {}
        self.predictions: dict[str, str] = {}
        self.na_probs: dict[str, float] = {}

    def set_examples(
        self,
        ids: Sequence[str],
        contexts: Sequence[str],
        gold_answers: Sequence[Sequence[str]],
    ) -> None:
        """The evaluation examples, in ``example_index`` order (gold texts empty if unanswerable)."""
        if not len(ids) == len(contexts) == len(gold_answers):
            raise ValueError("ids, contexts and gold_answers must have the same length")
        self.ids, self.contexts = list(ids), list(contexts)
        self.gold_answers = {qid: list(golds) for qid, golds in zip(ids, gold_answers, strict=True)}

    def update(
        self,
        start_logits: Tensor,
        end_logits: Tensor,
        offset_mapping: Tensor,
        cls_index: Tensor,
        example_index: Tensor,
        feature_index: Tensor,
    ) -> None:
        """Keep the best span and the null score of each feature of the batch."""
        candidates = feature_candidates(
            start_logits.detach(),
            end_logits.detach(),
            offset_mapping,
            cls_index,
            self.n_best_size,
            self.max_answer_length,
            num_spans=1,
        )
        values = (*candidates, example_index.long(), feature_index.long())
        for name, value in zip(_STATES, values, strict=True):
            getattr(self, name).append(value)

    def compute(self) -> dict[str, float]:
        """Decode every question seen (on every process) and score it; also sets predictions."""
        if not self.ids:
            raise RuntimeError("SquadMetric.set_examples() must be called before compute()")
        if isinstance(self.example_index, list) and not self.example_index:
            raise RuntimeError("SquadMetric.compute() called before any update()")
        states = [dim_zero_cat(getattr(self, name)) for name in _STATES]
        decoded = decode(
            SpanCandidates(*states[:-2]),
            states[-2],
            states[-1],
            self.ids,
            self.contexts,
            version_2=self.version_2,
            null_score_diff_threshold=self.null_score_diff_threshold,
        )
        self.predictions = decoded.predictions
        self.na_probs = decoded.na_probs or {}
        return {key: float(value) for key, value in self._score().items()}

    def _score(self) -> dict[str, float]:
        if not self.version_2:
            return score_predictions(self.gold_answers, self.predictions, version="1.1")
        # The v2.0 scorer refuses partial predictions: score the answered questions, then count
        # the others as 0. The threshold equal to the decision's keeps the figures equal to the
        # predictions' own scores, with the best-threshold figures from the score diffs.
        answered = {q: g for q, g in self.gold_answers.items() if q in self.predictions}
        result = score_predictions(
            answered,
            self.predictions,
            version="2.0",
            na_probs=self.na_probs,
            na_prob_thresh=self.null_score_diff_threshold,
        )
        if len(answered) < len(self.gold_answers):
            result = _count_unanswered_as_zero(result, self.gold_answers, answered)
        return result


def _count_unanswered_as_zero(
    result: dict[str, float],
    gold_answers: dict[str, list[str]],
    answered: dict[str, list[str]],
) -> dict[str, float]:
    """Rescale v2.0 figures from the answered questions to all questions (the rest score 0)."""
    rescaled = dict(result)
    groups = {
        "": (len(gold_answers), len(answered)),
        "HasAns_": (
            sum(bool(g) for g in gold_answers.values()),
            sum(bool(g) for g in answered.values()),
        ),
        "NoAns_": (
            sum(not g for g in gold_answers.values()),
            sum(not g for g in answered.values()),
        ),
    }
    for prefix, (total, seen) in groups.items():
        if total:
            for key in ("exact", "f1"):
                rescaled[prefix + key] = result.get(prefix + key, 0.0) * seen / total
            rescaled[prefix + "total"] = total
    for key in ("best_exact", "best_f1"):
        rescaled[key] = result[key] * len(answered) / len(gold_answers)
    return rescaled
