"""The detector as a product: predict, Grad-CAM, ONNX export, and a real HTTP server."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from conftest import free_port
from deepfake_detector.cli import app
from deepfake_detector.model.checkpoint import load_detector
from deepfake_detector.serving.predict import grad_cam, predict


def test_predict_scores_good_files_and_reports_bad_ones(prepared, demo_dir, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(demo_dir / "real", folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    result = CliRunner().invoke(app, ["predict", str(folder), "--model", str(prepared / "model"), "--format", "json",
                                      "--no-progress"])
    assert result.exit_code == 1  # some failed
    rows = json.loads(result.stdout)
    errors = [r for r in rows if "error" in r]
    assert len(rows) == 41 and len(errors) == 1 and errors[0]["path"].endswith("broken.jpg")
    ok = [r for r in rows if "error" not in r]
    # each answer is the model's own score of that file, labelled by the stored threshold
    from deepfake_detector.data.images import load_rgb, to_tensor
    from deepfake_detector.serving.scoring import load_scorer

    scorer = load_scorer(prepared / "model")
    by_path = {Path(r["path"]).name: r for r in ok}
    names = sorted(by_path)
    x = torch.stack([to_tensor(load_rgb(folder / n), scorer.image_size) for n in names])
    expected = scorer.predict(x)
    assert np.allclose([by_path[n]["fake_probability"] for n in names], expected, atol=1e-4)
    assert all((by_path[n]["label"] == "fake") == (p >= scorer.threshold) for n, p in zip(names, expected)
               if abs(p - scorer.threshold) > 1e-4)
    assert all(isinstance(r["uncertain"], bool) for r in ok)


def test_grad_cam_overlays_have_the_image_shape_and_differ(prepared, demo_dir, tmp_path):
    model, info = load_detector(prepared / "model")
    files = sorted((demo_dir / "fake").glob("*.jpg"))[:2]
    x = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB").resize((32, 32)))).permute(2, 0, 1)
                     for f in files]).float() / 255
    cams = grad_cam(model, x)
    assert cams.shape == (2, 32, 32) and cams.min() >= 0 and cams.max() <= 1
    assert not torch.allclose(cams[0], cams[1])
    rows = predict([str(f) for f in files], prepared / "model", explain_dir=tmp_path / "cams", progress=False)
    for r in rows:
        assert Image.open(r["explanation"]).size == Image.open(r["path"]).size


def test_onnx_export_matches_torch_and_predict_can_use_it(prepared, demo_dir, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(prepared / "model", model_dir)
    result = CliRunner().invoke(app, ["export", str(model_dir), "--onnx", str(model_dir / "detector.onnx")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["max_abs_diff"] < 1e-3
    files = [str(f) for f in sorted((demo_dir / "real").glob("*.jpg"))[:4]]
    a = predict(files, model_dir, progress=False)
    b = predict(files, model_dir, runtime="onnx", progress=False)
    assert np.allclose([r["fake_probability"] for r in a], [r["fake_probability"] for r in b], atol=1e-3)


@pytest.fixture(scope="module")
def server(prepared):
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dfd"), "serve", "--model", str(prepared / "model"),
                             "--port", str(port), "--max-mb", "0.05"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # poll until it listens (startup imports torch), at most ~60 s
            try:
                if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                if proc.poll() is not None:
                    raise RuntimeError(proc.stderr.read().decode())
                socket.create_connection  # noqa: B018 - keep polling
                import time
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _jpeg(seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG")
    return buf.getvalue()


def test_http_api_answers_good_and_bad_uploads(server):
    assert httpx.get(f"{server}/health").json() == {"status": "ok"}
    card = httpx.get(f"{server}/model").json()
    assert card["image_size"] == 32 and "val_metrics" in card["card"]
    good = httpx.post(f"{server}/predict", files={"file": ("face.txt", _jpeg(1), "text/plain")})
    assert good.status_code == 200 and good.json()["detected_type"] == "jpeg"  # by content, not name
    assert 0 <= good.json()["fake_probability"] <= 1
    corrupt = httpx.post(f"{server}/predict", files={"file": ("x.jpg", _jpeg(2)[:200], "image/jpeg")})
    assert corrupt.status_code == 400 and "corrupt" in corrupt.json()["error"]
    text = httpx.post(f"{server}/predict", files={"file": ("x.jpg", b"just some text", "image/jpeg")})
    assert text.status_code == 415 and "not an image" in text.json()["error"]
    big = httpx.post(f"{server}/predict", files={"file": ("big.png", b"\x89PNG\r\n\x1a\n" + b"0" * 60_000)})
    assert big.status_code == 413 and "error" in big.json()


def test_http_api_handles_concurrent_requests(server):
    def call(i: int) -> float:
        r = httpx.post(f"{server}/predict", files={"file": (f"{i}.jpg", _jpeg(i % 3), "image/jpeg")}, timeout=60)
        assert r.status_code == 200
        return r.json()["fake_probability"]

    with ThreadPoolExecutor(8) as pool:
        probs = list(pool.map(call, range(16)))
    for i, p in enumerate(probs):  # same image -> same answer under concurrency
        assert p == pytest.approx(probs[i % 3], abs=1e-6)


def test_crop_faces_finds_a_face_in_a_larger_photo(prepared, demo_dir, tmp_path):
    face = Image.open(demo_dir / "real/demo__real_0000.jpg").convert("RGB").resize((192, 192), Image.Resampling.BICUBIC)
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(100, 140, (360, 520, 3), dtype=np.uint8)).filter(ImageFilter.GaussianBlur(3))
    photo.paste(face, (280, 120))
    path = tmp_path / "photo.jpg"
    photo.save(path, quality=92)
    (row,) = predict([str(path)], prepared / "model", crop_faces=True, progress=False)
    x0, y0, x1, y1 = row["crop_box"]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    assert 280 <= cx <= 472 and 120 <= cy <= 312, row["crop_box"]  # centred on the pasted face
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), (128, 128, 128)).save(blank)
    (row,) = predict([str(blank)], prepared / "model", crop_faces=True, progress=False)
    assert row["crop_box"] is None and 0 <= row["fake_probability"] <= 1  # no face: whole image scored
