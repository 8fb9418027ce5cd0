"""Comparing runs on the same questions: figures side by side, paired bootstrap intervals and
p-values of the EM/F1 difference, flipped questions and the config differences."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from qa_lightning.metrics.bootstrap import SAMPLES, SEED, PairedDifference, paired_bootstrap
from qa_lightning.report.html import LEGEND, esc, number, page, record_excerpt, section, table
from qa_lightning.report.run_report import headline_rows, load_run, version_of
from qa_lightning.utils.io import atomic_write

CONFIG_FILE = Path(".hydra") / "config.yaml"


@dataclass(frozen=True)
class Comparison:
    """Run ``b`` against the baseline ``a`` on their shared questions (ids in ``a``'s order)."""

    shared: list[str]
    exact: PairedDifference
    f1: PairedDifference
    right_to_wrong: list[str]
    wrong_to_right: list[str]


def compare_records(
    a: Sequence[Mapping[str, Any]],
    b: Sequence[Mapping[str, Any]],
    samples: int = SAMPLES,
    seed: int = SEED,
) -> Comparison:
    """Paired differences (b - a, in 0..1 units) and EM flips over the questions both answered."""
    by_id = {r["id"]: r for r in b}
    shared = [r["id"] for r in a if r["id"] in by_id]
    if not shared:
        raise ValueError("the runs share no question id: nothing to compare")
    first = {r["id"]: r for r in a}
    pairs = [(first[q], by_id[q]) for q in shared]
    diffs = {
        name: paired_bootstrap(
            [x[name] for x, _ in pairs], [y[name] for _, y in pairs], samples, seed
        )
        for name in ("exact", "f1")
    }
    return Comparison(
        shared=shared,
        exact=diffs["exact"],
        f1=diffs["f1"],
        right_to_wrong=[
            q
            for q, (x, y) in zip(shared, pairs, strict=True)
            if x["exact"] == 1 and y["exact"] == 0
        ],
        wrong_to_right=[
            q
            for q, (x, y) in zip(shared, pairs, strict=True)
            if x["exact"] == 0 and y["exact"] == 1
        ],
    )


def flat_config(run_dir: Path) -> dict[str, Any]:
    """The run's config (``.hydra/config.yaml``), resolved where it can be, as dotted keys."""
    path = run_dir / CONFIG_FILE
    if not path.exists():
        return {}
    cfg = OmegaConf.load(path)
    try:
        container = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # ${hydra:...} and other resolvers outside a Hydra run
        container = OmegaConf.to_container(cfg, resolve=False)
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            out[prefix] = node

    walk(container, "")
    return out


def config_differences(configs: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Any]]]:
    """Keys whose value is not the same in every config (missing shown as ``None``)."""
    keys = sorted({k for cfg in configs for k in cfg})
    rows = []
    for key in keys:
        values = [cfg.get(key) for cfg in configs]
        if any(v != values[0] for v in values[1:]):
            rows.append((key, values))
    return rows


def build_comparison(run_dirs: Sequence[str | Path]) -> str:
    """The comparison page of ``run_dirs`` (the first is the baseline)."""
    if len(run_dirs) < 2:
        raise ValueError("comparing needs at least two run directories")
    runs = [load_run(d) for d in run_dirs]
    names = [f"{n}: {Path(r['dir']).resolve().name}" for n, r in enumerate(runs)]
    for run in runs:
        if run["records"] is None:
            raise FileNotFoundError(
                f"{run['dir']}: no questions.jsonl to compare (run an evaluation first)"
            )
    sections = [_metrics_section(runs, names)]
    for n in range(1, len(runs)):
        comp = compare_records(runs[0]["records"], runs[n]["records"])
        sections.append(_pair_section(runs[0], runs[n], names[0], names[n], comp))
    sections.append(_config_section(runs, names))
    return page("Run comparison", sections, " vs ".join(str(r["dir"]) for r in runs))


def write_comparison(run_dirs: Sequence[str | Path], output: str | Path) -> Path:
    html = build_comparison(run_dirs)
    return atomic_write(Path(output), lambda tmp: tmp.write_text(html, encoding="utf-8"))


def _metrics_section(runs: Sequence[Mapping[str, Any]], names: Sequence[str]) -> str:
    columns = [headline_rows(r["metrics"] or {}, {}, version_of(r))[0] for r in runs]
    labels = [row[0] for row in columns[0]]
    rows = []
    for i, label in enumerate(labels):
        rows.append([label, *(col[i][1] if i < len(col) else None for col in columns)])
    rows.append(["questions", *(len(r["records"]) for r in runs)])
    return section("Figures side by side", table(["figure", *names], rows), "figures")


def _diff_row(name: str, d: PairedDifference) -> list[Any]:
    return [name, 100 * d.mean, 100 * d.low, 100 * d.high, d.p_value, d.n]


def _pair_section(a: Mapping, b: Mapping, name_a: str, name_b: str, comp: Comparison) -> str:
    headers = [
        "difference (b - a)",
        "mean",
        "95% CI low",
        "95% CI high",
        "p-value",
        "shared questions",
    ]
    diff = table(
        headers, [_diff_row("EM", comp.exact), _diff_row("F1", comp.f1)], attrs=' class="paired"'
    )
    note = f'<p class="note">Paired bootstrap over the shared questions, {SAMPLES} resamples, seed {SEED}; an interval that holds 0 means the difference may be noise.</p>'
    rec_a = {r["id"]: r for r in a["records"]}
    rec_b = {r["id"]: r for r in b["records"]}
    parts = [diff, note, LEGEND]
    for title, ids in (
        ("right → wrong", comp.right_to_wrong),
        ("wrong → right", comp.wrong_to_right),
    ):
        rows = [
            [
                esc(rec_a[q]["question"]),
                esc(rec_a[q]["prediction"] or "(no answer)"),
                esc(rec_b[q]["prediction"] or "(no answer)"),
                esc(" | ".join(rec_a[q]["answers"]["text"]) or "(no answer)"),
                record_excerpt(rec_b[q]),
            ]
            for q in ids[:30]
        ]
        head = ["question", "a answered", "b answered", "gold", "context (b's span)"]
        body = table(head, rows, raw=[True] * 5) if rows else '<p class="note">none</p>'
        parts.append(f'<h3 data-flips="{len(ids)}">{esc(title)} (EM): {len(ids)}</h3>{body}')
    return section(f"{name_b} vs {name_a}", "".join(parts))


def _config_section(runs: Sequence[Mapping[str, Any]], names: Sequence[str]) -> str:
    diffs = config_differences([flat_config(Path(r["dir"])) for r in runs])
    if not diffs:
        return section(
            "Config differences",
            '<p class="note">The resolved configs are the same (or missing).</p>',
        )
    rows = [
        [key, *(number(v, 6) if isinstance(v, float) else esc(v) for v in values)]
        for key, values in diffs
    ]
    return section(
        "Config differences", table(["key", *names], rows, raw=[True] * (len(names) + 1)), "config"
    )
