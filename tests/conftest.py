"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(
    os.environ.get("QA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared reference data directory (``$QA_SHARED_DATA``); skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared reference data not found at {SHARED_DATA} (set QA_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, shared_data: Path) -> Path:
    """A tiny random BERT (WordPiece trained on dev-v1.1 text), saved once for the session."""
    from helpers.app import texts_of
    from helpers.tiny_backbones import save_tiny_backbone

    texts = texts_of(shared_data / "squad" / "dev-v1.1.json.gz")
    return save_tiny_backbone("bert", texts, tmp_path_factory.mktemp("tiny") / "bert")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under ``tests/integration/`` carries the ``integration`` marker."""
    integration = Path(__file__).resolve().parent / "integration"
    for item in items:
        if integration in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)
