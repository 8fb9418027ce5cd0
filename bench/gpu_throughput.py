"""GPU training throughput and model FLOPs utilisation, one optimisation switched on at a time.

Models (random init, QA head): bert-base-sized (``BertConfig()`` defaults: 12 layers, hidden 768)
and deberta-v3-base-sized (``DebertaV2Config``: hidden 768, 12 layers, vocab 128,100, relative
attention, position buckets 256). Random token ids, max_length 384, batch 32, AdamW.

Cumulative steps: ``fp32`` (eager attention, fp32, foreach AdamW) -> ``bf16`` (autocast) ->
``sdpa`` (``attn_implementation="sdpa"`` where the architecture supports it) -> ``fused_adamw``
-> ``compile`` (``torch.compile``). Per step: samples/s, tokens/s, MFU = model FLOPs per token *
tokens/s / peak (``--peak-tflops``, default 989: H100 SXM dense bf16), peak memory.
``speedup`` = best samples/s / the fp32 baseline's, per model.

Model FLOPs per token (training: forward + backward = 3x forward), see ``flops_per_token``:
6 * non-embedding parameters (embedding lookups do no matrix work: counting them, as a plain
6 * params does, would inflate DeBERTa's figure ~1.8x, its 128k-token vocabulary being half its
parameters) + 12 * layers * hidden * seq_len (attention scores and the weighted sum) + for
DeBERTa's disentangled attention 6 * layers * hidden * 2k per c2p / p2c term (k = position
buckets). ``mfu_6n`` keeps the plain 6 * all-params figure for comparison.

``hf_trainer``: the Hugging Face ``Trainer`` on the same model (random init, seed 0), the same
batch (the same token ids, repeated as a dataset) and AdamW (its default, fused on CUDA), with
``bf16=True`` and SDPA attention where the architecture has it: samples/s over the same steps
after warm-up (timed from its step-end callback, the device synchronized) and MFU.
``vs_hf_trainer`` = the best step's samples/s over the ``Trainer``'s (``--skip-hf`` leaves it out).

Without a CUDA device it prints ``{"skipped": "no CUDA device"}`` (``--device cpu --tiny`` runs
a tiny smoke test of the code paths on CPU instead).

Each figure is the median of ``--repeats`` timed windows of ``--steps`` steps (after ``--warmup``
steps, two more under ``torch.compile``); ``samples_per_second_range`` gives the slowest and the
fastest window. A step that fails (``torch.compile``, say) is reported as ``{"error": ...}`` and
the other steps still run.

Usage: ``python bench/gpu_throughput.py [--steps 20 --repeats 3 --warmup 5 --peak-tflops 989]``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from _common import emit, log, train_with_hf_trainer
from torch import nn
from transformers import (
    AutoModelForQuestionAnswering,
    BertConfig,
    DebertaV2Config,
    PretrainedConfig,
    PreTrainedModel,
    TrainerCallback,
)

SEQ_LEN, BATCH = 384, 32
STEPS = ("fp32", "bf16", "sdpa", "fused_adamw", "compile")


@dataclass(frozen=True)
class Options:
    """The optimisations switched on for one measurement."""

    bf16: bool = False
    sdpa: bool = False
    fused: bool = False
    compile: bool = False


def cumulative_options(upto: str) -> Options:
    """Every optimisation up to and including ``upto`` (in ``STEPS`` order)."""
    on = STEPS[1 : STEPS.index(upto) + 1]
    return Options(
        bf16="bf16" in on, sdpa="sdpa" in on, fused="fused_adamw" in on, compile="compile" in on
    )


def bert_base() -> PretrainedConfig:
    return BertConfig()


def deberta_v3_base() -> PretrainedConfig:
    return DebertaV2Config(
        vocab_size=128100,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
        relative_attention=True,
        position_buckets=256,
        max_relative_positions=-1,
        pos_att_type=["p2c", "c2p"],
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        position_biased_input=False,
        type_vocab_size=0,
    )


def tiny(config: PretrainedConfig) -> PretrainedConfig:
    """A few-layer version of ``config`` for the CPU smoke test."""
    config.num_hidden_layers, config.hidden_size = 2, 64
    config.num_attention_heads, config.intermediate_size = 2, 128
    config.vocab_size = 1000
    return config


MODELS: dict[str, Callable[[], PretrainedConfig]] = {
    "bert-base": bert_base,
    "deberta-v3-base": deberta_v3_base,
}


def build_model(
    config: PretrainedConfig, sdpa: bool, device: torch.device
) -> tuple[PreTrainedModel, bool]:
    """A random-init QA model; eager attention unless ``sdpa`` (False returned if unsupported)."""
    if sdpa:
        try:
            model = AutoModelForQuestionAnswering.from_config(config, attn_implementation="sdpa")
            return model.to(device).train(), True
        except (ValueError, ImportError) as err:
            log(f"{config.model_type}: SDPA unavailable ({str(err).splitlines()[0][:100]})")
    model = AutoModelForQuestionAnswering.from_config(config, attn_implementation="eager")
    return model.to(device).train(), False


def flops_per_token(model: nn.Module, config: PretrainedConfig, seq_len: int) -> tuple[float, int]:
    """Training FLOPs per token (forward + backward) and the non-embedding parameter count."""
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))
    dense = sum(p.numel() for p in model.parameters()) - embedding
    layers, hidden = config.num_hidden_layers, config.hidden_size
    flops = 6 * dense + 12 * layers * hidden * seq_len  # QK^T and AV: 2 * 2 * seq * hidden fwd
    if getattr(config, "relative_attention", False):  # DeBERTa: c2p / p2c scores over 2k positions
        span = getattr(config, "max_relative_positions", -1)
        if span < 1:
            span = config.max_position_embeddings
        if getattr(config, "position_buckets", -1) > 0:
            span = config.position_buckets
        kinds = len(
            [t for t in (getattr(config, "pos_att_type", None) or []) if t in ("c2p", "p2c")]
        )
        flops += 6 * layers * hidden * 2 * span * kinds
    return float(flops), dense


def random_batch(config: PretrainedConfig, batch: int, length: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, config.vocab_size, (batch, length), generator=g)
    positions = torch.randint(0, length, (2, batch), generator=g)
    out = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "start_positions": positions[0],
        "end_positions": positions[1],
    }
    return {k: v.to(device) for k, v in out.items()}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    config: PretrainedConfig, options: Options, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    """Samples/s, MFU and peak memory of ``args.steps`` timed training steps."""
    model, sdpa = build_model(config, options.sdpa, device)
    params = sum(p.numel() for p in model.parameters())
    model_flops, dense_params = flops_per_token(model, config, args.seq_len)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=options.fused or None)
    forward = torch.compile(model) if options.compile else model
    batch = random_batch(config, args.batch_size, args.seq_len, device)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if options.bf16
        else contextlib.nullcontext()
    )

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = forward(**batch).loss
        loss.backward()
        optimizer.step()

    warm_start = time.perf_counter()
    for _ in range(args.warmup + (2 if options.compile else 0)):
        step()
    synchronize(device)
    warmup_seconds = time.perf_counter() - warm_start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    windows = []  # seconds of each window of args.steps steps; the median is reported
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        synchronize(device)
        windows.append(time.perf_counter() - start)
    seconds = statistics.median(windows)
    samples_per_second = args.steps * args.batch_size / seconds
    tokens_per_second = samples_per_second * args.seq_len
    result = {
        "samples_per_second": samples_per_second,
        "samples_per_second_range": [
            args.steps * args.batch_size / w for w in (max(windows), min(windows))
        ],
        "tokens_per_second": tokens_per_second,
        "mfu": model_flops * tokens_per_second / (args.peak_tflops * 1e12),
        "mfu_6n": 6 * params * tokens_per_second / (args.peak_tflops * 1e12),
        "params": params,
        "non_embedding_params": dense_params,
        "gflops_per_token": model_flops / 1e9,
        "warmup_seconds": warmup_seconds,
        "sdpa_used": sdpa,
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else None,
    }
    return result


class _StepTimes(TrainerCallback):
    """Records the wall-clock at each optimizer step's end (the device synchronized)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.times = device, []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        synchronize(self.device)
        self.times.append(time.perf_counter())


def measure_hf_trainer(
    config: PretrainedConfig, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    """Samples/s and MFU of the HF ``Trainer`` (bf16, SDPA, its default optimizer) on the same
    model and batch: the median window of ``args.steps`` steps after ``args.warmup``."""
    import datasets

    model, sdpa = build_model(config, True, torch.device("cpu"))
    model_flops, _ = flops_per_token(model, config, args.seq_len)
    batch = {
        k: v.cpu() for k, v in random_batch(config, args.batch_size, args.seq_len, device).items()
    }
    total = args.warmup + args.steps * args.repeats
    rows = datasets.Dataset.from_dict({k: v.tolist() for k, v in batch.items()})
    rows = datasets.concatenate_datasets([rows] * total)
    clock = _StepTimes(device)
    with tempfile.TemporaryDirectory() as out:
        training = train_with_hf_trainer(
            model,
            rows,
            out,
            clock,
            per_device_train_batch_size=args.batch_size,
            learning_rate=1e-4,
            max_steps=total,
            bf16=True,
            use_cpu=device.type == "cpu",
            seed=0,
        )
    ends = clock.times[args.warmup - 1 :]
    windows = [ends[(i + 1) * args.steps] - ends[i * args.steps] for i in range(args.repeats)]
    seconds = statistics.median(windows)
    samples_per_second = args.steps * args.batch_size / seconds
    return {
        "samples_per_second": samples_per_second,
        "mfu": model_flops * samples_per_second * args.seq_len / (args.peak_tflops * 1e12),
        "sdpa_used": sdpa,
        "optimizer": training.optim,
        "bf16": True,
    }


def release(compiled: bool, device: torch.device) -> None:
    """Free the previous measurement's model, optimizer state and compiled graphs."""
    gc.collect()
    if compiled:
        torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_model(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Every cumulative step for one model; ``speedup`` = best / fp32 samples per second."""
    steps: dict[str, Any] = {}
    for step in STEPS:
        if step == "compile" and args.skip_compile:
            continue
        config = MODELS[name]()
        if args.tiny:
            config = tiny(config)
        torch.manual_seed(0)
        try:
            steps[step] = measure(config, cumulative_options(step), args, device)
        except Exception as err:  # one failing optimisation (e.g. compile) must not lose the rest
            log(f"{name} {step} failed: {err!r}")
            steps[step] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
            continue
        finally:
            release(step == "compile", device)
        log(
            f"{name} {step}: {steps[step]['samples_per_second']:.1f} samples/s, MFU {steps[step]['mfu']:.3f}"
        )
    rates = {s: r["samples_per_second"] for s, r in steps.items() if "samples_per_second" in r}
    best = max(rates, key=rates.get) if rates else None
    hf: dict[str, Any] | None = None
    if not args.skip_hf:
        config = tiny(MODELS[name]()) if args.tiny else MODELS[name]()
        torch.manual_seed(0)
        try:
            hf = measure_hf_trainer(config, args, device)
            log(f"{name} hf_trainer: {hf['samples_per_second']:.1f} samples/s, MFU {hf['mfu']:.3f}")
        except Exception as err:
            log(f"{name} hf_trainer failed: {err!r}")
            hf = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
        finally:
            release(False, device)
    hf_rate = (hf or {}).get("samples_per_second")
    return {
        "steps": steps,
        "best": best,
        "speedup": rates[best] / rates["fp32"] if best and "fp32" in rates else None,
        "hf_trainer": hf,
        "vs_hf_trainer": rates[best] / hf_rate if best and hf_rate else None,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="timed windows of --steps steps")
    parser.add_argument("--batch-size", type=int, default=BATCH)
    parser.add_argument("--seq-len", type=int, default=SEQ_LEN)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--skip-hf", action="store_true", help="no HF Trainer comparison")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
    parser.add_argument("--tiny", action="store_true", help="tiny models (smoke test)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        emit({"benchmark": "gpu_throughput", "skipped": "no CUDA device"})
        return
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 baseline is true fp32
        torch.backends.cudnn.allow_tf32 = False
    results = {name: run_model(name, args, device) for name in args.models}
    speedups = [r["speedup"] for r in results.values() if r["speedup"] is not None]
    emit(
        {
            "benchmark": "gpu_throughput",
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "batch_size": args.batch_size,
            "seq_len": args.seq_len,
            "peak_tflops": args.peak_tflops,
            "models": results,
            "speedup": min(speedups) if speedups else None,
            "speedup_per_model": {n: r["speedup"] for n, r in results.items()},
            "vs_hf_trainer_per_model": {n: r["vs_hf_trainer"] for n, r in results.items()},
        }
    )


if __name__ == "__main__":
    main()
