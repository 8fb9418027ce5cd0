"""Answer questions with a trained model: ``QuestionAnswerer`` and ``answer_question``.

Uses the same feature preparation (overlapping windows) and the same decoder as evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from qa_lightning.checkpoints import load_module, tokenizer_for
from qa_lightning.data.collate import QACollator
from qa_lightning.data.features import prepare_eval_features
from qa_lightning.decoding import StreamingDecoder
from qa_lightning.errors import DataFormatError
from qa_lightning.model.module import QALightningModule


class QuestionAnswerer:
    """Extractive QA over contexts of any length, batched and sorted by length.

    ``qa = QuestionAnswerer.from_pretrained("outputs/.../hf_model")``;
    ``qa.answer(question, context)`` -> ``[{"answer", "score", "start", "end"}]`` (best first), where
    ``score`` is the probability among the n-best spans and ``start``/``end`` are character offsets.
    """

    def __init__(
        self,
        module: QALightningModule,
        tokenizer: PreTrainedTokenizerBase,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
    ) -> None:
        self.module = module.to(device).eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.collate = QACollator(tokenizer)

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> QuestionAnswerer:
        """From an ``hf_model/`` directory, a Lightning ``.ckpt``, or a hub name."""
        module = (
            load_module(path) if Path(path).exists() else QALightningModule(pretrained=str(path))
        )
        tokenizer = tokenizer_for(path, module) if Path(path).exists() else None
        if tokenizer is None:
            from qa_lightning.model.backbone import load_tokenizer

            tokenizer = load_tokenizer(str(path))
        return cls(module, tokenizer, **kwargs)

    def answer(
        self, question: str, context: str, top_k: int = 1, **options: Any
    ) -> list[dict[str, Any]]:
        """The ``top_k`` best answers to one question (see ``__call__`` for the options)."""
        return self([question], [context], top_k=top_k, **options)[0]

    @torch.inference_mode()
    def __call__(
        self,
        questions: Sequence[str],
        contexts: Sequence[str],
        top_k: int = 1,
        handle_impossible_answer: bool = False,
        max_answer_length: int = 30,
        doc_stride: int = 128,
        max_length: int | None = None,
        n_best_size: int = 20,
    ) -> list[list[dict[str, Any]]]:
        """Answers for many questions at once; each list holds up to ``top_k`` answers, best first.

        ``handle_impossible_answer``: the empty answer (score of the CLS span) competes with spans.
        """
        _validate(questions, contexts)
        max_length = max_length or min(self.tokenizer.model_max_length, 384)
        if doc_stride >= max_length:
            doc_stride = max_length // 2
        examples = {
            "question": list(questions),
            "context": list(contexts),
            "answers": [{"text": [], "answer_start": []}] * len(questions),
        }
        features = prepare_eval_features(
            examples, self.tokenizer, max_length, doc_stride, indices=list(range(len(questions)))
        )
        decoder = StreamingDecoder(n_best_size=n_best_size, max_answer_length=max_answer_length)
        order = np.argsort([-len(ids) for ids in features["input_ids"]], kind="stable")
        keys = [k for k in features if k not in ("start_positions", "end_positions")]
        for start in range(0, len(order), self.batch_size):
            rows = [
                {k: features[k][i] for k in keys} for i in order[start : start + self.batch_size]
            ]
            batch = {k: v.to(self.device) for k, v in self.collate(rows).items()}
            start_logits, end_logits = self.module(batch)
            decoder.update(
                start_logits.float(),
                end_logits.float(),
                batch["offset_mapping"],
                batch["cls_index"],
                batch["example_index"],
                torch.as_tensor(order[start : start + self.batch_size], device=self.device),
            )
        ids = [str(i) for i in range(len(questions))]
        decoded = decoder.decode(
            ids, list(contexts), version_2=handle_impossible_answer, with_nbest=True
        )
        return [_top(decoded.nbest.get(qid, []), top_k) for qid in ids]


def _top(nbest: list[dict[str, Any]], top_k: int) -> list[dict[str, Any]]:
    return [
        {
            "answer": e["text"],
            "score": float(e["probability"]),
            "start": int(e["start"]),
            "end": int(e["end"]),
        }
        for e in nbest[:top_k]
    ]


def _validate(questions: Sequence[str], contexts: Sequence[str]) -> None:
    if len(questions) != len(contexts):
        raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts")
    for i, (question, context) in enumerate(zip(questions, contexts, strict=True)):
        for field, value in (("question", question), ("context", context)):
            if not isinstance(value, str) or not value.strip():
                raise DataFormatError(
                    f"must be a non-empty string, got {value!r:.40}", qid=str(i), field=field
                )


_DEFAULT: dict[str, QuestionAnswerer] = {}


def answer_question(
    question: str, context: str, model_path: str | Path | None = None, **options: Any
) -> str:
    """The best answer's text (``""`` for no answer): the classic tutorials' one-liner."""
    key = str(model_path)
    if key not in _DEFAULT:
        if model_path is None:
            raise ValueError(
                "answer_question needs model_path: an hf_model/ directory or a checkpoint"
            )
        _DEFAULT[key] = QuestionAnswerer.from_pretrained(model_path)
    answers = _DEFAULT[key].answer(question, context, top_k=1, **options)
    return answers[0]["answer"] if answers else ""
