"""HTTP server for a trained model: ``qa-lightning-serve PATH [--host 127.0.0.1 --port 8000]``.

``POST /answer`` takes ``{"question", "context", "top_k"?}`` or a list of them and answers with
``{"answers": [{"answer", "score", "start", "end"}, ...]}`` (a list of those for a list). Items of
concurrent requests are batched dynamically: the first waiting item opens a batch that collects
more for up to ``max_wait_ms`` or ``max_batch_size`` items, then one ``QuestionAnswerer`` call
runs them in a worker thread. ``GET /health`` reports status and counters; ``GET /`` is a small
web page. Bound to loopback unless ``--host`` says otherwise. Needs the ``serve`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse
except ImportError as err:  # pragma: no cover - depends on the install
    raise ImportError(
        "qa-lightning-serve needs FastAPI and uvicorn: pip install 'qa_lightning[serve]'"
    ) from err

from qa_lightning.errors import DataFormatError

log = logging.getLogger(__name__)

WEB_PAGE = Path(__file__).resolve().parent / "web" / "index.html"
FIELDS = ("question", "context", "top_k")

Answers = list[dict[str, Any]]
#: ``QuestionAnswerer.__call__``: ``(questions, contexts, top_k=...) -> answers per question``.
AnswerFn = Callable[..., list[Answers]]


@dataclass(frozen=True)
class Limits:
    """Input limits: a field over its size gets 413, a malformed request 422."""

    max_context_chars: int = 100_000
    max_question_chars: int = 1_000
    max_items: int = 64
    max_top_k: int = 20
    max_body_bytes: int = 10 * 1024 * 1024


@dataclass(frozen=True)
class Item:
    """One question about one context."""

    question: str
    context: str
    top_k: int = 1


class RequestError(Exception):
    """A rejected request: HTTP status, the field at fault and, in a list, the item's index."""

    def __init__(self, status: int, field: str, message: str, index: int | None = None) -> None:
        where = field if index is None else f"items[{index}].{field}"
        super().__init__(f"{where}: {message}")
        self.status, self.field, self.index = status, field, index

    def payload(self) -> dict[str, Any]:
        return {"detail": str(self), "field": self.field, "index": self.index}


def parse_items(payload: Any, limits: Limits) -> tuple[list[Item], bool]:
    """Validated items of a request body, and whether the body was a single object."""
    single = isinstance(payload, dict)
    if single:
        raw = [payload]
    elif isinstance(payload, list):
        raw = payload
        if not raw:
            raise RequestError(422, "body", "empty list: give at least one question")
        if len(raw) > limits.max_items:
            raise RequestError(
                413, "items", f"{len(raw)} items, the limit is {limits.max_items} per request"
            )
    else:
        raise RequestError(
            422, "body", 'expected {"question", "context", "top_k"?} or a list of them'
        )
    return [_parse_item(obj, None if single else i, limits) for i, obj in enumerate(raw)], single


def _parse_item(obj: Any, index: int | None, limits: Limits) -> Item:
    if not isinstance(obj, dict):
        raise RequestError(422, "body", f"expected an object, got {type(obj).__name__}", index)
    for name in obj:
        if name not in FIELDS:
            raise RequestError(422, str(name), f"unknown field; expected {FIELDS}", index)
    texts = {}
    for name, limit in (
        ("question", limits.max_question_chars),
        ("context", limits.max_context_chars),
    ):
        value = obj.get(name)
        if name not in obj:
            raise RequestError(422, name, "field required", index)
        if not isinstance(value, str):
            raise RequestError(422, name, f"must be a string, got {type(value).__name__}", index)
        if not value.strip():
            raise RequestError(422, name, "must not be empty", index)
        if len(value) > limit:
            raise RequestError(413, name, f"{len(value)} characters, the limit is {limit}", index)
        texts[name] = value
    top_k = obj.get("top_k", 1)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= limits.max_top_k:
        raise RequestError(
            422,
            "top_k",
            f"must be an integer from 1 to {limits.max_top_k}, got {top_k!r:.40}",
            index,
        )
    return Item(texts["question"], texts["context"], top_k)


@dataclass
class _Pending:
    item: Item
    future: asyncio.Future[Answers]


class DynamicBatcher:
    """Collects items across concurrent requests into batches for one model call at a time.

    A batch opens with the first waiting item and closes after ``max_wait_ms`` or at
    ``max_batch_size`` items; ``max_batch_size=1`` answers every item on its own. Items waiting
    while the model runs make up the next batch at once.
    """

    def __init__(self, answer: AnswerFn, max_batch_size: int = 32, max_wait_ms: float = 5.0):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.answer = answer
        self.max_batch_size = max_batch_size
        self.max_wait_s = max(max_wait_ms, 0.0) / 1000
        self.batches = 0
        self.items = 0
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qa-model")
        self._task = asyncio.create_task(self._run_forever(), name="qa-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._task = self._executor = None

    async def submit(self, items: Sequence[Item]) -> list[Answers | Exception]:
        """Answers to ``items`` in order, or the exception an item raised.

        Each item is batched with others independently.
        """
        if self._queue is None:
            raise RuntimeError("DynamicBatcher.start() has not been awaited")
        loop = asyncio.get_running_loop()
        pending = [_Pending(item, loop.create_future()) for item in items]
        for entry in pending:
            self._queue.put_nowait(entry)
        return list(
            await asyncio.gather(*(entry.future for entry in pending), return_exceptions=True)
        )

    async def _run_forever(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect(self._queue, loop)
            batch = [entry for entry in batch if not entry.future.done()]  # client went away
            if not batch:
                continue
            results = await loop.run_in_executor(
                self._executor, self._answer_batch, [entry.item for entry in batch]
            )
            self.batches += 1
            self.items += len(batch)
            for entry, result in zip(batch, results, strict=True):
                if entry.future.done():
                    continue
                if isinstance(result, BaseException):
                    entry.future.set_exception(result)
                else:
                    entry.future.set_result(result)

    async def _collect(
        self, queue: asyncio.Queue[_Pending], loop: asyncio.AbstractEventLoop
    ) -> list[_Pending]:
        batch = [await queue.get()]
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    def _answer_batch(self, items: list[Item]) -> list[Answers | Exception]:
        """One model call for the batch; if it fails, each item alone, so one bad item fails alone."""
        try:
            return self._call(items)
        except Exception as err:
            if len(items) == 1:
                return [err]
            log.warning("batch of %d failed (%s); answering its items one by one", len(items), err)
        results: list[Answers | Exception] = []
        for item in items:
            try:
                results.extend(self._call([item]))
            except Exception as err:
                results.append(err)
        return results

    def _call(self, items: list[Item]) -> list[Answers]:
        top_k = max(item.top_k for item in items)
        answers = self.answer(
            [item.question for item in items], [item.context for item in items], top_k=top_k
        )
        return [found[: item.top_k] for item, found in zip(items, answers, strict=True)]


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


def _as_request_error(err: Exception, index: int | None) -> RequestError:
    """A model-side error of one item: 422 when the input is at fault (``ValueError``), else 500."""
    if isinstance(err, ValueError):
        message = str(err)
        if isinstance(err, DataFormatError) and (err.qid or err.field) is not None:
            message = message.split(": ", 1)[-1]  # drop "question id '0'": a position in a batch
        return RequestError(422, getattr(err, "field", None) or "body", message, index)
    log.error("inference failed", exc_info=err)
    return RequestError(500, "model", f"inference failed: {type(err).__name__}: {err}", index)


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
                raise _as_request_error(result, None if single else i)
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qa-lightning-serve",
        description="Serve a trained QA model over HTTP: POST /answer, GET /health, a web page at /.",
    )
    parser.add_argument("path", help="hf_model/ directory, Lightning .ckpt, or hub model name")
    parser.add_argument("--host", default="127.0.0.1", help="default: loopback only")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="cpu", help="e.g. cpu, cuda, cuda:1")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op CPU threads (default: torch's)"
    )
    parser.add_argument("--max-batch-size", type=int, default=32, help="items per model call")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch fills")
    parser.add_argument(
        "--no-batching", action="store_true", help="one item per model call (max batch size 1)"
    )
    defaults = Limits()
    parser.add_argument("--max-context-chars", type=int, default=defaults.max_context_chars)
    parser.add_argument("--max-question-chars", type=int, default=defaults.max_question_chars)
    parser.add_argument("--max-items", type=int, default=defaults.max_items, help="per request")
    parser.add_argument("--log-level", default="info")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``qa-lightning-serve``."""
    import uvicorn

    from qa_lightning.inference import QuestionAnswerer

    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "listening on %s: reachable beyond this machine, with no authentication", args.host
        )
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    qa = QuestionAnswerer.from_pretrained(args.path, device=args.device)
    limits = Limits(
        max_context_chars=args.max_context_chars,
        max_question_chars=args.max_question_chars,
        max_items=args.max_items,
    )
    app = create_app(
        qa,
        model_name=str(args.path),
        limits=limits,
        max_batch_size=1 if args.no_batching else args.max_batch_size,
        max_wait_ms=0.0 if args.no_batching else args.max_wait_ms,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
