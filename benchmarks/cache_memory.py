"""Peak resident memory and read speed of the training cache as the dataset grows.

    python benchmarks/cache_memory.py --work /tmp/cachebench                 # 2k, 20k, 100k images
    python benchmarks/cache_memory.py --work /tmp/cachebench --sizes 2000 20000

Writes N synthetic 64 px JPEG faces-like images once (noise + gradients), then per N and per mode
runs a fresh process that builds the cache (`tensorcache.decode_all` at 64 px: 12 KB per image)
and reads one epoch in shuffled batches of 64, as the trainer does. Modes: `ram` (one tensor) and
`disk` (shard files + pread; what training uses above `train.cache_ram_gb`). Reports build time,
epoch read img/s, peak RSS (ru_maxrss) and cache size. A second disk build of the same files is
timed too (shards are reused). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 64


def make_images(root: Path, n: int) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    paths = [root / f"{i // 1000:04d}" / f"img_{i:06d}.jpg" for i in range(n)]
    todo = [(i, p) for i, p in enumerate(paths) if not p.is_file()]
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, SIZE, dtype=np.float32)
    for i, p in todo:
        p.parent.mkdir(parents=True, exist_ok=True)
        img = (base[None, :, None] * (i % 7 + 1) / 7 + rng.normal(0, 20, (SIZE, SIZE, 3))).clip(0, 255)
        Image.fromarray(img.astype(np.uint8)).save(p, quality=90)
    return [str(p) for p in paths]


def child(mode: str, list_file: str, cache_dir: str) -> None:
    """One measurement in a fresh process, printed as JSON."""
    import torch

    from deepfake_detector.model.tensorcache import decode_all

    paths = Path(list_file).read_text().split("\n")
    t = time.perf_counter()
    x, ok = decode_all(paths, SIZE, progress=False, disk_dir=cache_dir,
                       ram_limit_bytes=None if mode == "ram" else 0)
    build = time.perf_counter() - t
    order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(0))
    t = time.perf_counter()
    checksum = 0
    for i in range(0, len(order), 64):
        checksum += int(x[order[i:i + 64]][:, :, 0, 0].sum())
    read = time.perf_counter() - t
    print(json.dumps({"build_s": round(build, 2), "epoch_img_per_s": round(len(paths) / read),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "decoded": int(ok.sum()), "checksum": checksum}))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(*sys.argv[2:5])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000, 100000])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/cache_memory.json"))
    args = ap.parse_args()
    paths = make_images(args.work / "images", max(args.sizes))
    rows = []
    print(f"{'images':>7} {'mode':<11} {'build s':>8} {'epoch img/s':>12} {'peak RSS MB':>12} {'cache MB':>9}")
    for n in args.sizes:
        lst = args.work / f"list_{n}.txt"
        lst.write_text("\n".join(paths[:n]))
        for mode in ("ram", "disk", "disk again"):
            cache = args.work / f"cache_{n}"
            if mode == "disk":
                subprocess.run(["rm", "-rf", str(cache)], check=True)
            out = subprocess.run([sys.executable, __file__, "--child", mode.split()[0], str(lst), str(cache)],
                                 capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            size_mb = round(sum(f.stat().st_size for f in cache.glob("*.u8")) / 2**20) if mode != "ram" else 0
            rows.append({"images": n, "mode": mode, **r, "cache_mb": size_mb})
            print(f"{n:>7} {mode:<11} {r['build_s']:>8.1f} {r['epoch_img_per_s']:>12} {r['peak_rss_mb']:>12} "
                  f"{size_mb:>9}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"image_size": SIZE, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
