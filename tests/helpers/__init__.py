"""Test helpers shared by the test suites and bench/: configs, data slices, tiny models, references."""

from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO = TESTS_DIR.parent
