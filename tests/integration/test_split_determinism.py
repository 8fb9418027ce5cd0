"""Seeded splits are the same in every process, whatever its hash seed (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import TESTS_DIR
from helpers.examples import make_dataset
from qa_lightning.data.splits import split_examples

SPLIT_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from helpers.examples import make_dataset
from qa_lightning.data.splits import split_examples
splits = split_examples(make_dataset(), {"a": 50, "b": 30}, seed=11, by=sys.argv[2])
print(json.dumps({name: list(split["id"]) for name, split in splits.items()}))
"""


@pytest.mark.parametrize("by", ["example", "title"])
def test_splits_identical_across_processes(by: str) -> None:
    tests_dir = str(TESTS_DIR)
    outputs = [
        subprocess.run(
            [sys.executable, "-c", SPLIT_SCRIPT, tests_dir, by],
            env={**os.environ, "PYTHONHASHSEED": str(hash_seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hash_seed in (1, 2)
    ]
    here = split_examples(make_dataset(), {"a": 50, "b": 30}, seed=11, by=by)
    assert (
        json.loads(outputs[0])
        == json.loads(outputs[1])
        == {n: list(s["id"]) for n, s in here.items()}
    )
