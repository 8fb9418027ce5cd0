"""Checkpoint compatibility: the format version, the last release's format, other backbones."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from transformers import BertConfig, RobertaConfig

from qa_lightning.errors import QALightningError
from qa_lightning.inference.loading import load_module
from qa_lightning.model.checkpoint_format import FORMAT_KEY, FORMAT_VERSION
from qa_lightning.model.module import QALightningModule
from qa_lightning.model.optim import from_spec

# Written by qa_lightning as released before the restructure (c3fb277) with
# tests/fixtures/make_checkpoint_format1.py: a 1-layer BERT, 2 training steps.
FORMAT1 = Path(__file__).resolve().parents[2] / "fixtures" / "checkpoint_format1.ckpt"
SCHEDULER = {"_target_": "qa_lightning.model.optim.linear_warmup_decay", "warmup_ratio": 0.1}


def tiny(tmp_path: Path, name: str, config) -> QALightningModule:
    config.save_pretrained(tmp_path / name)
    return QALightningModule(pretrained=str(tmp_path / name), random_init=True, scheduler=SCHEDULER)


def bert(hidden: int = 8) -> BertConfig:
    return BertConfig(
        vocab_size=64,
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=32,
    )


def batches() -> torch.utils.data.DataLoader:
    ids = torch.randint(5, 60, (4, 16), generator=torch.Generator().manual_seed(0))
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
        "start_positions": torch.tensor([1, 2, 3, 0]),
        "end_positions": torch.tensor([2, 3, 4, 0]),
    }
    return torch.utils.data.DataLoader([batch, batch], batch_size=None)


def trainer(root: Path, max_steps: int) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=root,
    )


def save(module: QALightningModule, path: Path) -> Path:
    run = trainer(path.parent, 1)
    run.fit(module, train_dataloaders=batches())
    run.save_checkpoint(path)
    return path


def test_current_checkpoints_carry_the_format_version(tmp_path: Path) -> None:
    path = save(tiny(tmp_path, "bert", bert()), tmp_path / "now.ckpt")
    assert torch.load(path, weights_only=True)[FORMAT_KEY] == FORMAT_VERSION


def test_last_release_checkpoint_loads_and_resumes(tmp_path: Path) -> None:
    saved = torch.load(FORMAT1, weights_only=True)
    assert FORMAT_KEY not in saved
    assert saved["hyper_parameters"]["scheduler"]["_target_"].startswith("qa_lightning.optim.")
    module = load_module(FORMAT1)
    assert module.hparams.scheduler == SCHEDULER  # moved to the module's current place
    assert callable(from_spec(module.hparams.scheduler))
    for name, value in saved["state_dict"].items():
        torch.testing.assert_close(module.state_dict()[name], value)
    run = trainer(tmp_path, 3)  # training goes on from it: step 2 -> 3
    run.fit(module, train_dataloaders=batches(), ckpt_path=FORMAT1)
    assert run.global_step == 3


def test_newer_format_names_its_version(tmp_path: Path) -> None:
    checkpoint = torch.load(FORMAT1, weights_only=True)
    checkpoint[FORMAT_KEY] = FORMAT_VERSION + 1
    torch.save(checkpoint, tmp_path / "future.ckpt")
    with pytest.raises(QALightningError, match=f"format version {FORMAT_VERSION + 1} .*newer"):
        load_module(tmp_path / "future.ckpt")


@pytest.mark.parametrize(
    ("other", "message"),
    [
        (
            RobertaConfig(
                vocab_size=64,
                hidden_size=8,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=16,
                max_position_embeddings=40,
            ),
            "another backbone than this model \\(roberta\\)",
        ),
        (bert(hidden=16), "does not fit this model: .* weight\\(s\\) differ"),
    ],
    ids=["other-backbone", "other-shapes"],
)
def test_resuming_into_another_model_fails_clearly(tmp_path: Path, other, message: str) -> None:
    path = save(tiny(tmp_path, "bert", bert()), tmp_path / "bert.ckpt")
    module = tiny(tmp_path, "other", other)
    with pytest.raises(QALightningError, match=message) as err:
        trainer(tmp_path, 3).fit(module, train_dataloaders=batches(), ckpt_path=path)
    assert "format version 2" in str(err.value) and "size mismatch" not in str(err.value)
