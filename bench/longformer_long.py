"""Longformer at its real window: training steps at 4,096 tokens, real size, batch 1, CPU.

``python bench/longformer_long.py [--steps 2] [--length 4096] [--no-checkpointing]``

Builds ``QALightningModule`` from the published longformer-base-4096 config with random weights
(``../shared/models``, ``$QA_SHARED_MODELS``) and gradient checkpointing, fills one window with
real dev-v1.1 question + contexts through the published tokenizer, and times forward + backward
+ AdamW steps (the first is reported apart: allocation). Writes ``bench/results/longformer_4096.json``
with seconds per step, peak RSS (process, MiB) and the machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from _common import REPO, PhasePeakRss, log, max_rss_mb, set_threads, squad_file

from helpers.round_trip import flat_examples
from qa_lightning.data.features import InputLayout
from qa_lightning.hub import load_tokenizer
from qa_lightning.model.module import QALightningModule

RESULTS = REPO / "bench" / "results" / "longformer_4096.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-checkpointing", action="store_true")
    args = parser.parse_args()
    models = Path(os.environ.get("QA_SHARED_MODELS") or REPO.parent / "shared" / "models")
    folder = models / "longformer-base-4096"
    if not folder.is_dir():
        sys.exit(f"not found: {folder} (set QA_SHARED_MODELS)")
    set_threads(args.threads)
    torch.manual_seed(0)
    tokenizer = load_tokenizer(folder)
    examples = flat_examples(squad_file("dev-v1.1.json.gz"), 2000)
    context = " ".join(dict.fromkeys(examples["context"]))
    batch = tokenizer(
        [examples["question"][0]], [context], truncation="only_second",
        max_length=args.length, return_tensors="pt",
    )  # fmt: skip
    assert batch["input_ids"].shape[1] == args.length
    batch["start_positions"] = torch.tensor([100])
    batch["end_positions"] = torch.tensor([103])
    with PhasePeakRss() as peaks:
        peaks.switch("build")
        module = QALightningModule(
            str(folder), random_init=True, gradient_checkpointing=not args.no_checkpointing
        )
        module.use_input_layout(InputLayout.of(tokenizer))
        module.train()
        optimizer = torch.optim.AdamW(module.parameters(), lr=3e-5)
        seconds = []
        for step in range(args.steps):
            peaks.switch(f"step{step}")
            start = time.perf_counter()
            start_logits, end_logits = module(batch)  # with the global attention mask
            loss = module.compute_loss(batch, start_logits, end_logits)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            seconds.append(time.perf_counter() - start)
            log(f"step {step}: {seconds[-1]:.1f} s, loss {loss.item():.3f}")
    result = {
        "model": "longformer-base-4096 (published config, random weights)",
        "length": args.length,
        "batch_size": 1,
        "gradient_checkpointing": not args.no_checkpointing,
        "threads": args.threads,
        "parameters_m": sum(p.numel() for p in module.parameters()) / 1e6,
        "seconds_per_step": seconds,
        "peak_rss_mib": {k: round(v) for k, v in peaks.peaks.items()},
        "max_rss_mib": round(max_rss_mb()),
        "load_avg": os.getloadavg(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
