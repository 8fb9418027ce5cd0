"""``DynamicBatcher``: items of concurrent requests batched into one model call at a time.

No web framework here: the batcher takes ``Item``s and returns answers (or the item's error).
Admission is bounded: a request whose items do not fit in the queue is refused at once
(``Overloaded``), and every admitted request has a deadline (``DeadlineExceeded``) past which
its items are dropped from the batches still to run. With a latency target, admission is also
bounded in time: a running estimate of the model's service time (``ServiceTime``) predicts when
a new request would be answered (the batch running now, the work queued ahead, its own share),
and a request predicted past the target is refused at once; batches are capped to what the
target allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from qa_lightning.inference.answerability import answer_documents
from qa_lightning.serving.requests import AnswerFn, Answers, Item, RequestError
from qa_lightning.serving.service_time import ServiceTime

log = logging.getLogger(__name__)


class Overloaded(RequestError):
    """The queue cannot take the request's items: 503 with ``Retry-After``."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(503, "queue", message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(RequestError):
    """The request was not answered within its deadline: 504."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(504, "deadline", f"not answered within {timeout_s:g} s; try again later")


@dataclass
class _Pending:
    item: Item
    future: asyncio.Future[Answers]
    deadline: float
    queued: bool = True  # counted in ``DynamicBatcher.waiting``


class DynamicBatcher:
    """Collects items across concurrent requests into batches for one model call at a time.

    A batch opens with the first waiting item and closes after ``max_wait_ms`` or at
    ``max_batch_size`` items; ``max_batch_size=1`` answers every item on its own. Items waiting
    while the model runs make up the next batch at once.

    ``latency_target_ms`` (off when ``None``) bounds admission in time: a request whose predicted
    answer time (``predicted_s``) exceeds it is refused with ``Overloaded``, and a batch holds no
    more documents than the model is predicted to answer within it. A request that finds no
    work queued or running is always admitted, so the estimate keeps learning even when the
    target is below what the model can do.
    """

    def __init__(
        self,
        answer: AnswerFn,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 256,
        timeout_s: float = 30.0,
        retry_after_s: int = 1,
        on_batch: Callable[[int], None] | None = None,
        latency_target_ms: float | None = None,
        service_time: ServiceTime | None = None,
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if latency_target_ms is not None and not latency_target_ms > 0:
            raise ValueError(f"latency_target_ms must be > 0, got {latency_target_ms}")
        self.answer = answer
        self.max_batch_size = max_batch_size
        self.max_wait_s = max(max_wait_ms, 0.0) / 1000
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.on_batch = on_batch
        self.batches = 0
        self.items = 0
        self.dropped = 0
        self.waiting = 0  # admitted items not yet taken into a batch
        self.waiting_documents = 0  # their documents (``Item.documents``): the model's work
        self.latency_target_s = None if latency_target_ms is None else latency_target_ms / 1000
        self.service = service_time or ServiceTime()
        self.refused_late = 0  # refused because predicted past the latency target
        self._busy_until: float | None = None  # predicted end of the batch running now
        self._carry: _Pending | None = None  # taken, but over the last batch's cap: next batch
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
        Raises ``Overloaded`` at once when the queue cannot take all of them or they are
        predicted past the latency target (``check_admission``), and
        ``DeadlineExceeded`` when they are not answered within ``timeout_s``; the unanswered
        items are then dropped from the batches still to run.
        """
        if self._queue is None:
            raise RuntimeError("DynamicBatcher.start() has not been awaited")
        documents = sum(len(item.documents) for item in items)
        self.check_admission(len(items), documents)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        pending = [_Pending(item, loop.create_future(), deadline) for item in items]
        for entry in pending:
            self._queue.put_nowait(entry)
        self.waiting += len(pending)
        self.waiting_documents += documents
        gathered = asyncio.gather(*(entry.future for entry in pending), return_exceptions=True)
        try:
            return list(await asyncio.wait_for(asyncio.shield(gathered), self.timeout_s))
        except asyncio.TimeoutError:
            raise DeadlineExceeded(self.timeout_s) from None
        finally:
            for entry in pending:
                if not entry.future.done():
                    entry.future.cancel()  # dropped from any batch not yet run
                self._unqueue(entry)  # no longer holds a place in the queue

    def check_admission(self, items: int = 1, documents: int = 1) -> None:
        """Raise ``Overloaded`` when a request of ``items`` items (``documents`` documents) is
        to be refused now. Cheap: the app calls it before reading a body, then again after."""
        if self.waiting + items > self.max_queue:
            raise Overloaded(
                f"server busy: {self.waiting} items queued, the limit is {self.max_queue}",
                self.retry_after_s,
            )
        if self.latency_target_s is None or self._idle():
            return
        predicted = self.predicted_s(documents)
        if predicted is None or predicted <= self.latency_target_s:
            return
        self.refused_late += 1
        raise Overloaded(
            f"server busy: answer predicted in {predicted * 1000:.0f} ms, "
            f"the latency target is {self.latency_target_s * 1000:g} ms",
            max(self.retry_after_s, math.ceil(predicted - self.latency_target_s)),
        )

    def _idle(self) -> bool:
        return self.waiting == 0 and self._busy_until is None

    def batch_limit(self) -> int | None:
        """Documents one batch may hold under the latency target (at least 1: a single item
        with more documents still runs alone), or ``None`` without a target or an estimate."""
        if self.latency_target_s is None or not self.service.ready:
            return None
        return self.service.largest_batch(self.latency_target_s - self.max_wait_s)

    def predicted_s(self, documents: int = 1) -> float | None:
        """Predicted seconds until a request of ``documents`` documents admitted now would be
        answered: the rest of the running batch, then the waiting documents and its own in
        batches of at most ``batch_limit()`` and ``max_batch_size``, plus one batch-filling
        wait; batch times by ``ServiceTime.predict_high`` (a high quantile, not the mean).
        ``None`` before the first batch (no estimate yet)."""
        if not self.service.ready:
            return None
        now = asyncio.get_running_loop().time()
        running = 0.0 if self._busy_until is None else max(0.0, self._busy_until - now)
        ahead = self.waiting_documents + documents
        batches = math.ceil(ahead / min(self.max_batch_size, self.batch_limit() or ahead))
        service = batches * self.service.per_batch_s + ahead * self.service.per_item_s
        return running + self.max_wait_s + service * self.service.tail_factor

    async def _run_forever(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect(self._queue, loop)
            for entry in batch:
                self._unqueue(entry)
            now = loop.time()
            # Past their deadline or their client went away: dropped, no model work.
            live = [e for e in batch if not e.future.done() and e.deadline > now]
            self.dropped += len(batch) - len(live)
            if not live:
                continue
            batch = live
            documents = sum(len(entry.item.documents) for entry in batch)
            began = loop.time()
            self._busy_until = began + self.service.predict_high(documents)
            try:
                results = await loop.run_in_executor(
                    self._executor, self._answer_batch, [entry.item for entry in batch]
                )
            finally:
                self._busy_until = None
            self.service.observe(documents, loop.time() - began)
            self.batches += 1
            self.items += len(batch)
            if self.on_batch is not None:
                self.on_batch(len(batch))
            for entry, result in zip(batch, results, strict=True):
                if entry.future.done():
                    continue
                if isinstance(result, BaseException):
                    entry.future.set_exception(result)
                else:
                    entry.future.set_result(result)

    def _unqueue(self, entry: _Pending) -> None:
        if entry.queued:
            entry.queued = False
            self.waiting -= 1
            self.waiting_documents -= len(entry.item.documents)

    async def _collect(
        self, queue: asyncio.Queue[_Pending], loop: asyncio.AbstractEventLoop
    ) -> list[_Pending]:
        first, self._carry = self._carry, None
        batch = [await queue.get() if first is None else first]
        documents, limit = len(batch[0].item.documents), self.batch_limit()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch_size and (limit is None or documents < limit):
            if not queue.empty():
                entry = queue.get_nowait()
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    entry = await asyncio.wait_for(queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            if limit is not None and documents + len(entry.item.documents) > limit:
                self._carry = entry  # first of the next batch
                break
            batch.append(entry)
            documents += len(entry.item.documents)
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
        """One model call for every (question, document) pair; items with ``contexts`` get
        their documents' answers ranked together (``answer_documents``)."""
        top_k = max(item.top_k for item in items)
        pairs = [(item.question, doc) for item in items for doc in item.documents]
        answers = self.answer([q for q, _ in pairs], [c for _, c in pairs], top_k=top_k)
        results, first = [], 0
        for item in items:
            found = answers[first : first + len(item.documents)]
            first += len(item.documents)
            if item.contexts is None:
                results.append(found[0][: item.top_k])
            else:
                results.append(answer_documents(found, item.top_k))
        return results
