"""A full evaluation pass (inference + decode + metric): the project's path against the classic one.

Data: the first ``--questions`` questions of SQuAD dev-v1.1, MiniLM (``QALightningModule``,
packaged weights, fresh QA head seeded with 42), max_length 384, stride 128, batch 16.

- ``default``: dynamic padding (multiple of 8), features sorted by length (longest first), the
  streaming ``SquadMetric`` (``update`` per batch, ``compute`` at the end);
- ``baseline``: every batch padded to 384, dataset order, all logits kept, then the reference
  decoder (``tests/reference_decode.py``) and the official v1.1 scoring.

Both run interleaved batch by batch in one process (collation, forward and the per-batch metric
work are timed per variant), then each decodes; EM/F1 must agree.

Memory (``memory_growth``): peak memory of the whole evaluation pass as users run it
(``Trainer.validate`` of ``QALightningModule`` on ``SquadDataModule`` features, MiniLM, batch 16)
on the base set and on ``--memory-scale`` times more questions, each in a child process started
with ``PYTHONMALLOC=malloc`` so that glibc's ``mallinfo2`` counts every allocation (Python
objects and tensors alike); see ``MEMORY_METHOD``. Also reported: the decoding/metric path alone
fed random logits (``decode_path_*``), whose state does grow with the questions (answers,
gold texts, one span per feature), against the baseline's (every feature's logits).

Against the Hugging Face route (``vs_hf``, issue 16): ``run_qa.py``'s validation features,
``Trainer.predict`` and ``utils_qa.postprocess_qa_predictions`` against the project's
``Trainer.validate`` on the first ``--hf-questions`` dev-v1.1 questions, same weights, batch 16,
alternating sides, fp32 (target: HF seconds / project seconds >= 2.5 with equal answers) and bf16
where the CPU has native bf16; see ``bench/_eval_vs_hf.py`` for what is timed. ``--model DIR``
evaluates a fine-tuned model there (e.g. ``bench/cpu_budget.py --save-hf-model DIR``).

Usage: ``python bench/eval_throughput.py [--questions 400 --memory-scale 10 --hf-questions 1000]``;
``--skip-baseline --skip-memory`` runs the HF comparison alone, ``--hf-questions 0`` skips it.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import lightning
import numpy as np
import torch
from _common import emit, log, set_threads, squad_file
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from qa_lightning.data.collate import QACollator
from qa_lightning.data.features import prepare_eval_features
from qa_lightning.data.sources import load_examples
from qa_lightning.metrics.squad_eval import score_predictions
from qa_lightning.metrics.squad_metric import SquadMetric
from qa_lightning.paths import minilm_dir

MAX_LENGTH, STRIDE, BATCH, SEED = 384, 128, 16, 42
N_BEST, MAX_ANSWER = 20, 30
PAD_LOGIT = -1e4
SPEEDUP_TARGET, MEMORY_TARGET = 2.0, 1.5
VARIANTS = ("default", "baseline")
MEMORY_METHOD = (
    "Child process with PYTHONMALLOC=malloc; heap in use = glibc mallinfo2 uordblks + hblkhd "
    "(every Python object and every CPU tensor), sampled every 0.5 ms by a thread. Full pass: "
    "model loaded and features tokenized (cached Arrow files, memory-mapped) first; peak = max "
    "heap in use during Trainer.validate (model weights, batches, activations, metric state, "
    "answers). memory_growth = full-pass peak at scale x questions / on the base set. "
    "Decoding path (decode_path_*): all input batches (collated features and random float32 "
    "logits) built first; peak = max heap in use minus heap in use at the start of the path. "
    "Default: SquadMetric.set_examples, update per batch (dynamic padding, sorted), compute. "
    "Baseline: gold dict, each feature's logits (padded to 384) kept as numpy rows, reference "
    "decode, official scoring."
)

Features = list[dict[str, Any]]


# ----------------------------------------------------------------------------- data
def load_eval_set(tok: PreTrainedTokenizerBase, questions: int) -> tuple[dict[str, list], Features]:
    """The first ``questions`` dev-v1.1 examples (columns) and their eval features (with feature_index)."""
    examples = load_examples(squad_file("dev-v1.1.json.gz"))
    columns = examples.select(range(min(questions, len(examples)))).to_dict()
    n = len(columns["id"])
    cols = prepare_eval_features(columns, tok, MAX_LENGTH, STRIDE, indices=list(range(n)))
    cols.pop("start_positions")
    cols.pop("end_positions")
    features = [{k: v[i] for k, v in cols.items()} for i in range(len(cols["input_ids"]))]
    for i, feature in enumerate(features):
        feature["feature_index"] = i
    return columns, features


def variant_order(features: Features, variant: str) -> Features:
    """Longest first for the project's default (``sorted_by_length``), dataset order otherwise."""
    if variant != "default":
        return features
    lengths = np.array([len(f["input_ids"]) for f in features])
    return [features[i] for i in np.argsort(-lengths, kind="stable")]


def make_loader(tok: PreTrainedTokenizerBase, features: Features, variant: str) -> DataLoader:
    collator = QACollator(tok) if variant == "default" else QACollator(tok, max_length=MAX_LENGTH)
    return DataLoader(variant_order(features, variant), batch_size=BATCH, collate_fn=collator)


# ------------------------------------------------------------------------ decoders
class ProjectPath:
    """The streaming ``SquadMetric``: per-batch reduction, decode and score at the end."""

    def __init__(self, columns: dict[str, list]) -> None:
        self.metric = SquadMetric(n_best_size=N_BEST, max_answer_length=MAX_ANSWER)
        golds = [answers["text"] for answers in columns["answers"]]
        self.metric.set_examples(columns["id"], columns["context"], golds)

    def update(
        self, batch: dict[str, torch.Tensor], start: torch.Tensor, end: torch.Tensor
    ) -> None:
        keys = ("offset_mapping", "cls_index", "example_index", "feature_index")
        self.metric.update(start, end, *(batch[k] for k in keys))

    def finish(self) -> tuple[dict[str, float], dict[str, str]]:
        scores = {k: float(v) for k, v in self.metric.compute().items()}
        return scores, dict(self.metric.predictions)


class BaselinePath:
    """The tutorials' path: keep every feature's logits, decode all at the end with the reference."""

    def __init__(self, columns: dict[str, list], features: Features) -> None:
        from helpers import reference_decode

        self.reference = reference_decode
        self.ids, self.contexts = columns["id"], columns["context"]
        self.gold = {q: a["text"] for q, a in zip(columns["id"], columns["answers"], strict=True)}
        self.features = features
        self.start: list[np.ndarray] = []
        self.end: list[np.ndarray] = []

    def update(
        self, batch: dict[str, torch.Tensor], start: torch.Tensor, end: torch.Tensor
    ) -> None:
        self.start.extend(start.float().numpy())
        self.end.extend(end.float().numpy())

    def finish(self) -> tuple[dict[str, float], dict[str, str]]:
        predictions, _, _ = self.reference.postprocess_qa_predictions(
            self.ids,
            self.contexts,
            self.features,
            self.start,
            self.end,
            n_best_size=N_BEST,
            max_answer_length=MAX_ANSWER,
        )
        return score_predictions(self.gold, predictions, version="1.1"), predictions


# ------------------------------------------------------------------------- timing
def timed_batches(loader: DataLoader, clock: list[float]) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of ``loader``, adding each collation's seconds to ``clock[0]``."""
    iterator = iter(loader)
    while True:
        start = time.perf_counter()
        batch = next(iterator, None)
        clock[0] += time.perf_counter() - start
        if batch is None:
            return
        yield batch


def masked_logits(
    module: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, ...]:
    """Start/end logits with padding positions at ``PAD_LOGIT``.

    Both decoders rank the top ``n_best_size`` tokens over the whole (padded) row, padding
    included. The fresh, untrained QA head gives padding logits as high as real tokens', so
    the answers would depend on how much padding a batch has; a trained model puts them far
    below (its loss pushes them down). Masking them in both variants keeps the comparison exact.
    """
    pad = batch["attention_mask"] == 0
    return tuple(logits.masked_fill(pad, PAD_LOGIT) for logits in module(batch))


def run_pass(
    module: torch.nn.Module, loaders: dict[str, DataLoader], paths: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Both variants interleaved batch by batch, then each one's decode; seconds per phase."""
    clocks = {v: [0.0] for v in VARIANTS}
    infer = dict.fromkeys(VARIANTS, 0.0)
    lengths: dict[str, list[int]] = {v: [] for v in VARIANTS}
    streams = [timed_batches(loaders[v], clocks[v]) for v in VARIANTS]
    with torch.inference_mode():
        for step, batches in enumerate(zip(*streams, strict=True)):
            for variant, batch in zip(VARIANTS, batches, strict=True):
                start = time.perf_counter()
                start_logits, end_logits = masked_logits(module, batch)
                paths[variant].update(batch, start_logits, end_logits)
                infer[variant] += time.perf_counter() - start
                lengths[variant].append(batch["input_ids"].size(1))
            if (step + 1) % 5 == 0:
                log(f"batch {step + 1}: " + ", ".join(f"{v} {infer[v]:.1f}s" for v in VARIANTS))
    results = {}
    for variant in VARIANTS:
        start = time.perf_counter()
        scores, predictions = paths[variant].finish()
        decode = time.perf_counter() - start
        seconds = clocks[variant][0] + infer[variant] + decode
        results[variant] = {
            "seconds": seconds,
            "collate_seconds": clocks[variant][0],
            "inference_seconds": infer[variant],
            "decode_seconds": decode,
            "mean_padded_length": float(np.mean(lengths[variant])),
            "exact_match": scores["exact_match"],
            "f1": scores["f1"],
            "predictions": predictions,
        }
        log(f"{variant}: {seconds:.1f}s, EM {scores['exact_match']:.2f}, F1 {scores['f1']:.2f}")
    return results


# ------------------------------------------------------------------------- memory
class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in [
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        ]
    ]


def heap_in_use() -> Callable[[], int]:
    """A function returning the bytes glibc's malloc has handed out and not yet freed."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2

    def in_use() -> int:
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd

    return in_use


class HeapPeak:
    """Peak heap in use above the level at ``__enter__``, sampled by a thread and by ``sample()``."""

    def __init__(self, interval: float = 0.0005) -> None:
        self.in_use = heap_in_use()
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        self.peak = max(self.peak, self.in_use())

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> HeapPeak:
        self.start = self.peak = self.in_use()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sample()
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def random_batches(tok: PreTrainedTokenizerBase, features: Features, variant: str) -> list[tuple]:
    """``(batch, start_logits, end_logits)`` of every batch, logits random with the batch's shape."""
    generator = torch.Generator().manual_seed(SEED)
    out = []
    for batch in make_loader(tok, features, variant):
        shape = batch["input_ids"].shape
        out.append(
            (
                batch,
                torch.randn(shape, generator=generator),
                torch.randn(shape, generator=generator),
            )
        )
    return out


def measure_memory(questions: int) -> dict[str, float]:
    """Peak heap (MiB) of each variant's decoding/metric path on ``questions`` questions."""
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    columns, features = load_eval_set(tok, questions)
    peaks = {}
    for variant in VARIANTS:
        batches = random_batches(tok, features, variant)
        with HeapPeak() as heap:
            path = ProjectPath(columns) if variant == "default" else BaselinePath(columns, features)
            for batch, start, end in batches:
                path.update(batch, start, end)
                heap.sample()
            path.finish()
            heap.sample()
            del path
        peaks[variant] = heap.peak_mb
        del batches
    return {"questions": len(columns["id"]), "features": len(features), **peaks}


def measure_full_pass(questions: int) -> dict[str, float]:
    """Peak heap (MiB) of ``Trainer.validate`` on the first ``questions`` dev-v1.1 questions."""
    import tempfile

    from qa_lightning.data.datamodule import SquadDataModule
    from qa_lightning.model.module import QALightningModule

    lightning.seed_everything(SEED, verbose=False)
    with tempfile.TemporaryDirectory() as cache:
        datamodule = SquadDataModule(
            tokenizer="minilm",
            dataset=None,
            validation_file=str(squad_file("dev-v1.1.json.gz")),
            max_eval_examples=questions,
            max_length=MAX_LENGTH,
            doc_stride=STRIDE,
            eval_batch_size=BATCH,
            cache_dir=cache,
        )
        datamodule.prepare_data()
        datamodule.setup("validate")
        module = QALightningModule(pretrained="minilm")
        trainer = lightning.Trainer(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
        )
        with HeapPeak() as heap:
            trainer.validate(module, datamodule=datamodule, verbose=False)
        return {
            "questions": len(datamodule.examples("validation")),
            "features": len(datamodule.features("validation")),
            "peak_mb": heap.peak / 2**20,
            "above_start_mb": heap.peak_mb,
        }


def memory_in_child(probe: str, questions: int) -> dict[str, float]:
    """A memory probe in a child interpreter started with ``PYTHONMALLOC=malloc``."""
    env = {**os.environ, "PYTHONMALLOC": "malloc"}
    cmd = [sys.executable, __file__, probe, str(questions)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def memory_results(questions: int, scale: int) -> dict[str, Any]:
    log(f"memory: full evaluation pass on {questions} and {questions * scale} questions")
    base = memory_in_child("--full-pass-probe", questions)
    big = memory_in_child("--full-pass-probe", questions * scale)
    log(f"full pass (MiB): base {base}, x{scale} {big}")
    path_base = memory_in_child("--memory-probe", questions)
    path_big = memory_in_child("--memory-probe", questions * scale)
    log(f"decoding path (MiB): base {path_base}, x{scale} {path_big}")
    return {
        "memory_growth": big["peak_mb"] / base["peak_mb"],
        "memory_growth_target": MEMORY_TARGET,
        "memory_mb": {"base": base, f"x{scale}": big},
        "decode_path_growth": path_big["default"] / path_base["default"],
        "decode_path_growth_baseline": path_big["baseline"] / path_base["baseline"],
        "decode_path_mb": {"base": path_base, f"x{scale}": path_big},
        "decode_path_default_over_baseline": path_big["default"] / path_big["baseline"],
        "memory_method": MEMORY_METHOD,
    }


# --------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=400)
    parser.add_argument("--memory-scale", type=int, default=10)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-baseline", action="store_true", help="no padded-baseline pass")
    parser.add_argument("--hf-questions", type=int, default=1000, help="0: no HF comparison")
    parser.add_argument("--hf-rounds", type=int, default=2, help="fp32 rounds (hf, project)")
    parser.add_argument("--hf-bf16-rounds", type=int, default=1, help="0: fp32 only")
    parser.add_argument("--model", help="fine-tuned hf_model/ for the HF comparison")
    parser.add_argument("--memory-probe", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--full-pass-probe", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def agreement(a: dict[str, str], b: dict[str, str]) -> float:
    """Fraction of questions with the same answer in both."""
    return sum(a.get(q) == b.get(q) for q in a) / max(1, len(a))


def baseline_results(questions: int) -> dict[str, Any]:
    """The project's path against the padded baseline, interleaved batch by batch."""
    from qa_lightning.model.module import QALightningModule

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    columns, features = load_eval_set(tok, questions)
    log(f"{len(columns['id'])} questions -> {len(features)} features")
    lightning.seed_everything(SEED, verbose=False)
    module = QALightningModule(pretrained="minilm").eval()
    loaders = {v: make_loader(tok, features, v) for v in VARIANTS}
    paths = {"default": ProjectPath(columns), "baseline": BaselinePath(columns, features)}
    results = run_pass(module, loaders, paths)
    default, baseline = results["default"], results["baseline"]
    same = agreement(default.pop("predictions"), baseline.pop("predictions"))
    return {
        "questions": len(columns["id"]),
        "features": len(features),
        "default_seconds": default["seconds"],
        "baseline_seconds": baseline["seconds"],
        "speedup": baseline["seconds"] / default["seconds"],
        "speedup_target": SPEEDUP_TARGET,
        "default_exact_match": default["exact_match"],
        "default_f1": default["f1"],
        "baseline_exact_match": baseline["exact_match"],
        "baseline_f1": baseline["f1"],
        "scores_equal": default["exact_match"] == baseline["exact_match"]
        and default["f1"] == baseline["f1"],
        "same_predictions_fraction": same,
        "default": default,
        "baseline": baseline,
    }


def hf_results(args: argparse.Namespace) -> dict[str, Any]:
    """``vs_hf``: the HF route against the project's (``bench/_eval_vs_hf.py``), or why skipped."""
    import tempfile
    from pathlib import Path

    from _eval_vs_hf import compare

    from helpers.hf_reference import missing_reason
    from qa_lightning.utils.resolvers import cpu_has_fast_bf16

    reason = missing_reason()
    if reason:
        log(f"HF comparison skipped: {reason}")
        return {"vs_hf": {"skipped": reason}}
    rounds = {"fp32": args.hf_rounds}
    if args.hf_bf16_rounds and cpu_has_fast_bf16():
        rounds["bf16"] = args.hf_bf16_rounds
    with tempfile.TemporaryDirectory(prefix="qa_eval_vs_hf_") as tmp:
        vs_hf = compare(args.hf_questions, rounds, args.model, Path(tmp))
    vs_hf["bf16_native"] = cpu_has_fast_bf16()
    return {
        "speedup_vs_hf": vs_hf["speedup"],
        "speedup_vs_hf_target": vs_hf["speedup_target"],
        "answers_equal_vs_hf": vs_hf["answers_equal"],
        "vs_hf": vs_hf,
    }


def main() -> None:
    args = parse_args()
    set_threads(2)
    if args.memory_probe:
        print(json.dumps(measure_memory(args.memory_probe)))
        return
    if args.full_pass_probe:
        print(json.dumps(measure_full_pass(args.full_pass_probe)))
        return
    result: dict[str, Any] = {"benchmark": "eval_throughput"}
    if not args.skip_baseline:
        result.update(baseline_results(args.questions))
    if not args.skip_memory:
        result.update(memory_results(args.questions, args.memory_scale))
    if args.hf_questions:
        result.update(hf_results(args))
    emit({**result, "threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
