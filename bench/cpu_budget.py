"""Accuracy at equal wall-clock: train the packaged MiniLM for as long as the HF Trainer needs for
the CPU protocol, with the project's faster path, and score the protocol's 1,000 dev questions.

Budget: ``--budget-seconds``, or the HF Trainer's protocol training time measured by
``bench/train_vs_hf.py`` (``hf_protocol_train_seconds`` = its features/s times the protocol's
3,032 features) read from ``--from-json`` (a file whose last line is that benchmark's JSON).

Recipe (the project's options; the JSON records them): bf16 autocast where the CPU has native bf16
(``fast_precision``), dynamic padding and length-grouped batches (the defaults), batch 16, AdamW
lr ``--lr`` with 10% warmup and linear decay, ``--epochs`` over as many train questions as the
budget covers at the throughput ``--features-per-second`` (default: ``train_vs_hf``'s project
figure in the chosen precision) -- more questions of the same train file beyond the protocol's
3,000 (same shuffle, seed 42). Lightning's ``max_time`` stops training at the budget whatever
happens; tokenization and evaluation are outside it (as in the HF figure).
Eval: the protocol's 1,000 dev-v1.1 questions, official v1.1 EM/F1.

``--save-hf-model DIR`` writes the fine-tuned model after training as training runs write
``hf_model/`` (``QALightningModule.save_hf_model`` with the tokenizer and the 384/128 window), for
``qa-lightning-export DIR --format onnx --quantize int8 --check ...``,
``QuestionAnswerer.from_pretrained(DIR)`` or ``bench/eval_throughput.py --model DIR``.

Usage: ``python bench/cpu_budget.py --from-json bench/results/train_vs_hf.json`` (about 25 min
at the HF budget) or ``--budget-seconds 60 --eval-questions 50`` (smoke).
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning
import torch
from _common import emit, log, set_threads, timed
from cpu_quality import MAX_ANSWER, MAX_LENGTH, N_BEST, STRIDE, Progress, protocol_datamodule

from qa_lightning.model.module import QALightningModule
from qa_lightning.utils.io import replace_directory
from qa_lightning.utils.resolvers import fast_precision

SEED, EVAL_QUESTIONS, F1_TARGET = 42, 1000, 60.0
HF_F1_AT_PROTOCOL = 42.5  # the figure for the HF run_qa.py route on this protocol
FEATURES_PER_QUESTION = 3032 / 3000  # the protocol's ratio (train split, 384/128 windows)


def budget_from(args: argparse.Namespace) -> tuple[float, str, dict[str, Any]]:
    """Budget seconds, where it came from, and the train_vs_hf JSON (empty without one)."""
    if args.budget_seconds:
        return args.budget_seconds, "--budget-seconds", {}
    if not args.from_json:
        raise SystemExit("give --budget-seconds or --from-json (train_vs_hf.py's JSON)")
    lines = Path(args.from_json).read_text().strip().splitlines()
    measured = json.loads(lines[-1])
    if "hf_protocol_train_seconds" not in measured:
        raise SystemExit(f"{args.from_json}: no hf_protocol_train_seconds (not train_vs_hf.py's)")
    return measured["hf_protocol_train_seconds"], str(args.from_json), measured


def save_model(module: QALightningModule, tokenizer: Any, directory: str | None) -> str | None:
    """The trained model written to ``directory`` as training runs write ``hf_model/``."""
    if not directory:
        return None
    target = Path(directory).resolve()
    replace_directory(target, lambda tmp: module.save_hf_model(tmp, tokenizer=tokenizer))
    log(f"fine-tuned model saved to {target}")
    return str(target)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-seconds", type=float)
    parser.add_argument("--from-json", help="train_vs_hf.py's output (last line: its JSON)")
    parser.add_argument("--features-per-second", type=float, help="project training throughput")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--eval-questions", type=int, default=EVAL_QUESTIONS)
    parser.add_argument("--max-train-questions", type=int, default=87599)
    parser.add_argument(
        "--save-hf-model", metavar="DIR", help="write the fine-tuned model + tokenizer there"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    set_threads(2)
    budget, source, measured = budget_from(args)
    precision = fast_precision("cpu")
    key = "project_bf16" if precision == "bf16-mixed" else "project_fp32"
    fps = args.features_per_second or measured.get(key, {}).get("features_per_second")
    if not fps:
        raise SystemExit(f"give --features-per-second (no {key} in the JSON)")
    questions = int(budget * fps / FEATURES_PER_QUESTION / args.epochs)
    questions = max(16, min(questions, args.max_train_questions))
    log(f"budget {budget:.0f}s at {fps:.2f} features/s: {questions} questions x {args.epochs}")
    with tempfile.TemporaryDirectory(prefix="qa_cpu_budget_") as tmp:
        dm, train, dev = protocol_datamodule(Path(tmp), questions, args.eval_questions, "default")
        _, tokenize_seconds = timed(lambda: dm.setup("fit"))
        lightning.seed_everything(SEED, verbose=False)
        module = QALightningModule(
            pretrained="minilm",
            optimizer={"_target_": "torch.optim.AdamW", "lr": args.lr, "weight_decay": 0.01},
            scheduler={
                "_target_": "qa_lightning.model.optim.linear_warmup_decay",
                "warmup_ratio": 0.1,
            },
            n_best_size=N_BEST,
            max_answer_length=MAX_ANSWER,
            max_length=MAX_LENGTH,
            doc_stride=STRIDE,
        )
        common: dict[str, Any] = {
            "accelerator": "cpu",
            "devices": 1,
            "precision": precision,
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "num_sanity_val_steps": 0,
        }
        trainer = lightning.Trainer(
            max_epochs=args.epochs,
            max_time=datetime.timedelta(seconds=budget),
            limit_val_batches=0,
            gradient_clip_val=1.0,
            callbacks=[Progress()],
            **common,
        )
        start = time.perf_counter()
        trainer.fit(module, datamodule=dm)
        train_seconds = time.perf_counter() - start
        n_train = len(dm.features("train"))
        saved = save_model(module, dm.tokenizer, args.save_hf_model)
        validator = lightning.Trainer(**common)
        _, eval_seconds = timed(lambda: validator.validate(module, datamodule=dm, verbose=False))
    scores = module.evaluations["validation"].metrics
    log(f"EM {scores['exact_match']:.2f} F1 {scores['f1']:.2f} in {train_seconds:.0f}s")
    steps_planned = -(-n_train // dm.batch_size) * args.epochs
    emit(
        {
            "benchmark": "cpu_budget",
            "f1": scores["f1"],
            "exact_match": scores["exact_match"],
            "f1_target": F1_TARGET,
            "hf_f1_same_budget_reference": HF_F1_AT_PROTOCOL,
            "budget_seconds": budget,
            "budget_source": source,
            "train_seconds_used": train_seconds,
            "stopped_by_budget": trainer.global_step < steps_planned,
            "recipe": {
                "train_questions": len(train),
                "train_features": n_train,
                "epochs": args.epochs,
                "optimizer_steps": trainer.global_step,
                "planned_steps": steps_planned,
                "precision": precision,
                "batch_size": dm.batch_size,
                "lr": args.lr,
                "schedule": "linear, 10% warmup",
                "batching": "dynamic padding, length-grouped",
                "max_length": 384,
                "features_per_second_assumed": fps,
            },
            "tokenize_seconds": tokenize_seconds,
            "eval_seconds": eval_seconds,
            "eval_questions": len(dev),
            "protocol_eval": args.eval_questions == EVAL_QUESTIONS,
            "hf_model_dir": saved,
            "threads": torch.get_num_threads(),
        }
    )


if __name__ == "__main__":
    main()
