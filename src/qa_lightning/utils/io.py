"""Disk I/O: reading (gzip-aware) JSON, atomic writes and directory swaps, writable-directory
checks, OS error wording.

A crash never leaves a half-written output behind.
"""

from __future__ import annotations

import errno
import gzip
import json
import logging
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qa_lightning.errors import DataFormatError, QALightningError

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
GZIP_MAGIC = b"\x1f\x8b"


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file over ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (UTF-8, non-ASCII kept) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def describe_os_error(err: OSError) -> str:
    """A short human reason for an I/O error, with its errno name."""
    reasons = {
        errno.ENOSPC: "no space left on device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EROFS: "read-only file system",
        errno.ENOTDIR: "a parent of the path is a file, not a directory",
        errno.EEXIST: "a file is in the way",
    }
    name = errno.errorcode.get(err.errno, "") if err.errno is not None else ""
    reason = reasons.get(err.errno, err.strerror or str(err))
    return f"{reason} ({name})" if name else reason


def ensure_writable(directory: str | os.PathLike[str], what: str = "output directory") -> Path:
    """Create ``directory`` if needed and prove it writable with a real file; a clear error if not."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=".write-test.", suffix=TEMP_SUFFIX, dir=directory):
            pass
    except OSError as err:
        raise QALightningError(
            f"the {what} {directory} is not writable: {describe_os_error(err)}. Choose another "
            "one (hydra.run.dir=..., or QA_OUTPUT_ROOT for the outputs/ root) or fix its permissions."
        ) from err
    return directory


def remove_stale_temp_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files a killed process left behind (``.<name>.*.tmp``)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [p for p in directory.glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("Removed %d unfinished temporary files from %s", len(stale), directory)
    return stale


def replace_directory(target: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` and move the result to ``target``, replacing what was there.

    A failed write leaves ``target`` untouched. The swap is two renames (POSIX has no atomic
    directory exchange): a crash between them leaves ``target`` missing and ``.<name>.old-*`` intact.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file, gzip-compressed or not (by its magic bytes); bad bytes are a
    :class:`DataFormatError` naming the file, the byte and the line."""
    path = Path(path)
    raw = path.read_bytes()
    if raw.startswith(GZIP_MAGIC):
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:
            raise DataFormatError(
                f"corrupt or truncated gzip data: not valid gzip ({err})", path=str(path)
            ) from err
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataFormatError(
            f"invalid UTF-8 at byte {err.start} (line {line}): {err.reason}; "
            "SQuAD files must be UTF-8 encoded",
            path=str(path),
        ) from err


def parse_json(text: str, path: str | os.PathLike, where: str = "") -> Any:
    """``json.loads(text)``; invalid JSON is a :class:`DataFormatError` naming the file, line and
    column, and whether the text looks truncated."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        truncated = err.pos >= len(text.rstrip()) or err.msg.startswith("Unterminated string")
        hint = " (the text ends early: truncated?)" if truncated else ""
        raise DataFormatError(
            f"not valid JSON{where} at line {err.lineno}, column {err.colno}: {err.msg}{hint}",
            path=str(path),
        ) from err


def read_json_file(path: str | os.PathLike) -> Any:
    """Parse a UTF-8 JSON file, gzip-compressed or not; unreadable content is a DataFormatError."""
    return parse_json(read_text(path), path)
