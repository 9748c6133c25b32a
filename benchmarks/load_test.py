"""Bounded load test of `dfd serve` on the loopback address: images/s, latency p50/p99 and errors at 1, 8 and 32
clients, for each backend (torch, onnx) with dynamic batching on and off.

    python benchmarks/load_test.py artifacts/model --requests 96 --params params.yaml

For each setting, starts `dfd serve` on 127.0.0.1 (the given params with serve.backend / serve.batching set, its own
request log in a temp folder), warms it up, then for each concurrency sends the same number of POST /predict
requests (one distinct --image-size JPEG each, made here) from that many client threads in this process (they
share the machine's cores with the server, as a co-located client would). Counts non-200 answers, 5xx and
transport errors, checks that the request log holds one line per scored image (nothing lost), and keeps the
server's /metrics text after the run. Prints a table, writes benchmarks/load_test.json (+ load_test_metrics.txt).
"""

from __future__ import annotations

import argparse
import io
import json
import os
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


def run_setting(model: str, params: Path, backend: str, batching: bool, requests: int, files_per_request: int,
                image_size: int) -> tuple[list[dict], dict, str]:
    import yaml

    tmp = Path(tempfile.mkdtemp())
    settings = yaml.safe_load(params.read_text())
    settings["serve"].update(backend=backend, batching=batching)
    (tmp / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    log, port = tmp / "requests.jsonl", _port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("dfd")), "serve", "--model", model, "--port",
                             str(port), "--request-log", str(log), "--params", str(tmp / "params.yaml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
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
                    raise RuntimeError(proc.stderr.read().decode()[-2000:])
                time.sleep(0.2)
        seed = [0]

        def call(_: int) -> tuple[float, int]:
            seed[0] += 1
            files = [("files", (f"{seed[0]}_{k}.jpg", _jpeg(seed[0] * 100 + k, image_size)))
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--requests", type=int, default=96, help="requests per concurrency level")
    ap.add_argument("--files-per-request", type=int, default=1)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--settings", nargs="+", default=["torch:on", "torch:off", "onnx:on", "onnx:off"])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/load_test.json"))
    args = ap.parse_args()
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
    args.out.write_text(json.dumps({"files_per_request": args.files_per_request, "image_size": args.image_size,
                                    "rows": rows, "runs": runs}, indent=2) + "\n")
    args.out.with_name(args.out.stem + "_metrics.txt").write_text(
        "".join(f"# ---- {k} ----\n{v}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
