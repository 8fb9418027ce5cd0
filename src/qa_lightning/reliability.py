"""Fault tolerance: atomic checkpoints, exact mid-epoch resume, a non-finite loss guard, clear I/O errors.

- :class:`AtomicCheckpointIO` (a Trainer plugin) writes every checkpoint to a temporary file in the
  target directory, fsyncs it and renames it over the target: a crash or a full disk leaves the
  previous checkpoint intact. Write failures become a :class:`CheckpointWriteError` that names the
  file and the cause. Checkpoints load with ``weights_only=True`` unless asked otherwise.
- :class:`ResumableDataLoader` and :class:`RNGStateCheckpoint` make a mid-epoch restart exact:
  the loader skips the batches of the epoch already trained on (Lightning restores the loop's
  progress), and the random generators continue where they were (dropout masks included).
- :class:`FiniteLossGuard` stops training at the first NaN or infinite loss, before the backward
  pass, so no weights or checkpoints are ever written from it.
- :func:`resume_checkpoint` finds what ``ckpt_path`` / ``auto_resume`` resume from.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from qa_lightning.errors import QALightningError
from qa_lightning.utils.io import atomic_write

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIX = ".ckpt"
TEMP_SUFFIX = ".tmp"


class CheckpointWriteError(QALightningError, OSError):
    """A checkpoint could not be written (disk full, directory not writable, ...)."""


class NonFiniteLossError(QALightningError, FloatingPointError):
    """The training loss became NaN or infinite."""


# ------------------------------------------------------------------------------------ disk I/O
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


# ------------------------------------------------------------------------- mid-epoch resume
class _SkipFirst:
    """An index sampler whose first pass starts ``skip`` items in (later passes are whole).

    The skip is taken when a pass yields its first item, not when the pass is created: torch's
    multi-process iterator creates a pass and replaces it before using it.
    """

    def __init__(self, sampler: Any, skip: int) -> None:
        self.sampler = sampler
        self.skip = skip

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Any]:
        skip, self.skip = self.skip, 0
        iterator = iter(self.sampler)
        for _ in range(skip):
            next(iterator, None)
        yield from iterator


class _Pass(Iterator[Any]):
    """One pass over a :class:`ResumableDataLoader`, started at its first ``next()``.

    Lightning creates the training iterator early (before restoring a checkpoint's loop state
    and before ``set_epoch``); starting lazily lets the pass see both.
    """

    def __init__(self, loader: ResumableDataLoader) -> None:
        self.loader = loader
        self.inner: Iterator[Any] | None = None

    def __next__(self) -> Any:
        if self.inner is None:
            self.inner = self.loader._start_pass()
        batch = next(self.inner)
        self.loader._position += 1
        return batch


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` whose passes can start mid-epoch, for an exact restart after a crash.

    A pass starts (at its first batch) ``progress()`` batches in: the number of batches of the
    current epoch the fit loop has already trained on, which Lightning restores from a
    checkpoint (0 in a fresh epoch). Those batches' indices are skipped; nothing is loaded or
    collated for them. Without ``progress``, the count comes from ``load_state_dict`` (Lightning
    saves ``state_dict()`` in every checkpoint). An exact restart also needs an order that
    depends only on the epoch, as the samplers of :mod:`qa_lightning.data.samplers`, and a
    ``generator`` of its own (torch draws each pass's worker seed from it, else from the global
    random state, which a resumed run restores).
    """

    def __init__(self, *args: Any, progress: Callable[[], int] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.progress = progress
        self._position = 0
        self._pending = 0
        self._skip_now = 0

    def state_dict(self) -> dict[str, int]:
        return {"batches_consumed": self._position}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = int(state_dict.get("batches_consumed", 0))

    @property
    def _index_sampler(self) -> Any:  # read by torch when it creates a pass
        sampler = super()._index_sampler
        return _SkipFirst(sampler, self._skip_now) if self._skip_now else sampler

    def __iter__(self) -> Iterator[Any]:
        return _Pass(self)

    def _start_pass(self) -> Iterator[Any]:
        skip = self.progress() if self.progress is not None else self._pending
        self._pending = 0
        if skip:
            log.info("Resuming the training data mid-epoch: skipping %d trained batches", skip)
            if self._iterator is not None:  # persistent workers keep their sampler: renew them
                shutdown = getattr(self._iterator, "_shutdown_workers", None)
                if shutdown is not None:
                    shutdown()
                self._iterator = None
        self._skip_now = skip
        try:
            inner = super().__iter__()
        finally:
            self._skip_now = 0
        self._position = skip
        return inner


class RNGStateCheckpoint(Callback):
    """Save the Python, NumPy and torch (CPU and CUDA) random states; restore them on resume.

    Restored when training starts (after the data iterators exist), so dropout continues exactly
    as in an uninterrupted run. The state is plain values and tensors (``weights_only``-loadable).
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        state: dict[str, Any] = {
            "python": random.getstate(),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        state, self._pending = self._pending, None
        if not state:
            return
        python = state["python"]
        random.setstate((python[0], tuple(python[1]), python[2]))
        kind, keys, *rest = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        log.info("Restored the random generators' states from the checkpoint")


# ---------------------------------------------------------------------------- loss guard
class FiniteLossGuard(Callback):
    """Stop at the first NaN or infinite training loss, naming the global step.

    Checked before the backward pass, so the optimizer never steps on it and no checkpoint is
    written from it: the newest checkpoint stays the last good one. Under DDP every process stops
    together. Gradient overflow under fp16 mixed precision does not reach this check (the loss is
    finite; the precision plugin's gradient scaler skips that step and lowers its scale).
    """

    def on_before_backward(
        self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor
    ) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):
            return
        epoch_loop = trainer.fit_loop.epoch_loop
        where = (
            f"global step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}, batch {epoch_loop.batch_idx})"
        )
        value = (
            float(loss.detach().float().flatten()[0])
            if bad
            else "finite here, not on another process"
        )
        raise NonFiniteLossError(
            f"the training loss is {value} at {where}: training stopped before this step's "
            f"update, so no weights or checkpoints come from it. {_last_good(trainer)} Lower the "
            "learning rate, check the data, or use precision=32-true / bf16-mixed."
        )


def _last_good(trainer: Trainer) -> str:
    paths = {
        Path(p)
        for cb in trainer.checkpoint_callbacks
        if isinstance(cb, ModelCheckpoint)
        for p in (cb.last_model_path, cb.best_model_path)
        if p
    }
    existing = [p for p in paths if p.is_file()]
    if not existing:
        return "No checkpoint was written yet."
    newest = max(existing, key=lambda p: p.stat().st_mtime_ns)
    return f"The newest good checkpoint is {newest}."


# ------------------------------------------------------------------------------- resuming
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
