"""Bounded load test of `dfd serve` on the loopback address: latency p50/p99 and errors at 1, 8, 32 clients.

    python benchmarks/load_test.py artifacts/model --requests 96 --files-per-request 1

Starts `dfd serve` on 127.0.0.1 (its own request log in a temp folder), warms it up, then for each
concurrency sends the same number of POST /predict requests (demo-like JPEGs made here, distinct per
request) from that many client threads. Counts non-200 answers, 5xx and transport errors, and checks
that the request log holds one line per scored image (nothing lost). Prints a table, writes
benchmarks/load_test.json.
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


def _jpeg(seed: int, size: int = 64) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--requests", type=int, default=96, help="requests per concurrency level")
    ap.add_argument("--files-per-request", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/load_test.json"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    log, port = tmp / "requests.jsonl", _port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("dfd")), "serve", "--model", args.model, "--port",
                             str(port), "--request-log", str(log)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
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
            files = [("files", (f"{seed[0]}_{k}.jpg", _jpeg(seed[0] * 100 + k))) for k in range(args.files_per_request)]
            t0 = time.perf_counter()
            try:
                status = httpx.post(f"{url}/predict", files=files, timeout=120).status_code
            except httpx.HTTPError:
                status = -1
            return time.perf_counter() - t0, status

        for _ in range(4):
            call(0)  # warm-up (first forward passes allocate)
        rows, scored = [], 4 * args.files_per_request
        for clients in (1, 8, 32):
            t0 = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                results = list(pool.map(call, range(args.requests)))
            wall = time.perf_counter() - t0
            lat = np.array([r[0] for r in results]) * 1000
            statuses = [r[1] for r in results]
            ok = sum(s == 200 for s in statuses)
            scored += ok * args.files_per_request
            rows.append({"clients": clients, "requests": len(results), "ok": ok,
                         "errors": len(results) - ok, "5xx": sum(s >= 500 for s in statuses),
                         "transport_errors": statuses.count(-1), "p50_ms": round(float(np.percentile(lat, 50)), 1),
                         "p99_ms": round(float(np.percentile(lat, 99)), 1),
                         "images_per_s": round(ok * args.files_per_request / wall, 1)})
        logged = len(log.read_text().splitlines()) if log.is_file() else 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"model {version}; {args.files_per_request} file(s) per request; {os.cpu_count()} CPUs; "
          f"request log: {logged} lines for {scored} scored images")
    cols = ["clients", "requests", "ok", "errors", "5xx", "p50_ms", "p99_ms", "images_per_s"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    args.out.write_text(json.dumps({"model_version": version, "files_per_request": args.files_per_request, "rows": rows,
                                    "request_log_lines": logged, "scored_images": scored}, indent=2) + "\n")


if __name__ == "__main__":
    main()
