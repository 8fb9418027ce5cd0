"""HTTP server for a trained model: ``qa-lightning-serve PATH [--host 127.0.0.1 --port 8000]``.

``POST /answer`` takes ``{"question", "context", "top_k"?}`` or a list of them and answers with
``{"answers": [{"answer", "score", "start", "end"}, ...]}`` (a list of those for a list).
``{"question", "contexts": [...]}`` ranks the answers of several documents together, each
answer with ``"document"`` (its context's index; ``None`` for "no answer in any document").
The model's shipped answerability (tuned threshold, calibrated scores) applies by default. Items of
concurrent requests are batched dynamically: the first waiting item opens a batch that collects
more for up to ``max_wait_ms`` or ``max_batch_size`` items, then one ``QuestionAnswerer`` call
runs them in a worker thread. ``GET /health`` reports status and counters; ``GET /`` is a small
web page. Bound to loopback unless ``--host`` says otherwise. Needs the ``serve`` extra.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse
except ImportError as err:  # pragma: no cover - depends on the install
    raise ImportError(
        "qa-lightning-serve needs FastAPI and uvicorn: pip install 'qa_lightning[serve]'"
    ) from err

from qa_lightning.serving.batcher import DynamicBatcher
from qa_lightning.serving.requests import (
    AnswerFn,
    Limits,
    RequestError,
    as_request_error,
    parse_items,
)

WEB_PAGE = Path(__file__).resolve().parent / "web" / "index.html"


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


def create_app(
    answer: AnswerFn,
    *,
    model_name: str = "",
    limits: Limits | None = None,
    max_batch_size: int = 32,
    max_wait_ms: float = 5.0,
) -> FastAPI:
    """The FastAPI application around ``answer`` (a ``QuestionAnswerer`` or the same signature)."""
    limits = limits or Limits()
    batcher = DynamicBatcher(answer, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms)
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

    @app.exception_handler(RequestError)
    async def _rejected(_: Request, err: RequestError) -> JSONResponse:
        return JSONResponse(err.payload(), status_code=err.status)

    @app.post("/answer")
    async def answer_route(request: Request) -> JSONResponse:
        items, single = parse_items(await _read_body(request, limits.max_body_bytes), limits)
        results = await batcher.submit(items)
        for i, result in enumerate(results):
            if isinstance(result, Exception):
                raise as_request_error(result, None if single else i)
        answers = [{"answers": found} for found in results]
        return JSONResponse(answers[0] if single else answers)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": model_name,
            "uptime_s": round(time.time() - started, 1),
            "max_batch_size": batcher.max_batch_size,
            "max_wait_ms": batcher.max_wait_s * 1000,
            "batches": batcher.batches,
            "items": batcher.items,
            "limits": asdict(limits),
        }

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    return app
