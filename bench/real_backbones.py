"""Every published backbone from the command line, and its ``hf_model/`` in transformers 4.x.

``python bench/real_backbones.py [--families bert,distilbert,roberta,deberta,longformer]
[--models-dir ../shared/models] [--venv .cache/qa-tf4-venv] [--full-size]``

For each family:
1. ``python -m qa_lightning model=<family> paths.models_dir=DIR model.random_init=true`` on 16
   real dev-v2.0 questions, 2 steps (one thin layer of the real config unless ``--full-size``);
2. ``bench/pipeline_parity.py --model <run>/hf_model``: the run's ``hf_model/`` loaded by
   transformers 4.x ``AutoTokenizer`` / ``AutoModelForQuestionAnswering`` and answered by its
   ``pipeline("question-answering")`` in a separate venv, compared with ``QuestionAnswerer``.

Prints one JSON object (also written to ``bench/results/real_backbones.json``): per family the
run's seconds and files, the 4.x load result and the pipeline agreement, and the machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, log, squad_file

from helpers.app import slice_squad
from helpers.real_backbones import FAMILIES, run_overrides

RESULTS = REPO / "bench" / "results" / "real_backbones.json"


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
    parser.add_argument("--full-size", action="store_true")
    args = parser.parse_args()
    if not args.models_dir.is_dir():
        sys.exit(f"models folder not found: {args.models_dir} (--models-dir)")
    results: dict = {"load_before": os.getloadavg(), "full_size": args.full_size, "families": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        v2 = squad_file("dev-v2.0.json.gz")
        data = {
            "train": slice_squad(v2, root / "train.json", 0, 16),
            "val": slice_squad(v2, root / "val.json", 3000, 16),
        }
        for family in args.families.split(","):
            log(f"{family}: training")
            row = train_family(
                family, args.models_dir.resolve(), data, root / family, args.full_size
            )
            if row["rc"] == 0:
                log(f"{family}: transformers 4.x")
                row["transformers4"] = tf4_parity(root / family / "hf_model", args.venv)
            results["families"][family] = row
            RESULTS.write_text(json.dumps(results, indent=2) + "\n")  # kept if cut off later
    results["load_after"] = os.getloadavg()
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
