"""Load a trained model from a Lightning checkpoint or an ``hf_model/`` directory, safely."""

from __future__ import annotations

import logging
import pickle
from dataclasses import asdict
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from qa_lightning.data.features import InputLayout
from qa_lightning.errors import QALightningError
from qa_lightning.hub import load_tokenizer
from qa_lightning.metrics.answerability import read_answerability
from qa_lightning.model.model_card import read_window
from qa_lightning.model.module import QALightningModule

log = logging.getLogger(__name__)


def is_hf_model_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def load_module(path: str | Path, **overrides: object) -> QALightningModule:
    """A ``QALightningModule`` from a ``.ckpt`` or a ``save_pretrained`` directory, loaded safely.

    Checkpoints load with ``torch.load(weights_only=True)`` and model directories through
    ``from_pretrained`` (safetensors, or ``weights_only`` for ``.bin``): a file that holds any
    other pickled object is refused with a :class:`QALightningError`, never executed.
    ``trust_remote_code`` stays off unless passed here or set in the checkpoint's config.
    The module's ``answerability`` comes from the checkpoint or the directory's
    ``answerability.json`` (``None`` without one).
    """
    path = Path(path)
    if not is_hf_model_dir(path) and not path.is_file():
        raise FileNotFoundError(
            f"{path}: neither a checkpoint file nor a model directory with config.json"
        )
    try:
        if is_hf_model_dir(path):
            window = read_window(path)
            if window is not None:
                overrides = {**asdict(window), **overrides}
            module = QALightningModule(pretrained=str(path), **overrides)
            module.answerability = read_answerability(path)
            return module
        return QALightningModule.load_from_checkpoint(
            path, map_location="cpu", weights_only=True, **overrides
        )
    except QALightningError as err:  # format version, backbone: say which file
        raise QALightningError(f"{path}: {err}") from err
    except pickle.UnpicklingError as err:
        lines = [line for line in str(err).splitlines() if "GLOBAL" in line or "global" in line]
        reason = (lines or str(err).strip().splitlines() or ["unsafe pickle"])[0].strip()
        raise QALightningError(
            f"refusing to load {path}: it holds pickled objects other than tensors and plain "
            f"values, which could run code when loaded ({reason}). Only weights_only-safe "
            "checkpoints and safetensors model directories are loaded."
        ) from err


def tokenizer_for(path: str | Path, module: QALightningModule) -> PreTrainedTokenizerBase:
    """The tokenizer saved beside a model: the directory itself, the run's ``hf_model/``, or the pretrained name."""
    path = Path(path)
    candidates = (
        [path] if path.is_dir() else [path.parent.parent / "hf_model", path.parent / "hf_model"]
    )
    for candidate in candidates:
        if (candidate / "tokenizer_config.json").is_file():
            return load_tokenizer(str(candidate))
    log.info("No tokenizer files beside %s; loading %s", path, module.hparams.pretrained)
    return load_tokenizer(module.hparams.pretrained)


def load_module_and_tokenizer(
    path: str | Path,
) -> tuple[QALightningModule, PreTrainedTokenizerBase]:
    """Model and tokenizer from a ``.ckpt``, an ``hf_model/`` directory, or a hub name; the model
    takes the tokenizer's input layout (question/context order)."""
    if Path(path).exists():
        module = load_module(path)
        tokenizer = tokenizer_for(path, module)
    else:
        module, tokenizer = QALightningModule(pretrained=str(path)), load_tokenizer(str(path))
    module.use_input_layout(InputLayout.of(tokenizer))
    return module, tokenizer
