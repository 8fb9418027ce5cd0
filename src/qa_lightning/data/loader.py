"""``ResumableDataLoader``: a training loader whose pass can start mid-epoch, for exact resumes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader

log = logging.getLogger(__name__)


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
