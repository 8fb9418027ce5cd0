"""OmegaConf resolvers the configs use; importing this module registers them.

``${fast_precision:${trainer.accelerator}}``: ``bf16-mixed`` where bf16 autocast is faster than
fp32, else ``32-true``. That is a CUDA GPU that supports bf16, or a CPU with native bf16 dot
products (the ``avx512_bf16`` or ``amx_bf16`` flags: recent Xeon and EPYC). Elsewhere a CPU
emulates bf16, several times slower than fp32. Measured here (2 cores, avx512_bf16): ``make demo``
took 2 min 52 s in bf16 and 4 min 28 s in fp32, both reaching validation EM 33.3 / F1 40.6.
``conf/trainer/default.yaml`` uses it (so do ``cpu`` and ``ddp_sim``, which extend it); ``gpu``,
``ddp`` and ``fsdp`` set ``bf16-mixed``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from omegaconf import OmegaConf

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_has_fast_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU advertises native bf16 instructions (Linux ``/proc/cpuinfo`` flags)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return any(flag in flags.split() for flag in BF16_CPU_FLAGS)


def fast_precision(accelerator: str = "auto") -> str:
    """``bf16-mixed`` where bf16 is fast on the chosen accelerator, else ``32-true``."""
    import torch

    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if on_gpu:
        return (
            "bf16-mixed"
            if torch.cuda.is_available() and torch.cuda.is_bf16_supported()
            else "32-true"
        )
    return "bf16-mixed" if accelerator in ("cpu", "auto") and cpu_has_fast_bf16() else "32-true"


OmegaConf.register_new_resolver("fast_precision", fast_precision, replace=True)

# set by qa_lightning.training.launcher in the child ranks it starts for a sweep job
SWEEP_CHILD_ENV = "QA_LIGHTNING_SWEEP_CHILD"


def in_sweep_job() -> bool:
    """A job of a Hydra multirun, or a child rank started for one (which runs in single-run mode)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return False
    return HydraConfig.get().mode == RunMode.MULTIRUN or os.environ.get(SWEEP_CHILD_ENV) == "1"


def sweep_group(default: str) -> str:
    """``${sweep_group:x}``: the sweep directory's name in a sweep job (W&B group), else ``x``."""
    if not in_sweep_job():
        return default
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().sweep.dir).name


def sweep_run(name: str) -> str:
    """``${sweep_run:x}``: ``x-<job subdir>`` in a sweep job (one W&B run name per job), else ``x``."""
    if not in_sweep_job():
        return name
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    job = Path(hydra_cfg.runtime.output_dir)
    try:
        job = job.relative_to(Path(hydra_cfg.sweep.dir).absolute())
    except ValueError:
        job = Path(job.name)
    return f"{name}-{'-'.join(job.parts)}"


OmegaConf.register_new_resolver("sweep_group", sweep_group, replace=True)
OmegaConf.register_new_resolver("sweep_run", sweep_run, replace=True)


def launcher_value(key: str, default: object = None) -> object:
    """``${launcher:nodes,1}``: a value of the Hydra launcher's config (``hydra/launcher=slurm``),
    or ``default`` when the launcher has none (the basic launcher, a single run, no Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return default
    value = HydraConfig.get().launcher.get(key)
    return default if value is None else value


OmegaConf.register_new_resolver("launcher", launcher_value, replace=True)
