"""The fixed CPU quality protocol: fine-tune the packaged MiniLM on 3,000 SQuAD questions, score 1,000.

Protocol (change nothing, so that runs compare):

- train: ``train-v1.1.reconstructed.json.gz`` as ``load_examples`` reads it (one record per
  question, file order), row indices shuffled with ``random.Random(42).shuffle``, first 3,000;
- eval: ``dev-v1.1.json.gz`` flattened and shuffled the same way, first 1,000;
- model: packaged MiniLM with a fresh QA head, ``lightning.seed_everything(42)``;
- max_length 384, doc_stride 128, 1 epoch, batch 16, AdamW lr 1e-4, weight decay 0.01 (not
  on biases / norms), linear schedule with 10% warmup, fp32, ``torch.set_num_threads(2)``;
- decode: n_best 20, max_answer_length 30; score: official v1.1 EM/F1 on the 1,000 questions.

``--batching default`` (dynamic padding, length-grouped training batches, eval sorted by
length), ``static`` (padded to 384, random order, eval unsorted) or ``dynamic`` (dynamic
padding like ``default``, but training batches in the same seeded random order as ``static``
and eval unsorted, so it differs from ``static`` by padding alone): EM/F1 should agree within
noise while the time differs. The selected examples go through temporary JSON-lines files and
``SquadDataModule`` (with a temporary feature cache, so ``tokenize_seconds`` is uncached).

Usage: ``python bench/cpu_quality.py [--batching default|static|dynamic] [--accelerator cpu|gpu]
[--seed N]``; several minutes on CPU. ``--train-questions`` / ``--eval-questions`` change the
protocol (smoke tests only: the JSON then says ``"protocol": false``). ``--seed`` (default 42)
changes the training seed alone, for measuring seed noise: ``seed_everything`` (QA-head
initialisation, dropout) and the datamodule's training order; the selected questions stay the
same (always shuffled with 42). Any other seed than 42 is off-protocol: the JSON then says
``"protocol": false`` and records ``seed``. ``--accelerator gpu`` runs the same
protocol on one CUDA device, still true fp32 (TF32 off for matmuls and cuDNN); the JSON records
``accelerator`` and ``device`` (the name of the CPU or GPU), and times are only comparable
between runs with the same accelerator.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import datasets
import lightning
import torch
from _common import emit, log, set_threads, squad_file, timed
from transformers import AutoTokenizer

from qa_lightning.data.datamodule import SquadDataModule
from qa_lightning.data.sources import load_examples
from qa_lightning.model.module import QALightningModule
from qa_lightning.paths import minilm_dir

SEED = 42
TRAIN_QUESTIONS, EVAL_QUESTIONS = 3000, 1000
MAX_LENGTH, STRIDE, BATCH = 384, 128, 16
OPTIMIZER = {"_target_": "torch.optim.AdamW", "lr": 1e-4, "weight_decay": 0.01}
SCHEDULER = {"_target_": "qa_lightning.model.optim.linear_warmup_decay", "warmup_ratio": 0.1}
N_BEST, MAX_ANSWER = 20, 30


def shuffled_head(examples: datasets.Dataset, n: int) -> datasets.Dataset:
    """The first ``n`` examples after shuffling the row indices with ``random.Random(SEED)``."""
    indices = list(range(len(examples)))
    random.Random(SEED).shuffle(indices)
    return examples.select(indices[:n])


def write_jsonl(examples: datasets.Dataset, path: Path) -> Path:
    """Flat hub-column records (id, title, context, question, answers{text, answer_start})."""
    with path.open("w", encoding="utf-8") as f:
        for record in examples:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def make_datamodule(
    tok: Any, train: Path, validation: Path, cache: Path, batching: str, seed: int = SEED
) -> SquadDataModule:
    """``default``: dynamic padding, length-grouped training batches, eval sorted by length;
    ``static``: padded to ``MAX_LENGTH``, seeded random order, eval unsorted; ``dynamic``: as
    ``static`` but dynamically padded (the same training batches, each padded to its longest).
    """
    static = batching == "static"
    grouped = batching == "default"
    return SquadDataModule(
        tokenizer=tok,
        dataset=None,
        train_file=str(train),
        validation_file=str(validation),
        max_length=MAX_LENGTH,
        doc_stride=STRIDE,
        batch_size=BATCH,
        seed=seed,
        pad_to_max_length=static,
        group_by_length=grouped,
        sort_eval_by_length=grouped,
        cache_dir=str(cache),
    )


def protocol_datamodule(
    root: Path, train_questions: int, eval_questions: int, batching: str, seed: int = SEED
) -> tuple[SquadDataModule, datasets.Dataset, datasets.Dataset]:
    """The protocol's selection (first ``train_questions`` / ``eval_questions`` after the seeded
    shuffle) written under ``root`` and its datamodule (feature cache under ``root/cache``)."""
    train = shuffled_head(
        load_examples(squad_file("train-v1.1.reconstructed.json.gz")), train_questions
    )
    dev = shuffled_head(load_examples(squad_file("dev-v1.1.json.gz")), eval_questions)
    dm = make_datamodule(
        AutoTokenizer.from_pretrained(minilm_dir()),
        write_jsonl(train, root / "train.jsonl"),
        write_jsonl(dev, root / "dev.jsonl"),
        root / "cache",
        batching,
        seed,
    )
    return dm, train, dev


class Progress(lightning.Callback):
    """A stderr line every ``every`` training steps (the progress bar is off)."""

    def __init__(self, every: int = 20) -> None:
        self.every = every
        self.start = 0.0

    def on_train_start(self, trainer: lightning.Trainer, module: lightning.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: lightning.Trainer,
        module: lightning.LightningModule,
        outputs: Any,
        *args: Any,
    ) -> None:
        step = trainer.global_step
        if step % self.every == 0 or step == trainer.estimated_stepping_batches:
            loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
            elapsed = time.perf_counter() - self.start
            log(
                f"step {step}/{int(trainer.estimated_stepping_batches)} loss {loss:.3f} ({elapsed:.0f}s)"
            )


def make_trainer(fit: bool, accelerator: str = "cpu") -> lightning.Trainer:
    """The fit trainer skips validation (run once, timed apart, by a second trainer)."""
    return lightning.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=1,
        precision="32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0 if fit else None,
        callbacks=[Progress()] if fit else None,
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batching", choices=("default", "static", "dynamic"), default="default")
    parser.add_argument("--train-questions", type=int, default=TRAIN_QUESTIONS)
    parser.add_argument("--eval-questions", type=int, default=EVAL_QUESTIONS)
    parser.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument(
        "--seed",
        type=int,
        default=SEED,
        help=f"training seed (default {SEED}; others: off-protocol)",
    )
    return parser.parse_args()


def device_name(accelerator: str) -> str:
    """The GPU's name, or the CPU's as the platform reports it."""
    if accelerator == "gpu":
        return torch.cuda.get_device_name(0)
    return platform.processor() or platform.machine()


def main() -> None:
    args = parse_args()
    set_threads(2)
    if args.accelerator == "gpu":
        if not torch.cuda.is_available():
            raise SystemExit("--accelerator gpu needs a CUDA device; none is available.")
        # True fp32 on the GPU: no TF32 in matmuls or cuDNN convolutions.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    with tempfile.TemporaryDirectory(prefix="qa_cpu_quality_") as tmp:
        dm, train, dev = protocol_datamodule(
            Path(tmp), args.train_questions, args.eval_questions, args.batching, args.seed
        )
        _, tokenize_seconds = timed(lambda: dm.setup("fit"))
        n_train, n_eval = len(dm.features("train")), len(dm.features("validation"))
        log(f"{len(train)} train questions -> {n_train} features, {len(dev)} eval -> {n_eval}")
        lightning.seed_everything(args.seed, verbose=False)
        module = QALightningModule(
            pretrained="minilm",
            optimizer=OPTIMIZER,
            scheduler=SCHEDULER,
            n_best_size=N_BEST,
            max_answer_length=MAX_ANSWER,
        )
        trainer = make_trainer(fit=True, accelerator=args.accelerator)
        _, train_seconds = timed(lambda: trainer.fit(module, datamodule=dm))
        validator = make_trainer(fit=False, accelerator=args.accelerator)
        _, eval_seconds = timed(lambda: validator.validate(module, datamodule=dm, verbose=False))
    scores = module.evaluations["validation"].metrics
    log(f"EM {scores['exact_match']:.2f} F1 {scores['f1']:.2f}")
    protocol = (args.train_questions, args.eval_questions, args.seed) == (
        TRAIN_QUESTIONS,
        EVAL_QUESTIONS,
        SEED,
    )
    emit(
        {
            "benchmark": "cpu_quality",
            "batching": args.batching,
            "exact_match": scores["exact_match"],
            "f1": scores["f1"],
            "train_seconds": train_seconds,
            "eval_seconds": eval_seconds,
            "tokenize_seconds": tokenize_seconds,
            "train_questions": len(train),
            "eval_questions": len(dev),
            "train_features": n_train,
            "eval_features": n_eval,
            "optimizer_steps": trainer.global_step,
            "protocol": protocol,
            "threads": torch.get_num_threads(),
            "accelerator": args.accelerator,
            "device": device_name(args.accelerator),
            **({} if args.seed == SEED else {"seed": args.seed}),
        }
    )


if __name__ == "__main__":
    main()
