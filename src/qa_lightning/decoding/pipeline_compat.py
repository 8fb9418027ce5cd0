"""Answers as transformers 4.x ``pipeline("question-answering")`` gave them (``compat="pipeline"``).

transformers 5 removed the pipeline; ``QuestionAnswerer(..., compat="pipeline")`` reproduces its
answers, character offsets and scores for the same model and inputs (fast tokenizers that put the
question first, as every backbone here does). Its rules, which differ from the evaluation decoder:

- Windows are the tokenizer's overflowing windows (``max_seq_len`` 384, ``doc_stride`` 128); the
  question is tokenized as given and offsets are the tokenizer's own. ``max_question_len`` had no
  effect with fast tokenizers, so there is none here.
- In each window, start and end logits are softmaxed over the context and CLS tokens (the others
  set to -10000). A span's score is ``p_start * p_end``; it ends no earlier than it starts and has
  at most ``max_answer_len`` (15) tokens. Each window keeps its best ``top_k`` spans, or
  ``2 * top_k + 10`` with ``align_to_words`` (spans ranked by ``log p_start + log p_end`` through
  the token-level search :func:`qa_lightning.decoding.token_spans` over all starts and ends).
- ``align_to_words`` (default on): a span widens to the whole words (the pre-tokenizer's words)
  of its first and last token.
- Answers with the same text, ignoring case, are one answer, in any window: their scores add up
  (so a score is not a probability and may exceed 1), and it keeps its first occurrence's offsets.
- ``handle_impossible_answer``: the empty answer (start = end = 0) scores the minimum over windows
  of ``p_start[0] * p_end[0]`` and ranks after answers of equal score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tokenizers import Encoding
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from qa_lightning.data.features import InputLayout
from qa_lightning.decoding import NEG_INF, SpanRules, token_spans

MAX_ANSWER_LENGTH = 15
MASKED_LOGIT = -10000.0
NO_NULL_SCORE = 1_000_000.0  # the pipeline's starting value of the minimum null score
CONTEXT = 1  # sequence id of the context (question first)


def pipeline_features(
    questions: Sequence[str],
    contexts: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    doc_stride: int,
) -> tuple[dict[str, list], list[Encoding]]:
    """Windows tokenized as the pipeline did, and their ``tokenizers`` encodings.

    ``offset_mapping`` holds the context tokens' character offsets (``[-1, -1]`` elsewhere, as
    in evaluation features: it marks where spans may lie); ``cls_index`` is 0 (the pipeline read
    the null score at position 0).
    """
    if not InputLayout.of(tokenizer).question_first:
        raise ValueError('compat="pipeline" needs a tokenizer that puts the question first')
    encoded = tokenizer(
        list(questions),
        list(contexts),
        padding=False,
        truncation="only_second",
        max_length=max_length,
        stride=doc_stride,
        return_token_type_ids=True,
        return_overflowing_tokens=True,
    )
    features = {
        key: encoded[key]
        for key in ("input_ids", "attention_mask", "token_type_ids")
        if key in encoded
    }
    num_features = len(encoded["input_ids"])
    features["offset_mapping"] = [
        [
            list(offsets) if sequence == CONTEXT else [-1, -1]
            for offsets, sequence in zip(encoding.offsets, encoding.sequence_ids, strict=True)
        ]
        for encoding in encoded.encodings
    ]
    features["cls_index"] = [0] * num_features
    features["example_index"] = list(encoded["overflow_to_sample_mapping"])
    return features, encoded.encodings


def _probabilities(logits: Tensor, allowed: Tensor) -> Tensor:
    """The pipeline's softmax: ``-10000`` where not allowed, float32."""
    masked = torch.where(allowed, logits.float(), MASKED_LOGIT)
    exp = (masked - masked.amax(1, keepdim=True)).exp()
    return exp / exp.sum(1, keepdim=True)


def _char_span(encoding: Encoding, first: int, last: int, align_to_words: bool) -> tuple[int, int]:
    """Character span of tokens ``first..last``, widened to whole words when asked and possible."""
    if align_to_words:
        try:
            start_word, end_word = encoding.token_to_word(first), encoding.token_to_word(last)
            start = encoding.word_to_chars(start_word, sequence_index=CONTEXT)[0]
            end = encoding.word_to_chars(end_word, sequence_index=CONTEXT)[1]
        except Exception:  # tokens without words: keep to the offsets, as the pipeline did
            align_to_words = False
        else:
            return start, end
    return encoding.offsets[first][0], encoding.offsets[last][1]


class PipelineSpans:
    """Collects each window's best spans batch by batch, then merges them per question."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        top_k: int = 1,
        max_answer_length: int = MAX_ANSWER_LENGTH,
        align_to_words: bool = True,
    ) -> None:
        self.cls_token_id = tokenizer.cls_token_id
        self.num_spans = top_k * 2 + 10 if align_to_words else top_k
        self.max_answer_length = max_answer_length
        self.align_to_words = align_to_words
        self.spans: dict[int, list[tuple[int, int, float]]] = {}
        self.null_scores: dict[int, float] = {}

    def update(self, batch: Mapping[str, Tensor], start_logits: Tensor, end_logits: Tensor) -> None:
        """Keep the best spans (first and last token, score) and the null score of each window."""
        context = batch["offset_mapping"][..., 0] >= 0
        allowed = context.clone()
        if self.cls_token_id is not None:
            allowed |= batch["input_ids"] == self.cls_token_id
        allowed &= batch["attention_mask"].bool()
        p_start, p_end = _probabilities(start_logits, allowed), _probabilities(end_logits, allowed)
        spans = token_spans(
            p_start.log(),
            p_end.log(),
            SpanRules(context),  # any context tokens: no rule on their characters
            k=p_start.shape[1],  # every start and end
            num_spans=self.num_spans,
            max_len=self.max_answer_length,
        )
        found = (spans.scores > NEG_INF).cpu()
        first, last = spans.start_token.clamp(min=0), spans.end_token.clamp(min=0)
        scores = (p_start.gather(1, first) * p_end.gather(1, last)).cpu()
        first, last = first.cpu(), last.cpu()
        null = (p_start[:, 0] * p_end[:, 0]).tolist()
        for row, feature in enumerate(batch["feature_index"].tolist()):
            keep = found[row]
            self.spans[feature] = list(
                zip(
                    first[row][keep].tolist(),
                    last[row][keep].tolist(),
                    scores[row][keep].tolist(),
                    strict=True,
                )
            )
            self.null_scores[feature] = null[row]

    def answers(
        self,
        example_index: Sequence[int],
        encodings: Sequence[Encoding],
        contexts: Sequence[str],
        *,
        top_k: int = 1,
        handle_impossible_answer: bool = False,
    ) -> list[list[dict[str, Any]]]:
        """Each question's ``top_k`` answers ``{"answer", "score", "start", "end"}``, best first."""
        windows: list[list[int]] = [[] for _ in contexts]
        for feature, example in enumerate(example_index):
            windows[example].append(feature)
        results = []
        for example, features in enumerate(windows):
            context = contexts[example]
            answers: list[dict[str, Any]] = []
            null_score = NO_NULL_SCORE
            for feature in features:
                if handle_impossible_answer:
                    null_score = min(null_score, self.null_scores[feature])
                for first, last, score in self.spans[feature]:
                    start, end = _char_span(encodings[feature], first, last, self.align_to_words)
                    text = context[start:end]
                    same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
                    if same is not None:
                        same["score"] += score
                    else:
                        answers.append({"answer": text, "score": score, "start": start, "end": end})
            if handle_impossible_answer:
                answers.append({"answer": "", "score": null_score, "start": 0, "end": 0})
            answers.sort(key=lambda a: a["score"], reverse=True)
            results.append(answers[:top_k])
        return results
