"""``StreamingDecoder``: per-feature candidates batch by batch, decoded once at the end."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from qa_lightning.decoding.candidates import (
    NEG_INF,
    FeatureCandidates,
    SpanCandidates,
    mask_padding,
)
from qa_lightning.decoding.finalize import DecodedPredictions, decode
from qa_lightning.decoding.offsets import char_candidates, feature_candidates, offset_rules
from qa_lightning.decoding.spans import best_span_unchecked, best_top_span, null_scores


class DeferredRows(NamedTuple):
    """Rows whose fast-path span still needs the exact top-``k`` search, with their inputs."""

    rows: Tensor
    start_logits: Tensor
    end_logits: Tensor
    offsets: Tensor
    k: int


def pad_rows(parts: Sequence[Tensor], value: float) -> Tensor:
    """Concatenate ``[n, L, ...]`` tensors of different ``L`` along the rows, padding with value."""
    length = max(part.shape[1] for part in parts)
    first = parts[0]
    out = first.new_full((sum(len(part) for part in parts), length, *first.shape[2:]), value)
    row = 0
    for part in parts:
        out[row : row + len(part), : part.shape[1]] = part
        row += len(part)
    return out


class _Batch(NamedTuple):
    """One ``update``'s inputs, waiting to be decoded with the next few batches."""

    start_logits: Tensor
    end_logits: Tensor
    offsets: Tensor
    cls_index: Tensor
    example_index: Tensor
    feature_index: Tensor

    @staticmethod
    def join(parts: Sequence[_Batch]) -> _Batch:
        """One batch of all ``parts``, padded to the longest (``-inf`` logits, offsets ``-1``)."""
        if len(parts) == 1:
            return parts[0]
        return _Batch(
            start_logits=pad_rows([part.start_logits for part in parts], NEG_INF),
            end_logits=pad_rows([part.end_logits for part in parts], NEG_INF),
            offsets=pad_rows([part.offsets for part in parts], -1),
            cls_index=torch.cat([part.cls_index for part in parts]),
            example_index=torch.cat([part.example_index for part in parts]),
            feature_index=torch.cat([part.feature_index for part in parts]),
        )


class StreamingDecoder:
    """Accumulates per-feature candidates batch by batch (never all logits); decodes at the end.

    Keeps one span per feature, or ``n_best_size`` when ``with_nbest`` asks for n-best lists.
    Pass ``feature_index`` with every batch or with none (features are then numbered in the
    order they arrive), and the batch's ``attention_mask`` to mask the logits of padded positions
    (:func:`~qa_lightning.decoding.mask_padding`; masking twice changes nothing). Small batches
    wait until ``chunk_rows`` features have come (at most that many rows of logits are held),
    then are decoded together: the work per call of a vectorised op is what costs on CPU, so
    chunks of a few hundred rows decode several times faster per feature than batches of 32.
    With one span per feature, the few rows the fast path cannot settle (under 1% with random
    logits) keep their logits (:attr:`deferred`) until ``max_unchecked`` of them wait or
    :meth:`settle` runs, and are then searched together. Padding rows with ``-inf`` logits and
    non-context offsets, to join them, changes no answer.

    :meth:`decode` answers every question seen so far; :meth:`drain` hands over (and forgets)
    the candidates of every feature seen so far, for a caller that merges them itself
    (:class:`~qa_lightning.metrics.squad_metric.SquadMetric` across processes).
    """

    def __init__(
        self,
        n_best_size: int = 20,
        max_answer_length: int = 30,
        with_nbest: bool = False,
        max_unchecked: int = 1024,
        chunk_rows: int = 256,
    ) -> None:
        self.n_best_size = n_best_size
        self.max_answer_length = max_answer_length
        self.with_nbest = with_nbest
        self.max_unchecked = max_unchecked
        self.chunk_rows = chunk_rows
        self._seen = 0  # features received
        self._forget()

    def _forget(self) -> None:
        """Drop every candidate and waiting row (the feature numbering goes on)."""
        self._candidates: list[SpanCandidates] = []
        self._example_index: list[Tensor] = []
        self._feature_index: list[Tensor] = []
        self._unchecked: list[DeferredRows] = []
        self._unchecked_rows = 0
        self._waiting: list[_Batch] = []
        self._waiting_rows = 0
        self._decoded = 0  # features turned into candidates

    @property
    def deferred(self) -> tuple[DeferredRows, ...]:
        """The rows waiting for the exact search, by the chunk they came from (read-only)."""
        return tuple(self._unchecked)

    def update(
        self,
        start_logits: Tensor,
        end_logits: Tensor,
        offsets: Tensor,
        cls_index: Tensor,
        example_index: Tensor,
        feature_index: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> None:
        """Take one batch of features; decodes once ``chunk_rows`` features wait."""
        batch = len(example_index)
        if feature_index is None:
            feature_index = torch.arange(
                self._seen, self._seen + batch, device=example_index.device
            )
        self._seen += batch
        start_logits, end_logits = start_logits.detach().float(), end_logits.detach().float()
        if attention_mask is not None:
            start_logits = mask_padding(start_logits, attention_mask)
            end_logits = mask_padding(end_logits, attention_mask)
        self._waiting.append(
            _Batch(start_logits, end_logits, offsets, cls_index, example_index, feature_index)
        )
        self._waiting_rows += batch
        if self._waiting_rows >= self.chunk_rows:
            self._decode_waiting()

    def _decode_waiting(self) -> None:
        """Candidates of every waiting batch, in one chunk padded to its longest row."""
        if not self._waiting:
            return
        chunk = _Batch.join(self._waiting)
        self._waiting, self._waiting_rows = [], 0
        with torch.no_grad():
            if self.with_nbest:
                candidates = feature_candidates(
                    chunk.start_logits,
                    chunk.end_logits,
                    chunk.offsets,
                    chunk.cls_index,
                    self.n_best_size,
                    self.max_answer_length,
                )
            else:
                candidates = self._best_spans(chunk)
        self._decoded += len(chunk.example_index)
        self._candidates.append(candidates)
        self._example_index.append(chunk.example_index)
        self._feature_index.append(chunk.feature_index)
        if self._unchecked_rows >= self.max_unchecked:
            self._check()

    def _best_spans(self, chunk: _Batch) -> SpanCandidates:
        """The fast path's span per feature; the rows it cannot settle are deferred."""
        start_logits, end_logits, offsets = chunk.start_logits, chunk.end_logits, chunk.offsets
        k = min(self.n_best_size, start_logits.shape[1])
        spans, exact = best_span_unchecked(
            start_logits, end_logits, offset_rules(offsets), k, self.max_answer_length
        )
        if not exact.all():
            rows = (~exact).nonzero()[:, 0]
            self._unchecked.append(
                DeferredRows(
                    rows + self._decoded, start_logits[rows], end_logits[rows], offsets[rows], k
                )
            )
            self._unchecked_rows += len(rows)
        null = null_scores(start_logits, end_logits, chunk.cls_index)
        return char_candidates(spans, offsets, null)

    def _check(self) -> None:
        """Settle the deferred rows with the exact search, all rows of one ``k`` at once."""
        if not self._unchecked:
            return
        merged = SpanCandidates.cat(self._candidates)
        for k in sorted({part.k for part in self._unchecked}):
            parts = [part for part in self._unchecked if part.k == k]
            offsets = pad_rows([part.offsets for part in parts], -1)
            spans = best_top_span(
                pad_rows([part.start_logits for part in parts], NEG_INF),
                pad_rows([part.end_logits for part in parts], NEG_INF),
                offset_rules(offsets),
                k,
                self.max_answer_length,
            )
            rows = torch.cat([part.rows for part in parts])
            merged.put(rows, char_candidates(spans, offsets, merged.null_score[rows]))
        self._candidates = [merged]
        self._unchecked, self._unchecked_rows = [], 0

    def settle(self) -> FeatureCandidates | None:
        """Decode the waiting batches and the deferred rows: every feature's final candidates.

        ``None`` before any feature came. The decoder keeps them (see :meth:`drain`).
        """
        self._decode_waiting()
        if not self._candidates:
            return None
        self._check()
        settled = FeatureCandidates(
            SpanCandidates.cat(self._candidates),
            torch.cat(self._example_index),
            torch.cat(self._feature_index),
        )
        self._candidates = [settled.candidates]
        self._example_index, self._feature_index = [settled.example_index], [settled.feature_index]
        return settled

    def drain(self) -> FeatureCandidates | None:
        """:meth:`settle`, then forget the candidates (the caller keeps them from now on)."""
        settled = self.settle()
        self._forget()
        return settled

    def decode(
        self,
        ids: Sequence[str],
        contexts: Sequence[str],
        *,
        version_2: bool = False,
        null_score_diff_threshold: float = 0.0,
    ) -> DecodedPredictions:
        """Decode every question seen so far; ``ids``/``contexts`` are indexed by example_index."""
        settled = self.settle()
        if settled is None:
            return DecodedPredictions(
                {}, {} if version_2 else None, {} if self.with_nbest else None
            )
        return decode(
            settled.candidates,
            settled.example_index,
            settled.feature_index,
            ids,
            contexts,
            version_2=version_2,
            null_score_diff_threshold=null_score_diff_threshold,
            with_nbest=self.with_nbest,
        )
