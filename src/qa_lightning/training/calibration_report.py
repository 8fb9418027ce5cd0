"""``calibration.json`` and its two PNGs: the answerability figures of each evaluated split."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qa_lightning.utils.io import atomic_write, atomic_write_json

REPORT_FILE = "calibration.json"


def plot_reliability(reports: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Accuracy against confidence per bin, before and after calibration, one panel per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(reports), figsize=(5 * len(reports), 4), squeeze=False)
    for ax, (split, report) in zip(axes[0], reports.items(), strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
        for kind, marker in (("uncalibrated", "s"), ("calibrated", "o")):
            bins = report["reliability"][kind]
            ece = report[f"ece_{kind}"]
            ax.plot(
                [b["confidence"] for b in bins],
                [b["accuracy"] for b in bins],
                marker=marker,
                label=f"{kind} (ECE {ece:.3f})",
            )
        ax.set(xlabel="top answer's score", ylabel="exact match", xlim=(0, 1), ylim=(0, 1))
        ax.set_title(f"reliability: {split}")
        ax.legend(loc="upper left")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return path


def plot_risk_coverage(reports: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """EM of the answered questions against the fraction answered, one curve per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for split, report in reports.items():
        curve = report["risk_coverage"]
        area = report["risk_coverage_area"]
        ax.plot(curve["coverage"], curve["exact"], label=f"{split} (area {area:.3f})")
    ax.set(xlabel="fraction answered", ylabel="EM of the answered", xlim=(0, 1), ylim=(0, 1))
    ax.set_title("risk-coverage (calibrated score cut-off)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return path


def write_calibration_report(
    output_dir: str | Path, reports: Mapping[str, Mapping[str, Any]], tuned_on: str
) -> dict[str, Path]:
    """``calibration.json`` (every split's figures and curves), ``reliability.png`` and
    ``risk_coverage.png`` in ``output_dir``; ``tuned_on`` names the split the values come from."""
    output_dir = Path(output_dir)
    content = {"tuned_on": tuned_on, "splits": {k: dict(v) for k, v in reports.items()}}
    return {
        "report": atomic_write_json(output_dir / REPORT_FILE, content),
        "reliability": plot_reliability(reports, output_dir / "reliability.png"),
        "risk_coverage": plot_risk_coverage(reports, output_dir / "risk_coverage.png"),
    }
