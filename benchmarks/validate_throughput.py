"""Validation at decode speed: the per-file pass (sha256 + decode + pHash + statistics) vs Pillow decode.

    python benchmarks/validate_throughput.py ../shared/benchmarks/faces-a            # per-file pass
    python benchmarks/validate_throughput.py ../shared/benchmarks/faces-a --full     # + whole stage

Rows: Pillow decode-only in one process (the reference rate per core), the per-file pass with
workers = 1 and workers = every core (`dfd validate --workers`), each the best of --repeat runs on
warm page cache, over the file list repeated --times times (4: 6,800 decodes on faces-a, so the
~0.3 s pool start-up weighs as little as on a real dataset). With --full, also the whole `validate` stage cold and incremental (1 % new files;
includes the pretrained embeddings and the GX suite). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image

from deepfake_detector.data.filemeta import default_workers, read_files
from deepfake_detector.core.images import iter_labelled_files
from deepfake_detector.core.params import load_params
from deepfake_detector.data.validate import validate

REPO = Path(__file__).resolve().parents[1]


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def pillow_decode(files: list[Path]) -> None:
    for p in files:
        with Image.open(p) as im:
            im.load()


def per_file_pass(files: list[Path], workers: int) -> None:
    max_pixels = load_params(REPO / "params.yaml").validate_.max_pixels
    recs = list(read_files(files, max_pixels, frozenset(), "bench", workers))
    assert len(recs) == len(files) and all("meta" in r for r in recs)


def whole_stage(data_dir: Path, files: list[Path]) -> list[tuple[str, int, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        shutil.copytree(data_dir, data, ignore=shutil.ignore_patterns("*.csv", "*.md"))
        cache, p = tmp / "cache.jsonl", load_params(Path(__file__).parents[1] / "params.yaml").validate_
        t = time.perf_counter()
        validate(data, tmp / "clean", tmp / "reports", p, cache_path=cache, progress=False)
        full_s = time.perf_counter() - t
        n_new = max(1, len(files) // 100)
        for i, src in enumerate(files[:n_new]):  # 1 % new files: re-encoded copies (new bytes)
            Image.open(src).convert("RGB").rotate(90).save(data / src.parent.name / f"new_{i}.jpg", quality=90)
        t = time.perf_counter()
        validate(data, tmp / "clean", tmp / "reports", p, cache_path=cache, progress=False)
        inc_s = time.perf_counter() - t
    return [("validate stage, cold cache", len(files), full_s),
            (f"validate stage, +{n_new} new files", len(files) + n_new, inc_s)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--times", type=int, default=4, help="decode each file this many times per run")
    ap.add_argument("--full", action="store_true", help="also time the whole stage (embeddings, GX)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/validate_throughput.json"))
    args = ap.parse_args()
    unique = [p for p, _ in iter_labelled_files(args.data)]
    files = unique * args.times
    cores = default_workers()
    pillow_decode(files)  # warm the page cache
    rows = [("Pillow decode only, 1 process", len(files), 1, best_of(args.repeat, lambda: pillow_decode(files)))]
    for w in sorted({1, cores}):
        rows.append((f"per-file pass, workers={w}", len(files), w,
                     best_of(args.repeat, lambda w=w: per_file_pass(files, w))))
    ref = len(files) / rows[0][3]
    out = []
    print(f"{'run':<36} {'files':>6} {'procs':>5} {'seconds':>8} {'img/s':>8} {'per core vs Pillow':>19}")
    for name, n, procs, s in rows:
        rate = n / s
        out.append({"run": name, "files": n, "processes": procs, "seconds": round(s, 3),
                    "img_per_s": round(rate, 1), "per_core_vs_pillow": round(rate / procs / ref, 3)})
        print(f"{name:<36} {n:>6} {procs:>5} {s:>8.2f} {rate:>8.1f} {rate / procs / ref:>18.2f}x")
    if args.full:
        for name, n, s in whole_stage(args.data, unique):
            out.append({"run": name, "files": n, "seconds": round(s, 2), "img_per_s": round(n / s, 1)})
            print(f"{name:<36} {n:>6} {'':>5} {s:>8.2f} {n / s:>8.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"data": str(args.data), "unique_files": len(unique), "times": args.times,
                                    "cores": cores, "rows": out}, indent=2) + "\n")


if __name__ == "__main__":
    main()
