"""API keys of the server: where they come from, the bearer check, and the rule for binding.

Keys come from a file (one per line, ``#`` comments and blank lines ignored) or the
``QA_LIGHTNING_API_KEY`` environment variable (several separated by commas), never from the
command line. They are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from qa_lightning.errors import QALightningError

API_KEY_ENV = "QA_LIGHTNING_API_KEY"
LOOPBACK_NAMES = ("localhost",)


class ApiKeys:
    """The accepted keys; ``check`` compares a presented ``Authorization`` header with each."""

    def __init__(self, keys: Sequence[str] = ()) -> None:
        cleaned = [key.strip() for key in keys if key.strip()]
        self._keys = [key.encode("utf-8") for key in cleaned]

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:  # never the keys themselves
        return f"ApiKeys({len(self._keys)} key(s))"

    def check(self, authorization: str | None) -> bool:
        """Whether ``authorization`` is ``Bearer <one of the keys>``; every key is compared, each
        with ``hmac.compare_digest``, so the time taken does not depend on which key matched."""
        scheme, _, token = (authorization or "").partition(" ")
        presented = token.strip().encode("utf-8", "surrogatepass")
        bearer = scheme.lower() == "bearer"
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(presented, key)
        return bearer and matched


def load_api_keys(key_file: str | Path | None, environ: dict[str, str] | None = None) -> ApiKeys:
    """Keys from ``key_file`` when given, else from ``QA_LIGHTNING_API_KEY`` (may be none)."""
    if key_file is not None:
        path = Path(key_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise QALightningError(
                f"--api-key-file {path}: cannot read it ({err.strerror})"
            ) from err
        keys = [line for line in text.splitlines() if not line.strip().startswith("#")]
        found = ApiKeys(keys)
        if not found:
            raise QALightningError(f"--api-key-file {path}: holds no key (one key per line)")
        return found
    environ = os.environ if environ is None else environ
    return ApiKeys(environ.get(API_KEY_ENV, "").split(","))


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, keys: ApiKeys, insecure: bool) -> None:
    """Refuse a non-loopback address without a key, unless ``insecure``."""
    if keys or insecure or is_loopback(host):
        return
    raise QALightningError(
        f"refusing to listen on {host} without an API key: anyone who can reach it could use the "
        f"model. Give keys with --api-key-file PATH or the {API_KEY_ENV} environment variable, "
        "or pass --insecure to serve without authentication."
    )
