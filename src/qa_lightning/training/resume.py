"""What a training run resumes from: ``ckpt_path`` as given, or the newest checkpoint."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIX = ".ckpt"


def newest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The most recently written ``*.ckpt`` of ``directory`` (``last.ckpt`` wins a tie)."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    candidates = [
        p
        for p in directory.glob(f"*{CHECKPOINT_SUFFIX}")
        if p.is_file() and not p.name.startswith(".")
    ]
    if not candidates:
        return None
    return max(
        candidates, key=lambda p: (p.stat().st_mtime_ns, p.name == f"last{CHECKPOINT_SUFFIX}")
    )


def resume_checkpoint(
    ckpt_path: str | None, auto_resume: bool, checkpoint_dir: str | os.PathLike[str]
) -> str | None:
    """What ``trainer.fit`` resumes from: ``ckpt_path`` as given, else with ``auto_resume`` the
    newest checkpoint of ``checkpoint_dir`` (None: start afresh)."""
    if ckpt_path is not None or not auto_resume:
        return ckpt_path
    newest = newest_checkpoint(checkpoint_dir)
    if newest is None:
        log.info("auto_resume: no checkpoint in %s; starting afresh", checkpoint_dir)
        return None
    log.info("auto_resume: resuming from %s", newest)
    return str(newest)
