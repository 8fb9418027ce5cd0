"""HTML building blocks of the report pages: escaping, tables, highlighted context excerpts and a
self-contained page shell (inline CSS, no script, no network)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
mark.pred{background:#ffd6d6}mark.gold{background:#cdeccd}mark.both{background:#bfe0ff}
.excerpt{max-width:560px;font-size:.85em;line-height:1.4}.note{color:#666;font-size:.9em}
img{max-width:100%;height:auto;border:1px solid #eee}.flex{display:flex;flex-wrap:wrap;gap:1em}
.bad{color:#a00}.legend mark{padding:0 .3em}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def number(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return esc(value)


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    keys: Sequence[str | None] | None = None,
    raw: Sequence[bool] | None = None,
    attrs: str = "",
) -> str:
    """A table; numbers right-aligned; ``keys`` names a ``data-key`` per row (the figure's key);
    ``raw`` marks the columns already HTML."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for n, row in enumerate(rows):
        cells = []
        for c, value in enumerate(row):
            if raw and raw[c]:
                cells.append(f"<td>{value}</td>")
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                cells.append(f'<td class="num">{number(value)}</td>')
            else:
                cells.append(f"<td>{esc(value)}</td>")
        key = keys[n] if keys else None
        data = f' data-key="{esc(key)}"' if key else ""
        body.append(f"<tr{data}>{''.join(cells)}</tr>")
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def image(data_uri: str, alt: str) -> str:
    return f'<img src="{data_uri}" alt="{esc(alt)}">'


def section(title: str, body: str, anchor: str = "") -> str:
    ident = f' id="{esc(anchor)}"' if anchor else ""
    return f"<section{ident}><h2>{esc(title)}</h2>{body}</section>"


def page(title: str, sections: Sequence[str], subtitle: str = "") -> str:
    """A complete HTML document: inline style, no script, nothing fetched."""
    sub = f'<p class="note">{esc(subtitle)}</p>' if subtitle else ""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "img-src data:; style-src 'unsafe-inline'\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1>{sub}{''.join(sections)}</body></html>"
    )


def find_span(
    context: str, text: str, start: int | None, end: int | None
) -> tuple[int, int] | None:
    """The prediction's characters: the decoded ones, else its first occurrence in the context."""
    if not text:
        return None
    if start is not None and end is not None and context[start:end] == text:
        return start, end
    found = context.find(text)
    return (found, found + len(text)) if found >= 0 else None


def highlight(
    context: str,
    predicted: tuple[int, int] | None,
    gold: tuple[int, int] | None,
    margin: int = 160,
) -> str:
    """An excerpt of ``context`` around both spans; the predicted span ``mark.pred``, the gold
    ``mark.gold``, their overlap ``mark.both``."""
    spans = [s for s in (predicted, gold) if s]
    if not spans:
        cut = context[: 2 * margin]
        return esc(cut) + ("…" if len(context) > len(cut) else "")
    first = max(0, min(s[0] for s in spans) - margin)
    last = min(len(context), max(s[1] for s in spans) + margin)

    def label(i: int) -> str:
        in_pred = predicted is not None and predicted[0] <= i < predicted[1]
        in_gold = gold is not None and gold[0] <= i < gold[1]
        return "both" if in_pred and in_gold else "pred" if in_pred else "gold" if in_gold else ""

    out, run_start = [], first
    current = label(first) if first < last else ""
    for i in range(first + 1, last + 1):
        kind = label(i) if i < last else None
        if kind != current:
            text = esc(context[run_start:i])
            out.append(f'<mark class="{current}">{text}</mark>' if current else text)
            run_start, current = i, kind
    prefix = "…" if first > 0 else ""
    suffix = "…" if last < len(context) else ""
    return f'<span class="excerpt">{prefix}{"".join(out)}{suffix}</span>'


def record_excerpt(record: Mapping[str, Any]) -> str:
    """The highlighted excerpt of one per-question record (first gold answer)."""
    context = record["context"]
    predicted = find_span(
        context, record["prediction"], record.get("pred_start"), record.get("pred_end")
    )
    answers = record["answers"]
    gold = None
    if answers["text"]:
        start = answers["answer_start"][0]
        gold = (start, start + len(answers["text"][0]))
    return highlight(context, predicted, gold)


LEGEND = (
    '<p class="legend note"><mark class="pred">predicted</mark> <mark class="gold">gold</mark> '
    '<mark class="both">both</mark></p>'
)
