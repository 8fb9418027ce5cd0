"""AdamW parameter groups (no weight decay on biases and norm weights) and the linear schedule.

Optimizers and schedulers are given as factories, e.g. Hydra ``_partial_: true`` configs::

    optimizer: {_target_: torch.optim.AdamW, _partial_: true, lr: 3e-5, weight_decay: 0.01}
    scheduler: {_target_: qa_lightning.model.optim.linear_warmup_decay, _partial_: true, warmup_ratio: 0.1}

:func:`to_spec` turns such a factory into a plain dict (``_target_`` + keyword arguments) that
checkpoints can store; :func:`from_spec` turns either form back into a factory.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch
from hydra.utils import get_object
from omegaconf import OmegaConf
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._NormBase,
)

_HYDRA_KEYS = ("_partial_", "_convert_", "_recursive_")

Factory = Callable[..., Any]
FactorySpec = Factory | Mapping[str, Any]


def _is_norm(module_name: str, module: nn.Module) -> bool:
    """A normalisation layer, by type or by name (``LayerNorm``, ``layer_norm``, ``DebertaLayerNorm``)."""
    if isinstance(module, _NORM_TYPES):
        return True
    leaf = module_name.rpartition(".")[2].lower()
    return "norm" in type(module).__name__.lower() or "norm" in leaf


def no_decay(model: nn.Module, param_name: str) -> bool:
    """Whether a parameter is excluded from weight decay: a bias, or a weight of a norm layer."""
    module_name, _, leaf = param_name.rpartition(".")
    return leaf == "bias" or _is_norm(module_name, model.get_submodule(module_name))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two named groups, ``decay`` (``weight_decay``) and ``no_decay`` (0), of trainable parameters."""
    groups: dict[str, list[nn.Parameter]] = {"decay": [], "no_decay": []}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups["no_decay" if no_decay(model, name) else "decay"].append(param)
    return [
        {"name": "decay", "params": groups["decay"], "weight_decay": weight_decay},
        {"name": "no_decay", "params": groups["no_decay"], "weight_decay": 0.0},
    ]


def to_plain(value: Any) -> Any:
    """OmegaConf containers (Hydra's ``_convert_: none``) -> plain dicts and lists (checkpoints
    load with ``weights_only``)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def to_spec(factory: FactorySpec) -> dict[str, Any]:
    """A plain ``{"_target_": dotted.name, **kwargs}`` dict of a ``functools.partial`` or a mapping."""
    if isinstance(factory, functools.partial):
        if factory.args:
            raise ValueError(f"Positional arguments cannot be stored in a checkpoint: {factory!r}")
        target = f"{factory.func.__module__}.{factory.func.__qualname__}"
        return {"_target_": target, **{k: to_plain(v) for k, v in factory.keywords.items()}}
    if isinstance(factory, Mapping):
        spec = {k: to_plain(v) for k, v in factory.items() if k not in _HYDRA_KEYS}
        if "_target_" not in spec:
            raise ValueError(f"An optimizer/scheduler mapping needs a `_target_`: {dict(factory)}")
        return spec
    raise TypeError(
        f"Expected a functools.partial (Hydra `_partial_: true`) or a `_target_` mapping, got {factory!r}"
    )


def from_spec(spec: FactorySpec) -> functools.partial:
    """The factory (``functools.partial``) described by :func:`to_spec`'s dict, or ``spec`` itself."""
    plain = to_spec(spec)
    target = plain.pop("_target_")
    return functools.partial(get_object(target), **plain)


_FUSED_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW)
_FUSED_DEVICES = ("cpu", "cuda")


def fused_by_default(factory: functools.partial, params: list[nn.Parameter]) -> bool:
    """Whether to give ``fused=True`` to an Adam/AdamW factory that chose no implementation.

    torch picks the per-parameter for-loop on CPU when neither ``fused`` nor ``foreach`` is
    given; its fused kernel is about 6x faster there for MiniLM's 22.6M parameters (and the
    Hugging Face ``Trainer`` uses it by default). Only for plain floating-point tensors on CPU or
    CUDA (not sharded ``DTensor`` parameters)."""
    chosen = {"fused", "foreach", "differentiable"} & set(factory.keywords)
    return (
        factory.func in _FUSED_OPTIMIZERS
        and not chosen
        and bool(params)
        and all(
            type(p.data) is torch.Tensor
            and p.dtype.is_floating_point
            and p.device.type in _FUSED_DEVICES
            for p in params
        )
    )


def build_optimizer(
    model: nn.Module, optimizer: FactorySpec, prefer_fused: bool = True
) -> Optimizer:
    """``optimizer(param_groups(model, weight_decay))``, ``weight_decay`` read from the factory;
    Adam/AdamW get torch's fused kernel unless the factory chose an implementation (see
    :func:`fused_by_default`) or ``prefer_fused`` is false (fp16 with a gradient scaler, where
    Lightning cannot clip gradients of an optimizer that unscales them itself)."""
    factory = from_spec(optimizer)
    weight_decay = float(factory.keywords.get("weight_decay", 0.0))
    groups = param_groups(model, weight_decay)
    params = [p for group in groups for p in group["params"]]
    if prefer_fused and fused_by_default(factory, params):
        return factory(groups, fused=True)
    return factory(groups)


def linear_warmup_decay(
    optimizer: Optimizer,
    num_training_steps: int,
    warmup_steps: int | None = None,
    warmup_ratio: float | None = None,
) -> LambdaLR:
    """Linear warmup from 0 over ``warmup_steps`` (or ``warmup_ratio`` of the steps), then linear
    decay to 0 at ``num_training_steps``; the multiplier of step ``s`` is applied to step ``s``."""
    if warmup_steps is not None and warmup_ratio is not None:
        raise ValueError("Give warmup_steps or warmup_ratio, not both.")
    if num_training_steps <= 0:
        raise ValueError(f"num_training_steps must be positive, got {num_training_steps}")
    warmup = (
        warmup_steps
        if warmup_steps is not None
        else round((warmup_ratio or 0.0) * num_training_steps)
    )
    warmup = min(max(int(warmup), 0), num_training_steps)

    def multiplier(step: int) -> float:
        if step < warmup:
            return step / warmup
        return max(0.0, (num_training_steps - step) / max(1, num_training_steps - warmup))

    return LambdaLR(optimizer, multiplier)
