"""Answer questions with a trained model: ``QuestionAnswerer`` and ``answer_question``.

Uses the same feature preparation (overlapping windows) and the same decoder as evaluation
(:mod:`qa_lightning.decoding`). ``compat="pipeline"`` reproduces the removed transformers 4.x
``pipeline("question-answering")`` instead (:mod:`qa_lightning.decoding.pipeline_compat`). The model is a
PyTorch module or an exported ONNX model (:mod:`qa_lightning.inference.onnx`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from qa_lightning.data.collate import QACollator
from qa_lightning.data.features import fit_to_windows, prepare_eval_features
from qa_lightning.data.text import text_problem
from qa_lightning.decoding import StreamingDecoder
from qa_lightning.errors import DataFormatError
from qa_lightning.inference.answerability import AnswerabilityRules, answer_documents
from qa_lightning.metrics.answerability import Answerability
from qa_lightning.model.model_card import Window, read_window

SpanModel = Callable[[Mapping[str, Tensor]], tuple[Tensor, Tensor]]
"""A batch of features -> start and end logits ``[B, L]`` (``QALightningModule`` is one)."""

Answer = dict[str, Any]
"""``{"answer": str, "score": float, "start": int, "end": int}`` (character offsets, end exclusive)."""

COMPAT_MODES = (None, "pipeline")
DEFAULT_MAX_ANSWER_LENGTH = 30
MAX_WINDOW = 384


class QuestionAnswerer:
    """Extractive QA over contexts of any length, batched and sorted by length.

    ``qa = QuestionAnswerer.from_pretrained("outputs/.../hf_model")``;
    ``qa.answer(question, context)`` -> ``[{"answer", "score", "start", "end"}]`` (best first), where
    ``score`` is the probability among the n-best spans (softmax of their start + end logits over
    all windows) and ``start``/``end`` are character offsets: ``context[start:end] == answer``.

    Args:
        module: the model, a callable ``batch -> (start_logits, end_logits)``: a
            ``QALightningModule`` or the ONNX runner of :mod:`qa_lightning.inference.onnx`.
        tokenizer: the model's (fast) tokenizer.
        device: where a torch module runs.
        batch_size: features per forward pass.
        compat: ``"pipeline"`` answers exactly as transformers 4.x ``pipeline("question-answering")``
            did (word-aligned answers, its scores and null answer, max_answer_length 15).
        window: the default ``max_length`` / ``doc_stride`` (``from_pretrained`` reads the one the
            model was trained with from ``hf_model/qa_window.json``, the checkpoint or the export).
        answerability: the model's tuned threshold, calibrators and decoding settings
            (``answerability.json``; ``from_pretrained`` reads it). With it, answers use the
            tuned no-answer threshold, ``score`` is the calibrated probability that the answer
            is exactly right (for ``""``: that the question has no answer), a v2.0 model
            handles impossible answers, and the decoding settings default to the tuned ones.
            ``compat="pipeline"`` ignores it.
    """

    def __init__(
        self,
        module: SpanModel,
        tokenizer: PreTrainedTokenizerBase,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        compat: Literal["pipeline"] | None = None,
        window: Window | None = None,
        answerability: Answerability | None = None,
    ) -> None:
        if compat not in COMPAT_MODES:
            raise ValueError(f"compat must be one of {COMPAT_MODES}, got {compat!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("QuestionAnswerer needs a fast tokenizer (offset mappings)")
        self.device = torch.device(device)
        if isinstance(module, torch.nn.Module):
            module = module.to(self.device).eval()
        self.module = module
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.compat = compat
        self.window = window
        self.collate = QACollator(tokenizer)
        self.answerability = answerability

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        backend: Literal["auto", "torch", "onnx"] = "auto",
        **kwargs: Any,
    ) -> QuestionAnswerer:
        """From an ``hf_model/`` directory, a Lightning ``.ckpt``, a hub name or an ONNX export.

        ``backend="auto"`` runs a directory written by ``qa-lightning-export`` (it holds
        ``model.onnx``) with onnxruntime and anything else with PyTorch.
        """
        if backend not in ("auto", "torch", "onnx"):
            raise ValueError(f"backend must be 'auto', 'torch' or 'onnx', got {backend!r}")
        if backend == "onnx" or (backend == "auto" and _is_onnx_export(path)):
            from qa_lightning.inference.onnx import load_onnx
            from qa_lightning.metrics.answerability import read_answerability

            model, tokenizer = load_onnx(path, device=kwargs.get("device", "cpu"))
            kwargs.setdefault("window", read_window(path))
            kwargs.setdefault("answerability", read_answerability(path))
            return cls(model, tokenizer, **kwargs)
        from qa_lightning.inference.loading import load_module_and_tokenizer

        module, tokenizer = load_module_and_tokenizer(path)
        kwargs.setdefault("window", module.window)
        kwargs.setdefault("answerability", module.answerability)
        return cls(module, tokenizer, **kwargs)

    def answer(
        self,
        question: str,
        context: str | None = None,
        top_k: int = 1,
        *,
        contexts: Sequence[str] | None = None,
        **options: Any,
    ) -> list[Answer]:
        """The ``top_k`` best answers to one question (see ``__call__`` for the options).

        With ``contexts=[...]`` (instead of ``context``) the answers of every document are
        ranked together, each with ``"document"``: the index of its context. Calibrated scores
        are comparable across documents (uncalibrated ones are each document's own softmax).
        For a model that handles impossible answers, ``""`` (``"document": None``) is the
        answer only when no document answers; its score is then the lowest no-answer score.
        """
        if context is not None and contexts is not None:
            raise ValueError("give either context or contexts=[...], not both")
        if contexts is None:  # a missing context is a DataFormatError naming the field
            return self([question], [context], top_k=top_k, **options)[0]
        if isinstance(contexts, str) or not contexts:
            raise ValueError("contexts must be a non-empty list of strings")
        per_document = self([question] * len(contexts), list(contexts), top_k=top_k, **options)
        return answer_documents(per_document, top_k)

    @torch.inference_mode()
    def __call__(
        self,
        questions: Sequence[str],
        contexts: Sequence[str],
        top_k: int = 1,
        handle_impossible_answer: bool | None = None,
        max_answer_length: int | None = None,
        doc_stride: int | None = None,
        max_length: int | None = None,
        n_best_size: int | None = None,
        align_to_words: bool | None = None,
        null_threshold: float | None = None,
        calibrated: bool | None = None,
    ) -> list[list[Answer]]:
        """Answers for many questions at once; each list holds up to ``top_k`` answers, best first.

        Args:
            handle_impossible_answer: the empty answer (``""``, start = end = 0) competes with the
                spans: the CLS start + end logits (the minimum over windows) against the spans'.
                Default: on for a model tuned on v2.0 data (``answerability``), else off.
            max_answer_length: in tokens; default the tuned one, else 30 (15 with
                ``compat="pipeline"``).
            doc_stride: overlap of consecutive windows in tokens; default the tuned one, else
                ``min(128, max_length // 2)``.
            max_length: tokens per window; default the model's window (``qa_window.json``), else the
                tuned one, else
                ``min(tokenizer.model_max_length, 384)``.
            n_best_size: candidate starts and ends per window, and the n-best list's length;
                default the tuned one, else 20, and never under ``top_k``. The same character
                span reached from several windows is one entry (its best score), so ``top_k``
                answers are distinct.
            align_to_words: ``compat="pipeline"`` only: widen answers to whole words (default True).
            null_threshold: ``""`` wins when ``null_score - best_span_score`` exceeds it; default
                the tuned threshold, else 0.
            calibrated: scores from the tuned calibrators (default when the model has them);
                ``False`` gives the n-best softmax probabilities.

        An answer list is empty when no window has a valid span (and no empty answer is allowed).
        """
        questions, contexts = _validate(questions, contexts)
        limits = {
            "top_k": top_k,
            "n_best_size": n_best_size,
            "max_answer_length": max_answer_length,
        }
        for name, value in limits.items():
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if align_to_words is not None and self.compat is None:
            raise ValueError('align_to_words needs QuestionAnswerer(..., compat="pipeline")')
        if not questions:
            return []
        if max_length is None and self.window is not None and self.compat is None:
            max_length = self.window.max_length
            doc_stride = self.window.doc_stride if doc_stride is None else doc_stride
        if self.compat == "pipeline":
            if null_threshold is not None or calibrated:
                raise ValueError('null_threshold and calibrated do not apply to compat="pipeline"')
            max_length = max_length or min(self.tokenizer.model_max_length, MAX_WINDOW)
            doc_stride = min(128, max_length // 2) if doc_stride is None else doc_stride
            return self._pipeline_answers(
                questions,
                contexts,
                top_k=top_k,
                handle_impossible_answer=bool(handle_impossible_answer),
                max_answer_length=max_answer_length,
                doc_stride=doc_stride,
                max_length=max_length,
                align_to_words=True if align_to_words is None else align_to_words,
            )
        rules = AnswerabilityRules.resolve(
            self.answerability,
            handle_impossible_answer=handle_impossible_answer,
            null_threshold=null_threshold,
            calibrated=calibrated,
        )
        tuned = self.answerability.decoding if self.answerability is not None else {}
        max_length = (
            max_length
            or tuned.get("max_length")
            or min(self.tokenizer.model_max_length, MAX_WINDOW)
        )
        if doc_stride is None:
            doc_stride = tuned.get("doc_stride", min(128, max_length // 2))
            doc_stride = min(doc_stride, max_length // 2)
        n_best_size = max(n_best_size or tuned.get("n_best_size", 20), top_k)
        max_answer_length = max_answer_length or tuned.get(
            "max_answer_length", DEFAULT_MAX_ANSWER_LENGTH
        )
        if doc_stride < 0:
            raise ValueError(f"doc_stride must be >= 0, got {doc_stride}")
        examples = {
            "question": questions,
            "context": contexts,
            "answers": [{"text": [], "answer_start": []}] * len(questions),
        }
        features = prepare_eval_features(
            examples, self.tokenizer, max_length, doc_stride, indices=list(range(len(questions)))
        )
        decoder = StreamingDecoder(
            n_best_size=n_best_size,
            max_answer_length=max_answer_length,
            with_nbest=True,
        )
        for batch, start_logits, end_logits in self.forward_features(features):
            decoder.update(
                start_logits,
                end_logits,
                batch["offset_mapping"],
                batch["cls_index"],
                batch["example_index"],
                batch["feature_index"],
                attention_mask=batch["attention_mask"],
            )
        ids = [str(i) for i in range(len(questions))]
        decoded = decoder.decode(
            ids,
            contexts,
            version_2=rules.handle_impossible_answer,
            null_score_diff_threshold=rules.null_threshold,
        )
        return [_top(rules.rescore(decoded.nbest.get(qid, [])), top_k) for qid in ids]

    def forward_features(
        self, features: Mapping[str, Sequence[Any]]
    ) -> Iterator[tuple[dict[str, Tensor], Tensor, Tensor]]:
        """``(batch, start_logits, end_logits)`` for batches of ``features``, longest first.

        Each batch holds ``feature_index`` (the features' rows) besides the collated fields. The
        logits are the model's, padded positions included: the decoders mask them with the
        batch's ``attention_mask``, so that answers never depend on the batching.
        """
        keys = [k for k in features if k not in ("start_positions", "end_positions")]
        order = np.argsort([-len(ids) for ids in features["input_ids"]], kind="stable")
        for first in range(0, len(order), self.batch_size):
            rows = order[first : first + self.batch_size]
            batch = self.collate([{k: features[k][i] for k in keys} for i in rows])
            batch["feature_index"] = torch.as_tensor(rows, dtype=torch.long)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            start_logits, end_logits = self.module(batch)
            yield batch, start_logits, end_logits

    def _pipeline_answers(
        self,
        questions: list[str],
        contexts: list[str],
        *,
        top_k: int,
        handle_impossible_answer: bool,
        max_answer_length: int | None,
        doc_stride: int,
        max_length: int,
        align_to_words: bool,
    ) -> list[list[Answer]]:
        from qa_lightning.decoding import pipeline_compat

        if doc_stride > max_length:
            raise ValueError(f"doc_stride ({doc_stride}) is larger than max_length ({max_length})")
        features, encodings = pipeline_compat.pipeline_features(
            fit_to_windows(questions, self.tokenizer, max_length, doc_stride),
            contexts,
            self.tokenizer,
            max_length,
            doc_stride,
        )
        spans = pipeline_compat.PipelineSpans(
            self.tokenizer,
            top_k=top_k,
            max_answer_length=max_answer_length or pipeline_compat.MAX_ANSWER_LENGTH,
            align_to_words=align_to_words,
        )
        for batch, start_logits, end_logits in self.forward_features(features):
            spans.update(batch, start_logits, end_logits)
        return spans.answers(
            features["example_index"],
            encodings,
            contexts,
            top_k=top_k,
            handle_impossible_answer=handle_impossible_answer,
        )


def _is_onnx_export(path: str | Path) -> bool:
    from qa_lightning.inference.onnx import ONNX_FILE

    return (Path(path) / ONNX_FILE).is_file()


def _top(nbest: list[dict[str, Any]], top_k: int) -> list[Answer]:
    return [
        {
            "answer": e["text"],
            "score": float(e["probability"]),
            "start": int(e["start"]),
            "end": int(e["end"]),
        }
        for e in nbest[:top_k]
    ]


def _validate(questions: Sequence[str], contexts: Sequence[str]) -> tuple[list[str], list[str]]:
    """Lists of non-empty strings of equal length; clear errors otherwise."""
    for name, values in (("questions", questions), ("contexts", contexts)):
        if isinstance(values, str) or not isinstance(values, Sequence):
            raise TypeError(
                f"{name} must be a list of strings, got {type(values).__name__} "
                "(use QuestionAnswerer.answer for a single question)"
            )
    if len(questions) != len(contexts):
        raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts")
    for i, (question, context) in enumerate(zip(questions, contexts, strict=True)):
        for field, value in (("question", question), ("context", context)):
            problem = text_problem(value)
            if problem is not None:
                raise DataFormatError(problem, qid=str(i), field=field)
    return list(questions), list(contexts)


_DEFAULT: dict[str, QuestionAnswerer] = {}


def answer_question(
    question: str, context: str, model_path: str | Path | None = None, **options: Any
) -> str:
    """The best answer's text (``""`` for no answer): the classic tutorials' one-liner.

    The model of ``model_path`` is loaded once and kept for later calls.
    """
    if model_path is None:
        raise ValueError("answer_question needs model_path: an hf_model/ directory or a checkpoint")
    key = str(model_path)
    if key not in _DEFAULT:
        _DEFAULT[key] = QuestionAnswerer.from_pretrained(model_path)
    answers = _DEFAULT[key].answer(question, context, top_k=1, **options)
    return answers[0]["answer"] if answers else ""
