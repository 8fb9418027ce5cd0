"""The checkpoint format: its version, the migration of older formats, and the backbone check.

Format 1 is the last release's (no version key; factories under ``qa_lightning.optim``);
format 2 (this code) stamps ``qa_lightning_format`` and names ``qa_lightning.model.optim``.
A checkpoint from a newer format, of another backbone, or with weights of other shapes is a
``QALightningError`` that says so, never a size-mismatch traceback.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from torch import Tensor

from qa_lightning.errors import QALightningError

FORMAT_KEY = "qa_lightning_format"
FORMAT_VERSION = 2
#: Modules that moved since format 1: the factories' ``_target_`` prefixes are rewritten.
MOVED_TARGETS = {1: {"qa_lightning.optim.": "qa_lightning.model.optim."}}
HPARAM_SPECS = ("optimizer", "scheduler")


def stamp(checkpoint: MutableMapping[str, Any]) -> None:
    """Mark ``checkpoint`` as written in this format."""
    checkpoint[FORMAT_KEY] = FORMAT_VERSION


def format_version(checkpoint: Mapping[str, Any]) -> int:
    """The checkpoint's format; 1 when it has no version (written before versions existed)."""
    version = checkpoint.get(FORMAT_KEY, 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise QALightningError(f"checkpoint format version {version!r} is not a valid version")
    return version


def migrate(checkpoint: MutableMapping[str, Any]) -> int:
    """Bring ``checkpoint`` (in place) to this format; returns the version it was written in."""
    version = format_version(checkpoint)
    if version > FORMAT_VERSION:
        raise QALightningError(
            f"checkpoint format version {version} was written by a newer qa_lightning; this one "
            f"reads versions 1 to {FORMAT_VERSION}: upgrade qa_lightning to load it"
        )
    hparams = checkpoint.get("hyper_parameters") or {}
    for old in range(version, FORMAT_VERSION):
        for name in HPARAM_SPECS:
            hparams[name] = retarget(hparams.get(name), MOVED_TARGETS.get(old, {}))
    return version


def retarget(spec: Any, moved: Mapping[str, str]) -> Any:
    """``spec`` with its ``_target_`` moved to the module's current place."""
    if not isinstance(spec, MutableMapping) or not isinstance(spec.get("_target_"), str):
        return spec
    for old, new in moved.items():
        if spec["_target_"].startswith(old):
            spec["_target_"] = new + spec["_target_"][len(old) :]
    return spec


def check_backbone(
    checkpoint: Mapping[str, Any], state: Mapping[str, Tensor], model_type: str
) -> None:
    """Fail clearly when the checkpoint's weights do not fit ``state`` (the model loading them)."""
    hparams = checkpoint.get("hyper_parameters") or {}
    saved_type = (hparams.get("hf_config") or {}).get("model_type")
    saved_name = hparams.get("pretrained", "?")
    version = format_version(checkpoint)
    where = (
        f"the checkpoint (format version {version}, backbone {saved_type or '?'} {saved_name!r})"
    )
    if saved_type and saved_type != model_type:
        raise QALightningError(
            f"{where} is of another backbone than this model ({model_type}): load it with its "
            "own model config, or start from the pretrained weights without ckpt_path"
        )
    weights = checkpoint.get("state_dict") or {}
    mismatched = [
        f"{name} {tuple(value.shape)} vs {tuple(state[name].shape)}"
        for name, value in weights.items()
        if name in state
        and hasattr(value, "shape")
        and tuple(value.shape) != tuple(state[name].shape)
    ]
    missing = sorted(set(state) - set(weights))
    if mismatched or (weights and missing):
        details = "; ".join(mismatched[:3] or [f"missing {', '.join(missing[:3])}"])
        count = len(mismatched) or len(missing)
        raise QALightningError(
            f"{where} does not fit this model: {count} weight(s) differ "
            f"(checkpoint vs model: {details}). It was trained with another model config "
            "(hidden size, layers, vocabulary): load it with its own config"
        )
