"""Answerability on real data: fine-tune MiniLM on some dev-v2.0 articles, tune the threshold and
calibrators on other articles, and measure on a third, held-out set of articles.

The default run is small (a couple of minutes on 2 cores) and checks the whole path: train ->
``TuneAnswerability`` -> checkpoint / ``hf_model/answerability.json`` -> ``QuestionAnswerer``
defaults, with the test figures of ``calibration.json`` equal to what the shipped model answers.
The slow run is larger and asserts the issue's claims (tuned threshold beats threshold 0 on F1,
ECE <= 0.05 and below the uncalibrated one). Its MiniLM first learns to read spans on SQuAD v1.1
train questions (other articles than any dev question's; ``QA_ANSWERABILITY_INIT=DIR`` starts
from such an ``hf_model/`` instead, e.g. ``bench/cpu_budget.py --save-hf-model DIR``): 2,500
dev-v2.0 questions alone leave MiniLM answering ~5% of questions, where a threshold hardly
matters. ``QA_ANSWERABILITY_SIZES=train,tune,test`` overrides its sizes. Both print their
figures (``-s``).
"""

from __future__ import annotations

import gzip
import json
import os
import random
from pathlib import Path

import pytest
import torch
from lightning import Trainer

from helpers.app import slice_squad
from qa_lightning import QuestionAnswerer
from qa_lightning.data.datamodule import SquadDataModule
from qa_lightning.hub import load_tokenizer
from qa_lightning.metrics.answerability import FILE, read_answerability
from qa_lightning.metrics.calibration import expected_calibration_error
from qa_lightning.metrics.squad_eval import compute_exact, score_predictions
from qa_lightning.model.module import QALightningModule
from qa_lightning.paths import minilm_dir
from qa_lightning.training.calibration_report import REPORT_FILE
from qa_lightning.training.callbacks.answerability import TuneAnswerability
from qa_lightning.utils.resolvers import fast_precision

ALL = 10_000  # more than any third of dev-v2.0 holds (4,032 / 3,889 / 3,952 questions)
SIZES = {"small": (60, 120, 120), "large": (ALL, ALL, ALL)}
EPOCHS = {"small": 1, "large": 2}
V1_QUESTIONS = 10_000  # about what bench/cpu_budget.py reads in its 1,231 s (10,108)
DATA = {"max_length": 256, "doc_stride": 96, "batch_size": 16, "use_cache": False}
OPTIMIZER = {"_target_": "torch.optim.AdamW", "lr": 2e-4, "weight_decay": 0.01}
SCHEDULER = {"_target_": "qa_lightning.model.optim.linear_warmup_decay", "warmup_ratio": 0.1}
TRAINER = {
    "accelerator": "cpu",
    "precision": fast_precision("cpu"),
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "num_sanity_val_steps": 0,
}


def split_by_article(source: Path, out: Path, sizes: tuple[int, int, int]) -> list[Path]:
    """Three SQuAD files of disjoint articles (train, tune, test), ``sizes`` questions each."""
    with gzip.open(source, "rt", encoding="utf-8") as fh:
        data = json.load(fh)
    articles = data["data"]
    random.Random(0).shuffle(articles)
    groups = [articles[0::3], articles[1::3], articles[2::3]]
    paths = []
    for name, group, size in zip(("train", "tune", "test"), groups, sizes, strict=True):
        rng = random.Random(size)
        questions = [
            (a, p, q)
            for a, art in enumerate(group)
            for p, par in enumerate(art["paragraphs"])
            for q in range(len(par["qas"]))
        ]
        keep = set(rng.sample(questions, min(size, len(questions))))
        kept_articles = []
        for a, art in enumerate(group):
            paragraphs = []
            for p, par in enumerate(art["paragraphs"]):
                qas = [qa for q, qa in enumerate(par["qas"]) if (a, p, q) in keep]
                if qas:
                    paragraphs.append({"context": par["context"], "qas": qas})
            if paragraphs:
                kept_articles.append({"title": art["title"], "paragraphs": paragraphs})
        path = out / f"{name}.json"
        path.write_text(json.dumps({"version": "v2.0", "data": kept_articles}))
        paths.append(path)
    return paths


def gold_of(path: Path) -> tuple[dict[str, list[str]], list[tuple[str, str, str]]]:
    data = json.loads(path.read_text())["data"]
    gold, items = {}, []
    for art in data:
        for par in art["paragraphs"]:
            for qa in par["qas"]:
                gold[qa["id"]] = [a["text"] for a in qa["answers"]]
                items.append((qa["id"], qa["question"], par["context"]))
    return gold, items


def f1_of(gold: dict[str, list[str]], ids: list[str], answers: list[dict]) -> float:
    predictions = {qid: a["answer"] for qid, a in zip(ids, answers, strict=True)}
    return score_predictions(gold, predictions, version="2.0")["f1"]


def span_reader(shared_data: Path, root: Path, tokenizer) -> str:
    """An ``hf_model/`` of MiniLM fine-tuned on SQuAD v1.1 train questions (1 epoch), or
    ``QA_ANSWERABILITY_INIT``."""
    if os.environ.get("QA_ANSWERABILITY_INIT"):
        return os.environ["QA_ANSWERABILITY_INIT"]
    v1 = slice_squad(shared_data / "squad" / "train-v1.1.reconstructed.json.gz", root / "v1.json",
                     0, V1_QUESTIONS)  # fmt: skip
    data = SquadDataModule(tokenizer, dataset=None, train_file=str(v1), **DATA)
    module = QALightningModule(pretrained="minilm", optimizer=OPTIMIZER, scheduler=SCHEDULER)
    Trainer(max_epochs=1, limit_val_batches=0, **TRAINER).fit(module, datamodule=data)
    return str(module.save_hf_model(root / "v1_reader", tokenizer))


@pytest.mark.parametrize("size", ["small", pytest.param("large", marks=pytest.mark.slow)])
def test_tuned_answerability_on_held_out_articles(shared_data: Path, tmp_path: Path, size: str):
    sizes = SIZES[size]
    if size == "large" and os.environ.get("QA_ANSWERABILITY_SIZES"):
        sizes = tuple(int(n) for n in os.environ["QA_ANSWERABILITY_SIZES"].split(","))
    train, tune, test = split_by_article(
        shared_data / "squad" / "dev-v2.0.json.gz", tmp_path, sizes
    )
    torch.manual_seed(0)
    tokenizer = load_tokenizer(str(minilm_dir()))
    data = SquadDataModule(
        tokenizer,
        dataset=None,
        train_file=str(train),
        validation_file=str(tune),
        test_file=str(test),
        **DATA,
    )
    pretrained = span_reader(shared_data, tmp_path, tokenizer) if size == "large" else "minilm"
    module = QALightningModule(pretrained=pretrained, optimizer=OPTIMIZER, scheduler=SCHEDULER)
    run_dir = tmp_path / "run"
    trainer = Trainer(
        max_epochs=EPOCHS[size],
        callbacks=[TuneAnswerability(run_dir)],
        default_root_dir=str(tmp_path),
        **TRAINER,
    )
    trainer.fit(module, datamodule=data)
    trainer.validate(module, datamodule=data)
    trainer.test(module, datamodule=data)
    report = json.loads((run_dir / REPORT_FILE).read_text())
    assert report["tuned_on"] == "validation" and set(report["splits"]) == {"validation", "test"}
    assert (run_dir / "reliability.png").stat().st_size > 0
    assert (run_dir / "risk_coverage.png").stat().st_size > 0
    hf_model = module.save_hf_model(tmp_path / "hf_model", tokenizer)
    shipped = read_answerability(hf_model)
    assert shipped == module.answerability and shipped.version_2
    assert shipped.decoding == {
        "n_best_size": 20,
        "max_answer_length": 30,
        "max_length": 256,
        "doc_stride": 96,
    }

    # The shipped model, through QuestionAnswerer's defaults, on the held-out articles.
    qa = QuestionAnswerer.from_pretrained(hf_model, batch_size=32)
    gold, items = gold_of(test)
    questions, contexts = [q for _, q, _ in items], [c for _, _, c in items]
    tuned = [a[0] for a in qa(questions, contexts)]
    at_zero = [a[0] for a in qa(questions, contexts, null_threshold=0.0, calibrated=False)]
    ids = [qid for qid, _, _ in items]
    f1_tuned, f1_zero = (f1_of(gold, ids, answers) for answers in (tuned, at_zero))
    correct = [
        max(compute_exact(g, a["answer"]) for g in (gold[q] or [""]))
        for q, a in zip(ids, tuned, strict=True)
    ]
    ece = expected_calibration_error([a["score"] for a in tuned], correct)
    test_figures = report["splits"]["test"]
    ece_raw = test_figures["ece_uncalibrated"]
    print(
        f"\n[{size}] sizes {sizes} | test: F1 tuned {f1_tuned:.2f} vs threshold 0 {f1_zero:.2f}"
        f" (threshold {shipped.null_threshold:.3f}) | ECE {ece:.4f} (uncalibrated {ece_raw:.4f})"
        f" | report: {json.dumps({k: v for k, v in test_figures.items() if k not in ('reliability', 'risk_coverage')})}"
        f" | load {os.getloadavg()}"
    )
    # calibration.json's held-out figures are those of the shipped model's answers.
    assert test_figures["f1"] == pytest.approx(f1_tuned, abs=0.5)
    assert test_figures["ece_calibrated"] == pytest.approx(ece, abs=0.02)
    assert test_figures["ece_calibrated"] < test_figures["ece_uncalibrated"]
    if size == "large":
        assert f1_tuned > f1_zero
        assert ece <= 0.05 and ece < ece_raw
    assert (hf_model / FILE).is_file()
