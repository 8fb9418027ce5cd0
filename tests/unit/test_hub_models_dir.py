"""The local models folder (``paths.models_dir``): hub names resolve to folders on disk first."""

from __future__ import annotations

import shutil

import pytest

from qa_lightning.errors import OfflineError, QALightningError
from qa_lightning.hub import (
    MODELS_DIR_ENV,
    load_config,
    load_tokenizer,
    models_dir,
    resolve_pretrained,
    set_models_dir,
)
from qa_lightning.model.backbone import load_qa_model


@pytest.fixture(autouse=True)
def _no_models_dir(monkeypatch):
    monkeypatch.delenv(MODELS_DIR_ENV, raising=False)
    set_models_dir(None)
    yield
    set_models_dir(None)


def test_both_layouts_resolve_for_model_and_tokenizer(shared_models, tmp_path, monkeypatch):
    flat = tmp_path / "flat"
    shutil.copytree(shared_models / "roberta-base", flat / "roberta-base")
    nested = tmp_path / "nested"
    shutil.copytree(shared_models / "deberta-v3-base", nested / "microsoft" / "deberta-v3-base")

    set_models_dir(flat)
    assert resolve_pretrained("FacebookAI/roberta-base") == str(flat / "roberta-base")
    assert resolve_pretrained("roberta-base") == str(flat / "roberta-base")
    assert load_tokenizer("roberta-base").is_fast
    assert load_config("roberta-base").model_type == "roberta"

    set_models_dir(None)
    monkeypatch.setenv(MODELS_DIR_ENV, str(nested))
    assert models_dir() == nested.resolve()
    assert resolve_pretrained("microsoft/deberta-v3-base") == str(
        nested / "microsoft" / "deberta-v3-base"
    )
    assert resolve_pretrained("deberta-v3-base") == str(nested / "microsoft" / "deberta-v3-base")
    assert type(load_tokenizer("microsoft/deberta-v3-base")).__name__.startswith("DebertaV2")


def test_missing_models_dir_and_offline_error_name_it(tmp_path, monkeypatch):
    with pytest.raises(QALightningError, match=r"local models folder .* does not exist"):
        set_models_dir(tmp_path / "nope")
    set_models_dir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="not in the local models folder"):
        load_config("someone/not-a-model-here")


def test_folder_without_weights_names_it_and_random_init(shared_models):
    folder = shared_models / "bert-base-uncased"
    with pytest.raises(QALightningError, match="holds no model weights") as err:
        load_qa_model(str(folder))
    assert str(folder) in str(err.value) and "model.random_init=true" in str(err.value)
    set_models_dir(shared_models)
    with pytest.raises(QALightningError, match=r"'bert-base-uncased'.*model.random_init=true"):
        load_qa_model("bert-base-uncased")
