"""Admission bounded in time (``latency_target_ms``): refusal, admission, batch cap, CLI, health."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e '.[serve]'")
httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
from fastapi.testclient import TestClient  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from helpers.serving import live_server  # noqa: E402
from qa_lightning.cli.serve import _parser  # noqa: E402
from qa_lightning.cli.serve import main as serve_main  # noqa: E402
from qa_lightning.serving.app import create_app  # noqa: E402
from qa_lightning.serving.batcher import DynamicBatcher, Overloaded  # noqa: E402
from qa_lightning.serving.requests import Item  # noqa: E402
from qa_lightning.serving.service_time import ServiceTime  # noqa: E402


class FixedServiceTime(ServiceTime):
    """A known estimate (``per_batch_s + per_item_s * n``) that batches do not change; records
    what the batcher reports."""

    def __init__(self, per_batch_s: float, per_item_s: float) -> None:
        super().__init__()
        self.batches = 1
        self.per_batch_s, self.per_item_s = per_batch_s, per_item_s
        self.observed: list[tuple[int, float]] = []

    def observe(self, n: int, seconds: float) -> None:
        self.observed.append((n, seconds))


class Model:
    """Echoes each question; waits for ``gate`` (when given), sleeps ``delay_s`` per document."""

    def __init__(self, gate: threading.Event | None = None, delay_s: float = 0.0) -> None:
        self.gate, self.delay_s = gate, delay_s
        self.sizes: list[int] = []

    def __call__(self, questions: Sequence[str], contexts: Sequence[str], top_k: int = 1) -> Any:
        if self.gate is not None:
            assert self.gate.wait(30)
        time.sleep(self.delay_s * len(questions))
        self.sizes.append(len(questions))
        return [[{"answer": q, "score": 1.0, "start": 0, "end": 0}] for q in questions]


async def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_refused_at_once_when_predicted_past_the_target_admitted_when_not() -> None:
    """10 s per document, target 25 s: with one running, one more fits (about 20 s), a third
    (about 30 s) is refused at once, and the two admitted are answered."""
    gate = threading.Event()
    model = Model(gate)

    async def scenario() -> tuple[list, Overloaded, float]:
        batcher = DynamicBatcher(
            model, max_wait_ms=0, latency_target_ms=25_000, service_time=FixedServiceTime(0, 10)
        )
        await batcher.start()
        try:
            running = asyncio.create_task(batcher.submit([Item("a", "c")]))
            await _until(lambda: batcher.waiting == 0 and batcher._busy_until is not None)
            assert batcher.predicted_s() == pytest.approx(20, abs=1)
            queued = asyncio.create_task(batcher.submit([Item("b", "c")]))
            await _until(lambda: batcher.waiting == 1)
            began = time.perf_counter()
            with pytest.raises(Overloaded) as refused:
                await batcher.submit([Item("c", "c")])
            seconds = time.perf_counter() - began
            gate.set()
            return [await running, await queued], refused.value, seconds
        finally:
            await batcher.stop()

    answered, refused, seconds = asyncio.run(scenario())
    assert [r[0][0]["answer"] for r in answered] == ["a", "b"]
    assert seconds < 0.5
    assert refused.status == 503 and refused.field == "queue"
    assert "latency target is 25000 ms" in str(refused)
    assert refused.retry_after_s == 5  # predicted about 30 s: 5 s past the target
    assert model.sizes == [1, 1]  # "c" never reached the model


def test_the_prediction_takes_the_high_estimate() -> None:
    """Batches ran past the fit lately (r.m.s. overrun 0.5): the prediction doubles."""
    service = FixedServiceTime(0, 10)
    service.overrun = 0.5

    async def scenario() -> tuple[float | None, int | None]:
        batcher = DynamicBatcher(
            Model(), max_wait_ms=0, latency_target_ms=45_000, service_time=service
        )
        return batcher.predicted_s(2), batcher.batch_limit()

    predicted, limit = asyncio.run(scenario())
    assert predicted == pytest.approx(40)  # 2 documents, 10 s each, times 1 + 2 * 0.5
    assert limit == 2  # 45 s / 2 = 22.5 s: two documents of 10 s


def test_an_idle_server_admits_even_past_the_target() -> None:
    """No work queued or running: admitted, so the estimate can learn that the model got faster."""
    model = Model()
    service = ServiceTime()
    service.observe(1, 10.0)  # an old, slow estimate: 10 s per document

    async def scenario() -> list:
        batcher = DynamicBatcher(model, max_wait_ms=0, latency_target_ms=50, service_time=service)
        await batcher.start()
        try:
            return [await batcher.submit([Item(f"q{i}", "c")]) for i in range(3)]
        finally:
            await batcher.stop()

    assert [r[0][0]["answer"] for r in asyncio.run(scenario())] == ["q0", "q1", "q2"]
    assert service.batches == 4 and service.per_item_s < 10.0  # each batch updated it


def test_the_estimate_is_updated_after_every_batch() -> None:
    model = Model(delay_s=0.02)  # 20 ms per document
    service = ServiceTime(alpha=0.5)

    async def scenario() -> None:
        batcher = DynamicBatcher(model, max_wait_ms=0, service_time=service)
        await batcher.start()
        try:
            await batcher.submit([Item("one", "c")])
            assert service.batches == 1 and service.predict(1) >= 0.02
            await batcher.submit([Item(f"q{i}", "c") for i in range(4)])  # one batch of 4
        finally:
            await batcher.stop()

    asyncio.run(scenario())
    assert model.sizes == [1, 4] and service.batches == 2
    assert service.predict(1) >= 0.02 and service.predict(4) >= 0.08


@pytest.mark.parametrize(
    ("target_ms", "documents", "expected"),
    [
        (350, [1] * 7, [3, 3, 1]),  # 100 ms per document: 3 fit in 350 ms
        (None, [1] * 7, [7]),  # no target: max_batch_size only
        (350, [2, 2, 1, 3], [2, 3, 3]),  # documents count; "contexts" items are not split
        (50, [1, 4], [1, 4]),  # over the cap alone: still runs, alone
    ],
)
def test_batches_are_capped_to_what_the_target_allows(
    target_ms: float | None, documents: list[int], expected: list[int]
) -> None:
    model = Model()
    service = FixedServiceTime(0.0, 0.1)
    items = [
        Item(f"q{i}", "c") if n == 1 else Item(f"q{i}", "", contexts=("c",) * n)
        for i, n in enumerate(documents)
    ]

    async def scenario() -> list:
        batcher = DynamicBatcher(
            model, max_wait_ms=50, latency_target_ms=target_ms, service_time=service
        )
        await batcher.start()
        try:
            return await batcher.submit(items)  # one request on an idle server: admitted
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert model.sizes == expected
    assert [n for n, _ in service.observed] == expected
    assert len(results) == len(items) and not any(isinstance(r, Exception) for r in results)


def test_latency_target_must_be_positive() -> None:
    for bad in (0, -5.0, float("nan")):
        with pytest.raises(ValueError, match="latency_target_ms"):
            DynamicBatcher(Model(), latency_target_ms=bad)


@pytest.mark.parametrize("value", ["0", "-20", "abc", "nan", "inf"])
def test_cli_rejects_a_bad_latency_target(value: str, capsys) -> None:
    with pytest.raises(SystemExit) as exited:  # before any model is loaded
        serve_main(["model-never-loaded", "--latency-target-ms", value])
    assert exited.value.code == 2
    assert "--latency-target-ms" in capsys.readouterr().err


def test_cli_latency_target_defaults_to_off() -> None:
    assert _parser().parse_args(["m"]).latency_target_ms is None
    assert _parser().parse_args(["m", "--latency-target-ms", "120.5"]).latency_target_ms == 120.5


def test_health_and_metrics_show_the_estimate() -> None:
    app = create_app(Model(delay_s=0.01), latency_target_ms=250)
    with TestClient(app) as client:
        health = client.get("/health").json()
        assert health["latency_target_ms"] == 250
        assert health["service_time"] == {
            "per_batch_ms": 0,
            "per_item_ms": 0,
            "overrun": 0,
            "batches_seen": 0,
        }
        assert health["predicted_ms"] is None
        for _ in range(2):
            assert client.post("/answer", json={"question": "q", "context": "c"}).status_code == 200
        health = client.get("/health").json()
        text = client.get("/metrics").text
    assert health["service_time"]["batches_seen"] == 2
    assert health["service_time"]["per_item_ms"] >= 10  # one document, 10 ms or more
    assert health["predicted_ms"] >= 10 and health["batch_limit"] >= 1
    gauges = {
        f.name: f.samples[0].value
        for f in text_string_to_metric_families(text)
        if f.name.startswith(("qa_service", "qa_predicted"))
    }
    assert gauges["qa_service_seconds_per_item"] == pytest.approx(
        health["service_time"]["per_item_ms"] / 1000
    )
    assert gauges["qa_service_seconds_per_batch"] == pytest.approx(
        health["service_time"]["per_batch_ms"] / 1000
    )
    assert gauges["qa_predicted_latency_seconds"] == pytest.approx(
        health["predicted_ms"] / 1000, rel=0.05
    )


def test_refused_before_the_body_is_read() -> None:
    """Predicted past the target: 503 with Retry-After even for a body that is not JSON."""
    gate = threading.Event()
    app = create_app(Model(gate), max_wait_ms=0, latency_target_ms=5_000)
    app.state.batcher.service = FixedServiceTime(0, 10)
    batcher = app.state.batcher
    with live_server(app) as (url, _), ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            httpx.post, f"{url}/answer", json={"question": "a", "context": "c"}, timeout=30
        )
        deadline = time.monotonic() + 10
        while batcher._busy_until is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        refused = httpx.post(f"{url}/answer", content=b"{not json", timeout=30)
        gate.set()
        assert running.result().status_code == 200
    assert refused.status_code == 503, refused.text
    assert refused.json()["field"] == "queue" and int(refused.headers["retry-after"]) >= 5
    assert batcher.refused_late == 1
