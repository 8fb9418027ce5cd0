"""Parity of ``QuestionAnswerer(compat="pipeline")`` with the real transformers 4.x QA pipeline.

``python bench/pipeline_parity.py [--n 500] [--long 100] [--model DIR] [--venv DIR]``

1. Creates (once) a separate virtual environment with ``torch==2.13.0`` and ``transformers<5``
   (default ``.cache/qa-tf4-venv``, ignored by git) and runs ``_pipeline_reference.py`` there:
   the pipeline's answers (answer, start, end, score) with its default settings (max_answer_len
   15, max_seq_len 384, doc_stride 128, max_question_len 64, align_to_words, top_k 1), with
   ``handle_impossible_answer`` off and on.
2. Answers the same questions with ``QuestionAnswerer(..., compat="pipeline")`` in this venv,
   and with the default decoding (for reference: how often it agrees with the pipeline).
3. Prints one JSON object as the last stdout line: per version and setting the count,
   ``agreement_answers`` and ``agreement_offsets`` (target 1.0), ``max_score_diff``.

Questions: ``--n`` seeded random questions of each of dev-v1.1 and dev-v2.0 plus the ``--long``
questions with the longest contexts (several windows each). The model: ``--model DIR``, else the
newest ``outputs/train/runs/*/hf_model`` or ``checkpoints/last.ckpt`` (fine-tuned), else (or with
``--model random``) the packaged MiniLM with a seeded random QA head, saved under
``.cache/pipeline_parity/`` (answers meaningless, parity still exact). ``--model mixed``: the
fine-tuned head mixed with the random one (the empty answer then wins for some questions only).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, log, set_threads, squad_file

from qa_lightning.data.squad_json import read_squad_file
from qa_lightning.inference import QuestionAnswerer

VERSIONS = {"v1.1": "dev-v1.1.json.gz", "v2.0": "dev-v2.0.json.gz"}
REFERENCE = Path(__file__).resolve().parent / "_pipeline_reference.py"


def ensure_venv(venv: Path, torch_spec: str) -> Path:
    """The python of a venv with ``transformers<5``, created (or repaired) when needed."""
    python = venv / "bin" / "python"
    check = "import torch, transformers; assert int(transformers.__version__.split('.')[0]) < 5"
    if (
        python.exists()
        and subprocess.run([python, "-c", check], capture_output=True).returncode == 0
    ):
        return python
    log(f"creating {venv} with {torch_spec} and transformers<5")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, torch_spec, "transformers<5"], check=True)
    subprocess.run([python, "-c", check], check=True)
    return python


def choose_model(model: str | None) -> tuple[Path, str]:
    """The model directory and what it is: ``given``, ``fine-tuned`` or ``random-head``.

    Default: the newest demo run's ``hf_model/``, else its newest checkpoint (saved as a model
    directory under ``.cache/pipeline_parity/``), else the random-head MiniLM. ``--model random``
    asks for the latter.
    """
    cache = REPO / ".cache" / "pipeline_parity"
    if model == "random":
        return random_head_model(cache / "minilm-random-head"), "random-head"
    if model == "mixed":
        tuned, kind = choose_model(None)
        return mixed_head_model(tuned, cache / f"{tuned.name}-mixed"), f"mixed head ({kind})"
    if model:
        return Path(model).resolve(), "given"
    runs = REPO / "outputs" / "train" / "runs"
    newest = sorted(
        [*runs.glob("*/hf_model/config.json"), *runs.glob("*/checkpoints/last.ckpt")],
        key=lambda p: p.stat().st_mtime,
    )
    if not newest:
        return random_head_model(cache / "minilm-random-head"), "random-head"
    if newest[-1].name == "config.json":
        return newest[-1].parent, "fine-tuned"
    return checkpoint_model(newest[-1], cache / f"{newest[-1].parents[1].name}-last"), (
        f"fine-tuned (checkpoint {newest[-1].relative_to(REPO)})"
    )


def checkpoint_model(checkpoint: Path, directory: Path) -> Path:
    """A Lightning checkpoint saved as a model directory (``save_pretrained``), once."""
    if not (directory / "config.json").is_file():
        from qa_lightning.inference.loading import load_module, tokenizer_for

        module = load_module(checkpoint)
        module.save_hf_model(directory, tokenizer_for(checkpoint, module))
    return directory


def mixed_head_model(tuned: Path, directory: Path, weight: float = 0.6, seed: int = 0) -> Path:
    """``tuned`` with its QA head mixed ``weight : 1 - weight`` with a seeded random head.

    The demo's weakly trained MiniLM prefers the empty answer for every question; the mixture
    answers some and not others, so that the empty answer's threshold is exercised.
    """
    if (directory / "config.json").is_file():
        return directory
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    model = AutoModelForQuestionAnswering.from_pretrained(tuned)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head = model.qa_outputs
        noise = torch.randn(head.weight.shape, generator=generator) * 0.2
        head.weight.copy_(weight * head.weight + (1 - weight) * noise)
        head.bias.mul_(weight)
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(tuned).save_pretrained(directory)
    return directory


def random_head_model(directory: Path, seed: int = 0) -> Path:
    """The packaged MiniLM with a seeded random QA head, saved with ``save_pretrained``."""
    if (directory / "config.json").is_file():
        return directory
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from qa_lightning.paths import minilm_dir

    model = AutoModelForQuestionAnswering.from_pretrained(minilm_dir())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head = model.qa_outputs
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.2)
        head.bias.zero_()
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(directory)
    return directory


def choose_questions(n: int, long: int, seed: int) -> dict[str, list[dict[str, str]]]:
    """Per version: ``n`` seeded random questions plus the ``long`` ones with the longest contexts."""
    chosen = {}
    for version, name in VERSIONS.items():
        records = read_squad_file(squad_file(name)).records
        rows = random.Random(seed).sample(range(len(records)), min(n, len(records)))
        taken = set(rows)
        by_length = sorted(range(len(records)), key=lambda i: -len(records[i]["context"]))
        rows += [i for i in by_length if i not in taken][:long]
        chosen[version] = [
            {
                "key": f"{version}/{records[i]['id']}",
                "question": records[i]["question"],
                "context": records[i]["context"],
            }
            for i in rows
        ]
    return chosen


def compare(reference: dict[str, dict], ours: dict[str, dict]) -> dict[str, Any]:
    """Agreement of the best answers: text, character offsets, score."""
    keys = list(reference)
    same_text = [reference[k]["answer"] == ours[k]["answer"] for k in keys]
    same_offsets = [
        (reference[k]["start"], reference[k]["end"]) == (ours[k]["start"], ours[k]["end"])
        for k in keys
    ]
    diffs = [abs(reference[k]["score"] - ours[k]["score"]) for k in keys]
    mismatches = [
        {"key": k, "pipeline": reference[k], "ours": ours[k]}
        for k, same in zip(keys, same_offsets, strict=True)
        if not same
    ]
    return {
        "count": len(keys),
        "agreement_answers": sum(same_text) / len(keys),
        "agreement_offsets": sum(same_offsets) / len(keys),
        "max_score_diff": max(diffs),
        "empty_answers": sum(not reference[k]["answer"] for k in keys),
        "mismatches": mismatches[:3],
    }


def best(answers: list[dict[str, Any]]) -> dict[str, Any]:
    return answers[0] if answers else {"answer": "", "start": 0, "end": 0, "score": 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500, help="random questions per version")
    parser.add_argument("--long", type=int, default=100, help="longest-context questions added")
    parser.add_argument("--model", help="model directory (default: see the module docstring)")
    parser.add_argument("--venv", type=Path, default=REPO / ".cache" / "qa-tf4-venv")
    parser.add_argument("--torch", default="torch==2.13.0", help="torch requirement for the venv")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)
    started = time.perf_counter()
    model_dir, kind = choose_model(args.model)
    log(f"model {model_dir} ({kind})")
    questions = choose_questions(args.n, args.long, args.seed)
    python = ensure_venv(args.venv, args.torch)

    with tempfile.TemporaryDirectory() as tmp:
        items = [item for version in questions.values() for item in version]
        (Path(tmp) / "questions.json").write_text(json.dumps(items))
        log(f"pipeline reference for {len(items)} questions (twice) in {args.venv}")
        env = {**os.environ, "QA_BENCH_THREADS": str(args.threads)}
        subprocess.run(
            [python, REFERENCE, model_dir, Path(tmp) / "questions.json", Path(tmp) / "ref.json"],
            check=True,
            env=env,
        )
        reference = json.loads((Path(tmp) / "ref.json").read_text())

    compat = QuestionAnswerer.from_pretrained(
        model_dir, backend="torch", batch_size=args.batch_size, compat="pipeline"
    )
    default = QuestionAnswerer(compat.module, compat.tokenizer, batch_size=args.batch_size)
    results, default_agreement = [], {}
    ours_seconds = 0.0
    for version, items in questions.items():
        qs, cs = [i["question"] for i in items], [i["context"] for i in items]
        windows = compat.tokenizer(
            qs, cs, truncation="only_second", max_length=384, stride=128,
            return_overflowing_tokens=True,
        )["overflow_to_sample_mapping"]  # fmt: skip
        multi = len(windows) - len(set(windows))
        for handle in (False, True):
            log(f"{version} handle_impossible_answer={handle}")
            t = time.perf_counter()
            ours = compat(qs, cs, handle_impossible_answer=handle)
            ours_seconds += time.perf_counter() - t
            ref = {i["key"]: reference[str(handle).lower()][i["key"]] for i in items}
            got = {i["key"]: best(a) for i, a in zip(items, ours, strict=True)}
            row = {"version": version, "handle_impossible_answer": handle}
            results.append(row | compare(ref, got) | {"extra_windows": multi})
            plain = default(qs, cs, handle_impossible_answer=handle)
            same = sum(
                best(a)["answer"] == ref[i["key"]]["answer"]
                for i, a in zip(items, plain, strict=True)
            )
            default_agreement[f"{version}/handle_impossible_answer={handle}"] = same / len(items)

    summary = {
        "model": {"path": str(model_dir), "kind": kind},
        "reference": {
            "transformers": reference["transformers"],
            "torch": reference["torch"],
            "seconds": reference["seconds"],
        },
        "compat_seconds": ours_seconds,
        "agreement_answers": min(r["agreement_answers"] for r in results),
        "agreement_offsets": min(r["agreement_offsets"] for r in results),
        "max_score_diff": max(r["max_score_diff"] for r in results),
        "results": results,
        "default_mode_agreement_answers": default_agreement,
        "seconds": time.perf_counter() - started,
    }
    sys.stdout.flush()
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
