"""Throughput of `validate` vs Pillow decode-only, and a full vs incremental (1 % new) run.

    python benchmarks/validate_throughput.py ../shared/benchmarks/faces-a --out benchmarks/validate_throughput.json

Prints a table and writes JSON. Works on any folder with real/ and fake/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image

from deepfake_detector.images import iter_labelled_files
from deepfake_detector.params import ValidateParams
from deepfake_detector.validate import validate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/validate_throughput.json"))
    args = ap.parse_args()
    files = [p for p, _ in iter_labelled_files(args.data)]
    t = time.perf_counter()
    for p in files:
        with Image.open(p) as im:
            im.load()
    decode_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        shutil.copytree(args.data, data, ignore=shutil.ignore_patterns("*.csv", "*.md"))
        cache = tmp / "cache.jsonl"
        p = ValidateParams()
        t = time.perf_counter()
        validate(data, tmp / "clean", tmp / "reports", p, cache_path=cache, progress=False)
        full_s = time.perf_counter() - t
        n_new = max(1, len(files) // 100)
        for i, src in enumerate(files[:n_new]):  # 1 % new files: re-encoded copies (new bytes)
            label = src.parent.name
            Image.open(src).convert("RGB").rotate(90).save(data / label / f"new_{i}.jpg", quality=90)
        t = time.perf_counter()
        inc = validate(data, tmp / "clean", tmp / "reports", p, cache_path=cache, progress=False)
        inc_s = time.perf_counter() - t
    rows = [
        ("Pillow decode only", len(files), decode_s),
        ("validate, full (cold cache)", len(files), full_s),
        (f"validate, incremental (+{n_new} new)", len(files) + n_new, inc_s),
    ]
    print(f"{'run':<38} {'files':>6} {'seconds':>8} {'img/s':>8}")
    for name, n, s in rows:
        print(f"{name:<38} {n:>6} {s:>8.2f} {n / s:>8.1f}")
    print(f"incremental re-run decoded {inc['cache']['decoded']} files; cost = {inc_s / full_s:.0%} of a full run")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": [{"run": r, "files": n, "seconds": round(s, 3), "img_per_s": round(n / s, 1)}
                                             for r, n, s in rows], "incremental_decoded": inc["cache"]["decoded"]},
                                   indent=2) + "\n")


if __name__ == "__main__":
    main()
