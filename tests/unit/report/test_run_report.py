"""report.html of a run directory: headline figures equal metrics.json, breakdowns, windows,
error tables with highlighted spans, a self-contained page; the per-question records."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from helpers.report_runs import examples_of, make_run
from qa_lightning.cli import report as report_cli
from qa_lightning.errors import DataFormatError
from qa_lightning.paths import SAMPLE_DATA_FILE
from qa_lightning.report.breakdowns import breakdown, edge_distance, question_word
from qa_lightning.report.html import highlight
from qa_lightning.report.questions import read_records, window_stats
from qa_lightning.report.run_report import build, write_report


@pytest.fixture(scope="module")
def v2_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("v2run")
    metrics = make_run(run, examples_of(SAMPLE_DATA_FILE, 200), version="2.0", seed=0)
    return run, metrics


def cell(html: str, key: str) -> float:
    row = re.search(rf'<tr data-key="{key}"><td>[^<]*</td><td class="num">([-\d.]+)</td>', html)
    assert row, f"no row for {key}"
    return float(row.group(1))


def test_headline_figures_equal_metrics_json(v2_run):
    run, metrics = v2_run
    html = write_report(run).read_text()
    for key in ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_f1"):
        assert cell(html, key) == pytest.approx(metrics[key], abs=0.005), key


def test_the_page_is_self_contained_and_small(v2_run):
    run, _ = v2_run
    html = build(run).html
    assert "http://" not in html and "https://" not in html and "<script" not in html
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) >= 3 and all(src.startswith("data:image/png;base64,") for src in images)
    assert len(html.encode()) < 800_000
    for section in ("Training curves", "Headline figures", "Breakdowns", "Errors"):
        assert section in html
    assert "False &quot;no answer&quot;" in html and "False answers" in html


def test_error_rows_highlight_predicted_and_gold_spans(v2_run):
    run, _ = v2_run
    report = build(run)
    records = read_records(run / "questions.jsonl")
    near = [r for r in records if 0 < r["f1"] < 1]
    assert near and f"Near misses (0 &lt; F1 &lt; 1) · {min(20, len(near))}" in report.html
    gold = near[0]["answers"]["text"][0]
    assert re.search(r'<mark class="(gold|both)">', report.html) and gold.split()[0] in report.html


def test_breakdown_counts_add_up_and_scores_are_means(v2_run):
    run, metrics = v2_run
    records = read_records(run / "questions.jsonl")
    rows = breakdown(records, lambda r: question_word(r["question"]), ())
    assert sum(r.count for r in rows) == len(records)
    total = sum(r.count * r.f1 for r in rows) / len(records)
    assert total == pytest.approx(metrics["f1"])


def test_question_words():
    assert question_word("What is it?") == "what"
    assert question_word("In which year, and how?") == "which"
    assert question_word("Name the king.") == "other"


def test_window_stats_find_the_gold_answer_and_its_edge_distance():
    # Two windows over a 10-token context (token i = chars [2i, 2i+1]); question/special = -1.
    def window(first, last):
        specials = [[-1, -1]] * 3
        return np.array(specials + [[2 * i, 2 * i + 1] for i in range(first, last)] + [[-1, -1]])

    # gold = tokens 4..5: 4 tokens from either edge of window 1, 0 from the start of window 2
    stats = window_stats([window(0, 10), window(4, 10)], [14, 10], 8, 11)
    assert (stats.windows, stats.context_tokens, stats.gold_in_window) == (2, 10, True)
    assert stats.gold_edge_tokens == 4 and stats.feature_lengths == [14, 10]
    lost = window_stats([window(0, 4), window(3, 7)], [8, 8], 4, 13)  # tokens 2..6 span both
    assert lost.gold_in_window is False and lost.gold_edge_tokens is None
    assert edge_distance({"answers": {"text": ["x"]}, "gold_in_window": False}) == "in no window"


def test_highlight_marks_overlap():
    context = "The quick brown fox jumps"
    out = highlight(context, (4, 15), (10, 19))
    assert '<mark class="pred">quick </mark><mark class="both">brown</mark>' in out
    assert '<mark class="gold"> fox</mark>' in out


def test_cli_rebuilds_the_report_and_reports_bad_input(v2_run, tmp_path, capsys):
    run, _ = v2_run
    target = tmp_path / "page.html"
    assert report_cli.main([str(run), "--output", str(target)]) == 0
    assert capsys.readouterr().out.strip() == str(target) and target.stat().st_size > 10_000
    assert report_cli.main([str(tmp_path / "missing")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "questions.jsonl").write_text('{"id": "q1"}\n')
    with pytest.raises(DataFormatError, match=r"questions.jsonl.*'q1'.*field 'question'"):
        read_records(bad / "questions.jsonl")
    assert report_cli.main([str(bad)]) == 2


def test_a_run_without_records_still_gets_a_page(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"exact_match": 50.0, "f1": 60.0}))
    html = write_report(tmp_path).read_text()
    assert cell(html, "f1") == 60.0 and "No questions.jsonl" in html
