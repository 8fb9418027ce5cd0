"""report.html of real runs (MiniLM on slices of dev-v1.1 and dev-v2.0) opened in headless
Chromium; the same figures in TensorBoard and W&B (offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.app import compose_run_cfg, slice_squad
from helpers.browser import chromium_browser
from qa_lightning.cli import report as report_cli
from qa_lightning.cli import train
from qa_lightning.report.questions import read_records


def train_minilm(shared_data: Path, root: Path, version: str, *extra: str) -> Path:
    source = shared_data / "squad" / f"dev-{version}.json.gz"
    train_file = slice_squad(source, root / "train.json", 0, 32)
    val_file = slice_squad(source, root / "val.json", 2000, 48)
    out = root / "run"
    overrides = [
        "model=minilm",
        "data=files",
        f"data.train_file={train_file}",
        f"data.validation_file={val_file}",
        "data.max_length=192",  # with doc_stride 64: several windows, a few answers lost
        "data.doc_stride=64",
        "data.batch_size=16",
        f"paths.cache_dir={root / 'cache'}",
        "trainer=cpu",
        "trainer.precision=32-true",  # bf16 autocast is slower on CPU for a small model
        "trainer.max_epochs=2",
        "trainer.num_sanity_val_steps=0",
        "trainer.log_every_n_steps=1",
        "model.optimizer.lr=1e-4",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
        "callbacks.sample_answers=null",
        "save_hf_model=false",
        *extra,
    ]
    train.run(compose_run_cfg(overrides, out))
    return out


@pytest.fixture(scope="module")
def v1_run(shared_data, tmp_path_factory, monkeypatch_module) -> Path:
    root = tmp_path_factory.mktemp("report_v1")
    monkeypatch_module.setenv("WANDB_MODE", "offline")
    monkeypatch_module.setenv("WANDB_DIR", str(root / "run"))
    monkeypatch_module.setenv("WANDB_SILENT", "true")
    return train_minilm(shared_data, root, "v1.1", "logger=many")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def check_page_in_chromium(run: Path, screenshot: Path) -> None:
    """Figures equal metrics.json, every image loads, no network request, a screenshot."""
    metrics = json.loads((run / "metrics.json").read_text())
    records = read_records(run / "questions.jsonl")
    requests: list[str] = []
    with chromium_browser() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("request", lambda request: requests.append(request.url))
        page.goto((run / "report.html").as_uri())
        page.wait_for_load_state("load")
        shown = page.eval_on_selector_all(
            "#headline tr[data-key]",
            "rows => rows.map(r => [r.dataset.key, r.cells[1].textContent])",
        )
        images = page.eval_on_selector_all(
            "img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.alt])"
        )
        lost = page.text_content("#lost")
        page.screenshot(path=str(screenshot), full_page=True)
    assert shown and {key for key, _ in shown} >= ({"exact_match", "f1"} & set(metrics))
    for key, text in shown:
        assert float(text) == pytest.approx(metrics[key], abs=0.005), key
    assert len(images) >= 5
    broken = [alt for complete, width, alt in images if not complete or width == 0]
    assert not broken, f"images that did not load: {broken}"
    outside = [url for url in requests if not url.startswith(("file:", "data:"))]
    assert not outside, f"the page made network requests: {outside}"
    expected_lost = sum(1 for r in records if r.get("gold_in_window") is False)
    assert f"(lost to truncation): {expected_lost} of" in lost
    assert screenshot.stat().st_size > 20_000


def test_report_of_a_real_v1_run_in_chromium(v1_run, tmp_path):
    html = (v1_run / "report.html").read_text()
    assert len(html.encode()) < 1_000_000, "the page should stay a few hundred KB"
    curves = json.loads((v1_run / "curves.json").read_text())
    assert [e["epoch"] for e in curves["epochs"]] == [0, 1] and len(curves["steps"]) >= 4
    assert {"val/start_acc", "val/end_acc", "val/f1"} <= set(curves["epochs"][-1])
    records = read_records(v1_run / "questions.jsonl")
    assert len(records) == 48 and max(r["windows"] for r in records) > 1
    check_page_in_chromium(v1_run, tmp_path / "report_v1.png")
    # rebuilt from the files alone, the page is the same
    rebuilt = tmp_path / "rebuilt.html"
    assert report_cli.main([str(v1_run), "--output", str(rebuilt)]) == 0
    assert rebuilt.read_text() == html


def test_report_figures_reach_tensorboard_and_wandb(v1_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(v1_run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    images = set(events.Tags()["images"])
    assert {"report/curves", "report/breakdown/question_word"} <= images
    texts = {t for t in events.Tags().get("tensors", [])}
    assert any(t.startswith("report/headline") for t in texts)
    media = next(v1_run.glob("wandb/offline-run-*/files/media"))
    assert any(media.glob("images/report/curves*.png"))
    tables = {p.name for p in media.glob("table/report/*.table.json")}
    assert any(name.startswith("predictions") for name in tables), tables
    assert any(name.startswith("headline") for name in tables), tables


@pytest.mark.slow
def test_report_of_a_real_v2_run_in_chromium(shared_data, tmp_path):
    run = train_minilm(shared_data, tmp_path, "v2.0")
    html = (run / "report.html").read_text()
    assert "False &quot;no answer&quot;" in html and "HasAns EM" in html
    check_page_in_chromium(run, tmp_path / "report_v2.png")
