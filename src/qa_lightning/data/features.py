"""Overflow-aware tokenization of SQuAD examples into model features.

A context longer than ``max_length`` becomes several features (windows) that overlap by
``doc_stride`` tokens. Every feature carries the answer's start/end token when the answer lies
inside its window, else the CLS index (also for unanswerable questions). Evaluation features
also carry the example they came from and character offsets masked to context tokens, which the
decoder uses to slice answers out of the original context.

Bad input never crashes the tokenizer: a question too long to leave more than ``doc_stride``
context tokens per window is cut to fit (counted in a warning); a context that yields no tokens
(only control or zero-width characters) gives a window without context tokens (no answer); a
string that is not valid Unicode text (lone surrogates, from undecodable bytes) is a
:class:`~qa_lightning.errors.DataFormatError` naming the example and the field.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from qa_lightning.data.text import text_problem
from qa_lightning.errors import DataFormatError

log = logging.getLogger(__name__)

NOT_CONTEXT = (-1, -1)


@dataclass(frozen=True)
class InputLayout:
    """The order of question and context in a feature, decided once per tokenizer.

    ``[CLS] question [SEP] context [SEP]`` (``question_first``), unless the tokenizer pads on the
    left, as XLNet-style models do: then the context comes first. The datamodule holds the layout
    of its features and hands it to the model (Longformer's global attention needs it).
    """

    question_first: bool = True

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> InputLayout:
        """The layout of the features made with ``tokenizer`` (from its padding side)."""
        return cls(question_first=tokenizer.padding_side == "right")

    @property
    def context_sequence_id(self) -> int:
        """The context's sequence id in ``encoding.sequence_ids()``."""
        return 1 if self.question_first else 0

    @property
    def truncation(self) -> str:
        """The tokenizer's truncation strategy that cuts the context, never the question."""
        return "only_second" if self.question_first else "only_first"

    def pair(self, questions: Sequence[str], contexts: Sequence[str]) -> tuple[Sequence[str], ...]:
        """The tokenizer's first and second texts."""
        return (questions, contexts) if self.question_first else (contexts, questions)


def offsets_include_leading_space(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True for tokenizers (SentencePiece/DeBERTa-v3) whose offsets start at the space before a word."""
    offsets = tokenizer("ab cd", add_special_tokens=False, return_offsets_mapping=True)[
        "offset_mapping"
    ]
    return any(start == 2 for start, _ in offsets)


def question_token_budget(
    tokenizer: PreTrainedTokenizerBase, max_length: int, doc_stride: int
) -> int:
    """The most question tokens that leave more than ``doc_stride`` context tokens per window."""
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=True) - doc_stride - 1
    if budget < 1:
        raise DataFormatError(
            f"max_length={max_length} with doc_stride={doc_stride} leaves no room for a question: "
            "lower doc_stride or raise max_length",
            field="doc_stride",
        )
    return budget


def fit_questions(
    questions: list[str],
    tokenizer: PreTrainedTokenizerBase,
    budget: int,
    rows: list[int] | None = None,
) -> tuple[list[str], int]:
    """Cut the questions (of ``rows``, default all) longer than ``budget`` tokens at a token
    boundary; returns the questions and how many were cut."""
    fitted, cut = list(questions), 0
    for i in range(len(questions)) if rows is None else rows:
        question, keep = questions[i], budget
        while question and len(offsets := _offsets(tokenizer, question)) > budget:
            # a re-tokenized prefix may still be too long: then keep one token less
            question = question[: offsets[keep - 1][1]] if keep > 0 else ""
            keep -= 1
        if question != questions[i]:
            fitted[i], cut = question, cut + 1
    return fitted, cut


def _may_exceed(question: object, budget: int) -> bool:
    """Whether ``question`` could have more than ``budget`` tokens.

    No tokenizer makes more tokens than UTF-8 bytes (+2 for a word-start marker), except after
    unusual normalizations (NFKC ligatures): those fall back on the tokenizer's own error.
    """
    return isinstance(question, str) and len(question.encode("utf-8", "surrogatepass")) + 2 > budget


def _offsets(tokenizer: PreTrainedTokenizerBase, text: str) -> list[tuple[int, int]]:
    return tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]


def _encode_pairs(
    questions: list[str],
    contexts: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    doc_stride: int,
    layout: InputLayout,
) -> Any:
    return tokenizer(
        *layout.pair(questions, contexts),
        truncation=layout.truncation,
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )


def _is_truncation_failure(err: BaseException) -> bool:
    """The tokenizer's error (or Rust panic) when a question leaves too little room for context."""
    return type(err).__name__ == "PanicException" or "Truncation error" in str(err)


def check_text(examples: dict[str, list]) -> None:
    """Raise a ``DataFormatError`` for the first question or context that is not valid text."""
    ids = examples.get("id")
    for field in ("question", "context"):
        for row, value in enumerate(examples[field]):
            problem = text_problem(value, allow_empty=True)
            if problem is not None:
                qid = str(ids[row]) if ids is not None else None
                raise DataFormatError(f"row {row}: {problem}", qid=qid, field=field)


def tokenize_windows(
    examples: dict[str, list],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    doc_stride: int,
    layout: InputLayout | None = None,
) -> Any:
    """Tokenize question/context pairs into overlapping windows, with offsets and sample mapping.

    Questions too long for a window are cut to :func:`question_token_budget` tokens (a warning
    counts them); the tokenizer would otherwise fail, or panic and abort the process.
    ``layout`` defaults to the tokenizer's (:meth:`InputLayout.of`).
    """
    layout = InputLayout.of(tokenizer) if layout is None else layout
    questions = [q.lstrip() if isinstance(q, str) else q for q in examples["question"]]
    contexts = examples["context"]
    budget = question_token_budget(tokenizer, max_length, doc_stride)
    long_rows = [i for i, q in enumerate(questions) if _may_exceed(q, budget)]
    questions, cut = fit_questions(questions, tokenizer, budget, long_rows)
    try:
        encoded = _encode_pairs(questions, contexts, tokenizer, max_length, doc_stride, layout)
    except TypeError:  # e.g. "TextInputSequence must be str" for lone surrogates
        check_text(examples)
        raise
    except BaseException as err:  # the Rust tokenizer's PanicException is a BaseException
        if not _is_truncation_failure(err):
            raise
        questions, cut = fit_questions(questions, tokenizer, budget)
        encoded = _encode_pairs(questions, contexts, tokenizer, max_length, doc_stride, layout)
    _warn_cut(cut, len(questions), budget, max_length, doc_stride)
    return encoded


def fit_to_windows(
    questions: list[str], tokenizer: PreTrainedTokenizerBase, max_length: int, doc_stride: int
) -> list[str]:
    """The questions, each cut to :func:`question_token_budget` tokens where it is longer (the
    same rule as :func:`tokenize_windows`: counted in a warning, never an error)."""
    budget = question_token_budget(tokenizer, max_length, doc_stride)
    fitted, cut = fit_questions(questions, tokenizer, budget)
    _warn_cut(cut, len(questions), budget, max_length, doc_stride)
    return fitted


def _warn_cut(cut: int, total: int, budget: int, max_length: int, doc_stride: int) -> None:
    if cut:
        log.warning(
            "%d of %d questions are longer than %d tokens: cut to fit windows of max_length=%d "
            "with doc_stride=%d",
            cut,
            total,
            budget,
            max_length,
            doc_stride,
        )


def _context_span(sequence_ids: list[int | None], context_id: int) -> tuple[int, int]:
    """First and last token index of the context in a feature (``first > last`` when it has none)."""
    if context_id not in sequence_ids:  # a context of only control or zero-width characters
        return len(sequence_ids), len(sequence_ids) - 1
    first = sequence_ids.index(context_id)
    last = len(sequence_ids) - 1 - sequence_ids[::-1].index(context_id)
    return first, last


def _strip_leading_space(offsets: list, context: str, first: int, last: int) -> None:
    """Move each context token's start past whitespace (in place), so answers never start with a space."""
    for i in range(first, last + 1):
        start, end = offsets[i]
        while start < end and context[start].isspace():
            start += 1
        offsets[i] = (start, end)


def _answer_tokens(
    offsets: list, first: int, last: int, start_char: int, end_char: int
) -> tuple[int, int] | None:
    """Token indices of the answer's first and last token, or None when outside the window."""
    if first > last or offsets[first][0] > start_char or offsets[last][1] < end_char:
        return None
    start = first
    while start <= last and offsets[start][0] <= start_char:
        start += 1
    end = last
    while end >= first and offsets[end][1] >= end_char:
        end -= 1
    return start - 1, end + 1


def _prepare(
    examples: dict[str, list],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    doc_stride: int,
    indices: list[int] | None,
    for_eval: bool,
    layout: InputLayout | None,
) -> dict[str, list]:
    layout = InputLayout.of(tokenizer) if layout is None else layout
    tokenized = tokenize_windows(examples, tokenizer, max_length, doc_stride, layout)
    sample_mapping = tokenized.pop("overflow_to_sample_mapping")
    offset_mapping = tokenized.pop("offset_mapping")
    context_id = layout.context_sequence_id
    strip = offsets_include_leading_space(tokenizer)
    cls_id = tokenizer.cls_token_id
    starts, ends, cls_indices, example_indices, masked_offsets = [], [], [], [], []
    for i, offsets in enumerate(offset_mapping):
        sample = sample_mapping[i]
        input_ids = tokenized["input_ids"][i]
        cls_index = input_ids.index(cls_id) if cls_id in input_ids else 0
        sequence_ids = tokenized.sequence_ids(i)
        context = examples["context"][sample]
        first, last = _context_span(sequence_ids, context_id)
        if strip:
            offsets = list(offsets)
            _strip_leading_space(offsets, context, first, last)
        answers = examples["answers"][sample]
        span = None
        if answers["answer_start"]:
            start_char = answers["answer_start"][0]
            span = _answer_tokens(
                offsets, first, last, start_char, start_char + len(answers["text"][0])
            )
        starts.append(span[0] if span else cls_index)
        ends.append(span[1] if span else cls_index)
        if for_eval:
            cls_indices.append(cls_index)
            example_indices.append(indices[sample] if indices is not None else sample)
            masked = [NOT_CONTEXT] * len(offsets)
            masked[first : last + 1] = offsets[first : last + 1]
            masked_offsets.append(masked)
    tokenized["start_positions"] = starts
    tokenized["end_positions"] = ends
    if for_eval:
        tokenized["example_index"] = example_indices
        tokenized["cls_index"] = cls_indices
        tokenized["offset_mapping"] = masked_offsets
    return dict(tokenized)


def prepare_train_features(
    examples: dict[str, list],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int = 384,
    doc_stride: int = 128,
    layout: InputLayout | None = None,
) -> dict[str, list]:
    """Training features: model inputs plus ``start_positions`` / ``end_positions``."""
    return _prepare(examples, tokenizer, max_length, doc_stride, None, False, layout)


def prepare_eval_features(
    examples: dict[str, list],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int = 384,
    doc_stride: int = 128,
    indices: list[int] | None = None,
    layout: InputLayout | None = None,
) -> dict[str, list]:
    """Evaluation features: training fields plus ``example_index``, ``cls_index`` and masked offsets.

    ``indices`` are the examples' rows in their dataset (``datasets.map(with_indices=True)``);
    ``layout`` defaults to the tokenizer's.
    """
    return _prepare(examples, tokenizer, max_length, doc_stride, indices, True, layout)
