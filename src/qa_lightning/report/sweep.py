"""``sweep_report.html`` of a Hydra multirun: every job's figures with intervals, a bar chart,
the failed jobs named. Reads ``sweep_summary.json`` (written by ``SweepSummary``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qa_lightning.errors import DataFormatError
from qa_lightning.report import figures
from qa_lightning.report.html import esc, image, page, section, table
from qa_lightning.utils.io import atomic_write, read_json_file

SUMMARY_FILE = "sweep_summary.json"
REPORT_FILE = "sweep_report.html"


def _figure(metrics: Mapping[str, Any], name: str) -> tuple[float | None, list | None]:
    """``(value, [low, high])`` of EM (``name="exact"``) or F1 from a job's metrics.json."""
    keys = ("exact_match", "exact") if name == "exact" else ("f1",)
    value = next((metrics[k] for k in keys if k in metrics), None)
    saved = metrics.get("bootstrap") or {}
    ci = next((saved[k] for k in keys if isinstance(saved.get(k), list)), None)
    return (None if value is None else float(value)), ci


def build_sweep_report(jobs: Sequence[Mapping[str, Any]], title: str) -> str:
    """The page of the jobs of ``sweep_summary.json``."""
    rows, labels, f1s, errors = [], [], [], []
    for job in jobs:
        overrides = " ".join(job.get("overrides") or [])
        if job.get("status") != "ok":
            continue
        metrics = job.get("metrics") or {}
        em, em_ci = _figure(metrics, "exact")
        f1, f1_ci = _figure(metrics, "f1")
        rows.append(
            [job["job"], overrides, em, *(em_ci or (None, None)), f1, *(f1_ci or (None, None))]
        )
        if f1 is not None:
            labels.append(f"job {job['job']}")
            f1s.append(f1)
            errors.append(tuple(f1_ci) if f1_ci else (f1, f1))
    headers = ["job", "overrides", "EM", "EM CI low", "EM CI high", "F1", "F1 CI low", "F1 CI high"]
    sections = [
        section(
            "Jobs",
            table(headers, rows, attrs=' id="jobs"')
            if rows
            else '<p class="note">No job finished.</p>',
        )
    ]
    if f1s:
        png = figures.png_bytes(
            figures.bars_figure("F1 per job (95% CI)", labels, {"F1": f1s}, {"F1": errors})
        )
        sections.append(section("F1 per job", image(figures.data_uri(png), "F1 per job")))
    failed = [j for j in jobs if j.get("status") != "ok"]
    failed_rows = [
        [j["job"], " ".join(j.get("overrides") or []), j.get("error", "")] for j in failed
    ]
    body = (
        table(["job", "overrides", "error"], failed_rows, attrs=' id="failed"')
        if failed
        else '<p class="note">No job failed.</p>'
    )
    sections.append(section(f"Failed jobs: {len(failed)}", body, "failed-jobs"))
    return page(title, sections, f"{len(jobs)} jobs, {len(failed)} failed")


def write_sweep_report(sweep_dir: str | Path) -> Path:
    """Read ``sweep_summary.json`` of ``sweep_dir`` and write ``sweep_report.html`` beside it."""
    sweep_dir = Path(sweep_dir)
    summary = sweep_dir / SUMMARY_FILE
    if not summary.exists():
        raise FileNotFoundError(f"{summary}: no sweep summary (is this a multirun directory?)")
    jobs = read_json_file(summary)
    if not isinstance(jobs, list) or not all(isinstance(j, dict) and "job" in j for j in jobs):
        raise DataFormatError("expected a list of jobs with a 'job' field", path=str(summary))
    html = build_sweep_report(jobs, f"Sweep report: {esc(sweep_dir.name)}")
    return atomic_write(sweep_dir / REPORT_FILE, lambda tmp: tmp.write_text(html, encoding="utf-8"))
