"""Every published backbone from the command line, and its ``hf_model/`` in transformers 4.x.

``python bench/real_backbones.py [--families bert,distilbert,roberta,deberta,longformer]
[--models-dir ../shared/models] [--venv .cache/qa-tf4-venv] [--full-size]``

For each family:
1. ``python -m qa_lightning model=<family> paths.models_dir=DIR model.random_init=true`` on 16
   real dev-v2.0 questions, 2 steps (one thin layer of the real config unless ``--full-size``);
2. ``_tf4_load_check.py`` in the separate ``transformers<5`` venv: the run's ``hf_model/`` loaded
   by transformers 4.x ``AutoTokenizer`` / ``AutoModelForQuestionAnswering``, the tokenizer's
   outputs (must be the ``model_input_names`` the folder records, all taken by the model), and its
   ``pipeline("question-answering")`` answers (``context[start:end] == answer``) on the Normans
   question and 4 real dev-v2.0 questions (one with the longest context: several windows);
3. ``bench/pipeline_parity.py --model <run>/hf_model``: the same pipeline's answers compared with
   ``QuestionAnswerer(compat="pipeline")``.

Writes ``bench/results/real_backbones.json`` (per family the run's seconds and files, the 4.x load
result and the pipeline agreement) and ``bench/results/transformers4_load.json`` (the load check
alone, dated), and prints the former as one JSON line with the machine load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, emit, log, squad_file
from pipeline_parity import ensure_venv

from helpers.app import slice_squad
from helpers.real_backbones import FAMILIES, run_overrides
from qa_lightning.data.squad_json import read_squad_file

RESULTS = REPO / "bench" / "results" / "real_backbones.json"
TF4_RESULTS = REPO / "bench" / "results" / "transformers4_load.json"
LOAD_CHECK = Path(__file__).resolve().parent / "_tf4_load_check.py"
NORMANS = {
    "id": "normans",
    "question": "Where is Normandy?",
    "context": (
        "The Normans were the people who in the 10th and 11th centuries gave their name to "
        "Normandy, a region in France. They were descended from Norse raiders and pirates."
    ),
}


def train_family(family: str, models_dir: Path, data: dict, out: Path, full: bool) -> dict:
    cache = out.parent / "cache"
    overrides = [*run_overrides(family, models_dir, data, cache, not full), f"hydra.run.dir={out}"]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "qa_lightning", *overrides], capture_output=True, text=True
    )
    row = {"rc": proc.returncode, "seconds": round(time.perf_counter() - start, 1)}
    if proc.returncode:
        row["error"] = proc.stderr[-2000:]
        return row
    row["files"] = sorted(p.name for p in out.iterdir())
    row["hf_model"] = sorted(p.name for p in (out / "hf_model").iterdir())
    return row


def load_check_questions(v2: Path) -> list[dict[str, str]]:
    """The Normans question, 3 dev-v2.0 questions spread over the file and the longest context."""
    records = read_squad_file(v2).records
    rows = [0, len(records) // 2, len(records) - 1]
    rows.append(max(range(len(records)), key=lambda i: len(records[i]["context"])))
    picked = [{k: records[i][k] for k in ("id", "question", "context")} for i in rows]
    return [NORMANS, *picked]


def tf4_load(hf_model: Path, python: Path, questions: Path, out: Path) -> dict:
    """``_tf4_load_check.py`` on ``hf_model`` in the 4.x venv, plus: are the tokenizer's outputs
    the ``model_input_names`` that ``hf_model/tokenizer_config.json`` records?"""
    proc = subprocess.run(
        [python, LOAD_CHECK, hf_model, questions, out], capture_output=True, text=True
    )
    if proc.returncode or not out.is_file():
        return {"ok": False, "rc": proc.returncode, "error": proc.stderr[-2000:]}
    result = json.loads(out.read_text())
    recorded = json.loads((hf_model / "tokenizer_config.json").read_text())["model_input_names"]
    result["recorded_model_input_names"] = recorded
    if "tokenizer_outputs" in result:
        result["outputs_match_recorded"] = sorted(result["tokenizer_outputs"]) == sorted(recorded)
        result["ok"] = result["ok"] and result["outputs_match_recorded"]
    return result


def tf4_parity(hf_model: Path, venv: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "pipeline_parity.py"), "--model", str(hf_model),
         "--venv", str(venv), "--n", "5", "--long", "1"],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode:
        return {"rc": proc.returncode, "error": proc.stderr[-2000:]}
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    keys = ("reference", "agreement_answers", "agreement_offsets", "max_score_diff")
    return {"rc": 0, **{k: summary[k] for k in keys}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--models-dir", type=Path, default=REPO.parent / "shared" / "models")
    parser.add_argument("--venv", type=Path, default=REPO / ".cache" / "qa-tf4-venv")
    parser.add_argument("--torch", default="torch==2.13.0", help="torch requirement for the venv")
    parser.add_argument("--full-size", action="store_true")
    args = parser.parse_args()
    if not args.models_dir.is_dir():
        sys.exit(f"models folder not found: {args.models_dir} (--models-dir)")
    python = ensure_venv(args.venv, args.torch)
    results: dict = {"load_before": os.getloadavg(), "full_size": args.full_size, "families": {}}
    tf4: dict = {
        "date": datetime.date.today().isoformat(),
        "what": (
            "hf_model/ of 2-step CLI runs (python -m qa_lightning model=<family> "
            "paths.models_dir=../shared/models model.random_init=true, "
            + ("real size" if args.full_size else "one thin layer of the real config")
            + ") in a transformers<5 venv: AutoTokenizer + AutoModelForQuestionAnswering load "
            "it, the tokenizer's outputs are the model_input_names hf_model/ records and all "
            "are forward() arguments, and pipeline('question-answering') answers each question "
            "(handle_impossible_answer off and on) with context[start:end] == answer"
        ),
        "script": "python bench/real_backbones.py",
        "load_before": os.getloadavg(),
        "families": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        v2 = squad_file("dev-v2.0.json.gz")
        data = {
            "train": slice_squad(v2, root / "train.json", 0, 16),
            "val": slice_squad(v2, root / "val.json", 3000, 16),
        }
        questions = root / "load_check_questions.json"
        questions.write_text(json.dumps(load_check_questions(v2)))
        tf4["questions"] = [q["id"] for q in json.loads(questions.read_text())]
        for family in args.families.split(","):
            log(f"{family}: training")
            row = train_family(
                family, args.models_dir.resolve(), data, root / family, args.full_size
            )
            if row["rc"] == 0:
                hf_model = root / family / "hf_model"
                log(f"{family}: transformers 4.x load check")
                tf4["families"][family] = tf4_load(
                    hf_model, python, questions, root / f"{family}-tf4.json"
                )
                row["transformers4_load_ok"] = tf4["families"][family]["ok"]
                log(f"{family}: transformers 4.x pipeline parity")
                row["transformers4"] = tf4_parity(hf_model, args.venv)
            else:
                tf4["families"][family] = {"ok": False, "error": "training run failed"}
            results["families"][family] = row
            RESULTS.write_text(json.dumps(results, indent=2) + "\n")  # kept if cut off later
            TF4_RESULTS.write_text(json.dumps(tf4, indent=2) + "\n")
    results["load_after"] = tf4["load_after"] = os.getloadavg()
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    TF4_RESULTS.write_text(json.dumps(tf4, indent=2) + "\n")
    emit(results)


if __name__ == "__main__":
    main()
