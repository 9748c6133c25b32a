"""Training speed and val quality per numeric setting: fp32 NCHW, fp32 channels-last, bf16 autocast (channels-last).

    python benchmarks/train_precision.py PROJECT --epochs 3            # the faces profile on PROJECT's faces-a rows

PROJECT is a real-data project after `dfd validate` and `dfd split` (docs/real-data.md); its faces-a train/val
rows are trained with its params.yaml (profiles/faces.yaml: 256 px, 3 frozen blocks) for --epochs epochs per
setting, the same seed each time. Reports training images/s (steady epochs: the first is left out when there are
more) and the best val ROC-AUC with its 95 % bootstrap interval. `train.precision: bf16` is kept only if its val
AUC stays within fp32's interval (docs/model.md). Prints a table and writes benchmarks/train_precision.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from cross_source import subset_splits  # noqa: E402

from deepfake_detector.core.metrics import bootstrap_ci, bootstrap_indices, calibrated  # noqa: E402
from deepfake_detector.core.params import load_params  # noqa: E402
from deepfake_detector.core.splits_io import read_split  # noqa: E402
from deepfake_detector.model import nets, train as train_mod  # noqa: E402
from deepfake_detector.model.scoring import load_scorer  # noqa: E402
from deepfake_detector.model.tensorcache import decode_all  # noqa: E402

SETTINGS = {"fp32 NCHW": ("fp32", torch.contiguous_format), "fp32 channels-last": ("fp32", torch.channels_last),
            "bf16 channels-last": ("bf16", torch.channels_last)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("project", type=Path)
    ap.add_argument("--source", default="faces-a")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/train_precision"))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/train_precision.json")
    args = ap.parse_args()
    splits = subset_splits(args.project / "artifacts/splits", args.work / "splits", [args.source])
    rows = []
    for name, (precision, fmt) in SETTINGS.items():
        p = load_params(args.project / "params.yaml", {"train": {"precision": precision, "epochs": args.epochs}})
        nets.MEMORY_FORMAT = train_mod.MEMORY_FORMAT = fmt  # the layout the training loop uses (channels-last default)
        out = args.work / name.replace(" ", "_")
        shutil.rmtree(out, ignore_errors=True)
        card = train_mod.train(splits, out / "model", out / "reports", p, ckpt_dir=out / "ckpt", progress=False,
                               cache_dir=args.work / "cache")
        steady = [e["images_per_s"] for e in card["run"]["epochs"]][1:] or [card["run"]["epochs"][0]["images_per_s"]]
        va = read_split(splits, "val")
        x, ok = decode_all(va["path"].tolist(), p.train.image_size, p.decode_limits(), progress=False)
        scorer = load_scorer(out / "model")
        prob, y = calibrated(scorer.logits(x[ok]), scorer.calibration), va["y"].to_numpy()[ok]
        ci = bootstrap_ci(y, prob, scorer.threshold, bootstrap_indices(len(y), p.evaluate.bootstrap, 0))["roc_auc"]
        rows.append({"setting": name, "images_per_s": round(float(np.mean(steady)), 1),
                     "val_roc_auc": card["val_metrics"]["roc_auc"], "val_roc_auc_ci95": ci,
                     "cpu": torch.backends.cpu.get_cpu_capability(), "epochs": args.epochs})
        print(rows[-1], flush=True)
    print("| setting | train img/s | val ROC-AUC [95 % CI] |\n|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['images_per_s']} | {r['val_roc_auc']:.4f} [{r['val_roc_auc_ci95'][0]:.4f}, "
              f"{r['val_roc_auc_ci95'][1]:.4f}] |")
    args.out.write_text(json.dumps({"project_source": args.source, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
