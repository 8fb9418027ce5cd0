"""Training throughput: the project's own training path against the Hugging Face ``Trainer`` recipe.

Both sides train the packaged MiniLM (fresh QA head, seed 42) on the same real SQuAD v1.1 train
questions (the CPU protocol's selection: ``train-v1.1.reconstructed`` shuffled with 42, first
``--questions``), batch 16, AdamW lr 1e-4, weight decay 0.01, linear schedule without warmup,
max_length 384, stride 128, gradient clipping 1.0 (both defaults):

- ``hf``: ``transformers.Trainer`` with the ``run_qa.py`` recipe: its ``prepare_train_features``
  (loaded from ``../shared/reference/hf_qa_example/``, padding to 384), ``default_data_collator``,
  the Trainer's default optimizer, ``max_steps``; no evaluation, no saving, no reporting.
- ``project``: what ``python -m qa_lightning`` runs: the composed Hydra ``train`` config
  (``data=files``, ``trainer=cpu``, the default callbacks and the CSV logger), built by
  ``qa_lightning.training.run.build`` and ``trainer.fit`` (dynamic padding, length-grouped batches).

Each side runs ``--warmup`` untimed optimizer steps then ``--steps`` timed ones (time from the end
of the last warm-up step to the end of the last step, measured by a callback), alternating
``hf, project, hf, project`` so load from other processes hits both alike; in fp32 and, where the
CPU has native bf16 (``avx512_bf16``/``amx_bf16``), in bf16 autocast. Peak RSS per run is sampled.
``speedup`` = project features/s over HF features/s in fp32 (sums over the rounds).
``--profile`` adds a torch profiler table (top ops by self CPU time) of a few steps of each side.

Usage: ``python bench/train_vs_hf.py [--questions 600 --steps 8 --warmup 2 --rounds 2]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import datasets
import torch
from _common import PhasePeakRss, emit, log, set_threads, squad_file, train_with_hf_trainer
from cpu_quality import shuffled_head, write_jsonl
from transformers import (
    AutoModelForQuestionAnswering,
    AutoTokenizer,
    TrainerCallback,
    set_seed,
)

from qa_lightning.data.sources import load_examples
from qa_lightning.paths import minilm_dir
from qa_lightning.utils.resolvers import cpu_has_fast_bf16

SEED, BATCH, LR, WEIGHT_DECAY = 42, 16, 1e-4, 0.01
MAX_LENGTH, STRIDE = 384, 128
SPEEDUP_TARGET = 3.0
PROTOCOL_FEATURES = 3032  # the CPU protocol's 3,000 questions as run_qa.py tokenizes them


class StepClock:
    """Wall-clock of the optimizer steps after ``warmup``, and the padded lengths seen."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start: float | None = None
        self.end = 0.0
        self.lengths: list[int] = []

    def step_done(self, step: int) -> None:
        if step == self.warmup:
            self.start = time.perf_counter()
        self.end = time.perf_counter()

    @property
    def seconds(self) -> float:
        assert self.start is not None, "the run stopped before the warm-up ended"
        return self.end - self.start


class HFClock(TrainerCallback):
    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.clock.step_done(state.global_step)


def hf_features(examples: datasets.Dataset, tok: Any) -> datasets.Dataset:
    """run_qa.py's train features (padded to 384) of ``examples``."""
    from helpers.hf_reference import prepare_functions

    prepare = prepare_functions(tok, MAX_LENGTH, STRIDE)["prepare_train_features"]
    return examples.map(prepare, batched=True, remove_columns=examples.column_names)


def run_hf(features: datasets.Dataset, steps: int, warmup: int, bf16: bool, out: Path) -> StepClock:
    """The HF ``Trainer`` for ``warmup + steps`` optimizer steps."""
    clock = StepClock(warmup)
    set_seed(SEED)
    model = AutoModelForQuestionAnswering.from_pretrained(minilm_dir())
    train_with_hf_trainer(
        model,
        features,
        out,
        HFClock(clock),
        per_device_train_batch_size=BATCH,
        learning_rate=LR,
        weight_decay=WEIGHT_DECAY,
        lr_scheduler_type="linear",
        max_steps=warmup + steps,
        bf16=bf16,
        use_cpu=True,
        seed=SEED,
    )
    clock.lengths = [MAX_LENGTH]  # default_data_collator: every row is padded to 384
    return clock


def run_project(
    train: Path, dev: Path, steps: int, warmup: int, bf16: bool, out: Path
) -> StepClock:
    """``python -m qa_lightning``'s recipe (composed config, ``build``, ``fit``) for the same steps."""
    import lightning

    from helpers.app import compose_run_cfg
    from qa_lightning.training.run import build

    clock = StepClock(warmup)

    class LightningClock(lightning.Callback):
        def on_train_batch_end(
            self, trainer: Any, module: Any, outputs: Any, batch: Any, i: int
        ) -> None:
            clock.lengths.append(int(batch["input_ids"].shape[1]))
            clock.step_done(trainer.global_step)

    overrides = [
        "data=files",
        f"data.train_file={train}",
        f"data.validation_file={dev}",
        f"data.batch_size={BATCH}",
        f"data.cache_dir={out / 'cache'}",
        "trainer=cpu",
        f"++trainer.max_steps={warmup + steps}",
        "++trainer.limit_val_batches=0",
        "++trainer.num_sanity_val_steps=0",
        f"trainer.precision={'bf16-mixed' if bf16 else '32-true'}",
        f"model.optimizer.lr={LR}",
        f"model.optimizer.weight_decay={WEIGHT_DECAY}",
        "model.scheduler.warmup_ratio=0.0",
        f"seed={SEED}",
        "evaluate=false",
        "save_hf_model=false",
    ]
    cfg = compose_run_cfg(overrides, out)
    datamodule, model, trainer = build(cfg)
    trainer.callbacks.append(LightningClock())
    trainer.fit(model, datamodule=datamodule)
    return clock


def profile_steps(label: str, fn: Any) -> None:
    """Top ops by self CPU time of ``fn()`` on stderr."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    log(f"profile {label}:\n{table}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=600)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-bf16", action="store_true", help="fp32 only")
    parser.add_argument("--profile", action="store_true")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    set_threads(2)
    examples = shuffled_head(
        load_examples(squad_file("train-v1.1.reconstructed.json.gz")), args.questions
    )
    dev = shuffled_head(load_examples(squad_file("dev-v1.1.json.gz")), 16)
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    hf_train = hf_features(examples, tok)
    needed = (args.warmup + args.steps) * BATCH
    if len(hf_train) < needed:
        raise SystemExit(f"{len(hf_train)} features < {needed} needed: raise --questions")
    precisions = ["fp32"] + ([] if args.no_bf16 or not cpu_has_fast_bf16() else ["bf16"])
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="qa_train_vs_hf_") as tmp:
        root = Path(tmp)
        train_file = write_jsonl(examples, root / "train.jsonl")
        dev_file = write_jsonl(dev, root / "dev.jsonl")
        sides = {
            "hf": lambda bf16, out: run_hf(hf_train, args.steps, args.warmup, bf16, out),
            "project": lambda bf16, out: run_project(
                train_file, dev_file, args.steps, args.warmup, bf16, out
            ),
        }
        with PhasePeakRss() as rss:
            for precision in precisions:
                bf16 = precision == "bf16"
                for round_ in range(args.rounds):
                    for side, run in sides.items():
                        name = f"{side}_{precision}"
                        rss.switch(f"{name}_{round_}")
                        clock = run(bf16, root / f"{name}_{round_}")
                        entry = results.setdefault(
                            name, {"seconds": [], "features": 0, "peak_rss_mb": 0.0, "lengths": []}
                        )
                        entry["seconds"].append(clock.seconds)
                        entry["features"] += args.steps * BATCH
                        entry["lengths"] += clock.lengths[args.warmup :] or clock.lengths
                        log(f"{name} round {round_}: {args.steps} steps in {clock.seconds:.1f}s")
            rss.switch(None)
            for name, entry in results.items():
                entry["peak_rss_mb"] = max(
                    v for k, v in rss.peaks.items() if k.startswith(f"{name}_")
                )
        if args.profile:
            profile_steps("hf", lambda: run_hf(hf_train, 3, 1, False, root / "prof_hf"))
            profile_steps(
                "project", lambda: run_project(train_file, dev_file, 3, 1, False, root / "prof_p")
            )
    summary: dict[str, Any] = {}
    for name, entry in results.items():
        summary[name] = {
            "features_per_second": entry["features"] / sum(entry["seconds"]),
            "seconds_per_round": entry["seconds"],
            "peak_rss_mb": entry["peak_rss_mb"],
            "mean_padded_length": sum(entry["lengths"]) / len(entry["lengths"]),
        }
    hf_fps = summary["hf_fp32"]["features_per_second"]
    speedups = {
        p: summary[f"project_{p}"]["features_per_second"]
        / summary[f"hf_{p}"]["features_per_second"]
        for p in precisions
    }
    emit(
        {
            "benchmark": "train_vs_hf",
            "speedup": speedups["fp32"],
            "speedup_target": SPEEDUP_TARGET,
            "speedup_bf16": speedups.get("bf16"),
            "bf16_native": cpu_has_fast_bf16(),
            "hf_protocol_train_seconds": PROTOCOL_FEATURES / hf_fps,
            "protocol_features": PROTOCOL_FEATURES,
            "questions": len(examples),
            "hf_features": len(hf_train),
            "steps": args.steps,
            "warmup_steps": args.warmup,
            "rounds": args.rounds,
            "batch_size": BATCH,
            "threads": torch.get_num_threads(),
            **summary,
        }
    )


if __name__ == "__main__":
    main()
