"""What a request may hold: validated items, input limits, and the errors that map to HTTP statuses."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qa_lightning.data.text import text_problem
from qa_lightning.errors import DataFormatError

log = logging.getLogger(__name__)

FIELDS = ("question", "context", "contexts", "top_k")
MAX_CONTEXTS = 16
"""Documents per item with ``"contexts"`` (each counts as one item in a batch)."""

Answers = list[dict[str, Any]]
#: ``QuestionAnswerer.__call__``: ``(questions, contexts, top_k=...) -> answers per question``.
AnswerFn = Callable[..., list[Answers]]


@dataclass(frozen=True)
class Limits:
    """Input limits: a field over its size gets 413, a malformed request 422."""

    max_context_chars: int = 100_000
    max_question_chars: int = 1_000
    max_items: int = 64
    max_top_k: int = 20
    max_body_bytes: int = 10 * 1024 * 1024


@dataclass(frozen=True)
class Item:
    """One question about one context, or about several (``contexts``, ranked together)."""

    question: str
    context: str
    top_k: int = 1
    contexts: tuple[str, ...] | None = None

    @property
    def documents(self) -> tuple[str, ...]:
        return self.contexts if self.contexts is not None else (self.context,)


class RequestError(Exception):
    """A rejected request: HTTP status, the field at fault and, in a list, the item's index."""

    def __init__(self, status: int, field: str, message: str, index: int | None = None) -> None:
        where = field if index is None else f"items[{index}].{field}"
        super().__init__(f"{where}: {message}")
        self.status, self.field, self.index = status, field, index

    def payload(self) -> dict[str, Any]:
        return {"detail": str(self), "field": self.field, "index": self.index}


def parse_items(payload: Any, limits: Limits) -> tuple[list[Item], bool]:
    """Validated items of a request body, and whether the body was a single object."""
    single = isinstance(payload, dict)
    if single:
        raw = [payload]
    elif isinstance(payload, list):
        raw = payload
        if not raw:
            raise RequestError(422, "body", "empty list: give at least one question")
        if len(raw) > limits.max_items:
            raise RequestError(
                413, "items", f"{len(raw)} items, the limit is {limits.max_items} per request"
            )
    else:
        raise RequestError(
            422, "body", 'expected {"question", "context", "top_k"?} or a list of them'
        )
    return [_parse_item(obj, None if single else i, limits) for i, obj in enumerate(raw)], single


def _parse_item(obj: Any, index: int | None, limits: Limits) -> Item:
    if not isinstance(obj, dict):
        raise RequestError(422, "body", f"expected an object, got {type(obj).__name__}", index)
    for name in obj:
        if name not in FIELDS:
            raise RequestError(422, str(name), f"unknown field; expected {FIELDS}", index)
    if ("context" in obj) == ("contexts" in obj):
        raise RequestError(422, "context", 'give either "context" or "contexts" (a list)', index)
    contexts = _parse_contexts(obj["contexts"], index, limits) if "contexts" in obj else None
    texts = {}
    for name, limit in (
        ("question", limits.max_question_chars),
        ("context", limits.max_context_chars),
    ):
        if name == "context" and contexts is not None:
            texts[name] = contexts[0]
            continue
        value = obj.get(name)
        if name not in obj:
            raise RequestError(422, name, "field required", index)
        _check_text(name, value, limit, index)
        texts[name] = value
    top_k = obj.get("top_k", 1)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= limits.max_top_k:
        raise RequestError(
            422,
            "top_k",
            f"must be an integer from 1 to {limits.max_top_k}, got {top_k!r:.40}",
            index,
        )
    return Item(texts["question"], texts["context"], top_k, contexts)


def _check_text(name: str, value: Any, limit: int, index: int | None) -> None:
    problem = text_problem(value)
    if problem is not None:
        raise RequestError(422, name, problem, index)
    if len(value) > limit:
        raise RequestError(413, name, f"{len(value)} characters, the limit is {limit}", index)


def _parse_contexts(value: Any, index: int | None, limits: Limits) -> tuple[str, ...]:
    """``"contexts"``: a list of 1 to ``MAX_CONTEXTS`` valid contexts."""
    if not isinstance(value, list) or not value:
        raise RequestError(422, "contexts", "must be a non-empty list of strings", index)
    if len(value) > MAX_CONTEXTS:
        raise RequestError(
            413, "contexts", f"{len(value)} contexts, the limit is {MAX_CONTEXTS}", index
        )
    for i, context in enumerate(value):
        _check_text(f"contexts[{i}]", context, limits.max_context_chars, index)
    return tuple(value)


def as_request_error(err: Exception, index: int | None) -> RequestError:
    """A model-side error of one item: 422 when the input is at fault (``ValueError``), else 500."""
    if isinstance(err, ValueError):
        message = str(err)
        if isinstance(err, DataFormatError) and (err.qid or err.field) is not None:
            message = message.split(": ", 1)[-1]  # drop "question id '0'": a position in a batch
        return RequestError(422, getattr(err, "field", None) or "body", message, index)
    log.error("inference failed", exc_info=err)
    return RequestError(500, "model", f"inference failed: {type(err).__name__}: {err}", index)
