"""``DynamicBatcher``: items of concurrent requests batched into one model call at a time.

No web framework here: the batcher takes ``Item``s and returns answers (or the item's error).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from qa_lightning.inference.answerability import answer_documents
from qa_lightning.serving.requests import AnswerFn, Answers, Item

log = logging.getLogger(__name__)


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
