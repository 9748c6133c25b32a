"""CPU inference images/s through the Python API: torch vs ONNX Runtime, batch 1 vs 32.

    python benchmarks/onnx_vs_torch.py artifacts/model --seconds 5
    python benchmarks/onnx_vs_torch.py --image-size 256 --seconds 5    # an untrained Lite0 at the faces size

`Detector.score_tensor` (what `dfd predict`, `dfd serve` and the Python API run after decoding and cropping) on
uint8 images at the model's size, so the input conversion is counted too. Exports MODEL/detector.onnx if missing.
Prints a table and writes benchmarks/onnx_vs_torch.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from deepfake_detector.core.params import load_params
from deepfake_detector.serving.detector import Detector
from deepfake_detector.serving.export import export_onnx


def _rate(fn, batch: int, seconds: float) -> float:
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += batch
    return n / (time.perf_counter() - t0)


def _untrained(size: int, dest: Path) -> Path:
    """A pretrained-backbone detector with an untrained head: same cost per image as a trained one."""
    from deepfake_detector.model.checkpoint import save_detector
    from deepfake_detector.model.factory import build_detector

    dest.mkdir(parents=True, exist_ok=True)
    model = build_detector({"backbone": "efficientnet_lite0", "se_reduction": 16, "extra_convs": 2, "dropout": 0.3},
                           pretrained="imagenet").eval()
    save_detector(dest / "detector.pt", model, size, 0.5, {})
    return dest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path, nargs="?")
    ap.add_argument("--image-size", type=int, default=None, help="measure an untrained Lite0 at this size instead")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/onnx_vs_torch.json"))
    args = ap.parse_args()
    model_dir = args.model or _untrained(args.image_size, Path(tempfile.mkdtemp()) / "model")
    onnx_path = model_dir / "detector.onnx"
    parity = export_onnx(model_dir, onnx_path) if not onnx_path.is_file() else None
    limits = load_params(Path(__file__).resolve().parents[1] / "params.yaml").decode_limits()
    dets = {rt: Detector(model_dir, band=0.1, batch_size=32, limits=limits, runtime=rt) for rt in ("torch", "onnx")}
    size = dets["torch"].image_size
    rows = []
    for batch in (1, 32):
        x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
        rates = {rt: _rate(lambda d=d: d.score_tensor(x), batch, args.seconds) for rt, d in dets.items()}
        rows.append({"batch": batch, "torch_img_per_s": round(rates["torch"], 1),
                     "onnx_img_per_s": round(rates["onnx"], 1)})
    base = {rt: rows[0][f"{rt}_img_per_s"] for rt in ("torch", "onnx")}
    for r in rows:
        r.update({f"{rt}_vs_batch1": round(r[f"{rt}_img_per_s"] / base[rt], 2) for rt in ("torch", "onnx")})
    print(f"CPU threads: {torch.get_num_threads()}; input {size}x{size}"
          + (f"; export max |diff| {parity['max_abs_diff']:.2e}" if parity else ""))
    print("| batch | torch img/s | ONNX img/s | torch vs batch 1 | ONNX vs batch 1 |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['torch_img_per_s']} | {r['onnx_img_per_s']} | {r['torch_vs_batch1']}x "
              f"| {r['onnx_vs_batch1']}x |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "parity": parity, "image_size": size,
                                    "threads": torch.get_num_threads()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
