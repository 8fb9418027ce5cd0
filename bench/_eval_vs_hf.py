"""Evaluation against the Hugging Face route: ``run_qa.py``'s recipe and the project's, same weights.

- ``hf``: ``run_qa.py``'s ``prepare_validation_features`` (padding to ``max_length``, loaded from
  ``../shared/reference/hf_qa_example/`` by ``tests/helpers/hf_reference.py``), ``Trainer.predict``
  with ``default_data_collator``, then ``utils_qa.postprocess_qa_predictions`` (v1.1).
- ``project``: what ``qa-lightning-eval`` runs: ``SquadDataModule`` features (dynamic padding,
  sorted by length) and ``lightning.Trainer.validate`` of ``QALightningModule`` (streaming
  ``SquadMetric``: decode and official scoring at the end of the epoch).

Timed ("features to predictions"; tokenization is timed on its own, model loading is outside):

- ``hf``: building the ``Trainer``, ``Trainer.predict`` (batches of the padded features, forward,
  logits gathered) and ``postprocess_qa_predictions``; the official scoring is not included
  (timed apart as ``scoring_seconds``).
- ``project``: building the ``lightning.Trainer`` and ``Trainer.validate``: Lightning's
  ``prepare_data``/``setup`` calls (the datamodule re-reads the examples and loads its cached
  features), batches (collate, forward, metric update), decoding and the official scoring.

The sides alternate (hf, project, hf, project, ...) so that load from other processes hits both.
Differences in answers are explained by re-decoding, untimed: ``utils_qa`` on HF's logits with
the padded positions masked, and ``utils_qa`` on the project's own logits (see ``explain``).
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

import datasets
import lightning
import numpy as np
import torch
from _common import PhasePeakRss, current_rss_mb, log, squad_file, timed
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments, default_data_collator

from qa_lightning.data.datamodule import SquadDataModule
from qa_lightning.data.sources import load_examples
from qa_lightning.metrics.squad_eval import score_predictions
from qa_lightning.metrics.squad_metric import SquadMetric
from qa_lightning.model.module import QALightningModule

MAX_LENGTH, STRIDE, BATCH, SEED = 384, 128, 16, 42
N_BEST, MAX_ANSWER = 20, 30
MASK = -1e4
TARGET = 2.5
LOAD_WARNING = 1.5
EVAL_KEYS = ("offset_mapping", "cls_index", "example_index", "feature_index")
PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}
TIMING = (
    "Features to predictions, model loaded before. hf: TrainingArguments + Trainer built, "
    "Trainer.predict (default_data_collator over the features padded to 384, forward, logits "
    "gathered), utils_qa.postprocess_qa_predictions (v1.1, n_best 20, max_answer_length 30); "
    "official scoring not included (scoring_seconds). project: lightning.Trainer built, "
    "Trainer.validate (Lightning's prepare_data/setup: examples re-read, cached features "
    "loaded; batches: dynamic padding, sorted by length, forward, SquadMetric.update; "
    "SquadMetric.compute: decode + official scoring). seconds = mean over rounds."
)
TOKENIZE_TIMING = (
    "hf: run_qa.py's prepare_validation_features mapped over the examples in memory "
    "(hf_read_file: reading them, apart). project: SquadDataModule.prepare_data + setup "
    "(reads the file twice, tokenizes into an empty feature cache, loads it)."
)


# ------------------------------------------------------------------------------- hf
def hf_examples(questions: int) -> datasets.Dataset:
    """The first ``questions`` dev-v1.1 questions (hub columns), as run_qa.py's eval examples."""
    examples = load_examples(squad_file("dev-v1.1.json.gz"))
    return examples.select(range(min(questions, len(examples))))


def hf_features(examples: datasets.Dataset, tok: PreTrainedTokenizerBase) -> datasets.Dataset:
    """run_qa.py's ``prepare_validation_features`` mapped over ``examples`` (padded to 384)."""
    from helpers.hf_reference import prepare_functions

    prepare = prepare_functions(tok, MAX_LENGTH, STRIDE)["prepare_validation_features"]
    return examples.map(prepare, batched=True, remove_columns=examples.column_names)


def hf_predict(model: torch.nn.Module, features: datasets.Dataset, bf16: bool, out: Path) -> Any:
    """``Trainer.predict``'s ``(start_logits, end_logits)`` (numpy, ``[features, 384]``)."""
    args = TrainingArguments(
        output_dir=str(out),
        per_device_eval_batch_size=BATCH,
        use_cpu=True,
        bf16=bf16,
        seed=SEED,
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, data_collator=default_data_collator)
    return trainer.predict(features).predictions


def hf_decode(
    utils_qa: Any, examples: datasets.Dataset, features: datasets.Dataset, logits: Any
) -> dict[str, str]:
    """``utils_qa.postprocess_qa_predictions`` as run_qa.py calls it for v1.1."""
    return dict(
        utils_qa.postprocess_qa_predictions(
            examples,
            features,
            tuple(logits),
            version_2_with_negative=False,
            n_best_size=N_BEST,
            max_answer_length=MAX_ANSWER,
        )
    )


def run_hf(
    model: torch.nn.Module,
    utils_qa: Any,
    examples: datasets.Dataset,
    features: datasets.Dataset,
    bf16: bool,
    out: Path,
) -> dict[str, Any]:
    """One timed HF pass: predictions, logits and seconds per phase."""
    start = time.perf_counter()
    logits = hf_predict(model, features, bf16, out)
    predicted = time.perf_counter()
    predictions = hf_decode(utils_qa, examples, features, logits)
    done = time.perf_counter()
    return {
        "seconds": done - start,
        "phases": {"trainer_predict": predicted - start, "postprocess": done - predicted},
        "predictions": predictions,
        "logits": logits,
    }


# -------------------------------------------------------------------------- project
def project_datamodule(
    tok: PreTrainedTokenizerBase, questions: int, cache: Path
) -> SquadDataModule:
    """The datamodule ``qa-lightning-eval data=files`` builds for the same questions and window."""
    return SquadDataModule(
        tokenizer=tok,
        dataset=None,
        validation_file=str(squad_file("dev-v1.1.json.gz")),
        max_eval_examples=questions,
        max_length=MAX_LENGTH,
        doc_stride=STRIDE,
        batch_size=BATCH,
        eval_batch_size=BATCH,
        cache_dir=str(cache),
    )


class PhaseClock(lightning.Callback):
    """Marks inside ``Trainer.validate``: loop start, epoch end (before the metric's compute), end."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}

    def on_validation_start(self, *args: Any) -> None:
        self.marks["loop_start"] = time.perf_counter()

    def on_validation_epoch_end(self, *args: Any) -> None:
        self.marks["loop_end"] = time.perf_counter()

    def on_validation_end(self, *args: Any) -> None:
        self.marks["compute_end"] = time.perf_counter()


def run_project(
    module: QALightningModule, datamodule: SquadDataModule, precision: str
) -> dict[str, Any]:
    """One timed ``Trainer.validate``: predictions, official figures and seconds per phase.

    Callbacks' ``on_validation_epoch_end`` run before the module's, so ``decode_and_score`` is
    ``SquadMetric.compute`` (decode + official scoring) and the module's logging.
    """
    clock = PhaseClock()
    lengths: list[int] = []

    class Lengths(lightning.Callback):
        def on_validation_batch_start(self, trainer: Any, pl: Any, batch: Any, *args: Any) -> None:
            lengths.append(int(batch["input_ids"].shape[1]))

    start = time.perf_counter()
    trainer = lightning.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[clock, Lengths()],
    )
    trainer.validate(module, datamodule=datamodule, verbose=False)
    done = time.perf_counter()
    marks = clock.marks
    evaluation = module.evaluations["validation"]
    return {
        "seconds": done - start,
        "phases": {
            "trainer_and_data_setup": marks["loop_start"] - start,
            "batches_forward_metric_update": marks["loop_end"] - marks["loop_start"],
            "decode_and_score": marks["compute_end"] - marks["loop_end"],
            "teardown": done - marks["compute_end"],
        },
        "mean_padded_length": float(np.mean(lengths)),
        "predictions": dict(evaluation.predictions),
        "scores": dict(evaluation.metrics),
    }


def project_logits(
    module: QALightningModule, datamodule: SquadDataModule
) -> tuple[np.ndarray, dict[str, float]]:
    """The project's start/end logits of every feature (its own batches), ``[2, features, 384]``,
    padded positions at ``MASK``, and where a pass's time goes: collation, forward, the
    metric's update and compute, timed apart (untimed pass; for :func:`explain` and the profile)."""
    n = len(datamodule.features("validation"))
    out = np.full((2, n, MAX_LENGTH), MASK, dtype=np.float32)
    examples = datamodule.examples("validation")
    metric = SquadMetric(n_best_size=N_BEST, max_answer_length=MAX_ANSWER)
    metric.set_examples(
        list(examples["id"]), list(examples["context"]), [a["text"] for a in examples["answers"]]
    )
    clock = dict.fromkeys(("collate", "forward", "metric_update", "metric_compute"), 0.0)
    tokens = real_tokens = 0
    module.eval()
    with torch.inference_mode():
        batches = iter(datamodule.val_dataloader())
        while True:
            batch, seconds = timed(lambda: next(batches, None))
            clock["collate"] += seconds
            if batch is None:
                break
            (start, end), seconds = timed(lambda b=batch: module(b))
            clock["forward"] += seconds
            _, seconds = timed(
                lambda b=batch, s=start, e=end: metric.update(
                    s, e, *(b[k] for k in EVAL_KEYS), attention_mask=b["attention_mask"]
                )
            )
            clock["metric_update"] += seconds
            tokens += batch["input_ids"].numel()
            real_tokens += int(batch["attention_mask"].sum())
            rows = batch["feature_index"].numpy()
            for side, logits in enumerate((start, end)):
                for row, values, mask in zip(rows, logits, batch["attention_mask"], strict=True):
                    length = int(mask.sum())
                    out[side, row, :length] = values[:length].float().numpy()
    _, clock["metric_compute"] = timed(metric.compute)
    return out, {
        **{f"{k}_seconds": v for k, v in clock.items()},
        "padded_tokens": tokens,
        "real_tokens": real_tokens,
    }


# --------------------------------------------------------------------- comparison
def same_windows(hf: datasets.Dataset, project: datasets.Dataset, pad_id: int) -> bool:
    """Whether both sides made the same windows (input ids, padding stripped), in the same order."""
    if len(hf) != len(project):
        return False
    theirs = [[t for t in ids if t != pad_id] for ids in hf["input_ids"]]
    return theirs == [list(ids) for ids in project["input_ids"]]


def hf_padding(features: datasets.Dataset) -> np.ndarray:
    """HF's padded positions (``attention_mask == 0``), ``[features, 384]``."""
    return np.array(features["attention_mask"], dtype=np.int8) == 0


def agreement(a: dict[str, str], b: dict[str, str]) -> float:
    """Fraction of the questions of ``a`` with the same predicted text in ``b``."""
    return sum(a[q] == b.get(q) for q in a) / max(1, len(a))


def explain(
    utils_qa: Any,
    examples: datasets.Dataset,
    features: datasets.Dataset,
    hf_logits: Any,
    ours: np.ndarray,
    hf_answers: dict[str, str],
    project_answers: dict[str, str],
) -> dict[str, Any]:
    """Why answers differ, question by question (each difference gets the first cause that fits).

    1. ``padding_in_hf_nbest``: HF's top-20 starts/ends are ranked over all 384 positions, so the
       padding's logits (not masked; high for an untrained head) take places of real tokens and
       the candidate set shrinks; decoding HF's logits with the padding masked gives the
       project's answer.
    2. ``logit_differences``: with the padding masked, ``utils_qa`` on HF's logits still differs
       while ``utils_qa`` on the project's own logits gives the project's answer: the logits of
       a batch padded to 384 and of a dynamically padded one differ in the last bits.
    3. ``decoder``: ``utils_qa`` on the project's own logits differs from the project's answer.
    """
    pad = hf_padding(features)
    start, end = (np.asarray(x, dtype=np.float32) for x in hf_logits)
    masked = (np.where(pad, MASK, start), np.where(pad, MASK, end))
    hf_masked = hf_decode(utils_qa, examples, features, masked)
    on_ours = hf_decode(utils_qa, examples, features, (ours[0], ours[1]))
    real = ~pad
    diff = max(float(np.abs(start - ours[0])[real].max()), float(np.abs(end - ours[1])[real].max()))
    causes = {"padding_in_hf_nbest": [], "logit_differences": [], "decoder": []}
    for qid, answer in project_answers.items():
        if hf_answers[qid] == answer:
            continue
        if hf_masked[qid] == answer:
            causes["padding_in_hf_nbest"].append(qid)
        elif on_ours[qid] == answer:
            causes["logit_differences"].append(qid)
        else:
            causes["decoder"].append(qid)
    pad_in_top = _padding_in_top(start, pad) | _padding_in_top(end, pad)
    return {
        "max_abs_logit_diff": diff,
        "differing_questions": sum(len(v) for v in causes.values()),
        "causes": {k: len(v) for k, v in causes.items()},
        "examples": {k: v[:5] for k, v in causes.items() if v},
        "features_with_padding_in_hf_top20": int(pad_in_top.sum()),
        "answers_equal_hf_logits_padding_masked": agreement(project_answers, hf_masked),
        "answers_equal_utils_qa_on_project_logits": agreement(project_answers, on_ours),
        "method": " ".join((explain.__doc__ or "").split()),
    }


def _padding_in_top(logits: np.ndarray, pad: np.ndarray) -> np.ndarray:
    """Rows whose top ``N_BEST`` positions (as ``np.argsort`` ranks them) include padding."""
    top = np.argsort(logits, axis=1)[:, -N_BEST:]
    return np.take_along_axis(pad, top, axis=1).any(axis=1)


# --------------------------------------------------------------------------- main
def compare(
    questions: int, rounds: dict[str, int], model_path: str | None, tmp: Path
) -> dict[str, Any]:
    """The HF route against the project's on the first ``questions`` dev-v1.1 questions,
    ``rounds[precision]`` alternating rounds in each precision ("fp32", "bf16")."""
    from transformers import AutoTokenizer

    from helpers.hf_reference import utils_qa as load_utils_qa
    from qa_lightning.paths import minilm_dir

    load_before = list(os.getloadavg())
    utils_qa = load_utils_qa()
    tok = AutoTokenizer.from_pretrained(model_path or minilm_dir())
    lightning.seed_everything(SEED, verbose=False)
    module = QALightningModule(
        pretrained=model_path or "minilm", n_best_size=N_BEST, max_answer_length=MAX_ANSWER
    )
    examples, hf_read = timed(lambda: hf_examples(questions))
    hf_feats, hf_tokenize = timed(lambda: hf_features(examples, tok))
    datamodule = project_datamodule(tok, questions, tmp / "cache")
    _, project_tokenize = timed(lambda: (datamodule.prepare_data(), datamodule.setup("validate")))
    project_feats = datamodule.features("validation")
    if list(datamodule.examples("validation")["id"]) != list(examples["id"]):
        raise RuntimeError("the two sides evaluate different questions")
    log(f"{len(examples)} questions: hf {len(hf_feats)} features, project {len(project_feats)}")
    gold = {q: a["text"] for q, a in zip(examples["id"], examples["answers"], strict=True)}

    runs: dict[str, dict[str, Any]] = {}
    with PhasePeakRss() as rss:
        for precision, n_rounds in rounds.items():
            hf_model = copy.deepcopy(module.model)  # Trainer/accelerate patch forward for bf16
            for round_ in range(n_rounds):
                for side in ("hf", "project"):
                    name = f"{side}_{precision}"
                    rss.switch(f"{name}_{round_}")
                    start_rss = current_rss_mb()
                    if side == "hf":
                        run = run_hf(
                            hf_model, utils_qa, examples, hf_feats, precision == "bf16", tmp / name
                        )
                    else:
                        run = run_project(module, datamodule, PRECISIONS[precision])
                    rss.switch(None)
                    entry = runs.setdefault(name, {"rounds": []})
                    entry["rounds"].append(
                        {
                            "seconds": run.pop("seconds"),
                            "phases": run.pop("phases"),
                            "peak_rss_mb": rss.peaks[f"{name}_{round_}"],
                            "rss_at_start_mb": start_rss,
                        }
                    )
                    if round_ and entry["predictions"] != run["predictions"]:
                        raise RuntimeError(f"{name}: round {round_} answered differently")
                    entry.update(run)
                    log(f"{name} round {round_}: {entry['rounds'][-1]['seconds']:.1f}s")
            del hf_model

    features = {"hf": len(hf_feats), "project": len(project_feats)}
    summary: dict[str, Any] = {}
    for name, entry in runs.items():
        side = name.split("_")[0]
        n_rounds = len(entry["rounds"])
        seconds = sum(r["seconds"] for r in entry["rounds"])
        if side == "hf":
            scores, scoring = timed(
                lambda e=entry: score_predictions(gold, e["predictions"], version="1.1")
            )
            entry["scores"] = {**scores, "scoring_seconds": scoring}
        summary[name] = {
            "seconds": seconds / n_rounds,
            "seconds_per_round": [r["seconds"] for r in entry["rounds"]],
            "features_per_second": features[side] * n_rounds / seconds,
            "phases_per_round": [r["phases"] for r in entry["rounds"]],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in entry["rounds"]),
            "peak_rss_above_start_mb": max(
                r["peak_rss_mb"] - r["rss_at_start_mb"] for r in entry["rounds"]
            ),
            "exact_match": entry["scores"]["exact_match"],
            "f1": entry["scores"]["f1"],
            **(
                {"mean_padded_length": entry["mean_padded_length"]}
                if side == "project"
                else {"scoring_seconds": entry["scores"]["scoring_seconds"]}
            ),
        }
    result: dict[str, Any] = {}
    for precision in rounds:
        hf, ours = runs[f"hf_{precision}"], runs[f"project_{precision}"]
        suffix = "" if precision == "fp32" else f"_{precision}"
        result[f"speedup{suffix}"] = (
            summary[f"hf_{precision}"]["seconds"] / summary[f"project_{precision}"]["seconds"]
        )
        result[f"answers_equal{suffix}"] = agreement(ours["predictions"], hf["predictions"])
    log("explaining differences (untimed: utils_qa twice more, one project forward pass)")
    ours_fp32, profile = project_logits(module, datamodule)
    profile["hf_padded_tokens"] = len(hf_feats) * MAX_LENGTH
    differences = explain(
        utils_qa,
        examples,
        hf_feats,
        runs["hf_fp32"]["logits"],
        ours_fp32,
        runs["hf_fp32"]["predictions"],
        runs["project_fp32"]["predictions"],
    )
    load_after = list(os.getloadavg())
    return {
        **result,
        "speedup_target": TARGET,
        "questions": len(examples),
        "features": features,
        "same_windows": same_windows(hf_feats, project_feats, tok.pad_token_id),
        "model": model_path or "packaged MiniLM, fresh QA head (seed 42)",
        "batch_size": BATCH,
        "rounds": rounds,
        "order": "hf, project alternating, per precision",
        "tokenize_seconds": {
            "hf": hf_tokenize,
            "hf_read_file": hf_read,
            "project": project_tokenize,
        },
        "tokenize_timing": TOKENIZE_TIMING,
        **summary,
        "differences_fp32": differences,
        "project_profile_fp32": profile,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "loaded_machine": max(load_before[0], load_after[0]) > LOAD_WARNING,
        "timing": TIMING,
    }
