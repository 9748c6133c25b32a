"""Serving under load: /health answers while a prediction is in the model; pixel bombs are refused."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
import uvicorn
from PIL import Image

from conftest import free_port



class _GatedModel(torch.nn.Module):
    """Wraps the real detector; each forward waits until the test opens the gate."""

    def __init__(self, inner: torch.nn.Module, entered: threading.Event, gate: threading.Event) -> None:
        super().__init__()
        self.inner, self.entered, self.gate = inner, entered, gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.entered.set()
        assert self.gate.wait(30), "test never opened the gate"
        return self.inner(x)


@pytest.fixture
def gated_server(prepared, monkeypatch):
    import deepfake_detector.model.checkpoint as checkpoint
    from deepfake_detector.serving.detector import Detector
    from deepfake_detector.serving.serve import create_app

    entered, gate = threading.Event(), threading.Event()
    real_load = checkpoint.load_detector

    def load(model_dir, device="cpu"):
        model, info = real_load(model_dir, device)
        return _GatedModel(model, entered, gate), info

    monkeypatch.setattr(checkpoint, "load_detector", load)
    port = free_port()
    det = Detector.load(prepared / "model", band=0.1, batch_size=8)
    app = create_app(det, max_bytes=2**20, max_files=4, max_pixels=1_000_000, decode_workers=2)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(f"{url}/health", timeout=0.2)
            break
        except httpx.HTTPError:
            thread.join(0.05)
    try:
        yield url, entered, gate
    finally:
        gate.set()
        server.should_exit = True
        thread.join(10)


def _png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()


def test_health_answers_while_a_prediction_is_inside_the_model(gated_server):
    url, entered, gate = gated_server
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, f"{url}/predict", files={"file": ("a.png", _png((40, 40)))}, timeout=30)
        assert entered.wait(10), "prediction never reached the model"
        health = httpx.get(f"{url}/health", timeout=5)  # an inline model call would block the event loop here
        assert health.json()["status"] == "ok" and not pending.done()
        gate.set()
        assert pending.result().status_code == 200


def test_a_pixel_bomb_is_refused_before_decoding(gated_server):
    url, entered, gate = gated_server
    gate.set()
    bomb = _png((5000, 5000), mode="1")  # 25 Mpx in a few KB
    assert len(bomb) < 100_000
    r = httpx.post(f"{url}/predict", files={"file": ("bomb.png", bomb)}, timeout=30)
    assert r.status_code == 413 and "pixel cap" in r.json()["results"][0]["error"]
    assert not entered.is_set()  # never reached the model
