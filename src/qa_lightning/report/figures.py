"""The report's figures (matplotlib, Agg), as PNG bytes and ``data:`` URIs for inline images."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DPI = 80


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def smooth(values: Sequence[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard's smoothing)."""
    out, last = [], 0.0
    for n, value in enumerate(values, 1):
        last = weight * last + (1 - weight) * value
        out.append(last / (1 - weight**n))
    return out


def curves_figure(
    epochs: Sequence[Mapping[str, float]], steps: Sequence[Mapping[str, float]]
) -> Any:
    """Loss per step (raw, smoothed) with the learning rate; val loss; EM/F1; start/end accuracy
    per epoch (1-based, integer ticks)."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    step_ax, loss_ax, score_ax, acc_ax = axes
    if steps:
        xs = [s["step"] for s in steps]
        losses = [s["loss"] for s in steps]
        step_ax.plot(xs, losses, alpha=0.35, label="loss")
        step_ax.plot(xs, smooth(losses), label="loss (smoothed)")
        lrs = [(s["step"], s["lr"]) for s in steps if "lr" in s]
        if lrs:
            lr_ax = step_ax.twinx()
            lr_ax.plot(*zip(*lrs, strict=True), color="tab:gray", linestyle="--", label="lr")
            lr_ax.set_ylabel("learning rate")
            lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        step_ax.set_xlabel("optimizer step")
        step_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    panels = (
        (loss_ax, "losses per epoch", (("train/loss_epoch", "train"), ("val/loss", "val"))),
        (score_ax, "validation EM / F1", (("val/exact_match", "EM"), ("val/f1", "F1"))),
        (
            acc_ax,
            "start / end accuracy",
            (
                ("val/start_acc", "val start"),
                ("val/end_acc", "val end"),
                ("train/start_acc_epoch", "train start"),
                ("train/end_acc_epoch", "train end"),
            ),
        ),
    )
    for ax, _, keys in panels:
        for key, label in keys:
            points = [(r["epoch"] + 1, r[key]) for r in epochs if key in r]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    step_ax.set_title("training loss per step")
    for ax, title, _ in panels:
        ax.set_title(title)
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def bars_figure(
    title: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    errors: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    counts: Sequence[int] | None = None,
) -> Any:
    """Grouped bars (one group per label, one bar per series), optional interval error bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) + 2), 3.2))
    x = np.arange(len(labels))
    width = 0.8 / max(1, len(series))
    for n, (name, values) in enumerate(series.items()):
        yerr = None
        if errors and name in errors:
            lows, highs = zip(*errors[name], strict=True)
            yerr = [np.subtract(values, lows), np.subtract(highs, values)]
        ax.bar(x + n * width - 0.4 + width / 2, values, width, yerr=yerr, capsize=3, label=name)
    ticks = [f"{lab}\n(n={c})" for lab, c in zip(labels, counts, strict=True)] if counts else labels
    ax.set_xticks(x, ticks, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def length_histogram(lengths: Sequence[int], max_length: int | None) -> Any:
    """Feature lengths (tokens) with a line at ``max_length``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(lengths, bins=min(40, max(5, len(set(lengths)))), color="tab:blue", alpha=0.8)
    if max_length:
        ax.axvline(max_length, color="tab:red", linestyle="--", label=f"max_length {max_length}")
        ax.legend(fontsize=8)
    ax.set_xlabel("feature length (tokens)")
    ax.set_ylabel("features")
    ax.set_title("feature lengths", fontsize=10)
    fig.tight_layout()
    return fig
