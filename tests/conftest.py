"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(
    os.environ.get("QA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)

SHARED_MODELS = Path(
    os.environ.get("QA_SHARED_MODELS", Path(__file__).resolve().parents[2] / "shared" / "models")
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared reference data directory (``$QA_SHARED_DATA``); skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared reference data not found at {SHARED_DATA} (set QA_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_models() -> Path:
    """The published tokenizer files and configs of the backbones (``$QA_SHARED_MODELS``, no
    weights); skips the test when absent."""
    if not SHARED_MODELS.is_dir():
        pytest.skip(f"shared model files not found at {SHARED_MODELS} (set QA_SHARED_MODELS)")
    return SHARED_MODELS


@pytest.fixture(scope="session")
def minilm_tokenizer():
    """The packaged MiniLM tokenizer, loaded once for the session (do not change its settings)."""
    from helpers.tokenizers import minilm_tokenizer

    return minilm_tokenizer()


@pytest.fixture(scope="session")
def tiny_backbones(tmp_path_factory, shared_data: Path) -> dict[str, Path]:
    """A tiny random model of each family (BERT, RoBERTa, DeBERTa-v2, Longformer) with a tokenizer
    trained on dev-v1.1 text, saved once for the session: ``{family: directory}``."""
    import torch

    from helpers.app import texts_of
    from helpers.tiny_backbones import FAMILIES, save_tiny_backbone

    torch.manual_seed(0)  # random weights, the same every session
    texts = texts_of(shared_data / "squad" / "dev-v1.1.json.gz")
    root = tmp_path_factory.mktemp("tiny")
    return {family: save_tiny_backbone(family, texts, root / family) for family in FAMILIES}


@pytest.fixture(scope="session")
def tiny_bert(tiny_backbones: dict[str, Path]) -> Path:
    """The tiny random BERT of :func:`tiny_backbones`."""
    return tiny_backbones["bert"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under ``tests/integration/`` carries the ``integration`` marker."""
    integration = Path(__file__).resolve().parent / "integration"
    for item in items:
        if integration in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)
