"""``task_wrapper``: what every Hydra entry point does around its task, in one place.

Fails before any work on a missing required value, applies the local models folder
(``paths.models_dir``), tunes the allocator, proves the output
directory writable (rank 0), and in a multirun records a failing job and lets the sweep go on.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator
from typing import TypeVar

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from qa_lightning.errors import QALightningError
from qa_lightning.hub import set_models_dir
from qa_lightning.training.launcher import sweep_job
from qa_lightning.training.sweep import guard_multirun_job
from qa_lightning.utils.io import ensure_writable
from qa_lightning.utils.malloc import keep_freed_memory

T = TypeVar("T")


def check_required(cfg: DictConfig) -> None:
    """Fail before any work when a required (``???``) value was not given."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise QALightningError(
            f"missing required config values: {', '.join(missing)}; set them as overrides, "
            f"e.g. {missing[0]}=..."
        )


def task_wrapper(task: Callable[[DictConfig], T]) -> Callable[[DictConfig], T | None]:
    """``task(cfg)`` with the checks and fault isolation every entry point shares.

    Returns the task's result; in a multirun, ``None`` for a job that failed (recorded in its
    ``failure.json``). A single run re-raises: the command-line ``main`` functions turn a project
    error into its message alone (:func:`exit_on_project_error`); library callers get the error.
    """

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> T | None:
        with guard_multirun_job(cfg) as outcome:
            check_required(cfg)
            set_models_dir(cfg.paths.get("models_dir"))
            if cfg.get("keep_freed_memory", True):
                keep_freed_memory()
            if rank_zero_only.rank == 0:
                ensure_writable(cfg.paths.output_dir)
            with sweep_job(cfg):  # a sweep job's ranks: one config, one outcome, clean ends
                outcome.value = task(cfg)
        return outcome.value

    return wrapped


@contextlib.contextmanager
def exit_on_project_error() -> Iterator[None]:
    """A project error (``QALightningError``: it names the file, field and question id) prints
    its message alone and exits 1; ``HYDRA_FULL_ERROR=1`` lets it raise, with the traceback."""
    try:
        yield
    except QALightningError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"Error: {err}\n(HYDRA_FULL_ERROR=1 shows the traceback)", file=sys.stderr)
        raise SystemExit(1) from None
