"""HTTP API for the detector (FastAPI + uvicorn), built on `Detector`.

    dfd serve --model artifacts/model --host 127.0.0.1 --port 8000      # or --model detector@prod
    dfd serve keys add ci                                                # an API key, shown once
    curl -H "X-API-Key: $KEY" -F files=@a.jpg -F files=@b.png http://127.0.0.1:8000/predict

POST /predict (multipart, one or more `files` fields; `file` also accepted) -> {"model_version", "results": [one
entry per file]}; GET /model (version, threshold, val metrics: no paths); GET /health; GET /metrics (Prometheus);
GET /docs (Swagger UI served from the installed swagger-ui-bundle: it works offline).

Before a byte of a body is read (serve.* in params.yaml; `Guard`): a browser Origin not in allowed_origins gets
403; with api_keys_file, /predict and /model need a key (401). Bodies are read whole, up to max_upload_mb, before
any parser sees them: a larger one gets 413, whatever it contains. Then, per request: at most max_files files
(413); only serve.formats, named from the bytes (415 otherwise, EPS never reaches a decoder); all files' header
pixels together under max_request_pixels (413 for the request, before any decode) and each under
validate.max_pixels (413 for that file). Decoding runs in separate processes (decodepool.py) and a decode past
decode_timeout_s is abandoned (503 for that file). Images of concurrent requests are scored together
(batcher.py). The request itself answers 200 when any file was scored. Each scored file is appended to the
request log (JSONL, rotated at request_log_max_mb: time, sha256, bytes, probability, label, key name,
model_version; the image itself only with serve.log_images), which `dfd drift --current` and the
`monitor-served` flow read.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import logging.handlers
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ..core.images import ImageRefused, open_image, sniff
from ..core.params import ServeParams
from .batcher import Batcher
from .decodepool import DecodePool, DecodeTimeout
from .keys import key_name, presented_key

OPEN_PATHS = ("/health", "/metrics", "/docs", "/openapi.json", "/static/")  # no key needed
STATUS = {"format": 415, "unknown": 415, "pixels": 413, "corrupt": 400}  # ImageRefused.kind -> per-file status


async def _answer(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware, in front of everything: Origin (403), API key (401), whole-body limit (413)."""

    def __init__(self, app, max_bytes: int, allowed_origins: tuple[str, ...], keys: dict[str, str] | None) -> None:
        self.app, self.max_bytes, self.origins, self.keys = app, max_bytes, set(allowed_origins), keys

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        origin = headers.get(b"origin")
        if origin is not None and origin.decode("latin-1") not in self.origins:
            return await _answer(send, 403, "requests from this Origin are not allowed (serve.allowed_origins)")
        if self.keys is not None and not scope["path"].startswith(OPEN_PATHS):
            name = key_name(self.keys, presented_key(headers))
            if name is None:
                return await _answer(send, 401, "a valid API key is needed: `Authorization: Bearer KEY` or `X-API-Key: KEY`")
            scope.setdefault("state", {})["key_name"] = name
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _answer(send, 413, f"request body larger than {self.max_bytes} bytes")
        chunks, seen, more = [], 0, True
        while more:  # the whole body, before any parser: the limit never races a parse error
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                return await _answer(send, 413, f"request body larger than {self.max_bytes} bytes")
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect like any app would

        return await self.app(scope, replay, send)


class RequestLog:
    """One JSON line per scored image, rotated (logging's RotatingFileHandler); the image bytes only when asked."""

    def __init__(self, path: str | Path | None, log_images: bool, max_mb: float, keep: int) -> None:
        self.path = Path(path) if path else None
        self.images = self.path.parent / "images" if self.path and log_images else None
        self.lock = threading.Lock()
        self.logger = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.handlers.RotatingFileHandler(self.path, maxBytes=int(max_mb * 2**20), backupCount=keep)
            handler.setFormatter(logging.Formatter("%(message)s"))
            self.logger = logging.Logger(f"dfd.requests.{id(self)}")  # not in the global logging tree
            self.logger.addHandler(handler)

    def write(self, data: bytes, result: dict, key: str | None) -> None:
        if self.logger is None:
            return
        sha = hashlib.sha256(data).hexdigest()
        entry = {"time": round(time.time(), 3), "sha256": sha, "bytes": len(data), "key": key,
                 **{k: result.get(k) for k in ("fake_probability", "label", "uncertain", "novelty", "unfamiliar",
                                               "model_version", "face_status", "n_faces", "face")},
                 "faces": result.get("faces", [])}  # per face: box, probability, label, novelty
        with self.lock:
            if self.images is not None:
                self.images.mkdir(parents=True, exist_ok=True)
                (self.images / sha).write_bytes(data)
                entry["image"] = f"images/{sha}"
            self.logger.info(json.dumps(entry))

    def close(self) -> None:
        for handler in list(self.logger.handlers if self.logger else []):
            handler.close()


def request_log_files(path: str | Path) -> list[Path]:
    """The request log and its rotated files, oldest first (requests.jsonl.N ... .1, requests.jsonl)."""
    path = Path(path)
    old = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    return [p for p in old if p.suffix[1:].isdigit()] + ([path] if path.is_file() else [])


def _metrics(registry, version: str, backend: str):
    from prometheus_client import Counter, Gauge, Histogram

    info = Gauge("dfd_model_info", "The served model (value 1)", ["model_version", "backend"], registry=registry)
    info.labels(version, backend).set(1)
    return {
        "requests": Counter("dfd_requests_total", "Requests by endpoint and status", ["endpoint", "status"],
                            registry=registry),
        "images": Counter("dfd_images_total", "Images by status (200 scored, 4xx/5xx refused)", ["status"],
                          registry=registry),
        "latency": Histogram("dfd_request_seconds", "Request latency of /predict", registry=registry,
                             buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)),
        "batch": Histogram("dfd_batch_size", "Images per forward pass", registry=registry,
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128)),
        "refusals": Counter("dfd_decode_refusals_total", "Files refused before or while decoding, by reason",
                            ["reason"], registry=registry),
    }


def build_server_app(model: str, s: ServeParams, limits, request_log: str | None = None, faces=None):
    """What `dfd serve` runs: the Detector for `model` (folder or registry ref) on serve.backend (an ONNX export is
    written next to the folder's other files when missing), the keys file, and the app."""
    from .detector import Detector
    from .keys import load_keys

    if s.backend == "onnx":
        from .registry import is_ref, resolve

        folder = resolve(model, ".")[0] if is_ref(model) and not Path(model).exists() else Path(model)
        if not (folder / "detector.onnx").is_file():
            from .export import export_onnx

            export_onnx(folder, folder / "detector.onnx")
    det = Detector.load(model, runtime=s.backend, band=s.uncertainty_band, batch_size=s.batch_size, limits=limits,
                        faces=faces)  # faces: params.yaml `faces` (core.faces.FaceOptions)
    keys = load_keys(s.api_keys_file) if s.api_keys_file else None
    return create_app(det, s, request_log, keys)


def create_app(detector, s: ServeParams, request_log: str | Path | None = None, keys: dict[str, str] | None = None):
    """The app for a loaded `Detector` (serving/detector.py); request_log overrides s.request_log ("" = off);
    keys: {sha256: name} from serve.api_keys_file (None = no keys)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from swagger_ui_bundle import swagger_ui_path

    from ..core.version import __version__

    limits = detector.limits
    log = RequestLog(s.request_log if request_log is None else request_log, s.log_images, s.request_log_max_mb,
                     s.request_log_keep)
    registry = CollectorRegistry()
    m = _metrics(registry, detector.version, detector.runtime)
    pool = DecodePool(s.decode_workers, limits, detector.image_size, s.decode_timeout_s, detector.crop,
                      detector.faces)
    batcher = Batcher(detector.score_tensor, s.batch_size if s.batching else 1 << 30,
                      s.max_wait_ms if s.batching else 0, on_batch=lambda n: m["batch"].observe(n))
    solo = asyncio.Lock()  # batching off: one request's images per forward pass, one pass at a time

    async def score(images):
        import torch

        if s.batching:
            return await batcher.score(images)
        async with solo:
            m["batch"].observe(len(images))
            return await asyncio.to_thread(detector.score_tensor, torch.stack(images))

    @asynccontextmanager
    async def lifespan(_app):
        yield
        pool.close(), batcher.close(), log.close()

    app = FastAPI(title="deepfake-detector", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan)
    app.mount("/static/swagger", StaticFiles(directory=str(swagger_ui_path)), name="swagger")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": message})

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model_version": detector.version}

    @app.get("/model")
    def model_info() -> dict:
        return detector.info()

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="deepfake-detector API",
                                   swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger/swagger-ui.css",
                                   swagger_favicon_url="/static/swagger/favicon-32x32.png")

    def headers_of(data: bytes) -> tuple[int, str | None]:
        """(header pixels, None) or (0, refusal): the header only, nothing decoded."""
        try:
            with open_image(io.BytesIO(data), limits) as img:
                return img.width * img.height, None
        except ImageRefused as exc:
            return 0, exc

    @app.post("/predict")
    async def predict(request: Request):
        t0 = time.perf_counter()
        response = await _predict(request)
        m["requests"].labels("/predict", str(response.status_code)).inc()
        m["latency"].observe(time.perf_counter() - t0)
        return response

    async def _predict(request: Request) -> JSONResponse:
        try:
            form = await request.form(max_files=s.max_files)
        except Exception as exc:  # noqa: BLE001 - starlette's parser errors (too many files/fields, bad body)
            if "Too many files" in str(getattr(exc, "detail", exc)):
                return error(413, f"more than {s.max_files} files in one request; at most {s.max_files}")
            return error(400, "unreadable multipart body: send multipart/form-data with `files` fields")
        uploads = [v for k, v in form.multi_items() if k in ("files", "file") and hasattr(v, "read")]
        if not uploads:
            return error(422, "no files: send one or more multipart fields named `files`")
        key = request.scope.get("state", {}).get("key_name")
        results, datas, pixels = [], [], 0
        for up in uploads:
            data = await up.read()
            kind = sniff(data[:16])
            entry = {"filename": up.filename, "detected_type": kind.lower() if kind else None}
            n, refused = headers_of(data)
            if refused is not None:
                entry.update(status=STATUS[refused.kind], error=str(refused))
                m["refusals"].labels(refused.kind).inc()
            pixels += n
            results.append(entry)
            datas.append(data)
        if pixels > s.max_request_pixels:
            m["refusals"].labels("request_pixels").inc()
            return error(413, f"the files of this request hold {pixels} pixels together, over "
                              f"serve.max_request_pixels ({s.max_request_pixels}): send fewer or smaller images")
        todo = [i for i, r in enumerate(results) if "status" not in r]
        decoded = await asyncio.gather(*(pool.decode(datas[i]) for i in todo), return_exceptions=True)
        images, rows = [], []  # rows: (file index, its Decoded); images: every face crop of every file
        for i, out in zip(todo, decoded):
            if isinstance(out, (ImageRefused, DecodeTimeout)):
                status, reason = (503, "timeout") if isinstance(out, DecodeTimeout) else (STATUS[out.kind], out.kind)
                results[i].update(status=status, error=str(out))
                m["refusals"].labels(reason).inc()
            elif isinstance(out, BaseException):
                raise out
            else:
                import torch

                images += [torch.from_numpy(c.copy()).permute(2, 0, 1) for c in out.crops]
                rows.append((i, out))
        scored, k = (await score(images) if images else []), 0
        for i, out in rows:
            pred = detector.compose(results[i]["filename"] or "", out.status, out.boxes, scored[k:k + len(out.boxes)],
                                    out.n_faces, out.whole)
            k += len(out.boxes)
            answer = pred.to_dict()
            answer["face_status"] = answer.pop("status")  # ok | no_face; `status` is the file's HTTP status
            answer.pop("source", None)
            results[i].update({**answer, "status": 200})
            log.write(datas[i], results[i], key)
        for r in results:
            m["images"].labels(str(r["status"])).inc()
        status = 200 if rows else max(r["status"] for r in results)
        body = {"model_version": detector.version, "results": results}
        if len(uploads) == 1 and not rows:
            body["error"] = results[0]["error"]
        return JSONResponse(status_code=status, content=body)

    return Guard(app, int(s.max_upload_mb * 2**20), tuple(s.allowed_origins), keys)
