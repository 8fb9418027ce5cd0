"""Load QA models and tokenizers from the hub, a local directory or a random config, offline-aware.

A hub name is only fetched after one quick reachability probe: ``from_pretrained`` would otherwise
retry for ~25 s before failing. When the hub cannot be reached (or ``HF_HUB_OFFLINE`` is set), the
local Hugging Face cache is tried, then an :class:`~qa_lightning.errors.OfflineError` names the
alternatives.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import get_session
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from qa_lightning.errors import OfflineError
from qa_lightning.paths import minilm_dir

log = logging.getLogger(__name__)

MINILM_ALIAS = "minilm"
PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "ON", "YES", "TRUE"}
# Keys a QA model may legitimately lack or leave unused when built from a base checkpoint.
_HEAD_PREFIXES = ("qa_outputs.",)
_UNUSED_PREFIXES = ("pooler.", "lm_head.", "cls.")

T = TypeVar("T")


def resolve_pretrained(pretrained: str | os.PathLike[str]) -> str:
    """``"minilm"`` -> the packaged MiniLM folder; a directory -> its absolute path; else a hub name."""
    name = str(pretrained)
    if name == MINILM_ALIAS:
        return str(minilm_dir())
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep in name.replace("/", ""):
        raise FileNotFoundError(f"model directory not found: {path}")
    return name


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set (read now, not at import time like huggingface_hub)."""
    return hub_constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """One HEAD request to the hub endpoint, no retries."""
    try:
        get_session().head(hub_constants.ENDPOINT, timeout=timeout)
    except Exception:  # any transport error (DNS, refused, timeout, proxy) means unreachable
        return False
    return True


def _offline_error(name: str, reason: str) -> OfflineError:
    return OfflineError(
        f"Cannot load {name!r}: it is not a local directory, it is not in the Hugging Face cache, "
        f"and {reason}. Use a local directory with `model.pretrained=/path/to/model` "
        f"(a folder written by `save_pretrained`), or the packaged model with `model=minilm`."
    )


def _from_hub_or_cache(name: str, load: Callable[..., T], **kwargs: Any) -> T:
    """``load(name, **kwargs)`` for a local dir; for a hub name, probe first and fall back to the cache."""
    if Path(name).is_dir():
        return load(name, **kwargs)
    if hub_offline():
        reason = "HF_HUB_OFFLINE is set"
    elif hub_reachable():
        return load(name, **kwargs)
    else:
        reason = f"the Hugging Face hub ({hub_constants.ENDPOINT}) is unreachable"
    try:
        return load(name, local_files_only=True, **kwargs)
    except OSError as err:
        raise _offline_error(name, reason) from err


def load_tokenizer(pretrained: str | os.PathLike[str], **kwargs: Any) -> PreTrainedTokenizerBase:
    """``AutoTokenizer.from_pretrained`` for a hub name, a local directory or ``"minilm"``."""
    return _from_hub_or_cache(
        resolve_pretrained(pretrained), AutoTokenizer.from_pretrained, **kwargs
    )


def load_config(
    pretrained: str | os.PathLike[str] | None,
    overrides: dict[str, Any] | None = None,
    *,
    trust_remote_code: bool = False,
) -> PretrainedConfig:
    """The config of ``pretrained`` with ``overrides``, or ``overrides`` alone (needs ``model_type``)."""
    overrides = dict(overrides or {})
    if pretrained is None:
        if "model_type" not in overrides:
            raise ValueError("A model config without `pretrained` needs a `model_type` key.")
        return AutoConfig.for_model(**overrides)
    return _from_hub_or_cache(
        resolve_pretrained(pretrained),
        AutoConfig.from_pretrained,
        trust_remote_code=trust_remote_code,
        **overrides,
    )


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
    if random_init or pretrained is None:
        model_config = load_config(pretrained, config, trust_remote_code=trust_remote_code)
        return _with_attn_fallback(
            lambda **attn: AutoModelForQuestionAnswering.from_config(
                model_config, trust_remote_code=trust_remote_code, **attn, **kwargs
            ),
            attn_implementation,
        )

    name = resolve_pretrained(pretrained)

    def build(**attn: Any) -> tuple[PreTrainedModel, dict[str, Any]]:
        return _from_hub_or_cache(
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
