"""Image decoding for the service in separate processes, each with a deadline.

    pool = DecodePool(workers=2, limits=limits, size=256, timeout_s=5.0, crop=policy, faces=options)
    faces = await pool.decode(data)     # Decoded: status, (k, size, size, 3) uint8 face crops, boxes, n_faces
                                        # ImageRefused or DecodeTimeout otherwise

A decode that runs past `timeout_s` is abandoned: its worker process is killed and replaced, and the caller
gets DecodeTimeout (the service answers 503 for that file). Decoding never runs in the server's own process,
so a slow or hostile image cannot stall /health or the model. Finding the faces (core/faces.py: dlib) and
cropping them as the model was trained runs there too. Workers are started lazily (forkserver: they do not
inherit the server's threads) and import Pillow, numpy, OpenCV and dlib, never torch.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np

from ..core.faces import CropPolicy, FaceOptions
from ..core.images import ImageRefused
from ..core.params import DecodeLimits


class DecodeTimeout(RuntimeError):
    """A decode ran past its deadline; its worker was replaced."""


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
    from ..core.faces import picture_faces
    from ..core.images import decode_image

    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:
            return
        try:
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

    def call(self, data: bytes):
        self.conn.send_bytes(data)
        return self.conn.recv()  # EOFError once the process is killed

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class DecodePool:
    def __init__(self, workers: int, limits: DecodeLimits, size: int, timeout_s: float,
                 crop: CropPolicy | None = None, faces: FaceOptions | None = None) -> None:
        self.n, self.limits, self.size, self.timeout_s = workers, limits, size, timeout_s
        self.crop, self.faces = crop or CropPolicy(), faces or FaceOptions()
        self._idle: asyncio.Queue[_Worker] | None = None
        self._all: list[_Worker] = []
        self._ctx = multiprocessing.get_context("forkserver")

    def _spawn(self) -> _Worker:
        worker = _Worker(self._ctx, self.limits, self.size, self.crop, self.faces)
        self._all.append(worker)
        return worker

    def _start(self) -> asyncio.Queue:
        if self._idle is None:
            self._ctx.set_forkserver_preload([__name__])
            self._idle = asyncio.Queue()
            for _ in range(self.n):
                self._idle.put_nowait(self._spawn())
        return self._idle

    async def decode(self, data: bytes) -> Decoded:
        idle = self._start()
        worker = await idle.get()
        loop = asyncio.get_running_loop()
        try:
            reply = await asyncio.wait_for(loop.run_in_executor(None, worker.call, data), self.timeout_s)
        except (asyncio.TimeoutError, EOFError, OSError):
            worker.kill()
            self._all.remove(worker)
            worker = await loop.run_in_executor(None, self._spawn)
            raise DecodeTimeout(f"decoding took longer than serve.decode_timeout_s ({self.timeout_s:g} s): "
                                "abandoned") from None
        finally:
            idle.put_nowait(worker)
        if reply[0] == "ok":
            _, status, boxes, n_faces, whole, raw = reply
            crops = np.frombuffer(raw, np.uint8).reshape(len(boxes), self.size, self.size, 3)
            return Decoded(status, crops, [tuple(b) for b in boxes], n_faces, whole)
        raise ImageRefused(reply[1], reply[2])

    def close(self) -> None:
        for worker in self._all:
            worker.kill()
        self._all.clear()
        self._idle = None
