"""Build the QA backbone: pretrained weights (hub, local directory, ``minilm``) or a random config.

Where names resolve and what happens offline is :mod:`qa_lightning.hub`'s rule.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from transformers import AutoModelForQuestionAnswering, PreTrainedModel
from transformers.utils import logging as hf_logging

from qa_lightning.errors import QALightningError
from qa_lightning.hub import from_hub_or_cache, load_config, resolve_pretrained

log = logging.getLogger(__name__)

# Keys a QA model may legitimately lack or leave unused when built from a base checkpoint.
_HEAD_PREFIXES = ("qa_outputs.",)
_UNUSED_PREFIXES = ("pooler.", "lm_head.", "cls.")
# Weight files `from_pretrained` reads from a folder (single or sharded).
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

T = TypeVar("T")


def _with_attn_fallback(build: Callable[..., T], attn_implementation: str | None) -> T:
    """``build(attn_implementation=...)``, retried with the default where the architecture lacks it."""
    if attn_implementation is None:
        return build()
    try:
        return build(attn_implementation=attn_implementation)
    except ValueError as err:
        log.warning(
            "attn_implementation=%r is not available (%s); using the architecture's default.",
            attn_implementation,
            str(err).split(". ")[0],
        )
        return build()


def _report_loading(name: str, info: dict[str, Any]) -> None:
    """One clear line for a fresh QA head; a warning for any other missing or unused weights."""
    missing = sorted(info.get("missing_keys") or ())
    unexpected = sorted(info.get("unexpected_keys") or ())
    head = [k for k in missing if k.startswith(_HEAD_PREFIXES)]
    other_missing = [k for k in missing if k not in head]
    other_unexpected = [k for k in unexpected if not k.startswith(_UNUSED_PREFIXES)]
    if head:
        log.info("%s has no QA head: initialised a fresh one (%s).", name, ", ".join(head))
    if other_missing or other_unexpected or info.get("mismatched_keys"):
        log.warning(
            "Loading %s: newly initialised %s; unused %s; shape-mismatched %s.",
            name,
            other_missing,
            other_unexpected,
            sorted(info.get("mismatched_keys") or ()),
        )


def check_has_weights(directory: str | os.PathLike[str], name: str | None = None) -> None:
    """Refuse a local folder without weights (config and tokenizer only) with a clear error."""
    folder = Path(directory)
    if not folder.is_dir() or any((folder / f).is_file() for f in WEIGHT_FILES):
        return
    shown = f"{name!r} ({folder})" if name and name != str(folder) else str(folder)
    raise QALightningError(
        f"{shown} holds no model weights (none of {', '.join(WEIGHT_FILES)}): it has a config "
        "and tokenizer only. Train from random weights with `model.random_init=true` (the "
        "architecture of its config.json), or point `model.pretrained` at a folder with weights."
    )


def fit_per_layer_windows(
    pretrained: str | os.PathLike[str] | None,
    overrides: dict[str, Any] | None,
    *,
    trust_remote_code: bool = False,
) -> dict[str, Any] | None:
    """``overrides`` plus an ``attention_window`` of the new depth when they change a Longformer's
    ``num_hidden_layers`` but not its per-layer windows: the first windows are kept (or the last
    repeated), where transformers would refuse a list of the old length when building the model."""
    if not overrides or "num_hidden_layers" not in overrides or "attention_window" in overrides:
        return overrides
    base = load_config(pretrained, {}, trust_remote_code=trust_remote_code) if pretrained else None
    windows = getattr(base, "attention_window", None)
    layers = int(overrides["num_hidden_layers"])
    if not isinstance(windows, list | tuple) or len(windows) == layers or not windows:
        return overrides
    fitted = [*windows[:layers], *[windows[-1]] * (layers - len(windows))]
    log.info("attention_window: %d per-layer windows fitted to %d layers", len(windows), layers)
    return {**overrides, "attention_window": fitted}


def load_qa_model(
    pretrained: str | os.PathLike[str] | None,
    *,
    config: dict[str, Any] | None = None,
    random_init: bool = False,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    **kwargs: Any,
) -> PreTrainedModel:
    """An ``AutoModelForQuestionAnswering`` in float32 (unless ``dtype`` is given).

    - ``pretrained`` (hub name, local directory or ``"minilm"``): its weights; a base checkpoint
      without QA head (MiniLM) gets a fresh head. ``config`` overrides config fields.
    - ``random_init=True`` or ``pretrained=None``: ``from_config`` on the pretrained's config with
      the ``config`` overrides, or on ``config`` alone (it then needs ``model_type``).
    """
    kwargs.setdefault("dtype", torch.float32)
    config = fit_per_layer_windows(pretrained, config, trust_remote_code=trust_remote_code)
    if random_init or pretrained is None:
        model_config = load_config(pretrained, config, trust_remote_code=trust_remote_code)
        return _with_attn_fallback(
            lambda **attn: AutoModelForQuestionAnswering.from_config(
                model_config, trust_remote_code=trust_remote_code, **attn, **kwargs
            ),
            attn_implementation,
        )

    name = resolve_pretrained(pretrained)
    check_has_weights(name, str(pretrained))

    def build(**attn: Any) -> tuple[PreTrainedModel, dict[str, Any]]:
        return from_hub_or_cache(
            name,
            AutoModelForQuestionAnswering.from_pretrained,
            output_loading_info=True,
            trust_remote_code=trust_remote_code,
            **attn,
            **(config or {}),
            **kwargs,
        )

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report is replaced by _report_loading
    try:
        model, info = _with_attn_fallback(build, attn_implementation)
    finally:
        hf_logging.set_verbosity(verbosity)
    _report_loading(str(pretrained), info)
    return model
