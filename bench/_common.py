"""Helpers shared by the benchmark scripts: shared-data location, timing, output.

Every benchmark prints progress to stderr and exactly one JSON object as the last line of
stdout. Import it from a script in ``bench/`` as ``from _common import ...`` (the script's folder
is on ``sys.path`` when it is run as ``python bench/x.py``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
# The test helpers package (references, tiny models) serves the benchmarks too.
if str(REPO / "tests") not in sys.path:
    sys.path.append(str(REPO / "tests"))
T = TypeVar("T")


def log(*parts: object) -> None:
    """Progress line on stderr (stdout is reserved for the final JSON)."""
    print("[bench]", *parts, file=sys.stderr, flush=True)


def shared_data_dir() -> Path:
    """``$QA_SHARED_DATA`` or ``<repo>/../shared/data``."""
    return Path(os.environ.get("QA_SHARED_DATA") or REPO.parent / "shared" / "data")


def squad_file(name: str) -> Path:
    """A file of the shared SQuAD data, or exit with a clear message when it is absent."""
    path = shared_data_dir() / "squad" / name
    if not path.is_file():
        sys.exit(
            f"Shared data file not found: {path}\n"
            "Set QA_SHARED_DATA to the folder holding squad/ (default <repo>/../shared/data)."
        )
    return path


def set_threads(n: int = 2) -> None:
    """Pin torch's intra-op threads (the machine is shared: compare ratios, not absolute times)."""
    import torch

    torch.set_num_threads(n)


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()`` and its wall-clock seconds."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def best_of(fn: Callable[[], T], repeats: int) -> tuple[T, float]:
    """The result of the last call and the minimum seconds over ``repeats`` calls (less noise)."""
    best = float("inf")
    result: Any = None
    for _ in range(repeats):
        result, seconds = timed(fn)
        best = min(best, seconds)
    return result, best


def median_of(fn: Callable[[], T], repeats: int) -> tuple[T, float, list[float]]:
    """The result of the last call, the median seconds over ``repeats`` calls, and every call's."""
    runs = []
    result: Any = None
    for _ in range(repeats):
        result, seconds = timed(fn)
        runs.append(seconds)
    return result, statistics.median(runs), runs


def current_rss_mb() -> float:
    """Resident set size of this process now, in MiB (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def max_rss_mb() -> float:
    """Peak RSS of this process so far (``getrusage`` ``ru_maxrss``), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so the next phase's RSS starts clean."""
    # Not glibc: nothing to trim, and RSS may then carry over between phases.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PhasePeakRss:
    """Peak resident set size per named phase, sampled from ``/proc/self/statm`` in a thread.

    ``ru_maxrss`` never goes down, so phases of one process cannot each get their own peak from
    it; sampling can. ``switch(name)`` trims the heap (``malloc_trim``) and starts attributing
    samples to ``name``. Use as a context manager around all phases.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peaks: dict[str, float] = {}
        self.phase: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        if self.phase is not None:
            rss = current_rss_mb()
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def switch(self, phase: str | None) -> None:
        """Close the current phase (last sample), trim the heap, and start ``phase``."""
        self._sample()
        self.phase = None
        malloc_trim()
        self.phase = phase
        self._sample()

    def __enter__(self) -> PhasePeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.switch(None)
        self._stop.set()
        self._thread.join()


def rounded(value: Any, digits: int = 4) -> Any:
    """Floats rounded (recursively in dicts and lists) for a readable JSON line."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, digits) for v in value]
    return value


def emit(result: dict[str, Any]) -> None:
    """Print ``result`` as the last line of stdout (one JSON object), with the load average.

    ``load_average`` (1, 5, 15 min) tells how busy the shared machine was: ratios measured in
    one run hold up under load, absolute times do not.
    """
    result = {**result, "load_average": list(os.getloadavg())}
    sys.stdout.flush()
    print(json.dumps(rounded(result), sort_keys=False), flush=True)


def train_with_hf_trainer(
    model: Any, dataset: Any, output_dir: str | Path, callback: Any, **training_args: Any
) -> Any:
    """Train ``model`` on ``dataset`` with the Hugging Face ``Trainer`` as a timing baseline:
    ``default_data_collator``, ``callback`` for the timing, and nothing besides training (no
    saving, evaluation, logging, reporting, progress bar or loader workers). Returns its
    ``TrainingArguments``."""
    from transformers import Trainer, TrainingArguments, default_data_collator

    args = TrainingArguments(
        output_dir=str(output_dir),
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        **training_args,
    )
    Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=default_data_collator,
        callbacks=[callback],
    ).train()
    return args
