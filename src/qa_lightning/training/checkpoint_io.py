"""``AtomicCheckpointIO``: checkpoints written to a temporary file, fsynced, renamed into place."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from qa_lightning.errors import QALightningError
from qa_lightning.utils.io import atomic_write, describe_os_error


class CheckpointWriteError(QALightningError, OSError):
    """A checkpoint could not be written (disk full, directory not writable, ...)."""


def _is_local(path: str | os.PathLike[str]) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file beside the target, fsync, then rename over the target.

    Lightning's own save goes through an fsspec transaction whose temporary file lives in the
    system temp directory: on another file system its commit is a copy into the target, which a
    crash or a full disk can leave half-written. Remote paths (``s3://`` ...) keep Lightning's save.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options: Any = None
    ) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(str(path).removeprefix("file://"))
        try:
            atomic_write(target, lambda tmp: torch.save(checkpoint, tmp))
        except OSError as err:
            kept = "the previous file is intact" if target.exists() else "nothing was written"
            raise CheckpointWriteError(
                f"could not write the checkpoint {target}: {describe_os_error(err)}; {kept}. "
                f"Free space or fix permissions in {target.parent} (or write elsewhere with "
                "hydra.run.dir=...), then resume with ckpt_path=last."
            ) from err

    def load_checkpoint(
        self,
        path: str | os.PathLike[str],
        map_location: Any = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Load with ``weights_only=True`` (tensors and plain values only) unless told otherwise."""
        return super().load_checkpoint(
            path,
            map_location=map_location,
            weights_only=True if weights_only is None else weights_only,
        )
