"""``report.html`` of one run directory, rebuilt from its files alone.

Reads ``metrics.json``, ``questions.jsonl`` / ``questions.meta.json`` (per-question records),
``curves.json`` (training history) and, when present, ``calibration.json`` with the PNGs it
names. Each part is optional: a missing file leaves its section out with a note.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qa_lightning.errors import DataFormatError
from qa_lightning.metrics.bootstrap import SAMPLES, SEED
from qa_lightning.report import breakdowns as bd
from qa_lightning.report import figures
from qa_lightning.report.html import (
    LEGEND,
    esc,
    image,
    number,
    page,
    record_excerpt,
    section,
    table,
)
from qa_lightning.report.questions import file_names, read_records
from qa_lightning.utils.io import atomic_write, read_json_file

REPORT_FILE = "report.html"
CURVES_FILE = "curves.json"
CALIBRATION_FILE = "calibration.json"
HEADLINE = {
    "1.1": (("exact_match", "EM", "exact"), ("f1", "F1", "f1")),
    "2.0": (
        ("exact", "EM", "exact"),
        ("f1", "F1", "f1"),
        ("HasAns_exact", "HasAns EM", "HasAns_exact"),
        ("HasAns_f1", "HasAns F1", "HasAns_f1"),
        ("NoAns_exact", "NoAns EM", "NoAns_exact"),
        ("NoAns_f1", "NoAns F1", "NoAns_f1"),
    ),
}


@dataclass
class RunReport:
    """The page and what it shows (for the loggers): PNG images and tables by name."""

    html: str
    images: dict[str, bytes] = field(default_factory=dict)
    tables: dict[str, tuple[list[str], list[list[Any]]]] = field(default_factory=dict)
    predictions: list[dict[str, Any]] = field(default_factory=list)


def _read_json(path: Path) -> Any:
    return read_json_file(path) if path.exists() else None


def load_run(run_dir: str | Path, split: str = "validation") -> dict[str, Any]:
    """What the report reads from ``run_dir`` (``None`` for each file that is not there)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: not a run directory")
    prefix = "" if split == "validation" else f"{split}_"
    rows_name, meta_name = file_names(split)
    metrics = _read_json(run_dir / f"{prefix}metrics.json")
    if metrics is not None and not isinstance(metrics, dict):
        raise DataFormatError("expected an object of figures", path=str(run_dir / "metrics.json"))
    return {
        "dir": run_dir,
        "metrics": metrics,
        "records": read_records(run_dir / rows_name) if (run_dir / rows_name).exists() else None,
        "meta": _read_json(run_dir / meta_name) or {},
        "curves": _read_json(run_dir / CURVES_FILE),
        "calibration": _read_json(run_dir / CALIBRATION_FILE),
    }


def version_of(run: Mapping[str, Any]) -> str:
    meta_version = run["meta"].get("version")
    if meta_version:
        return str(meta_version)
    return "2.0" if "exact" in (run["metrics"] or {}) else "1.1"


def headline_rows(
    metrics: Mapping[str, Any],
    intervals: Mapping[str, tuple[float, float]],
    version: str,
    questions: int | None = None,
) -> tuple[list[list[Any]], list[str]]:
    """Rows ``[figure, value, CI low, CI high, questions]`` and their ``data-key``s
    (``questions``: the count when the figures do not hold it, as v1.1's do not)."""
    rows, keys = [], []
    for key, label, ci_key in HEADLINE[version]:
        if key in metrics:
            low, high = intervals.get(ci_key, (None, None))
            total_key = (
                key.split("_")[0] + "_total" if key.startswith(("HasAns", "NoAns")) else "total"
            )
            rows.append(
                [label, float(metrics[key]), low, high, metrics.get(total_key, questions or "")]
            )
            keys.append(key)
    if version == "2.0":
        for key, label in (("best_exact", "best EM"), ("best_f1", "best F1")):
            if key in metrics:
                thresh = metrics.get(f"{key}_thresh")
                rows.append(
                    [
                        f"{label} (threshold {number(thresh, 4)})",
                        float(metrics[key]),
                        None,
                        None,
                        "",
                    ]
                )
                keys.append(key)
    return rows, keys


def _intervals(run: Mapping[str, Any], version: str) -> dict[str, tuple[float, float]]:
    records = run["records"]
    if records:
        return bd.headline_intervals(records, SAMPLES, SEED, version == "2.0")
    saved = (run["metrics"] or {}).get("bootstrap") or {}
    aliases = {"exact_match": "exact"}
    return {aliases.get(k, k): tuple(v) for k, v in saved.items() if isinstance(v, list)}


def build(run_dir: str | Path, split: str = "validation") -> RunReport:
    """The report of ``run_dir`` (``split`` "validation" or "test")."""
    run = load_run(run_dir, split)
    version = version_of(run)
    report = RunReport(html="")
    sections = [_curves_section(run, report), _headline_section(run, version, report)]
    records = run["records"]
    if records:
        sections += [
            _breakdown_section(records, report),
            _windows_section(records, run["meta"].get("max_length"), report),
            _errors_section(records, version == "2.0", report),
        ]
        report.predictions = records
    else:
        sections.append(
            section(
                "Breakdowns and errors",
                '<p class="note">No questions.jsonl in this run: breakdowns need the per-question records of an evaluation.</p>',
            )
        )
    sections.append(_calibration_section(run, report))
    title = f"Run report: {Path(run_dir).resolve().name}"
    subtitle = f"{run['dir']} · SQuAD v{version} · {split} · {len(records or [])} questions"
    report.html = page(title, [s for s in sections if s], subtitle)
    return report


def write_report(
    run_dir: str | Path, output: str | Path | None = None, split: str = "validation"
) -> Path:
    """Build and write ``report.html`` (``test_report.html`` for the test split) atomically."""
    report = build(run_dir, split)
    name = REPORT_FILE if split == "validation" else f"{split}_{REPORT_FILE}"
    path = Path(output) if output else Path(run_dir) / name
    atomic_write(path, lambda tmp: tmp.write_text(report.html, encoding="utf-8"))
    return path


# --- sections ------------------------------------------------------------------------------


def _curves_section(run: Mapping[str, Any], report: RunReport) -> str:
    curves = run["curves"]
    if not curves or not (curves.get("epochs") or curves.get("steps")):
        return section(
            "Training curves",
            '<p class="note">No curves.json (an evaluation-only run, or the curves callback was off).</p>',
        )
    png = figures.png_bytes(
        figures.curves_figure(curves.get("epochs", []), curves.get("steps", []))
    )
    report.images["curves"] = png
    return section("Training curves", image(figures.data_uri(png), "training curves"), "curves")


def _headline_section(run: Mapping[str, Any], version: str, report: RunReport) -> str:
    metrics = run["metrics"]
    if not metrics:
        return section("Headline figures", '<p class="note">No metrics.json in this run.</p>')
    count = len(run["records"]) if run["records"] else None
    rows, keys = headline_rows(metrics, _intervals(run, version), version, count)
    headers = ["figure", "value", "95% CI low", "95% CI high", "questions"]
    report.tables["headline"] = (headers, rows)
    note = f'<p class="note">Intervals: percentile bootstrap over questions, {SAMPLES} resamples, seed {SEED}.</p>'
    return section(
        "Headline figures",
        table(headers, rows, keys=keys, attrs=' id="headline"') + note,
        "headline",
    )


def _breakdown_section(records: Sequence[Mapping[str, Any]], report: RunReport) -> str:
    parts = []
    for name, (title, rows) in bd.all_breakdowns(records).items():
        headers = [title, "questions", "EM", "F1"]
        data = [[r.label, r.count, r.exact, r.f1] for r in rows]
        report.tables[f"breakdown/{name}"] = (headers, data)
        png = figures.png_bytes(
            figures.bars_figure(
                title,
                [r.label for r in rows],
                {"EM": [r.exact for r in rows], "F1": [r.f1 for r in rows]},
                counts=[r.count for r in rows],
            )
        )
        report.images[f"breakdown/{name}"] = png
        parts.append(
            f'<div class="flex"><div>{table(headers, data)}</div><div>{image(figures.data_uri(png), title)}</div></div>'
        )
    return section("Breakdowns", "".join(parts), "breakdowns")


def _windows_section(
    records: Sequence[Mapping[str, Any]], max_length: int | None, report: RunReport
) -> str:
    lost = bd.lost_to_truncation(records)
    answerable = sum(1 for r in records if r["answers"]["text"])
    body = f'<p id="lost">Answers that fit in no single window (lost to truncation): <b>{lost}</b> of {answerable} answerable questions.</p>'
    lengths = bd.feature_lengths(records)
    if lengths:
        png = figures.png_bytes(figures.length_histogram(lengths, max_length))
        report.images["feature_lengths"] = png
        body += image(figures.data_uri(png), "feature lengths")
    return section("Windows and truncation", body, "windows")


def _errors_section(
    records: Sequence[Mapping[str, Any]], version_2: bool, report: RunReport
) -> str:
    parts = [LEGEND]
    headers = ["question", "predicted", "gold", "F1", "score", "context"]
    for title, rows in bd.error_tables(records, version_2).items():
        data = [
            [
                esc(r["question"]),
                esc(r["prediction"] or "(no answer)"),
                esc(" | ".join(r["answers"]["text"]) or "(no answer)"),
                number(r["f1"]),
                number(r.get("score")) if not version_2 else f"na {number(r.get('na_prob'))}",
                record_excerpt(r),
            ]
            for r in rows
        ]
        report.tables[f"errors/{title}"] = (
            headers[:5],
            [
                [
                    r["question"],
                    r["prediction"],
                    " | ".join(r["answers"]["text"]),
                    r["f1"],
                    r.get("score"),
                ]
                for r in rows
            ],
        )
        body = table(headers, data, raw=[True] * 6) if data else '<p class="note">none</p>'
        parts.append(f"<h3>{esc(title)} · {len(rows)}</h3>{body}")
    return section("Errors", "".join(parts), "errors")


def _calibration_section(run: Mapping[str, Any], report: RunReport) -> str:
    calibration = run["calibration"]
    if not calibration:
        return ""
    pngs = sorted({str(v) for v in _values(calibration) if str(v).endswith(".png")})
    parts = []
    for name in pngs:
        path = Path(run["dir"]) / name
        if path.is_file():
            png = path.read_bytes()
            report.images[f"calibration/{path.stem}"] = png
            parts.append(image(figures.data_uri(png), path.stem))
    figures_json = {k: v for k, v in calibration.items() if isinstance(v, (int, float))}
    if figures_json:
        parts.insert(
            0, table(["figure", "value"], [[k, float(v)] for k, v in figures_json.items()])
        )
    return section(
        "Calibration",
        "".join(parts) or '<p class="note">calibration.json names no figure.</p>',
        "calibration",
    )


def _values(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return [v for value in obj.values() for v in _values(value)]
    if isinstance(obj, list):
        return [v for value in obj for v in _values(value)]
    return [obj]
