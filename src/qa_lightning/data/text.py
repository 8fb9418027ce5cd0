"""What counts as a valid question or context: one rule for data files, inference and serving."""

from __future__ import annotations

from typing import Any


def text_problem(value: Any, *, allow_empty: bool = False) -> str | None:
    """Why ``value`` is not a usable question or context, or ``None`` when it is.

    A usable text is a ``str``, not blank (unless ``allow_empty``), with no lone surrogate (what
    Python makes of bytes that are not UTF-8, in argv or a file read with ``surrogateescape``).
    """
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not allow_empty and not value.strip():
        return "must not be empty"
    bad = next((i for i, ch in enumerate(value) if "\ud800" <= ch <= "\udfff"), None)
    if bad is not None:
        return (
            f"not valid Unicode text: lone surrogate {value[bad]!r} at character {bad} "
            "(bytes that are not UTF-8?)"
        )
    return None
