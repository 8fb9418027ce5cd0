"""HTTP server for a trained model: ``qa-lightning-serve PATH [--host 127.0.0.1 --port 8000]``.

``POST /answer`` takes ``{"question", "context", "top_k"?}`` or a list of them and answers with
``{"answers": [{"answer", "score", "start", "end"}, ...]}`` (a list of those for a list).
``{"question", "contexts": [...]}`` ranks the answers of several documents together, each
answer with ``"document"`` (its context's index; ``None`` for "no answer in any document").
The model's shipped answerability (tuned threshold, calibrated scores) applies by default. Items of
concurrent requests are batched dynamically: the first waiting item opens a batch that collects
more for up to ``max_wait_ms`` or ``max_batch_size`` items, then one ``QuestionAnswerer`` call
runs them in a worker thread. ``GET /health`` reports status and counters (open to all, no
filesystem path); ``GET /metrics`` is Prometheus text; ``GET /`` is a small web page.

With API keys, ``/answer`` and ``/metrics`` need ``Authorization: Bearer KEY`` (401 otherwise).
Admission is bounded (503 with ``Retry-After`` when the queue is full or, with
``latency_target_ms``, when the answer is predicted later than that; 504 past the deadline, 408
for a body not received within it). A request to be refused is refused before its body is read.
While draining (``begin_drain``), new requests get 503 and ``/health`` says ``draining``. Needs
the ``serve`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

try:
    from fastapi import FastAPI, Request, Response
    from fastapi.responses import HTMLResponse, JSONResponse
except ImportError as err:  # pragma: no cover - depends on the install
    raise ImportError(
        "qa-lightning-serve needs FastAPI and uvicorn: pip install 'qa_lightning[serve]'"
    ) from err

from qa_lightning.serving.auth import ApiKeys
from qa_lightning.serving.batcher import DynamicBatcher, Overloaded
from qa_lightning.serving.metrics import CONTENT_TYPE, ServerMetrics
from qa_lightning.serving.requests import (
    AnswerFn,
    Limits,
    RequestError,
    as_request_error,
    parse_items,
)

WEB_PAGE = Path(__file__).resolve().parent / "web" / "index.html"
PROTECTED = ("/answer", "/metrics")
ROUTES = ("/", "/answer", "/health", "/metrics")


class ServerState:
    """What the app and the server share: whether it is draining and how many requests run."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0

    def begin_drain(self) -> None:
        self.draining = True


async def _read_body(request: Request, limit: int) -> Any:
    """The JSON body, read no further than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, "body", f"{declared} bytes, the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise RequestError(413, "body", f"more than {limit} bytes")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(422, "body", f"not valid JSON: {err}") from err


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def create_app(
    answer: AnswerFn,
    *,
    model_name: str = "",
    limits: Limits | None = None,
    max_batch_size: int = 32,
    max_wait_ms: float = 5.0,
    api_keys: ApiKeys | None = None,
    max_queue: int = 256,
    timeout_s: float = 30.0,
    model_load_s: float | None = None,
    latency_target_ms: float | None = None,
) -> FastAPI:
    """The FastAPI application around ``answer`` (a ``QuestionAnswerer`` or the same signature).

    ``model_name`` is shown to every client: a name, never a filesystem path.
    """
    limits = limits or Limits()
    keys = api_keys or ApiKeys()
    batcher = DynamicBatcher(
        answer,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        timeout_s=timeout_s,
        latency_target_ms=latency_target_ms,
    )
    metrics = ServerMetrics(lambda: batcher.waiting, model_load_s)
    batcher.on_batch = metrics.batch_size.observe
    metrics.gauge(
        "qa_service_seconds_per_batch",
        "Estimated fixed model time of a batch (fit over recent batches)",
        lambda: batcher.service.per_batch_s,
    )
    metrics.gauge(
        "qa_service_seconds_per_item",
        "Estimated model time per document of a batch (fit over recent batches)",
        lambda: batcher.service.per_item_s,
    )
    metrics.gauge(
        "qa_predicted_latency_seconds",
        "Predicted time to answer one question admitted now (NaN before the first batch)",
        lambda: _or_nan(batcher.predicted_s()),
    )
    state = ServerState()
    page = WEB_PAGE.read_text(encoding="utf-8")
    started = time.time()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    # No /docs or /redoc: they load their scripts from a CDN. /openapi.json stays.
    app = FastAPI(title="qa_lightning", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher = batcher
    app.state.server = state
    app.state.metrics = metrics

    @app.exception_handler(RequestError)
    async def _rejected(_: Request, err: RequestError) -> JSONResponse:
        headers = {}
        if isinstance(err, Overloaded):
            headers["Retry-After"] = str(err.retry_after_s)
        if err.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(err.payload(), status_code=err.status, headers=headers)

    @app.middleware("http")
    async def _admit(request: Request, call_next: Any) -> Response:
        path = request.url.path
        began = time.perf_counter()
        try:
            if path in PROTECTED and keys and not keys.check(request.headers.get("authorization")):
                raise RequestError(401, "authorization", "missing or wrong API key (Bearer)")
            if path == "/answer" and state.draining:
                raise Overloaded("server is shutting down; try another instance", 1)
            if path == "/answer":
                batcher.check_admission()  # at least one item: refused before its body is read
        except RequestError as err:
            response = await _rejected(request, err)
        else:
            state.in_flight += path == "/answer"
            try:
                response = await call_next(request)
            finally:
                state.in_flight -= path == "/answer"
        route = path if path in ROUTES else "other"
        seconds = time.perf_counter() - began if path == "/answer" else None
        metrics.observe(route, response.status_code, seconds)
        return response

    @app.post("/answer")
    async def answer_route(request: Request) -> JSONResponse:
        try:
            body = await asyncio.wait_for(_read_body(request, limits.max_body_bytes), timeout_s)
        except asyncio.TimeoutError:
            raise RequestError(408, "body", f"not received within {timeout_s:g} s") from None
        items, single = parse_items(body, limits)
        results = await batcher.submit(items)
        for i, result in enumerate(results):
            if isinstance(result, Exception):
                raise as_request_error(result, None if single else i)
        answers = [{"answers": found} for found in results]
        return JSONResponse(answers[0] if single else answers)

    @app.get("/health")
    async def health() -> JSONResponse:
        body = {
            "status": "draining" if state.draining else "ok",
            "model": model_name,
            "auth": bool(keys),
            "uptime_s": round(time.time() - started, 1),
            "max_batch_size": batcher.max_batch_size,
            "max_wait_ms": batcher.max_wait_s * 1000,
            "max_queue": batcher.max_queue,
            "timeout_s": batcher.timeout_s,
            "latency_target_ms": _ms(batcher.latency_target_s),
            "service_time": {
                "per_batch_ms": 1000 * batcher.service.per_batch_s,
                "per_item_ms": 1000 * batcher.service.per_item_s,
                "overrun": batcher.service.overrun,
                "batches_seen": batcher.service.batches,
            },
            "predicted_ms": _ms(batcher.predicted_s()),
            "batch_limit": batcher.batch_limit(),
            "refused_late": batcher.refused_late,
            "queued": batcher.waiting,
            "in_flight": state.in_flight,
            "batches": batcher.batches,
            "items": batcher.items,
            "dropped": batcher.dropped,
            "limits": asdict(limits),
        }
        return JSONResponse(body, status_code=503 if state.draining else 200)

    @app.get("/metrics")
    async def metrics_route() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    return app
