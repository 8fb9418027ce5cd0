"""What ``hf_model/`` records beside the weights, read and written in one place.

- ``qa_window.json``: the window the model was trained with (``max_length``, ``doc_stride``);
  inference uses it by default.
- ``tokenizer_config.json`` made loadable by transformers 4.x (which many serving stacks pin):
  ``model_input_names`` limited to what the model's ``forward`` takes (a DistilBERT folder
  otherwise records ``BertTokenizer`` and the 4.x pipeline feeds ``token_type_ids``), and
  ``extra_special_tokens`` saved as a list (transformers 5) moved to ``additional_special_tokens``
  (4.x expects a mapping there).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from qa_lightning.errors import QALightningError
from qa_lightning.utils.io import atomic_write_text

WINDOW_FILE = "qa_window.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
# transformers 4.x tokenizer classes of the families whose 5.x class name differs.
TF4_TOKENIZER_CLASS = {"distilbert": "DistilBertTokenizer"}


@dataclass(frozen=True)
class Window:
    """Tokens per window and the overlap of consecutive windows a model was trained with."""

    max_length: int
    doc_stride: int


def write_window(directory: str | Path, window: Window) -> Path:
    """Record ``window`` in ``directory/qa_window.json``."""
    path = Path(directory) / WINDOW_FILE
    atomic_write_text(path, json.dumps(asdict(window), indent=2) + "\n")
    return path


def read_window(directory: str | Path) -> Window | None:
    """The window recorded in ``directory`` (None when there is no record)."""
    path = Path(directory) / WINDOW_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return Window(max_length=int(data["max_length"]), doc_stride=int(data["doc_stride"]))
    except (ValueError, KeyError, TypeError) as err:
        raise QALightningError(
            f"{path}: expected {{'max_length': int, 'doc_stride': int}} ({err})"
        ) from err


def forward_inputs(model: PreTrainedModel, names: list[str]) -> list[str]:
    """The tokenizer outputs among ``names`` that ``model.forward`` accepts."""
    params = inspect.signature(model.forward).parameters
    return [name for name in names if name in params]


def make_tokenizer_portable(
    directory: str | Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> None:
    """Rewrite ``directory/tokenizer_config.json`` so that transformers 4.x loads it too."""
    path = Path(directory) / TOKENIZER_CONFIG
    if not path.is_file():
        return
    config: dict[str, Any] = json.loads(path.read_text())
    config["model_input_names"] = forward_inputs(model, list(tokenizer.model_input_names))
    tf4_class = TF4_TOKENIZER_CLASS.get(model.config.model_type)
    if tf4_class:
        config["tokenizer_class"] = tf4_class
    extra = config.get("extra_special_tokens")
    if isinstance(extra, list):
        additional = list(config.get("additional_special_tokens") or [])
        config["additional_special_tokens"] = additional + [t for t in extra if t not in additional]
        del config["extra_special_tokens"]
    atomic_write_text(path, json.dumps(config, indent=2, ensure_ascii=False) + "\n")
