"""qa_lightning: fine-tune transformer encoders for extractive question answering.

``from qa_lightning import QuestionAnswerer`` loads the inference code on first use, so that
``import qa_lightning`` stays light (no torch, no transformers; it registers the OmegaConf
resolvers the configs use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qa_lightning.utils import resolvers as _resolvers  # noqa: F401  (registers the configs' resolvers)

__version__ = "0.1.0"
__all__ = ["QuestionAnswerer", "__version__", "answer_question"]

_LAZY = {
    "QuestionAnswerer": "qa_lightning.inference.answerer",
    "answer_question": "qa_lightning.inference.answerer",
}

if TYPE_CHECKING:
    from qa_lightning.inference import QuestionAnswerer, answer_question


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'qa_lightning' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
