"""HTTP API for the detector (FastAPI + uvicorn), built on `Detector`.

    dfd serve --model artifacts/model --host 127.0.0.1 --port 8000      # or --model detector@prod
    curl -F files=@a.jpg -F files=@b.png http://127.0.0.1:8000/predict

POST /predict (multipart, one or more `files` fields; `file` also accepted) -> {"model_version",
"results": [one entry per file]}; GET /health; GET /model (version, threshold, val metrics: no paths).
Limits, all from params.yaml `serve` (flags override) and validate.max_pixels:
- the request body is counted as it arrives and refused with 413 past max_upload_mb, before the
  multipart parser sees it (a declared Content-Length over the limit is refused without reading);
- at most max_files files per request (413);
- at most decode_workers decodes at once; the pixel cap is read from the header before decoding.
Per file: 415 not an image (type sniffed from the bytes), 400 corrupt, 413 too many pixels, as an
entry with `error` and `status`; the request itself answers 200 when any file was scored.
Each scored file is appended to the request log (JSONL: time, sha256, bytes, probability, label,
model_version; the image itself only with serve.log_images), which `dfd drift --current` reads.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import threading
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool

from ..core.images import to_rgb, to_tensor

# magic numbers of the formats Pillow decodes for us
SIGNATURES = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png", b"GIF87a": "gif", b"GIF89a": "gif",
              b"BM": "bmp", b"II*\x00": "tiff", b"MM\x00*": "tiff"}


def sniff(data: bytes) -> "str | None":
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((kind for sig, kind in SIGNATURES.items() if data.startswith(sig)), None)


class BodyLimit:
    """ASGI middleware: 413 for a body over max_bytes, decided on Content-Length or while it streams in."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    scope["body_too_large"] = self.max_bytes  # for a handler whose parser swallows the raise
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send) -> None:
        body = json.dumps({"error": f"request body larger than {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class RequestLog:
    """Appends one JSON line per scored image; keeps the bytes only when asked (log_images)."""

    def __init__(self, path: str | Path | None, log_images: bool) -> None:
        self.path = Path(path) if path else None
        self.images = self.path.parent / "images" if self.path and log_images else None
        self.lock = threading.Lock()

    def write(self, data: bytes, result: dict) -> None:
        if self.path is None:
            return
        sha = hashlib.sha256(data).hexdigest()
        entry = {"time": round(time.time(), 3), "sha256": sha, "bytes": len(data),
                 **{k: result.get(k) for k in ("fake_probability", "label", "uncertain", "model_version")}}
        with self.lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.images is not None:
                self.images.mkdir(parents=True, exist_ok=True)
                (self.images / sha).write_bytes(data)
                entry["image"] = f"images/{sha}"
            with self.path.open("a") as fh:
                fh.write(json.dumps(entry) + "\n")


def create_app(detector, max_bytes: int, max_files: int, max_pixels: int, decode_workers: int,
               request_log: str | Path | None = None, log_images: bool = False):
    """The app for a loaded `Detector` (serving/detector.py)."""
    decodes = asyncio.Semaphore(decode_workers)
    model_lock = threading.Lock()  # one forward at a time: torch already uses every core
    log = RequestLog(request_log, log_images)
    app = FastAPI(title="deepfake-detector", version="0.2.0")

    def error(status: int, message: str) -> JSONResponse:
        close = {"connection": "close"} if status == 413 else None  # stop reading an oversized body
        return JSONResponse(status_code=status, content={"error": message}, headers=close)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model_version": detector.version}

    @app.get("/model")
    def model_info() -> dict:
        return detector.info()

    def decode(data: bytes, kind: str):
        """bytes -> uint8 tensor at the model size, or (status, message)."""
        try:
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > max_pixels:  # header only: nothing decoded yet
                    return 413, f"image of {img.width}x{img.height} pixels exceeds the {max_pixels}-pixel cap"
                img.load()
                return to_tensor(to_rgb(img), detector.image_size)
        except Image.DecompressionBombError as exc:
            return 413, f"decompression bomb refused: {exc}"
        except Exception as exc:  # noqa: BLE001 - corrupt upload
            return 400, f"corrupt {kind} image: {type(exc).__name__}: {exc}"

    def score(tensors):
        import torch

        with model_lock:
            return detector.predict_tensor(torch.stack(tensors))

    @app.post("/predict")
    async def predict(request: Request):
        try:
            form = await request.form(max_files=max_files)
        except Exception as exc:  # noqa: BLE001 - starlette's parser errors (too many files/fields, bad body)
            if request.scope.get("body_too_large"):
                return error(413, f"request body larger than {request.scope['body_too_large']} bytes")
            if "Too many files" in str(getattr(exc, "detail", exc)):
                return error(413, f"more than {max_files} files in one request; at most {max_files}")
            return error(400, f"unreadable multipart body: {getattr(exc, 'detail', exc)}")
        uploads = [v for k, v in form.multi_items() if k in ("files", "file") and hasattr(v, "read")]
        if not uploads:
            return error(422, "no files: send one or more multipart fields named `files`")
        results: list[dict] = []
        pending = []
        for up in uploads:
            data = await up.read()
            kind = sniff(data)
            entry = {"filename": up.filename, "detected_type": kind}
            if kind is None:
                results.append({**entry, "status": 415, "error": "not an image (JPEG, PNG, GIF, BMP, TIFF or "
                                                                 "WebP expected; detected from content)"})
                continue
            async with decodes:
                out = await run_in_threadpool(decode, data, kind)
            if isinstance(out, tuple):
                results.append({**entry, "status": out[0], "error": out[1]})
                continue
            results.append(entry)
            pending.append((len(results) - 1, data, out))
        if pending:
            probs = await run_in_threadpool(score, [t for _, _, t in pending])
            for (i, data, _), prob in zip(pending, probs):
                results[i].update({"status": 200, **detector.result(prob, results[i]["filename"] or "").to_dict()})
                results[i].pop("source", None)
                log.write(data, results[i])
        status = 200 if pending else max(r["status"] for r in results)
        body = {"model_version": detector.version, "results": results}
        if len(uploads) == 1 and not pending:
            body["error"] = results[0]["error"]
        return JSONResponse(status_code=status, content=body)

    return BodyLimit(app, max_bytes)
