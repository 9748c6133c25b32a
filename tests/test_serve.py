"""The service on a network: keys, Origin, strict formats, pixel budget, decode deadline, dynamic batching,
413 under load, /metrics, offline /docs, a rotating request log. A real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import io
import json
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from conftest import LIMITS, REPO, free_port


def _serve_params(**overrides):
    from deepfake_detector.core.params import load_params

    s = load_params(REPO / "params.yaml").serve
    return s.model_copy(update={"request_log": "", **overrides})


class Server:
    """create_app(...) under uvicorn in a thread; the URL, and the app's Detector for checks."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "Server":
        self.thread.start()
        for _ in range(400):
            try:
                httpx.get(f"{self.url}/health", timeout=0.5)
                return self
            except httpx.HTTPError:
                self.thread.join(0.05)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(20)


def _detector(model_dir: Path, **kw):
    from deepfake_detector.serving.detector import Detector

    return Detector.load(model_dir, band=0.1, batch_size=kw.pop("batch_size", 8), limits=kw.pop("limits", LIMITS), **kw)


def _app(prepared, keys=None, **serve):
    from deepfake_detector.serving.serve import create_app

    return create_app(_detector(prepared / "model"), _serve_params(**serve), keys=keys)


def _jpeg(seed: int, size: int = 48) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG")
    return buf.getvalue()


def _flat_png(width: int, height: int) -> bytes:
    """A flat RGB PNG of any size in a few KB, written by hand (Pillow would allocate the pixels)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    comp = zlib.compressobj(9)
    row = b"\x00" + b"\x80" * (3 * width)
    raw = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    head = width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x02\x00\x00\x00"
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bombs() -> list[bytes]:
    return [_flat_png(8000, 5000)] * 16  # 16 flat 40-megapixel PNGs


def test_keys_origin_and_strict_formats(prepared, tmp_path):
    from deepfake_detector.serving.keys import add_key, load_keys

    keys_file = tmp_path / "keys.txt"
    key = add_key(keys_file, "ci")
    assert key not in keys_file.read_text() and "ci sha256:" in keys_file.read_text()
    log = tmp_path / "requests.jsonl"
    from deepfake_detector.serving.serve import create_app

    app = create_app(_detector(prepared / "model"), _serve_params(allowed_origins=("https://ok.example",)),
                     request_log=str(log), keys=load_keys(keys_file))
    with Server(app) as srv:
        files = {"file": ("a.jpg", _jpeg(1), "image/jpeg")}
        assert httpx.post(f"{srv.url}/predict", files=files).status_code == 401
        assert httpx.get(f"{srv.url}/model").status_code == 401
        assert httpx.post(f"{srv.url}/predict", files=files, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{srv.url}/health").status_code == 200  # open
        ok = httpx.post(f"{srv.url}/predict", files=files, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200 and ok.json()["results"][0]["status"] == 200
        assert httpx.get(f"{srv.url}/model", headers={"X-API-Key": key}).status_code == 200
        entry = json.loads(log.read_text().splitlines()[-1])
        assert entry["key"] == "ci" and key not in log.read_text()

        # a foreign Origin: 403 before the body is read (a declared 1 GB body is not 413, it is never looked at)
        foreign = httpx.post(f"{srv.url}/predict", files=files, headers={"Origin": "https://evil.example",
                                                                          "X-API-Key": key})
        assert foreign.status_code == 403
        allowed = httpx.post(f"{srv.url}/predict", files=files, headers={"Origin": "https://ok.example",
                                                                          "X-API-Key": key})
        assert allowed.status_code == 200

        eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
        r = httpx.post(f"{srv.url}/predict", files={"file": ("x.eps", eps)}, headers={"X-API-Key": key})
        assert r.status_code == 415 and "EPS images are not accepted" in r.json()["error"]
        gif = io.BytesIO()
        Image.new("RGB", (40, 40)).save(gif, "GIF")
        r = httpx.post(f"{srv.url}/predict", files={"file": ("x.gif", gif.getvalue())}, headers={"X-API-Key": key})
        assert r.status_code == 415 and "GIF" in r.json()["error"]
        corrupt = httpx.post(f"{srv.url}/predict", files={"file": ("x.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)},
                             headers={"X-API-Key": key})
        assert corrupt.status_code == 400 and " at 0x" not in corrupt.text and "BytesIO" not in corrupt.text


def test_a_request_over_the_pixel_budget_is_refused_before_any_decode_and_health_answers(prepared, bombs):
    with Server(_app(prepared)) as srv:
        t0 = time.perf_counter()
        r, _ = health_while(srv.url, lambda: httpx.post(f"{srv.url}/predict", timeout=30, files=[
            ("files", (f"{i}.png", b)) for i, b in enumerate(bombs)]))  # /health answers 200 meanwhile
        took = time.perf_counter() - t0
        assert r.status_code == 413 and "max_request_pixels" in r.json()["error"], r.text
        assert took < 1.0, took  # refused on the headers: 640 megapixels never decoded
        metrics = httpx.get(f"{srv.url}/metrics").text
        assert 'dfd_decode_refusals_total{reason="request_pixels"} 1.0' in metrics


def health_while(url: str, post) -> tuple[httpx.Response, list[float]]:
    """post() in a thread, GET /health (asserting 200) until it is answered: (its response, each /health's s)."""
    with ThreadPoolExecutor(1) as pool:
        pending, waits = pool.submit(post), []
        while not pending.done():
            h0 = time.perf_counter()
            assert httpx.get(f"{url}/health", timeout=5).status_code == 200
            waits.append(time.perf_counter() - h0)
        return pending.result(), waits


def test_a_decode_past_its_deadline_gets_503_and_health_keeps_answering(prepared):
    slow = _flat_png(8000, 5000)  # 40 MP, within the caps: its decode takes ~0.3-0.6 s on these machines
    with Server(_app(prepared, decode_timeout_s=0.15, max_request_pixels=10**9)) as srv:
        httpx.post(f"{srv.url}/predict", files={"file": ("a.jpg", _jpeg(0))}, timeout=60)  # decoders started
        r, times = health_while(srv.url, lambda: httpx.post(f"{srv.url}/predict", timeout=60, files=[
            ("files", ("slow.png", slow)), ("files", ("ok.jpg", _jpeg(3)))]))
        slow_row, ok_row = r.json()["results"]
        assert r.status_code == 200 and slow_row["status"] == 503 and "decode_timeout_s" in slow_row["error"]
        assert ok_row["status"] == 200  # the other file of the request is scored
        # /health is never queued behind the decode: typically < 0.1 s, and under a loaded CI machine never near
        # the ~0.5 s a 40 MP decode holds a worker (a max of 0.1 s flaked at 0.103 s under a parallel test run)
        assert times and np.median(times) < 0.1 and max(times) < 0.4, times
        again = httpx.post(f"{srv.url}/predict", files={"file": ("b.jpg", _jpeg(4))}, timeout=60)
        assert again.status_code == 200  # the killed decoder was replaced


def test_dynamic_batches_answer_as_one_at_a_time_and_oversized_bodies_get_413_under_load(prepared):
    images = [_jpeg(i) for i in range(24)]
    with Server(_app(prepared, batch_size=16, max_wait_ms=50, max_upload_mb=0.05)) as srv:
        alone = [httpx.post(f"{srv.url}/predict", files={"file": (f"{i}.jpg", b)}, timeout=60).json()["results"][0]
                 for i, b in enumerate(images[:6])]

        def one(i: int) -> dict:
            return httpx.post(f"{srv.url}/predict", files={"file": (f"{i}.jpg", images[i])}, timeout=60).json()

        def big(_: int) -> int:  # 0.2 MB of valid multipart: over the 0.05 MB limit, sent while others are scored
            return httpx.post(f"{srv.url}/predict", files={"file": ("big.jpg", b"\xff\xd8\xff" + b"0" * 200_000)},
                              timeout=60).status_code

        with ThreadPoolExecutor(12) as pool:
            scored = [pool.submit(one, i % 6) for i in range(24)]
            oversized = [pool.submit(big, i) for i in range(6)]
            results = [f.result() for f in scored]
            assert [f.result() for f in oversized] == [413] * 6
        for i, res in enumerate(results):
            (row,) = res["results"]
            assert row["fake_probability"] == pytest.approx(alone[i % 6]["fake_probability"], abs=2e-6)
            assert row["label"] == alone[i % 6]["label"]
        metrics = httpx.get(f"{srv.url}/metrics").text
    value = {line.split()[0]: float(line.split()[-1]) for line in metrics.splitlines() if line and line[0] != "#"}
    assert value["dfd_batch_size_sum"] == 30 and value["dfd_batch_size_count"] < 30  # fewer passes than images
    assert 'dfd_requests_total{endpoint="/predict",status="200"} 30.0' in metrics
    assert 'dfd_model_info{backend="torch",model_version=' in metrics
    assert "dfd_request_seconds_bucket" in metrics


def gated_model(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Detector.score_tensor waits until the test opens the gate: (entered, gate)."""
    from deepfake_detector.serving.detector import Detector

    entered, gate = threading.Event(), threading.Event()
    real = Detector.score_tensor

    def gated(self, images):
        entered.set()
        assert gate.wait(60), "the test never opened the gate"
        return real(self, images)

    monkeypatch.setattr(Detector, "score_tensor", gated)
    return entered, gate


def test_health_answers_while_a_batch_is_inside_the_model(prepared, monkeypatch):
    entered, gate = gated_model(monkeypatch)
    with Server(_app(prepared)) as srv, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, f"{srv.url}/predict", files={"file": ("a.jpg", _jpeg(5))}, timeout=30)
        assert entered.wait(20), "the request never reached the model"
        health = httpx.get(f"{srv.url}/health", timeout=5)  # the model runs in its own thread, not the event loop
        assert health.json()["status"] == "ok" and not pending.done()
        gate.set()
        assert pending.result().status_code == 200


def test_one_image_over_the_pixel_cap_is_refused_before_decoding(prepared):
    from deepfake_detector.core.params import DecodeLimits
    from deepfake_detector.serving.serve import create_app

    app = create_app(_detector(prepared / "model", limits=DecodeLimits(1_000_000, LIMITS.formats)), _serve_params())
    with Server(app) as srv:
        r = httpx.post(f"{srv.url}/predict", timeout=30, files=[("files", ("bomb.png", _flat_png(5000, 5000))),
                                                                  ("files", ("ok.jpg", _jpeg(1)))])
        bomb, ok = r.json()["results"]
        assert r.status_code == 200 and bomb["status"] == 413 and "pixel cap" in bomb["error"] and ok["status"] == 200


def test_the_onnx_backend_answers_as_torch(prepared, tmp_path):
    import shutil

    from deepfake_detector.serving.export import export_onnx
    from deepfake_detector.serving.serve import create_app

    model = tmp_path / "model"
    shutil.copytree(prepared / "model", model)
    export_onnx(model, model / "detector.onnx")
    files = [("files", (f"{i}.jpg", _jpeg(i))) for i in range(3)]
    answers = {}
    for runtime in ("torch", "onnx"):
        app = create_app(_detector(model, runtime=runtime), _serve_params(backend=runtime))
        with Server(app) as srv:
            answers[runtime] = [r["fake_probability"] for r in
                                httpx.post(f"{srv.url}/predict", files=files, timeout=60).json()["results"]]
    assert answers["onnx"] == pytest.approx(answers["torch"], abs=1e-3)


def test_docs_are_served_from_the_installed_package(prepared):
    import re

    with Server(_app(prepared)) as srv:
        page = httpx.get(f"{srv.url}/docs").text
        assert not re.search(r"(src|href)=[\"']https?://", page), page
        for asset in re.findall(r"[\"'](/static/docs/[^\"']+)[\"']", page):
            r = httpx.get(f"{srv.url}{asset}")
            assert r.status_code == 200 and len(r.content) > 500, asset
        assert "/openapi.json" in page and httpx.get(f"{srv.url}/openapi.json").json()["paths"]["/predict"]


def test_the_request_log_rotates_and_the_monitor_reads_across_rotation(prepared, tmp_path):
    from deepfake_detector.serving.serve import create_app, request_log_files

    log = tmp_path / "logs/requests.jsonl"
    app = create_app(_detector(prepared / "model"), _serve_params(request_log_max_mb=0.0005, request_log_keep=2),
                     request_log=str(log))
    with Server(app) as srv:
        for i in range(12):
            assert httpx.post(f"{srv.url}/predict", files={"file": (f"{i}.jpg", _jpeg(i))}, timeout=60).status_code == 200
    files = request_log_files(log)
    assert [f.name for f in files] == ["requests.jsonl.2", "requests.jsonl.1", "requests.jsonl"]
    assert all(f.stat().st_size <= 600 for f in files)  # bounded: 0.5 KB each, 2 kept
    times = [json.loads(line)["time"] for f in files for line in f.read_text().splitlines()]
    assert times == sorted(times) and 2 < len(times) < 12  # oldest first; the oldest entries are gone
