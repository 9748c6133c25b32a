"""The detector as a product: predict, Grad-CAM, ONNX export, and a real HTTP server."""

from __future__ import annotations

import hashlib
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

from conftest import LIMITS, free_port
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
    from deepfake_detector.core.images import decode_image, to_tensor
    from deepfake_detector.model.scoring import load_scorer

    scorer = load_scorer(prepared / "model")
    by_path = {Path(r["path"]).name: r for r in ok}
    names = sorted(by_path)
    x = torch.stack([to_tensor(decode_image(folder / n, LIMITS), scorer.image_size) for n in names])
    expected, novelty = scorer.score(x)
    assert np.allclose([by_path[n]["fake_probability"] for n in names], expected, atol=1e-4)
    assert np.allclose([by_path[n]["novelty"] for n in names], novelty, atol=1e-3)
    assert all(by_path[n]["unfamiliar"] == bool(v > scorer.novelty_threshold) for n, v in zip(names, novelty)
               if abs(v - scorer.novelty_threshold) > 1e-3)
    assert all((by_path[n]["label"] == "fake") == (p >= scorer.threshold) for n, p in zip(names, expected)
               if abs(p - scorer.threshold) > 1e-4)
    assert all(isinstance(r["uncertain"], bool) for r in ok)


def test_predict_csv_says_how_unfamiliar_each_image_is(prepared, demo_dir, tmp_path):
    """`dfd predict --format csv` carries novelty and unfamiliar for each image: unfamiliar exactly when the novelty
    is above the threshold stored with the model. (That the score separates what a model knows from what it does
    not is tested on embeddings in test_novelty.py and measured on real data in docs/results.md: a 1-epoch 32 px
    demo model's features are too weak to show it here.)"""
    import csv

    from deepfake_detector.model.scoring import load_scorer

    odd = tmp_path / "odd"
    odd.mkdir()
    for f in sorted((demo_dir / "real").glob("*.jpg"))[:4]:
        (odd / f.name).write_bytes(f.read_bytes())
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(odd / f"noise_{i}.png")
    result = CliRunner().invoke(app, ["predict", str(odd), "--model", str(prepared / "model"), "--format", "csv",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 8 and {"novelty", "unfamiliar"} <= set(rows[0])
    threshold = load_scorer(prepared / "model").novelty_threshold
    assert all(float(r["novelty"]) >= 0 and r["unfamiliar"] in ("True", "False") for r in rows)
    assert all(r["unfamiliar"] == str(float(r["novelty"]) > threshold) for r in rows
               if abs(float(r["novelty"]) - threshold) > 1e-3)


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
def request_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("served") / "requests.jsonl"


@pytest.fixture(scope="module")
def server(prepared, request_log):
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dfd"), "serve", "--model", str(prepared / "model"),
                             "--port", str(port), "--max-mb", "0.05", "--request-log", str(request_log)],
                            stdout=subprocess.DEVNULL,
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


def test_http_api_answers_good_and_bad_uploads(server, prepared):
    from deepfake_detector.serving.detector import content_version

    version = content_version(prepared / "model")
    assert httpx.get(f"{server}/health").json() == {"status": "ok", "model_version": version}
    card = httpx.get(f"{server}/model").json()
    assert card["image_size"] == 32 and "roc_auc" in card["val_metrics"] and card["model_version"] == version
    assert str(prepared) not in json.dumps(card) and "remote" not in json.dumps(card)  # no paths, no remotes
    good = httpx.post(f"{server}/predict", files={"file": ("face.txt", _jpeg(1), "text/plain")})
    (row,) = good.json()["results"]
    assert good.status_code == 200 and row["detected_type"] == "jpeg"  # by content, not name
    assert row["model_version"] == version and row["label"] == ("fake" if row["fake_probability"] >= row["threshold"]
                                                                else "real")
    corrupt = httpx.post(f"{server}/predict", files={"file": ("x.jpg", _jpeg(2)[:200], "image/jpeg")})
    assert corrupt.status_code == 400 and "corrupt" in corrupt.json()["error"]
    text = httpx.post(f"{server}/predict", files={"file": ("x.jpg", b"just some text", "image/jpeg")})
    assert text.status_code == 415 and "not an image" in text.json()["error"]
    big = httpx.post(f"{server}/predict", files={"file": ("big.png", b"\x89PNG\r\n\x1a\n" + b"0" * 60_000)})
    assert big.status_code == 413 and "larger than" in big.json()["error"]


def test_several_files_in_one_request_each_get_their_answer(server, prepared):
    files = [("files", (f"{i}.jpg", _jpeg(i), "image/jpeg")) for i in range(3)]
    files.insert(1, ("files", ("bad.jpg", b"not an image at all", "image/jpeg")))
    r = httpx.post(f"{server}/predict", files=files, timeout=60)
    results = r.json()["results"]
    assert r.status_code == 200 and [x["filename"] for x in results] == ["0.jpg", "bad.jpg", "1.jpg", "2.jpg"]
    assert [x["status"] for x in results] == [200, 415, 200, 200]
    singles = [httpx.post(f"{server}/predict", files={"file": (f"{i}.jpg", _jpeg(i))}).json()["results"][0]
               for i in range(3)]  # batched answers equal one-at-a-time answers
    assert [x["fake_probability"] for x in results if x["status"] == 200] == pytest.approx(
        [x["fake_probability"] for x in singles], abs=1e-5)
    too_many = httpx.post(f"{server}/predict", files=[("files", (f"{i}.jpg", b"x")) for i in range(20)])
    assert too_many.status_code == 413 and "at most" in too_many.json()["error"]


def _raw_post(url: str, headers: list[str], chunks) -> tuple[bytes, int]:
    """POST over a plain socket; returns (response head, body bytes the server took before answering)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(("POST /predict HTTP/1.1\r\nHost: x\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode())
    sent = 0
    try:
        for chunk in chunks:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:  # the server answered and closed: it stopped reading
        pass
    head = sock.recv(4096)
    sock.close()
    return head, sent


def test_a_huge_body_is_refused_before_it_is_read(server):
    """Limit 0.05 MB: a declared 1 GB body is refused on its header; an undeclared (chunked) one is cut off
    once the limit is passed, long before 1 GB is sent."""
    head, sent = _raw_post(server, ["Content-Length: 1000000000", "Content-Type: multipart/form-data; boundary=b"],
                           [b"--b\r\n"])
    assert head.startswith(b"HTTP/1.1 413")

    def chunked(n=16_000):  # 16,000 x 64 KiB = 1 GB if the server kept reading
        block = b"0" * 65536
        for _ in range(n):
            yield f"{len(block):x}\r\n".encode() + block + b"\r\n"

    head, sent = _raw_post(server, ["Transfer-Encoding: chunked", "Content-Type: multipart/form-data; boundary=b"],
                           chunked())
    assert head.startswith(b"HTTP/1.1 413") and sent < 50 * 2**20


def test_the_request_log_records_each_scored_image_without_its_bytes(server, request_log):
    log = request_log
    before = len(log.read_text().splitlines()) if log.is_file() else 0
    data = _jpeg(7)
    httpx.post(f"{server}/predict", files={"file": ("seven.jpg", data)})
    entries = [json.loads(x) for x in log.read_text().splitlines()[before:]]
    assert [e["sha256"] for e in entries] == [hashlib.sha256(data).hexdigest()]
    assert entries[0]["bytes"] == len(data) and entries[0]["label"] in ("fake", "real") and "image" not in entries[0]


def test_a_stderr_nobody_reads_never_stops_the_server(server):
    """The fixture's stderr is a pipe nobody reads (64 KiB): 1,500 access-log lines (~250 KB) later it answers."""
    with httpx.Client() as client:
        for _ in range(1500):
            assert client.get(f"{server}/health", timeout=10).status_code == 200


def test_http_api_handles_concurrent_requests(server):
    def call(i: int) -> float:
        r = httpx.post(f"{server}/predict", files={"file": (f"{i}.jpg", _jpeg(i % 3), "image/jpeg")}, timeout=60)
        assert r.status_code == 200
        return r.json()["results"][0]["fake_probability"]

    with ThreadPoolExecutor(8) as pool:
        probs = list(pool.map(call, range(16)))
    for i, p in enumerate(probs):  # same image -> same answer under concurrency
        assert p == pytest.approx(probs[i % 3], abs=1e-6)


def test_a_whole_picture_model_scores_the_whole_picture(prepared, demo_dir):
    """The demo model (faces.policy: whole: its drawn faces are no detector's) keeps scoring pictures whole; the
    answer says so (tests/test_faces.py covers models trained on face crops)."""
    from deepfake_detector import Detector

    det = Detector.load(prepared / "model", band=0.1, batch_size=1)
    (pred,) = det.predict([demo_dir / "real/demo__real_0000.jpg"])
    assert det.crop.policy == "whole" and pred.scored_whole and pred.n_faces is None and len(pred.faces) == 1


def test_sigterm_drains_a_request_in_flight_before_the_server_exits(prepared):
    """A request whose body is half sent when SIGTERM arrives is still answered (200), then the server exits."""
    import signal

    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dfd"), "serve", "--model", str(prepared / "model"),
                             "--port", str(port), "--request-log", ""], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/ready", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stderr.read().decode()  # still starting: poll again
        image = _jpeg(3)
        body = (b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jpg\"\r\n\r\n" + image +
                b"\r\n--b--\r\n")
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:100])
        while "dfd_inflight_requests 1.0" not in httpx.get(f"{url}/metrics").text:
            assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        sock.sendall(body[100:])
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536) or b"\r\n\r\n"
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=20)
