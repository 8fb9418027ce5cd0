"""Exceptions with messages that name the file, field and question id at fault."""

from __future__ import annotations


class QALightningError(Exception):
    """Base class of the project's user-facing errors."""


class DataFormatError(QALightningError, ValueError):
    """A data file or record is malformed: names the file, the question id and the field."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        qid: str | None = None,
        field: str | None = None,
    ) -> None:
        parts = []
        if path is not None:
            parts.append(f"file {path}")
        if qid is not None:
            parts.append(f"question id {qid!r}")
        if field is not None:
            parts.append(f"field {field!r}")
        where = ", ".join(parts)
        super().__init__(f"{where}: {message}" if where else message)
        self.path, self.qid, self.field = path, qid, field


class OfflineError(QALightningError, RuntimeError):
    """A model or dataset had to come from the Hugging Face hub, which cannot be reached."""


class IncompleteEvaluationError(QALightningError, RuntimeError):
    """The decoded predictions do not cover exactly the evaluated questions."""
