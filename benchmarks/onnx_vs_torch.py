"""CPU inference images/s: torch vs ONNX Runtime, batch 1 and 64.

    python benchmarks/onnx_vs_torch.py artifacts/model --seconds 5

Exports MODEL/detector.onnx if missing. Prints a table and writes benchmarks/onnx_vs_torch.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from deepfake_detector.model.checkpoint import load_detector
from deepfake_detector.serving.export import export_onnx


def _rate(fn, batch: int, seconds: float) -> float:
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += batch
    return n / (time.perf_counter() - t0)


def main() -> None:
    import onnxruntime as ort

    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/onnx_vs_torch.json"))
    args = ap.parse_args()
    onnx_path = args.model / "detector.onnx"
    parity = export_onnx(args.model, onnx_path) if not onnx_path.is_file() else None
    model, info = load_detector(args.model)
    size = int(info["image_size"])
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rows = []
    for batch in (1, 64):
        x = torch.rand(batch, 3, size, size)
        xn = x.numpy()
        with torch.inference_mode():
            t = _rate(lambda: model(x), batch, args.seconds)
        o = _rate(lambda: sess.run(None, {"image": xn}), batch, args.seconds)
        rows.append({"batch": batch, "torch_img_per_s": round(t, 1), "onnx_img_per_s": round(o, 1),
                     "speedup": round(o / t, 2)})
    print(f"CPU threads: {torch.get_num_threads()}; input {size}x{size}"
          + (f"; export max |diff| {parity['max_abs_diff']:.2e}" if parity else ""))
    print(f"{'batch':>5} {'torch img/s':>12} {'onnx img/s':>11} {'speed-up':>9}")
    for r in rows:
        print(f"{r['batch']:>5} {r['torch_img_per_s']:>12} {r['onnx_img_per_s']:>11} {r['speedup']:>9}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "parity": parity, "image_size": size}, indent=2) + "\n")


if __name__ == "__main__":
    main()
