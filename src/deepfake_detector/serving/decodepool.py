"""Everything the service does with untrusted image bytes, in separate processes, each call with a deadline.

    pool = DecodePool(workers=2, limits=limits, size=256, timeout_s=5.0, crop=policy, faces=options, max_waiting=64)
    pixels = await pool.probe(data)     # header pixels (nothing decoded): for the request's pixel budget
    faces = await pool.decode(data)     # Decoded: status, (k, size, size, 3) uint8 face crops, boxes, n_faces
    faces = await pool.decode(read)     # or an async callable giving the bytes once a worker is free (memory)
    # ImageRefused (the file), DecodeTimeout (503), DecodeCrashed (500), Overloaded (503) otherwise

The server process never parses an image, not even its header (a PNG's text chunks are inflated by the header
read): `probe` reads the header in a worker, `decode` decodes, finds the faces (core/faces.py: dlib) and crops
them as the model was trained. A call past `timeout_s`, or whose request was cancelled (a disconnected client, a
request deadline), kills its worker; a worker that dies on its own is reported as a crash with its exit signal
(SIGKILL: most often the kernel's out-of-memory killer). A killed worker is replaced at once; a replacement that
fails to start leaves an empty slot that the next call starts again (`alive()` says how many are up: /ready).
At most `max_waiting` calls wait for a worker; more are refused (Overloaded) rather than queued without bound.
Workers are started by `start()` or the first call (forkserver: they do not inherit the server's threads) and
import Pillow, numpy, OpenCV and dlib, never torch.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np

from ..core.faces import CropPolicy, FaceOptions
from ..core.images import ImageRefused
from ..core.params import DecodeLimits


# Decoding is batch work: on a saturated CPU the server's event loop (/health, /ready, refusals) must get the core
# first. Measured in benchmarks/load_test.py --soak (docs/benchmarks.md).
DECODER_NICENESS = 10


class DecodeTimeout(RuntimeError):
    """A call ran past its deadline; its worker was replaced."""


class DecodeCrashed(RuntimeError):
    """The worker died during the call (a decoder crash, or killed for memory); it was replaced."""


class Overloaded(RuntimeError):
    """Too many calls already wait for a worker (or no worker could be started): retry later."""


@dataclass(frozen=True)
class Decoded:
    """One picture's model inputs (core.faces.picture_faces, in a worker)."""

    status: str  # ok | no_face
    crops: np.ndarray  # (k, size, size, 3) uint8
    boxes: list[tuple[int, int, int, int]]
    n_faces: int | None
    whole: bool


def _serve(conn: Connection, limits: DecodeLimits, size: int, crop: CropPolicy,
           faces: FaceOptions) -> None:  # runs in the worker process
    import io
    import os

    from ..core.faces import picture_faces
    from ..core.images import decode_image, open_image

    os.nice(DECODER_NICENESS)

    while True:
        try:
            message = conn.recv_bytes()
        except EOFError:
            return
        op, data = message[:1], message[1:]
        try:
            if op == b"p":
                with open_image(io.BytesIO(data), limits) as img:
                    conn.send(("ok", img.width * img.height))
                continue
            status, crops, n_faces, whole = picture_faces(decode_image(data, limits), crop, faces, size)
            arr = np.stack([np.asarray(c.image, np.uint8) for c in crops]) if crops else np.zeros((0, size, size, 3),
                                                                                                 np.uint8)
            conn.send(("ok", status, [c.box for c in crops], n_faces, whole, arr.tobytes()))
        except ImageRefused as exc:
            conn.send(("refused", exc.kind, str(exc)))
        except Exception as exc:  # noqa: BLE001 - any decoder (or face finder) failure: a corrupt file
            conn.send(("refused", "corrupt", f"corrupt image ({type(exc).__name__})"))


class _Worker:
    def __init__(self, ctx, limits: DecodeLimits, size: int, crop: CropPolicy, faces: FaceOptions) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, limits, size, crop, faces), daemon=True)
        self.proc.start()
        child.close()

    def call(self, op: bytes, data: bytes):
        self.conn.send_bytes(op + data)
        return self.conn.recv()  # EOFError once the process is gone

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(5)
        self.conn.close()

    def died_of(self) -> str:
        self.proc.join(1)
        code = self.proc.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            return f"signal {name}" + (" (most often the out-of-memory killer)" if -code == signal.SIGKILL else "")
        return f"exit code {code}"


class DecodePool:
    def __init__(self, workers: int, limits: DecodeLimits, size: int, timeout_s: float,
                 crop: CropPolicy | None = None, faces: FaceOptions | None = None, max_waiting: int = 64) -> None:
        self.n, self.limits, self.size, self.timeout_s = workers, limits, size, timeout_s
        self.crop, self.faces, self.max_waiting = crop or CropPolicy(), faces or FaceOptions(), max_waiting
        self._idle: asyncio.Queue[_Worker | None] | None = None
        self._all: list[_Worker] = []
        self.waiting = 0  # calls waiting for a worker (the /metrics queue depth)
        self._ctx = multiprocessing.get_context("forkserver")

    def _spawn(self) -> _Worker | None:
        """A new worker, or None (an empty slot, started again by the next call) when three tries fail."""
        for _ in range(3):
            try:
                worker = _Worker(self._ctx, self.limits, self.size, self.crop, self.faces)
            except OSError:  # EAGAIN, ENOMEM: fork limits under pressure
                continue
            self._all.append(worker)
            return worker
        return None

    def start(self) -> None:
        """Start the workers now (the service does, before it takes requests) rather than on the first call."""
        self._start()

    def _start(self) -> asyncio.Queue:
        if self._idle is None:
            self._ctx.set_forkserver_preload([__name__])
            self._idle = asyncio.Queue()
            for _ in range(self.n):
                self._idle.put_nowait(self._spawn())
        return self._idle

    def alive(self) -> int:
        """Workers up (started lazily: before the first call, all n count as up)."""
        return self.n if self._idle is None else sum(w.proc.is_alive() for w in self._all)

    def _replace(self, worker: _Worker) -> _Worker | None:
        """Kill a worker that was mid-call (or dead) and start its successor (None: an empty slot)."""
        worker.kill()
        if worker in self._all:
            self._all.remove(worker)
        return self._spawn()

    async def _call(self, op: bytes, data: bytes | Callable[[], Awaitable[bytes]]):
        idle = self._start()
        if self.waiting >= self.max_waiting:
            raise Overloaded(f"{self.waiting} images already wait for a decoder; retry shortly")
        self.waiting += 1
        try:
            worker = await idle.get()
        finally:
            self.waiting -= 1
        loop = asyncio.get_running_loop()
        try:  # nothing sent yet: whatever fails here (no worker starts, the spool cannot be read) leaves it as it was
            if worker is None:  # an empty slot: a replacement that did not start
                worker = await loop.run_in_executor(None, self._spawn)
                if worker is None:
                    raise Overloaded("no decoder process could be started; retry shortly")
            if callable(data):
                data = await data()
        except BaseException:
            idle.put_nowait(worker)
            raise
        try:
            reply = await asyncio.wait_for(loop.run_in_executor(None, worker.call, op, data), self.timeout_s)
        except asyncio.TimeoutError:
            worker = await loop.run_in_executor(None, self._replace, worker)
            raise DecodeTimeout(f"decoding took longer than serve.decode_timeout_s ({self.timeout_s:g} s): "
                                "abandoned") from None
        except (EOFError, OSError):
            why = worker.died_of()
            worker = await loop.run_in_executor(None, self._replace, worker)
            raise DecodeCrashed(f"the decoder process died ({why}) while decoding this file") from None
        except asyncio.CancelledError:  # the request is gone: its worker may be mid-call, so it is replaced
            worker = self._replace(worker)
            raise
        finally:
            idle.put_nowait(worker)
        if reply[0] == "refused":
            raise ImageRefused(reply[1], reply[2])
        return reply

    async def probe(self, data: bytes | Callable[[], Awaitable[bytes]]) -> int:
        """Header pixels of an allowed image (ImageRefused otherwise); nothing is decoded."""
        return (await self._call(b"p", data))[1]

    async def decode(self, data: bytes | Callable[[], Awaitable[bytes]]) -> Decoded:
        _, status, boxes, n_faces, whole, raw = await self._call(b"d", data)
        crops = np.frombuffer(raw, np.uint8).reshape(len(boxes), self.size, self.size, 3)
        return Decoded(status, crops, [tuple(b) for b in boxes], n_faces, whole)

    def close(self) -> None:
        for worker in self._all:
            worker.kill()
        self._all.clear()
        self._idle = None
