"""Training throughput of the project's batching against the tutorials' static padding.

Model: the packaged MiniLM (``QALightningModule(pretrained="minilm")``), fp32, AdamW (the
project's parameter groups). Data: real SQuAD v1.1 train features (the first ``--questions``
questions of the reconstructed train file), max_length 384, stride 128, batch 16.

- ``default``: dynamic padding to a multiple of 8 (``QACollator(tok)``) and
  ``LengthGroupedSampler`` (the datamodule's defaults);
- ``baseline``: every batch padded to 384 (``QACollator(tok, max_length=384)``), random order.

Same features, same model and optimizer (shared: throughput does not depend on the weights),
``--warmup`` untimed steps each, then ``--steps`` timed optimizer steps each, run in interleaved
chunks of ``--chunk`` steps so that load from other processes hits both alike. A step is
forward + ``span_loss`` + backward + ``optimizer.step``.

Usage: ``python bench/train_throughput.py [--questions 600 --steps 20 --warmup 2 --chunk 1]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from typing import Any

import torch
from _common import PhasePeakRss, emit, log, set_threads, squad_file
from torch.utils.data import DataLoader, RandomSampler, Sampler
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from qa_lightning.data.collate import QACollator
from qa_lightning.data.features import prepare_train_features
from qa_lightning.data.samplers import LengthGroupedSampler
from qa_lightning.data.sources import load_examples
from qa_lightning.model.module import DEFAULT_OPTIMIZER, QALightningModule, span_loss
from qa_lightning.model.optim import build_optimizer
from qa_lightning.paths import minilm_dir

MAX_LENGTH, STRIDE, BATCH, SEED = 384, 128, 16, 42
SPEEDUP_TARGET = 1.8
VARIANTS = ("default", "baseline")


def load_features(tok: PreTrainedTokenizerBase, questions: int) -> list[dict[str, Any]]:
    """Train features of the first ``questions`` questions, one dict per feature."""
    examples = load_examples(squad_file("train-v1.1.reconstructed.json.gz"))
    examples = examples.select(range(min(questions, len(examples))))
    columns = prepare_train_features(examples.to_dict(), tok, MAX_LENGTH, STRIDE)
    n = len(columns["input_ids"])
    return [{k: v[i] for k, v in columns.items()} for i in range(n)]


def make_loader(
    tok: PreTrainedTokenizerBase, features: list[dict[str, Any]], variant: str
) -> DataLoader:
    """The batches of ``variant``: project defaults or static padding in random order."""
    sampler: Sampler[int]
    if variant == "default":
        lengths = [len(f["input_ids"]) for f in features]
        sampler = LengthGroupedSampler(lengths, BATCH, seed=SEED)
        collator = QACollator(tok)
    else:
        sampler = RandomSampler(features, generator=torch.Generator().manual_seed(SEED))
        collator = QACollator(tok, max_length=MAX_LENGTH)
    return DataLoader(features, batch_size=BATCH, sampler=sampler, collate_fn=collator)


def endless(loader: DataLoader) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of ``loader``, epoch after epoch."""
    while True:
        yield from loader


def train_step(module: QALightningModule, optimizer: torch.optim.Optimizer, batch: dict) -> float:
    """One optimizer step: forward, span loss, backward, step."""
    optimizer.zero_grad(set_to_none=True)
    start, end = module(batch)
    loss = span_loss(start, end, batch["start_positions"], batch["end_positions"])
    loss.backward()
    optimizer.step()
    return float(loss.detach())


class Tally:
    """Timed steps of one variant: seconds, features, padded lengths."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.features = 0
        self.lengths: list[int] = []

    def summary(self) -> dict[str, float]:
        return {
            "features_per_second": self.features / self.seconds,
            "seconds": self.seconds,
            "features": self.features,
            "steps": len(self.lengths),
            "mean_padded_length": sum(self.lengths) / len(self.lengths),
        }


def run_chunk(
    module: QALightningModule,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[dict],
    steps: int,
    tally: Tally | None,
) -> None:
    """``steps`` optimizer steps; timed into ``tally`` unless it is None (warm-up)."""
    for _ in range(steps):
        batch = next(batches)  # collation is outside the timed region (a loader worker's job)
        start = time.perf_counter()
        train_step(module, optimizer, batch)
        if tally is not None:
            tally.seconds += time.perf_counter() - start
            tally.features += batch["input_ids"].size(0)
            tally.lengths.append(batch["input_ids"].size(1))


def log_progress(done: int, total: int, tallies: dict[str, Tally], every: int = 5) -> None:
    if done % every == 0 or done == total:
        rates = (f"{v} {t.features / t.seconds:.1f} features/s" for v, t in tallies.items())
        log(f"{done}/{total} steps: " + ", ".join(rates))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=600)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=1)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    set_threads(2)
    torch.manual_seed(SEED)
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    features = load_features(tok, args.questions)
    log(f"{args.questions} questions -> {len(features)} features")
    module = QALightningModule(pretrained="minilm")
    module.train()
    optimizer = build_optimizer(module.model, DEFAULT_OPTIMIZER)
    batches = {v: endless(make_loader(tok, features, v)) for v in VARIANTS}
    tallies = {v: Tally() for v in VARIANTS}
    with PhasePeakRss() as rss:
        for variant in VARIANTS:
            rss.switch(variant)
            run_chunk(module, optimizer, batches[variant], args.warmup, None)
        done = 0
        while done < args.steps:
            n = min(args.chunk, args.steps - done)
            for variant in VARIANTS:
                rss.switch(variant)
                run_chunk(module, optimizer, batches[variant], n, tallies[variant])
            done += n
            log_progress(done, args.steps, tallies)
    default, baseline = (tallies[v].summary() for v in VARIANTS)
    emit(
        {
            "benchmark": "train_throughput",
            "model": "minilm (packaged all-MiniLM-L6-v2), fp32, AdamW",
            "features_total": len(features),
            "default_features_per_second": default["features_per_second"],
            "baseline_features_per_second": baseline["features_per_second"],
            "speedup": default["features_per_second"] / baseline["features_per_second"],
            "speedup_target": SPEEDUP_TARGET,
            "default_mean_padded_length": default["mean_padded_length"],
            "baseline_mean_padded_length": baseline["mean_padded_length"],
            "default_peak_rss_mb": rss.peaks["default"],
            "baseline_peak_rss_mb": rss.peaks["baseline"],
            "rss_method": (
                "peak process RSS (/proc/self/statm sampled every 5 ms by a thread) while each "
                "variant's steps ran, heap trimmed (malloc_trim) before each; includes the "
                "shared model, gradients and AdamW state, so the difference is activations"
            ),
            "default": default,
            "baseline": baseline,
            "steps_each": args.steps,
            "warmup_steps_each": args.warmup,
            "threads": torch.get_num_threads(),
        }
    )


if __name__ == "__main__":
    main()
