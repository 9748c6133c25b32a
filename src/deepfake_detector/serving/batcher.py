"""Dynamic batching: images from concurrent requests share one forward pass.

    batcher = Batcher(score_fn, max_batch=32, max_wait_ms=10, max_queue=256)
    probs = await batcher.score([image_tensor, ...])     # one result per image, in order; Overloaded when full
    batcher.busy_for()                                   # seconds the current model call has run (0: idle)

Like Triton's dynamic batcher or Ray Serve's `@serve.batch`: the first waiting image opens a batch, every image
already queued joins it, and the batch waits at most `max_wait_ms` for more, up to `max_batch`. One batch runs
at a time, in a worker thread, so the event loop (and /health) never waits for the model. The model is in eval
mode, so an image's score does not depend on what else is in its batch. At most `max_queue` images wait: a request
that would pass it is refused whole (Overloaded: the service answers 503) instead of queueing without bound. A
model call that never returns shows in `busy_for()` (the service's /ready turns red).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from .decodepool import Overloaded


class Batcher:
    def __init__(self, score_fn: Callable[[torch.Tensor], Sequence[Any]], max_batch: int, max_wait_ms: float,
                 on_batch: Callable[[int], None] | None = None, max_queue: int = 1 << 30) -> None:
        """score_fn: a uint8 (B, 3, S, S) batch -> one result per image; on_batch(size) is told each batch size."""
        self.score_fn, self.max_batch, self.max_wait = score_fn, max_batch, max_wait_ms / 1000
        self.on_batch, self.max_queue = on_batch, max_queue
        self._busy_since: float | None = None
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="model")

    async def score(self, images: Sequence[torch.Tensor]) -> list[Any]:
        if self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._run())
        if self.depth() + len(images) > self.max_queue:
            raise Overloaded(f"{self.depth()} images already wait for the model (serve.max_queue); retry shortly")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in images]
        for image, fut in zip(images, futures):
            self._queue.put_nowait((image, fut))
        return list(await asyncio.gather(*futures))

    def depth(self) -> int:
        """Images waiting for the model."""
        return self._queue.qsize() if self._queue is not None else 0

    def busy_for(self) -> float:
        """Seconds the model call in progress has run; 0 when none runs."""
        return 0.0 if self._busy_since is None else time.monotonic() - self._busy_since

    async def _take(self) -> list[tuple[torch.Tensor, asyncio.Future]]:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._take()
            live = [(img, fut) for img, fut in batch if not fut.done()]  # a cancelled request's images drop out
            if not live:
                continue
            if self.on_batch is not None:
                self.on_batch(len(live))
            self._busy_since = time.monotonic()
            try:
                results = await loop.run_in_executor(self._executor, self.score_fn,
                                                     torch.stack([img for img, _ in live]))
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            finally:
                self._busy_since = None
            for (_, fut), result in zip(live, results):
                if not fut.done():
                    fut.set_result(result)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
