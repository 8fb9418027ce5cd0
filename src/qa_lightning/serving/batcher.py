"""``DynamicBatcher``: items of concurrent requests batched into one model call at a time.

No web framework here: the batcher takes ``Item``s and returns answers (or the item's error).
Admission is bounded: a request whose items do not fit in the queue is refused at once
(``Overloaded``), and every admitted request has a deadline (``DeadlineExceeded``) past which
its items are dropped from the batches still to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from qa_lightning.inference.answerability import answer_documents
from qa_lightning.serving.requests import AnswerFn, Answers, Item, RequestError

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
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
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
        Raises ``Overloaded`` at once when the queue cannot take all of them, and
        ``DeadlineExceeded`` when they are not answered within ``timeout_s``; the unanswered
        items are then dropped from the batches still to run.
        """
        if self._queue is None:
            raise RuntimeError("DynamicBatcher.start() has not been awaited")
        if self.waiting + len(items) > self.max_queue:
            raise Overloaded(
                f"server busy: {self.waiting} items queued, the limit is {self.max_queue}",
                self.retry_after_s,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        pending = [_Pending(item, loop.create_future(), deadline) for item in items]
        for entry in pending:
            self._queue.put_nowait(entry)
        self.waiting += len(pending)
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
            results = await loop.run_in_executor(
                self._executor, self._answer_batch, [entry.item for entry in batch]
            )
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
