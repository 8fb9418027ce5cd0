"""``SquadMetric``: streaming span decoding plus the official SQuAD v1.1 / v2.0 scores, DDP-safe.

``update`` hands each batch to a :class:`~qa_lightning.decoding.StreamingDecoder`, the one
decoding path of evaluation and inference: it reduces the features to their best span and null
score chunk by chunk (the logits are not kept). ``compute`` drains the decoder into the metric
states, gathers those from every process (``dist_reduce_fx="cat"``), drops the features that
DistributedSampler repeated to pad its shards, decodes all features of a question together and
scores the answers with :mod:`qa_lightning.metrics.squad_eval`.

A question is never scored without a prediction: unless ``partial`` is set (Lightning ran only
some of the batches: sanity check, ``limit_*_batches``, ``fast_dev_run``), predictions that do
not cover every evaluated question are an :class:`~qa_lightning.errors.IncompleteEvaluationError`;
with ``partial``, the figures are those of the questions predicted. (Prediction files scored by
``qa-lightning-score`` keep the official scripts' rule instead.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from qa_lightning.decoding import SpanCandidates, StreamingDecoder, decode
from qa_lightning.errors import IncompleteEvaluationError
from qa_lightning.metrics.squad_eval import score_predictions

_FIELDS = SpanCandidates._fields
_STATES = (*(f"cand_{name}" for name in _FIELDS), "example_index", "feature_index")


class SquadMetric(Metric):
    """Exact match and F1 of decoded answers, as the official SQuAD scripts compute them.

    Call :meth:`set_examples` with the full list of evaluation examples (on every process) before
    ``compute``; ``example_index`` in ``update`` indexes into it. After ``compute``,
    ``predictions`` holds ``{question id: answer}`` and, for v2.0, ``na_probs`` holds
    ``{question id: null_score - best_span_score}`` (the official ``--na-prob-file`` content).
    Every question must have a prediction (see the module doc); with ``partial=True`` the
    figures cover only the questions some of whose features were seen.

    ``compute`` returns the official figures as floats: v1.1 ``exact_match``, ``f1``; v2.0
    ``exact``, ``f1``, ``total``, ``HasAns_*``, ``NoAns_*`` and ``best_exact``/``best_f1`` with
    their thresholds. Only the best span of each feature is kept (``n_best_size`` still sets the
    candidate starts and ends) unless ``keep_nbest``: then each feature keeps its ``n_best_size``
    best spans and ``span_probs`` holds ``{question id: the best span's n-best probability}``,
    what answerability calibration fits on (the predictions and figures do not change). Decoding ranks the logits of padded positions too (the classic
    rule): pass the batch's ``attention_mask`` to ``update`` (or mask them yourself) so that the
    results cannot depend on batch composition.

    States and the decoder: the decoder holds a few batches (and the rare rows its fast path
    defers) before their candidates are final, while the ``"cat"`` states must hold every
    feature's candidates before the processes exchange them. :meth:`sync` therefore drains the
    decoder into the states before syncing: torchmetrics calls it at the start of every
    ``compute`` (in one process too, where it then exchanges nothing), and so does whoever syncs
    by hand. Draining in ``update`` would give up the chunking that makes decoding fast, and
    ``_sync_dist`` alone would miss single-process runs. ``reset`` empties the decoder with the
    states. ``forward`` (a score per batch) does not fit a metric whose questions span batches.
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
        partial: bool = False,
        keep_nbest: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.partial = partial
        self.version_2 = version_2
        self.n_best_size = n_best_size
        self.max_answer_length = max_answer_length
        self.null_score_diff_threshold = null_score_diff_threshold
        self.keep_nbest = keep_nbest
        self._decoder = self._new_decoder()
        for name in _STATES:
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.ids: list[str] = []
        self.contexts: list[str] = []
        self.gold_answers: dict[str, list[str]] = {}
        self.predictions: dict[str, str] = {}
        self.na_probs: dict[str, float] = {}
        self.span_probs: dict[str, float] = {}
        self.span_answers: dict[str, str] = {}
        self.spans: dict[str, tuple[int, int, float]] = {}

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
        attention_mask: Tensor | None = None,
    ) -> None:
        """Decode the batch (with the next few) to the best span and null score of each feature.

        With ``attention_mask``, padded positions are masked first
        (:func:`~qa_lightning.decoding.mask_padding`).
        """
        self._decoder.update(
            start_logits,
            end_logits,
            offset_mapping,
            cls_index,
            example_index.long(),
            feature_index.long(),
            attention_mask=attention_mask,
        )

    def sync(self, *args: Any, **kwargs: Any) -> None:
        """Drain the decoder into the states, then sync them (:meth:`torchmetrics.Metric.sync`)."""
        drained = self._decoder.drain()
        if drained is not None:
            values = {
                **{f"cand_{name}": getattr(drained.candidates, name) for name in _FIELDS},
                "example_index": drained.example_index,
                "feature_index": drained.feature_index,
            }
            for name, value in values.items():
                getattr(self, name).append(value)
        super().sync(*args, **kwargs)

    def reset(self) -> None:
        """Empty the states and the decoder."""
        super().reset()
        self._decoder = self._new_decoder()

    def _new_decoder(self) -> StreamingDecoder:
        return StreamingDecoder(
            self.n_best_size, self.max_answer_length, with_nbest=self.keep_nbest
        )

    def compute(self) -> dict[str, float]:
        """Decode every question seen (on every process) and score it; also sets predictions."""
        if not self.ids:
            raise RuntimeError("SquadMetric.set_examples() must be called before compute()")
        if isinstance(self.example_index, list) and not self.example_index:
            raise RuntimeError("SquadMetric.compute() called before any update()")
        example_index = dim_zero_cat(self.example_index)
        self._check_example_rows(example_index)
        decoded = decode(
            SpanCandidates(
                **{name: dim_zero_cat(getattr(self, f"cand_{name}")) for name in _FIELDS}
            ),
            example_index,
            dim_zero_cat(self.feature_index),
            self.ids,
            self.contexts,
            version_2=self.version_2,
            null_score_diff_threshold=self.null_score_diff_threshold,
        )
        self.predictions = decoded.predictions
        self.na_probs = decoded.na_probs or {}
        self.span_probs = decoded.span_probs or {}
        self.span_answers = decoded.span_answers or {}
        self.spans = decoded.spans or {}
        self._check_coverage()
        return {key: float(value) for key, value in self._score().items()}

    def _check_example_rows(self, example_index: Tensor) -> None:
        """Features must refer to rows of the evaluated examples."""
        first, last = int(example_index.min()), int(example_index.max())
        if first < 0 or last >= len(self.ids):
            raise IncompleteEvaluationError(
                f"features refer to example row {last if first >= 0 else first:,}, but "
                f"{len(self.ids):,} questions are evaluated: the features were made from other "
                "examples (a stale feature cache?)"
            )

    def _check_coverage(self) -> None:
        """Unless ``partial``: a prediction for every evaluated question, else an error."""
        if self.partial or len(self.predictions) == len(self.ids):
            return
        missing = [qid for qid in self.ids if qid not in self.predictions]
        raise IncompleteEvaluationError(
            f"the decoded predictions cover {len(self.predictions):,} of the {len(self.ids):,} "
            f"evaluated questions ({len(missing):,} without any feature, first {missing[0]!r}): "
            "the features do not match the examples (a stale feature cache?), and a question "
            "without a prediction is never scored"
        )

    def _score(self) -> dict[str, float]:
        """Official figures over the questions predicted (all of them unless ``partial``)."""
        gold = {q: g for q, g in self.gold_answers.items() if q in self.predictions}
        if not self.version_2:
            return score_predictions(gold, self.predictions, version="1.1")
        # The threshold equal to the decision's keeps the figures equal to the predictions' own
        # scores, with the best-threshold figures from the score diffs.
        return score_predictions(
            gold,
            self.predictions,
            version="2.0",
            na_probs=self.na_probs,
            na_prob_thresh=self.null_score_diff_threshold,
        )
