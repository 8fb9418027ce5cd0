"""Training orders: length-aware (less padding per batch, so fewer wasted FLOPs) or plain random.

Both depend only on ``(seed, epoch)``, never on the global random state, so a run restarted
mid-epoch sees the same order (see :class:`qa_lightning.data.loader.ResumableDataLoader`).
"""

from __future__ import annotations

from collections.abc import Iterator

import datasets
import numpy as np
from torch.utils.data import Sampler


class LengthGroupedSampler(Sampler[int]):
    """Random order in which neighbouring features have similar lengths.

    Like ``transformers``' ``group_by_length``: a seeded random permutation is cut into mega-batches
    of ``mega_batch_factor * batch_size`` features, each sorted by length (longest first), and the
    resulting batches are shuffled, so every batch holds features of similar length while the
    epoch order stays random. A new order every epoch (``set_epoch`` or each new iteration).
    """

    def __init__(
        self, lengths: np.ndarray, batch_size: int, seed: int = 0, mega_batch_factor: int = 50
    ) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.mega_batch_size = max(batch_size, mega_batch_factor * batch_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        order = rng.permutation(len(self.lengths))
        batches: list[np.ndarray] = []
        for start in range(0, len(order), self.mega_batch_size):
            mega = order[start : start + self.mega_batch_size]
            mega = mega[np.argsort(-self.lengths[mega], kind="stable")]
            batches.extend(
                mega[i : i + self.batch_size] for i in range(0, len(mega), self.batch_size)
            )
        for index in rng.permutation(len(batches)):
            yield from batches[index].tolist()


class SeededRandomSampler(Sampler[int]):
    """A random permutation per epoch drawn from ``(seed, epoch)`` (``set_epoch`` or each new pass)."""

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        yield from rng.permutation(self.num_samples).tolist()


def sorted_by_length(features: datasets.Dataset, lengths: np.ndarray) -> datasets.Dataset:
    """The features ordered longest first (decoding keys on ``example_index``, so order is free)."""
    return features.select(np.argsort(-np.asarray(lengths), kind="stable"))
