"""Secrets kept out of logged configs: secret-looking keys and values of secret env variables."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|passwd)", re.IGNORECASE)
# environment variables holding secrets: WANDB_API_KEY, HF_TOKEN, AWS_SECRET_ACCESS_KEY, ...
SECRET_ENV = re.compile(r"(api_?key|access_?key|token|secret|password|passwd)$", re.IGNORECASE)
MIN_SECRET_LENGTH = 8
REDACTED = "<redacted>"


def secret_env_values(environ: Mapping[str, str] | None = None) -> set[str]:
    """Values of the environment variables whose names mark them as secrets."""
    environ = os.environ if environ is None else environ
    return {
        value
        for name, value in environ.items()
        if SECRET_ENV.search(name) and len(value) >= MIN_SECRET_LENGTH
    }


def redact(obj: Any, secrets: set[str] | None = None) -> Any:
    """A copy of a plain config with values of secret-looking keys replaced, and any string
    holding the value of a secret environment variable (e.g. via ``${oc.env:...}``) too."""
    secrets = secret_env_values() if secrets is None else secrets
    if isinstance(obj, dict):
        return {
            k: REDACTED if SECRET_KEY.search(str(k)) else redact(v, secrets) for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [redact(v, secrets) for v in obj]
    if isinstance(obj, str) and any(secret in obj for secret in secrets):
        return REDACTED
    return obj
