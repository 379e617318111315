"""A micro-batcher: one worker thread owns the models; concurrent requests are gathered into
one call.

Requests are put on a queue; the worker takes the first one, then whatever else arrives
within `max_wait` seconds (up to `max_batch`), and hands them to `handle(batch)` together, so
eight clients waiting at once cost one encoder/LLM batch instead of eight. `handle` returns
one result (or exception) per job. `call(fn)` runs a function on the worker between batches
(index updates must not race a retrieval). The event loop never runs model code: it awaits a
`concurrent.futures.Future` through `asyncio.wrap_future`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

logger = logging.getLogger(__name__)

_STOP = object()


class MicroBatcher:
    def __init__(self, handle: Callable[[list[Any]], Sequence[Any]], *, max_batch: int = 32, max_wait: float = 0.005) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._handle = handle
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="personarag-model-worker", daemon=True)
        self.batches = 0  # how many handle() calls ran, and over how many jobs: batching, measured
        self.jobs = 0
        self._thread.start()

    def submit(self, job: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put(("job", job, future))
        return future

    def call(self, fn: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put(("call", fn, future))
        return future

    def close(self, timeout: float = 10.0) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            if first[0] == "call":
                self._run_call(first)
                continue
            batch = [first]
            deadline = time.monotonic() + self.max_wait
            held = None
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=max(remaining, 0)) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP or item[0] == "call":
                    held = item  # run after this batch, in arrival order
                    break
                batch.append(item)
            self._run_batch(batch)
            if held is _STOP:
                return
            if held is not None:
                self._run_call(held)

    def _run_call(self, item: tuple[str, Callable[[], Any], Future[Any]]) -> None:
        _, fn, future = item
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as error:  # handed to the waiting request, which answers 5xx
            future.set_exception(error)

    def _run_batch(self, batch: list[tuple[str, Any, Future[Any]]]) -> None:
        live = [(job, future) for _, job, future in batch if future.set_running_or_notify_cancel()]
        if not live:
            return
        self.batches += 1
        self.jobs += len(live)
        try:
            results = list(self._handle([job for job, _ in live]))
            if len(results) != len(live):
                raise RuntimeError(f"the batch handler returned {len(results)} results for {len(live)} jobs")
        except BaseException as error:
            logger.exception("model batch of %d failed", len(live))
            for _, future in live:
                future.set_exception(error)
            return
        for (_, future), result in zip(live, results):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
