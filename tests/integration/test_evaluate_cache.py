"""Issue 11's scenario end to end: evaluations of different subsets of one file share a cache."""

from __future__ import annotations

import json

from helpers.app import compose_run_cfg
from qa_lightning.cli import evaluate
from qa_lightning.data.sources import load_examples


def test_evaluate_64_then_100_then_777_questions_with_the_cache_equals_without(
    shared_data, tiny_bert, tmp_path
):
    """The issue's scenario: ``max_eval_examples`` 64, 100, 777 of dev-v2.0 in one cache; each run
    predicts exactly its questions, with the metrics and predictions of a run without the cache."""
    dev = shared_data / "squad" / "dev-v2.0.json.gz"
    ids = list(load_examples(dev).select(range(777))["id"])
    cache = tmp_path / "cache"

    def run(n: int, use_cache: bool) -> tuple[dict, dict]:
        out = tmp_path / f"eval-{n}-{'cache' if use_cache else 'nocache'}"
        overrides = [
            f"ckpt_path={tiny_bert}",
            "data=files",
            f"data.validation_file={dev}",
            f"data.max_eval_examples={n}",
            "data.max_length=384",
            "data.doc_stride=128",
            "data.eval_batch_size=64",
            f"data.use_cache={use_cache}",
            f"paths.cache_dir={cache}",
            "trainer=cpu",
            "trainer.precision=32-true",  # bf16 autocast is slower for a tiny model on CPU
        ]
        evaluate.run(compose_run_cfg(overrides, out, name="eval"))
        predictions = json.loads((out / "predictions.json").read_text())
        return predictions, json.loads((out / "metrics.json").read_text())

    cached = {n: run(n, use_cache=True) for n in (64, 100, 777)}
    for n, (predictions, metrics) in cached.items():
        assert sorted(predictions) == sorted(ids[:n])
        assert metrics["total"] == n
        assert (predictions, metrics) == run(n, use_cache=False)
    assert len(list((cache / "features").iterdir())) == 3
