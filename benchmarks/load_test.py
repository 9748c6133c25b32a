"""Bounded load test of `dfd serve` on the loopback address: images/s, latency p50/p99 and errors at 1, 8 and 32
clients, for each backend (torch, onnx) with dynamic batching on and off.

    python benchmarks/load_test.py artifacts/model --requests 96 --params params.yaml
    python benchmarks/load_test.py --untrained 256 --images FACES_DIR           # an untrained Lite0 with the face policy
    python benchmarks/load_test.py --untrained 256 --images FACES_DIR --soak 60 # good traffic under attack

For each setting, starts `dfd serve` on 127.0.0.1 (the given params with serve.backend / serve.batching set, its own
request log in a temp folder), warms it up, then for each concurrency sends the same number of POST /predict
requests (one distinct --image-size JPEG each, made here) from that many client threads in this process (they
share the machine's cores with the server, as a co-located client would). Counts non-200 answers, 5xx and
transport errors, checks that the request log holds one line per scored image (nothing lost), and keeps the
server's /metrics text after the run. Prints a table, writes benchmarks/load_test.json (+ load_test_metrics.txt).
--untrained SIZE serves an ImageNet Lite0 with an untrained head and the params' face policy (the cost per image of
a trained one); --images DIR sends the pictures of DIR (faces are found and cropped as in production) instead of
random JPEGs (no face: whole-picture scoring only with a whole-picture model).

--soak SECONDS (torch, batching on): 8 good clients send --images for that long while 8 clients send most of a body
and stall (cut at serve.body_timeout_s, then again), one client sends zTXt-bomb PNGs (16 files of 63 chunks that
inflate to 1 MB each), and one sends bodies over serve.max_upload_mb (declared, and chunked), each attacker and the
/health prober in its own process. Reports /health p50/p99/max (probed every 20 ms), the peak RSS of the server and
its decoders together, and good requests lost (not 200).
Writes benchmarks/load_test_soak.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image


def _jpeg(seed: int, size: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _untrained(size: int, params: Path, dest: Path) -> str:
    """An ImageNet Lite0 with an untrained head, saved with the params' face policy: a trained model's cost."""
    from deepfake_detector.core.params import load_params
    from deepfake_detector.model.checkpoint import save_detector
    from deepfake_detector.model.factory import build_detector

    dest.mkdir(parents=True, exist_ok=True)
    model = build_detector({"backbone": "efficientnet_lite0", "se_reduction": 16, "extra_convs": 2, "dropout": 0.3},
                           pretrained="imagenet").eval()
    save_detector(dest / "detector.pt", model, size, 0.5, {"face_crop": load_params(params).faces.crop_policy().to_dict()})
    return str(dest)


IMAGES: list[bytes] = []  # --images: the pictures sent, else random JPEGs


def _picture(seed: int, image_size: int) -> bytes:
    return IMAGES[seed % len(IMAGES)] if IMAGES else _jpeg(seed, image_size)


def _start(model: str, params: Path, backend: str, batching: bool, tmp: Path, **serve) -> tuple:
    import yaml

    settings = yaml.safe_load(params.read_text())
    settings["serve"].update(backend=backend, batching=batching, **serve)
    (tmp / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    log, port = tmp / "requests.jsonl", _port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("dfd")), "serve", "--model", model, "--port",
                             str(port), "--request-log", str(log), "--params", str(tmp / "params.yaml")],
                            stdout=subprocess.DEVNULL, stderr=(tmp / "server.log").open("wb"))
    return proc, f"http://127.0.0.1:{port}", log, port


def run_setting(model: str, params: Path, backend: str, batching: bool, requests: int, files_per_request: int,
                image_size: int) -> tuple[list[dict], dict, str]:
    tmp = Path(tempfile.mkdtemp())
    if backend == "onnx" and not (Path(model) / "detector.onnx").is_file():
        from deepfake_detector.serving.export import export_onnx

        export_onnx(model, Path(model) / "detector.onnx")
    proc, url, log, _ = _start(model, params, backend, batching, tmp)
    try:
        deadline = time.time() + 180
        while True:
            try:
                health = httpx.get(f"{url}/health", timeout=1)
                if health.status_code == 200:
                    version = health.json()["model_version"]
                    break
            except httpx.HTTPError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError((tmp / "server.log").read_text()[-2000:])
                time.sleep(0.2)
        seed = [0]

        def call(_: int) -> tuple[float, int]:
            seed[0] += 1
            files = [("files", (f"{seed[0]}_{k}.jpg", _picture(seed[0] * 100 + k, image_size)))
                     for k in range(files_per_request)]
            t0 = time.perf_counter()
            try:
                status = httpx.post(f"{url}/predict", files=files, timeout=120).status_code
            except httpx.HTTPError:
                status = -1
            return time.perf_counter() - t0, status

        for _ in range(4):
            call(0)  # warm-up (first forward passes allocate, decoders start)
        rows, scored = [], 4 * files_per_request
        for clients in (1, 8, 32):
            t0 = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                results = list(pool.map(call, range(requests)))
            wall = time.perf_counter() - t0
            lat = np.array([r[0] for r in results]) * 1000
            statuses = [r[1] for r in results]
            ok = sum(s == 200 for s in statuses)
            scored += ok * files_per_request
            rows.append({"backend": backend, "batching": batching, "clients": clients, "requests": len(results),
                         "ok": ok, "errors": len(results) - ok, "5xx": sum(s >= 500 for s in statuses),
                         "transport_errors": statuses.count(-1), "p50_ms": round(float(np.percentile(lat, 50)), 1),
                         "p99_ms": round(float(np.percentile(lat, 99)), 1),
                         "images_per_s": round(ok * files_per_request / wall, 1)})
        metrics = httpx.get(f"{url}/metrics").text
        logged = len(log.read_text().splitlines()) if log.is_file() else 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return rows, {"model_version": version, "request_log_lines": logged, "scored_images": scored}, metrics


def _rss_tree(pid: int) -> int:
    """Resident bytes of a process and its children (the decode workers and forkserver)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def _ztxt_bomb() -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for i in range(63):
        info.add_text(f"k{i}", "A" * 1_000_000, zip=True)
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


PART = b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n\r\n\xff\xd8\xff'


def _slow_client(port: int, stop, out) -> None:  # its own process: sends most of a body, then nothing
    head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 9000000\r\n\r\n" + PART) + b"0" * 8_000_000
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
                sock.sendall(head)
                out.put(("slow", sock.recv(4096)[9:12].decode()))
        except OSError:
            out.put(("slow", "error"))


def _bomb_client(port: int, stop, out) -> None:  # 16 zTXt-bomb PNGs per request
    files = [("files", (f"{k}.png", _ztxt_bomb())) for k in range(16)]
    while not stop.is_set():
        try:
            out.put(("bomb", str(httpx.post(f"http://127.0.0.1:{port}/predict", files=files, timeout=120).status_code)))
        except httpx.HTTPError:
            out.put(("bomb", "error"))


def _big_client(port: int, stop, out, per_s: float) -> None:  # bodies over the limit: declared (12 MB), chunked
    form = b"Content-Type: multipart/form-data; boundary=b\r\n"
    declared = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 12000000\r\n" + form + b"\r\n" + PART
    chunk = b"10000\r\n" + b"0" * 65536 + b"\r\n"
    chunked = (b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + form + b"\r\n" +
               f"{len(PART):x}\r\n".encode() + PART + b"\r\n")
    n = 0
    while not stop.is_set():
        n += 1
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
                sock.sendall(declared if n % 2 else chunked)
                try:
                    for _ in range(0 if n % 2 else 400):  # 26 MB if the server kept reading
                        sock.sendall(chunk)
                except OSError:
                    pass
                out.put(("big", sock.recv(4096)[9:12].decode()))
        except OSError:
            out.put(("big", "error"))
        if per_s:
            time.sleep(1 / per_s)


def _prober(port: int, pid: int, stop, out) -> None:  # /health every 20 ms, and the server's memory
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            ok = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
        except httpx.HTTPError:
            ok = False
        out.put(("health", (ok, time.perf_counter() - t0, _rss_tree(pid))))
        time.sleep(0.02)


def soak(model: str, params: Path, seconds: float, image_size: int, oversized_per_s: float = 0) -> dict:
    """Good traffic (8 threads here) with slow-body clients, zTXt bombs, oversized bodies and a /health prober,
    each in its own process so that no client waits on another's GIL."""
    import multiprocessing
    import threading

    ctx = multiprocessing.get_context("fork")
    tmp = Path(tempfile.mkdtemp())
    proc, url, _, port = _start(model, params, "torch", True, tmp)
    stop, out, good, done = ctx.Event(), ctx.Queue(), [], threading.Event()
    try:
        deadline = time.time() + 180
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError((tmp / "server.log").read_text()[-2000:])
            time.sleep(0.2)

        def good_client(i: int) -> None:
            n = 0
            while not done.is_set():
                n += 1
                t0 = time.perf_counter()
                try:
                    status = httpx.post(f"{url}/predict", timeout=120, files={
                        "files": (f"{i}_{n}.jpg", _picture(i * 10_000 + n, image_size))}).status_code
                except httpx.HTTPError:
                    status = -1
                good.append((status, time.perf_counter() - t0))

        procs = ([ctx.Process(target=_slow_client, args=(port, stop, out)) for _ in range(8)]
                 + [ctx.Process(target=_bomb_client, args=(port, stop, out)),
                    ctx.Process(target=_big_client, args=(port, stop, out, oversized_per_s))]
                 + [ctx.Process(target=_prober, args=(port, proc.pid, stop, out))])
        threads = [threading.Thread(target=good_client, args=(i,)) for i in range(8)]
        t0 = time.perf_counter()
        for w in procs + threads:
            w.start()
        time.sleep(seconds)
        done.set()
        for t in threads:
            t.join(180)
        wall = time.perf_counter() - t0
        stop.set()
        seen: dict[str, list] = {}
        while any(w.is_alive() for w in procs) or not out.empty():
            try:
                kind, value = out.get(timeout=1)
                seen.setdefault(kind, []).append(value)
            except Exception:  # noqa: BLE001 - queue.Empty while the attackers finish their last request
                pass
        for w in procs:
            w.join(5)
    finally:
        t1 = time.perf_counter()
        proc.terminate()  # SIGTERM: drains what is in flight (serve.drain_s)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutdown = {"shutdown_s": round(time.perf_counter() - t1, 1), "exit_code": proc.wait()}
    health = seen.get("health", [])
    lat = np.array([h[1] for h in health]) * 1000
    statuses = [g[0] for g in good]

    def counts(kind: str) -> dict:
        return {k: seen.get(kind, []).count(k) for k in sorted(set(seen.get(kind, [])))}

    return {"seconds": round(wall, 1), "good_requests": len(good), "good_lost": sum(s != 200 for s in statuses),
            "good_statuses": {str(k): statuses.count(k) for k in sorted(set(statuses))},
            "good_images_per_s": round(statuses.count(200) / wall, 1),
            "good_p50_ms": round(float(np.percentile([g[1] for g in good], 50)) * 1000, 1),
            "good_p99_ms": round(float(np.percentile([g[1] for g in good], 99)) * 1000, 1),
            "health_probes": len(health), "health_failed": sum(not h[0] for h in health),
            "health_p50_ms": round(float(np.percentile(lat, 50)), 1),
            "health_p99_ms": round(float(np.percentile(lat, 99)), 1), "health_max_ms": round(float(lat.max()), 1),
            "peak_rss_mb": round(max(h[2] for h in health) / 2**20, 1),
            "slow_body_answers": counts("slow"), "bomb_answers": counts("bomb"), "oversized_answers": counts("big"),
            **shutdown}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--requests", type=int, default=96, help="requests per concurrency level")
    ap.add_argument("--files-per-request", type=int, default=1)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--settings", nargs="+", default=["torch:on", "torch:off", "onnx:on", "onnx:off"])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/load_test.json"))
    ap.add_argument("--untrained", type=int, default=None, metavar="SIZE", help="serve an untrained Lite0 at SIZE px")
    ap.add_argument("--images", type=Path, default=None, help="send the pictures of this folder (faces)")
    ap.add_argument("--soak", type=float, default=None, metavar="SECONDS", help="good traffic under attack instead")
    ap.add_argument("--oversized-per-s", type=float, default=0, help="--soak: pace the oversized-body client (0: flood)")
    args = ap.parse_args()
    if args.untrained:
        args.model = _untrained(args.untrained, args.params, Path(tempfile.mkdtemp()) / "model")
        args.image_size = args.untrained
    if args.images:
        IMAGES.extend(p.read_bytes() for p in sorted(args.images.rglob("*.jpg"))[:256])
    if args.soak:
        out = soak(args.model, args.params, args.soak, args.image_size, args.oversized_per_s)
        print(json.dumps(out, indent=1))
        name = "load_test_soak.json" if not args.oversized_per_s else "load_test_soak_paced.json"
        args.out.with_name(name).write_text(json.dumps(
            {"model": "untrained Lite0" if args.untrained else args.model, "image_size": args.image_size,
             "images": str(args.images) if args.images else "random", "cpus": os.cpu_count(),
             "oversized_per_s": args.oversized_per_s or "flood", **out}, indent=2) + "\n")
        return
    rows, runs, metrics = [], {}, {}
    for setting in args.settings:
        backend, batching = setting.split(":")
        got, info, text = run_setting(args.model, args.params, backend, batching == "on", args.requests,
                                      args.files_per_request, args.image_size)
        rows += got
        runs[setting], metrics[setting] = info, text
        print(setting, info, flush=True)
    print(f"{args.files_per_request} file(s) of {args.image_size} px per request; {os.cpu_count()} CPUs (server and "
          "clients on the same cores)")
    cols = ["backend", "batching", "clients", "ok", "errors", "p50_ms", "p99_ms", "images_per_s"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    args.out.write_text(json.dumps({"model": "untrained Lite0" if args.untrained else args.model,
                                    "images": str(args.images) if args.images else "random",
                                    "files_per_request": args.files_per_request, "image_size": args.image_size,
                                    "cpus": os.cpu_count(), "rows": rows, "runs": runs}, indent=2) + "\n")
    args.out.with_name(args.out.stem + "_metrics.txt").write_text(
        "".join(f"# ---- {k} ----\n{v}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
