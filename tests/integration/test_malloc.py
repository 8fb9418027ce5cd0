"""Keeping freed memory: large tensors come back from the heap instead of fresh mmaps."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import sys, torch
from qa_lightning.utils.malloc import keep_freed_memory

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

tuned = keep_freed_memory() if sys.argv[1] == "tuned" else False
block = torch.ones(64 * 2**20 // 4)  # 64 MiB
before = rss_mb()
del block
print(tuned, before - rss_mb())
"""


def _freed_mb(mode: str) -> tuple[bool, float]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", float(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc options")
def test_freed_tensor_memory_stays_in_the_process_only_when_tuned() -> None:
    tuned, kept_back = _freed_mb("tuned")
    _, returned = _freed_mb("default")
    assert tuned
    assert returned > 60  # glibc gave the 64 MiB block back to the system at once...
    assert kept_back < 4  # ...and keeps it for the next step's tensors once tuned
