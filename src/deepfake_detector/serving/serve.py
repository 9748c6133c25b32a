"""HTTP API for the detector (FastAPI + uvicorn), built on `Detector`.

    dfd serve --model artifacts/model --host 127.0.0.1 --port 8000      # or --model detector@prod
    dfd serve keys add ci                                                # an API key, shown once
    curl -H "X-API-Key: $KEY" -F files=@a.jpg -F files=@b.png http://127.0.0.1:8000/predict

POST /predict (multipart, one or more `files` fields; `file` also accepted) -> {"model_version", "results": [one
entry per file]}; GET /model (version, threshold, val metrics: no paths); GET /health (liveness); GET /ready
(readiness: decoders up, model not hung, not draining); GET /metrics (Prometheus); GET /docs (Swagger UI 5 from
the installed fastapi-offline package: renders offline, with the key scheme under "Authorize").

Before a byte of a body is read, `Guard` (guard.py) answers Origin (403), CORS preflight, key (401), rate (429),
size (413) and load (503); the body then streams into the multipart parser under max_upload_mb and body_timeout_s,
each file held in memory up to spool_kb and spooled to disk past it. Per request: at most max_files files (413);
only serve.formats, named from the bytes (415 otherwise, EPS never reaches a decoder); the headers of all files,
read in the decode processes (decodepool.py: this process never parses an image), hold at most
max_request_pixels together (413 for the request) and each at most validate.max_pixels (413 for that file).
Decoding and face finding run in those processes too, each file under decode_timeout_s (503 for that file); a
crashed decoder is a 500 for that file. Images of concurrent requests are scored together (batcher.py); a full
decode or model queue answers 503. The whole request runs under request_timeout_s (504), and a client that
disconnects cancels its decodes and its place in the model queue. The request answers 200 when any file was
scored. Each scored file is appended to the request log (JSONL, rotated at request_log_max_mb: time, sha256,
bytes, probability, label, key name, model_version; the image itself only with serve.log_images), which
`dfd drift --current` and the `monitor-served` flow read.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import logging.handlers
import os
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ..core.images import ImageRefused, sniff
from ..core.params import ServeParams
from .batcher import Batcher
from .decodepool import DecodeCrashed, DecodePool, DecodeTimeout, Overloaded
from .guard import BodyRefused, Guard

STATUS = {"format": 415, "unknown": 415, "pixels": 413, "corrupt": 400}  # ImageRefused.kind -> per-file status
DOCS_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")  # fastapi_offline/static: Swagger UI 5
OPEN_PATHS = {"/health", "/ready", "/metrics", "/docs", "/openapi.json", *(f"/static/docs/{a}" for a in DOCS_ASSETS)}


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
        "requests": Counter("dfd_requests_total", "Requests by route and status, refusals included",
                            ["endpoint", "status"], registry=registry),
        "images": Counter("dfd_images_total", "Images by status (200 scored, 4xx/5xx refused)", ["status"],
                          registry=registry),
        "latency": Histogram("dfd_request_seconds", "Request latency of /predict", registry=registry,
                             buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)),
        "batch": Histogram("dfd_batch_size", "Images per forward pass", registry=registry,
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128)),
        "refusals": Counter("dfd_decode_refusals_total", "Files refused before or while decoding, by reason",
                            ["reason"], registry=registry),
        "gauge": lambda name, doc, fn: Gauge(name, doc, registry=registry).set_function(fn),
    }


def _rss_bytes() -> float:
    """This process's resident memory (Linux /proc; 0 elsewhere)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0.0


def build_server_app(model: str, s: ServeParams, limits, request_log: str | None = None, faces=None):
    """What `dfd serve` runs: the Detector for `model` (folder or registry ref) on serve.backend, the keys file
    (re-read when it changes), and the app. `backend: onnx` needs MODEL/detector.onnx (`dfd export MODEL`): it is
    never written at start-up (replicas would race, and a model volume may be read-only)."""
    from .detector import Detector
    from .keys import KeyRing
    from .registry import model_folder

    if s.backend == "onnx" and not (model_folder(model) / "detector.onnx").is_file():
        raise FileNotFoundError(f"serve.backend is onnx but {model_folder(model) / 'detector.onnx'} is missing: "
                                f"run `dfd export {model}` first")
    det = Detector.load(model, runtime=s.backend, band=s.uncertainty_band, batch_size=s.batch_size, limits=limits,
                        faces=faces)  # faces: params.yaml `faces` (core.faces.FaceOptions)
    keys = KeyRing(s.api_keys_file) if s.api_keys_file else None
    return create_app(det, s, request_log, keys)


def _openapi(app, version: str, keys: bool) -> dict:
    """FastAPI's schema (OpenAPI 3.1) with the key schemes declared, so Swagger UI's "Authorize" sends one."""
    from fastapi.openapi.utils import get_openapi

    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=version, routes=app.routes,
                             description="Deepfake face-image detector. POST images to /predict.")
        if keys:
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
            for path in ("/predict", "/model"):
                for op in schema["paths"].get(path, {}).values():
                    op["security"] = [{"bearer": []}, {"apiKey": []}]
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(detector, s: ServeParams, request_log: str | Path | None = None, keys=None):
    """The app for a loaded `Detector` (serving/detector.py); request_log overrides s.request_log ("" = off);
    keys: a KeyRing of serve.api_keys_file (keys.py), or {sha256: name}, or None (no keys)."""
    from importlib.resources import files

    import torch
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from starlette.formparsers import MultiPartParser

    from ..core.version import __version__
    from .keys import KeyRing

    if isinstance(keys, dict):
        keys = KeyRing.of(keys)
    log = RequestLog(s.request_log if request_log is None else request_log, s.log_images, s.request_log_max_mb,
                     s.request_log_keep)
    registry = CollectorRegistry()
    m = _metrics(registry, detector.version, detector.runtime)
    pool = DecodePool(s.decode_workers, detector.limits, detector.image_size, s.decode_timeout_s, detector.crop,
                      detector.faces, max_waiting=s.max_queue)
    batcher = Batcher(detector.score_tensor, s.batch_size if s.batching else 1 << 30,
                      s.max_wait_ms if s.batching else 0, on_batch=lambda n: m["batch"].observe(n),
                      max_queue=s.max_queue)
    solo = asyncio.Lock()  # batching off: one request's images per forward pass, one pass at a time
    state = {"draining": False, "solo_since": None}

    class Parser(MultiPartParser):
        spool_max_size = s.spool_kb * 1024  # per uploaded file, then a temporary file

    async def score(images):
        if s.batching:
            return await batcher.score(images)
        async with solo:
            m["batch"].observe(len(images))
            state["solo_since"] = time.monotonic()
            try:
                return await asyncio.to_thread(detector.score_tensor, torch.stack(images))
            finally:
                state["solo_since"] = None

    def model_busy_for() -> float:
        return batcher.busy_for() if s.batching else (time.monotonic() - state["solo_since"]
                                                       if state["solo_since"] else 0.0)

    @asynccontextmanager
    async def lifespan(_app):
        pool.start()  # decoders up before the first request (/ready reports them)
        yield
        state["draining"] = True  # uvicorn has stopped accepting; requests in flight finish (serve.drain_s)
        pool.close(), batcher.close(), log.close()

    app = FastAPI(title="deepfake-detector", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan)
    app.openapi = lambda: _openapi(app, __version__, keys is not None)
    app.mount("/static/docs", StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")
    for name, doc, fn in (("dfd_inflight_requests", "/predict requests in flight", lambda: guard.inflight),
                          ("dfd_decode_queue", "Images waiting for a decoder", lambda: pool.waiting),
                          ("dfd_model_queue", "Images waiting for the model", batcher.depth),
                          ("dfd_decoders_alive", "Decode processes up", pool.alive),
                          ("dfd_process_resident_bytes", "Resident memory of the server process", _rss_bytes)):
        m["gauge"](name, doc, fn)

    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": message}, headers=headers)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model_version": detector.version}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        alive, busy = pool.alive(), model_busy_for()
        checks = {"decoders": f"{alive} of {pool.n} up",
                  "model": f"a call has run {busy:.1f} s" if busy > s.model_timeout_s else "ok",
                  "draining": state["draining"]}
        ok = alive > 0 and checks["model"] == "ok" and not state["draining"]
        return JSONResponse(status_code=200 if ok else 503, content={"ready": ok, **checks})

    @app.get("/model")
    def model_info() -> dict:
        return detector.info()

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="deepfake-detector API",
                                   swagger_js_url="/static/docs/swagger-ui-bundle.js",
                                   swagger_css_url="/static/docs/swagger-ui.css",
                                   swagger_favicon_url="/static/docs/favicon.png",
                                   swagger_ui_parameters={"persistAuthorization": False})

    @app.post("/predict")
    async def predict(request: Request):
        t0 = time.perf_counter()
        body_read = asyncio.Event()
        work = asyncio.ensure_future(_predict(request, body_read))
        gone = asyncio.ensure_future(_disconnected(request, body_read))
        body_in = asyncio.ensure_future(body_read.wait())
        try:  # the body has its own deadline (Guard: body_timeout_s); the request's starts once it is in
            await asyncio.wait({work, body_in}, return_when=asyncio.FIRST_COMPLETED)
            done, _ = await asyncio.wait({work, gone}, timeout=s.request_timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the server gave up on this request (shutdown past serve.drain_s)
            work.cancel(), gone.cancel()
            raise
        finally:
            body_in.cancel()
        if work not in done:
            work.cancel()  # its decodes (workers replaced) and its images in the model queue are dropped
            await asyncio.gather(work, return_exceptions=True)
        gone.cancel()
        if work in done:
            response = work.result()
        elif gone in done:
            response = error(499, "the client disconnected")  # nobody reads it: for the access log and metrics
        else:
            response = error(504, f"the request took longer than serve.request_timeout_s ({s.request_timeout_s:g} s)")
        m["latency"].observe(time.perf_counter() - t0)
        return response

    async def _disconnected(request: Request, body_read: asyncio.Event) -> None:
        await body_read.wait()  # the parser owns receive() until the body is in
        while (await request.receive())["type"] != "http.disconnect":
            pass

    async def _predict(request: Request, body_read: asyncio.Event) -> JSONResponse:
        try:
            form = await Parser(request.headers, request.stream(), max_files=s.max_files, max_fields=s.max_files).parse()
        except BodyRefused as exc:  # the rest of the body is never read: the connection closes after the answer
            return error(exc.status, str(exc), {"Connection": "close"})
        except Exception as exc:  # noqa: BLE001 - starlette's parser errors (too many files/fields, bad body)
            if "Too many files" in str(getattr(exc, "message", exc)):
                return error(413, f"more than {s.max_files} files in one request; at most {s.max_files}")
            return error(400, "unreadable multipart body: send multipart/form-data with `files` fields")
        body_read.set()
        try:
            return await _score_form(request, form)
        except Overloaded as exc:
            return error(503, str(exc), {"Retry-After": "1"})
        finally:
            await form.close()

    async def _score_form(request: Request, form) -> JSONResponse:
        uploads = [v for k, v in form.multi_items() if k in ("files", "file") and hasattr(v, "read")]
        if not uploads:
            return error(422, "no files: send one or more multipart fields named `files`")
        key = request.scope.get("state", {}).get("key_name")
        results = []
        for up in uploads:
            await up.seek(0)
            kind = sniff(await up.read(16))
            results.append({"filename": up.filename, "detected_type": kind.lower() if kind else None})

        async def read(i: int) -> bytes:
            await uploads[i].seek(0)
            return await uploads[i].read()

        def kept(i: int, out) -> bool:
            """A decode process's answer for file i: True for a result; a refusal is that file's status."""
            if isinstance(out, ImageRefused):
                status, reason = STATUS[out.kind], out.kind
            elif isinstance(out, (DecodeTimeout, DecodeCrashed)):
                status, reason = (503, "timeout") if isinstance(out, DecodeTimeout) else (500, "crash")
            elif isinstance(out, BaseException):
                raise out
            else:
                return True
            results[i].update(status=status, error=str(out))
            m["refusals"].labels(reason).inc()
            return False

        # each file's bytes are read from its spool only once a decode process is free for it
        probed = await asyncio.gather(*(pool.probe(lambda i=i: read(i)) for i in range(len(uploads))),
                                      return_exceptions=True)
        pixels = sum(out for i, out in enumerate(probed) if kept(i, out))
        if pixels > s.max_request_pixels:
            m["refusals"].labels("request_pixels").inc()
            return error(413, f"the files of this request hold {pixels} pixels together, over "
                              f"serve.max_request_pixels ({s.max_request_pixels}): send fewer or smaller images")
        todo = [i for i, r in enumerate(results) if "status" not in r]

        decoded = await asyncio.gather(*(pool.decode(lambda i=i: read(i)) for i in todo), return_exceptions=True)
        images, rows = [], []  # rows: (file index, its Decoded); images: every face crop of every file
        for i, out in zip(todo, decoded):
            if kept(i, out):
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
            if log.logger is not None:
                log.write(await read(i), results[i], key)
        for r in results:
            m["images"].labels(str(r["status"])).inc()
        status = 200 if rows else max(r["status"] for r in results)
        body = {"model_version": detector.version, "results": results}
        if len(uploads) == 1 and not rows:
            body["error"] = results[0]["error"]
        return JSONResponse(status_code=status, content=body)

    guard = Guard(app, s, keys, OPEN_PATHS, {"/predict"},
                  on_status=lambda route, status: m["requests"].labels(route, str(status)).inc())
    return guard
