"""Comparing runs: flips counted against a direct computation, a run with itself holds 0, the
config differences; the sweep page names failed jobs."""

from __future__ import annotations

import json
import re

import pytest
from omegaconf import OmegaConf

from helpers.report_runs import examples_of, make_run
from qa_lightning.cli import report as report_cli
from qa_lightning.metrics.squad_eval import exact_match_score
from qa_lightning.report.compare import compare_records, write_comparison
from qa_lightning.report.questions import read_records
from qa_lightning.report.sweep import write_sweep_report
from qa_lightning.training.sweep_report import SweepReport


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("runs")
    examples = examples_of(shared_data / "squad" / "dev-v1.1.json.gz", 300)
    make_run(
        root / "a",
        examples,
        version="1.1",
        seed=1,
        skill=0.55,
        config="model:\n  lr: 3.0e-05\nseed: 1\n",
    )
    make_run(
        root / "b",
        examples,
        version="1.1",
        seed=2,
        skill=0.7,
        config="model:\n  lr: 5.0e-05\nseed: 1\n",
    )
    return root / "a", root / "b", examples


def test_flips_equal_a_direct_computation(two_runs):
    a, b, examples = two_runs
    pred_a = {r["id"]: r["prediction"] for r in read_records(a / "questions.jsonl")}
    pred_b = {r["id"]: r["prediction"] for r in read_records(b / "questions.jsonl")}

    def right(pred, example):
        return any(exact_match_score(pred, gold) for gold in example["answers"]["text"])

    expected_lost = [
        e["id"] for e in examples if right(pred_a[e["id"]], e) and not right(pred_b[e["id"]], e)
    ]
    expected_won = [
        e["id"] for e in examples if not right(pred_a[e["id"]], e) and right(pred_b[e["id"]], e)
    ]
    comp = compare_records(read_records(a / "questions.jsonl"), read_records(b / "questions.jsonl"))
    assert comp.right_to_wrong == expected_lost and comp.wrong_to_right == expected_won
    assert expected_lost and expected_won
    em_a = json.loads((a / "metrics.json").read_text())["exact_match"]
    em_b = json.loads((b / "metrics.json").read_text())["exact_match"]
    assert 100 * comp.exact.mean == pytest.approx(em_b - em_a)
    assert comp.exact.mean == pytest.approx(
        (len(expected_won) - len(expected_lost)) / len(examples)
    )

    out = write_comparison([a, b], a.parent / "comparison.html").read_text()
    flips = [int(n) for n in re.findall(r'data-flips="(\d+)"', out)]
    assert flips == [len(expected_lost), len(expected_won)]
    assert "model.lr" in out and "seed" not in re.findall(r"<td>(seed)</td>", out)


def test_a_run_compared_with_itself_holds_zero(two_runs):
    a, _, _ = two_runs
    records = read_records(a / "questions.jsonl")
    comp = compare_records(records, records)
    for diff in (comp.exact, comp.f1):
        assert diff.low <= 0 <= diff.high and diff.p_value == 1.0
    assert not comp.right_to_wrong and not comp.wrong_to_right


def test_runs_sharing_only_some_questions_compare_on_those(two_runs):
    a, b, _ = two_runs
    records_a = read_records(a / "questions.jsonl")
    records_b = read_records(b / "questions.jsonl")[100:]
    comp = compare_records(records_a, records_b)
    assert comp.shared == [r["id"] for r in records_a[100:]] and comp.f1.n == 200
    with pytest.raises(ValueError, match="share no question"):
        compare_records(records_a[:10], records_a[10:20])


def test_cli_writes_the_comparison_page(two_runs, tmp_path, capsys):
    a, b, _ = two_runs
    target = tmp_path / "cmp.html"
    assert report_cli.main([str(a), str(b), "--output", str(target)]) == 0
    assert "Run comparison" in target.read_text()
    assert report_cli.main([str(a), str(tmp_path)]) == 2
    assert "no questions.jsonl" in capsys.readouterr().err


def test_sweep_report_names_the_failed_job(tmp_path):
    jobs = [
        {
            "job": "0",
            "overrides": ["model.optimizer.lr=1e-4"],
            "status": "ok",
            "metrics": {
                "exact_match": 40.0,
                "f1": 50.0,
                "bootstrap": {"exact_match": [35.0, 45.0], "f1": [45.0, 55.0]},
            },
        },
        {
            "job": "1",
            "overrides": ["model.pretrained=missing"],
            "status": "failed",
            "error": "FileNotFoundError: missing",
        },
    ]
    (tmp_path / "sweep_summary.json").write_text(json.dumps(jobs))
    SweepReport().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    html = (tmp_path / "sweep_report.html").read_text()
    assert "Failed jobs: 1" in html and "FileNotFoundError: missing" in html
    assert "model.pretrained=missing" in html and "<img" in html and "45.00" in html
    assert write_sweep_report(tmp_path) == tmp_path / "sweep_report.html"
