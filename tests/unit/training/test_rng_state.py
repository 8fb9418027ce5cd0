"""``RNGStateCheckpoint`` under DDP: each rank restores its own random states."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from qa_lightning.training.callbacks.rng_state import RNGStateCheckpoint


def test_each_rank_restores_its_own_states() -> None:
    callback = RNGStateCheckpoint()
    torch.manual_seed(0)
    rank0 = callback.state_dict()
    torch.rand(1000)  # rank 1 drew more numbers than rank 0 (a larger batch under dropout)
    rank1 = callback.state_dict()
    expected = torch.rand(3)
    callback.load_state_dict({"ranks": [rank0, rank1]})
    torch.manual_seed(123)
    callback.on_train_start(SimpleNamespace(world_size=2, global_rank=1), None)
    assert torch.equal(torch.rand(3), expected)


def test_another_world_size_falls_back_to_rank_0_with_a_warning(caplog) -> None:
    callback = RNGStateCheckpoint()
    torch.manual_seed(0)
    rank0 = callback.state_dict()
    expected = torch.rand(3)
    callback.load_state_dict({"ranks": [rank0, callback.state_dict()]})
    callback.on_train_start(SimpleNamespace(world_size=1, global_rank=0), None)
    assert torch.equal(torch.rand(3), expected)
    assert "random states of 2 processes, this run has 1" in caplog.text
