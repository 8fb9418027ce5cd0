"""Hub name or local path, offline errors, and loading tokenizers and configs: one rule for all.

A hub name is only fetched after one quick reachability probe: ``from_pretrained`` would otherwise
retry for ~25 s before failing. When the hub cannot be reached (or ``HF_HUB_OFFLINE`` /
``HF_DATASETS_OFFLINE`` is set), the local Hugging Face cache is tried, then an
:class:`~qa_lightning.errors.OfflineError` names the alternatives. Data sets use the same rule
(:func:`looks_like_path`, :func:`offline_mode`).

A local models folder (``paths.models_dir`` / ``$QA_LIGHTNING_MODELS_DIR``) holds hub folders on
disk for clusters without internet: a hub name resolves there first, as ``<dir>/<org>/<name>``
or ``<dir>/<name>`` (see :func:`local_model_dir`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from huggingface_hub import constants as hub_constants
from huggingface_hub import get_session
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from qa_lightning.errors import OfflineError, QALightningError
from qa_lightning.paths import minilm_dir

log = logging.getLogger(__name__)

MINILM_ALIAS = "minilm"
PROBE_TIMEOUT_S = 3.0
OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
# Names ending so are files, never hub repositories.
FILE_SUFFIXES = (".json", ".jsonl", ".ndjson", ".gz", ".ckpt", ".onnx", ".safetensors", ".bin")
_TRUE = {"1", "ON", "YES", "TRUE"}
MODELS_DIR_ENV = "QA_LIGHTNING_MODELS_DIR"
# Set by the entry points from `paths.models_dir`; None: read $QA_LIGHTNING_MODELS_DIR.
_models_dir: Path | None = None

T = TypeVar("T")


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a local path: hub names are ``name`` or ``owner/name``."""
    return (
        name.startswith((".", "/", "~"))
        or name.count("/") > 1
        or "\\" in name
        or (os.sep != "/" and os.sep in name)
        or name.lower().endswith(FILE_SUFFIXES)
    )


def set_models_dir(directory: str | os.PathLike[str] | None) -> Path | None:
    """Use ``directory`` as the local models folder (None: ``$QA_LIGHTNING_MODELS_DIR`` again).

    A relative path is taken from the current directory now; a missing folder is an error.
    """
    global _models_dir
    if directory is None or str(directory) == "":
        _models_dir = None
        return None
    path = Path(directory).expanduser().resolve()
    if not path.is_dir():
        raise QALightningError(
            f"the local models folder {path} (paths.models_dir / ${MODELS_DIR_ENV}) does not exist"
        )
    _models_dir = path
    return path


def models_dir() -> Path | None:
    """The local models folder: set by :func:`set_models_dir`, else ``$QA_LIGHTNING_MODELS_DIR``."""
    if _models_dir is not None:
        return _models_dir
    env = os.environ.get(MODELS_DIR_ENV)
    return Path(env).expanduser().resolve() if env else None


def local_model_dir(name: str, root: Path | None = None) -> Path | None:
    """The folder of hub name ``name`` in the local models folder ``root`` (default
    :func:`models_dir`): ``<root>/<org>/<name>``, ``<root>/<name>``, or for a name without
    owner the one ``<root>/*/<name>``; None when there is none."""
    root = root if root is not None else models_dir()
    if root is None or looks_like_path(name):
        return None
    base = name.rsplit("/", 1)[-1]
    candidates = [root / name, root / base]
    if "/" not in name:
        candidates += sorted(p for p in root.glob(f"*/{base}") if p.is_dir())[:2]
    for candidate in candidates:
        if (candidate / "config.json").is_file() or (candidate / "tokenizer_config.json").is_file():
            return candidate
    return None


def resolve_pretrained(pretrained: str | os.PathLike[str]) -> str:
    """``"minilm"`` -> the packaged MiniLM folder; a directory -> its absolute path; a hub name
    found in the local models folder -> that folder; else the hub name."""
    name = str(pretrained)
    if name == MINILM_ALIAS:
        return str(minilm_dir())
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if looks_like_path(name):
        raise FileNotFoundError(f"model directory not found: {path}")
    local = local_model_dir(name)
    if local is not None:
        log.info("%s: using the local models folder's %s", name, local)
        return str(local)
    return name


def env_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` is set now (the libraries read them
    at import time only)."""
    return any(os.environ.get(name, "").upper() in _TRUE for name in OFFLINE_ENV)


def hub_offline() -> bool:
    """Whether the hub is switched off: by huggingface_hub's constant or the environment now."""
    return hub_constants.HF_HUB_OFFLINE or env_offline()


@contextlib.contextmanager
def offline_mode() -> Iterator[None]:
    """Apply the offline environment variables to ``datasets`` and ``huggingface_hub``."""
    if not env_offline():
        yield
        return
    import datasets

    saved = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """One HEAD request to the hub endpoint, no retries."""
    try:
        get_session().head(hub_constants.ENDPOINT, timeout=timeout)
    except Exception:  # any transport error (DNS, refused, timeout, proxy) means unreachable
        return False
    return True


def _offline_error(name: str, reason: str) -> OfflineError:
    root = models_dir()
    where = (
        f"it is not in the local models folder {root} (as {root / name} or "
        f"{root / name.rsplit('/', 1)[-1]})"
        if root is not None
        else f"no local models folder is set (paths.models_dir / ${MODELS_DIR_ENV})"
    )
    return OfflineError(
        f"Cannot load {name!r}: it is not a local directory, {where}, it is not in the Hugging "
        f"Face cache, and {reason}. Use a local directory with `model.pretrained=/path/to/model` "
        f"(a folder written by `save_pretrained`), a models folder holding hub folders with "
        f"`paths.models_dir=DIR`, or the packaged model with `model=minilm`."
    )


def from_hub_or_cache(name: str, load: Callable[..., T], **kwargs: Any) -> T:
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
    return from_hub_or_cache(
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
    return from_hub_or_cache(
        resolve_pretrained(pretrained),
        AutoConfig.from_pretrained,
        trust_remote_code=trust_remote_code,
        **overrides,
    )
