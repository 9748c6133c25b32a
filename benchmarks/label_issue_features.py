"""Can frozen ImageNet features find flipped labels on faces-a? (issue #20: measured, not enough)

    python benchmarks/label_issue_features.py --source ../shared/benchmarks/faces-a

EfficientNet-Lite0 (ImageNet, frozen) at the native 256 px; per-channel mean, or mean + std, of the stem,
every one of the 16 MBConv blocks and the head (3,120 / 6,240 features). Out-of-fold logistic
regression (5 folds) gives p(given label); cleanlab's find_label_issues AND p(given label) < t flags a
file. Seeded flips of 5 % and 10 % per class. Prints the table and writes
benchmarks/label_issue_features.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def features(root: Path, size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from deepfake_detector.model.augment import to_input
    from deepfake_detector.model.probe import _backbone
    from deepfake_detector.model.tensorcache import decode_all

    paths = sorted(root.glob("real/*")) + sorted(root.glob("fake/*"))
    y = np.array([0 if p.parent.name == "real" else 1 for p in paths])
    imgs, _ = decode_all([str(p) for p in paths], size, False)
    net, means, stds = _backbone(), [], []
    with torch.no_grad():
        for i in range(0, len(imgs), 32):
            x = (to_input(imgs[i:i + 32], size) - net.mean) / net.std
            x = net.act(net._bn0(net._conv_stem(x)))
            m, s = [x.mean((2, 3))], [x.std((2, 3))]
            for block in net._blocks:
                x = block(x)
                m.append(x.mean((2, 3)))
                s.append(x.std((2, 3)))
            h = net.act(net._bn1(net._conv_head(x)))
            means.append(torch.cat(m + [h.mean((2, 3))], 1).numpy())
            stds.append(torch.cat(s + [h.std((2, 3))], 1).numpy())
    return np.concatenate(means), np.concatenate(stds), y


def main() -> None:
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ap = argparse.ArgumentParser()
    ap.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[2] / "shared/benchmarks/faces-a")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("label_issue_features.json"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    mean, std, y = features(args.source)
    embed_s = time.perf_counter() - t0
    rows = []
    for name, x in (("mean", mean), ("mean+std", np.hstack([mean, std]))):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.01))
        cv = StratifiedKFold(5, shuffle=True, random_state=0)
        auc = roc_auc_score(y, cross_val_predict(model, x, y, cv=cv, method="predict_proba")[:, 1])
        for share in (0.05, 0.10):
            rng = np.random.default_rng(1)
            flip = np.zeros(len(y), bool)
            for c in (0, 1):
                idx = np.flatnonzero(y == c)
                flip[rng.choice(idx, int(round(share * len(idx))), replace=False)] = True
            noisy = np.where(flip, 1 - y, y)
            probs = cross_val_predict(model, x, noisy, cv=cv, method="predict_proba")
            conf = probs[np.arange(len(y)), noisy]
            for t in (0.5, 0.2, 0.05):
                flags = find_label_issues(labels=noisy, pred_probs=probs) & (conf < t)
                tp = int((flags & flip).sum())
                rows.append({"features": name, "dims": x.shape[1], "oof_auc_clean": round(auc, 4), "flip": share,
                             "max_p_label": t, "flags": int(flags.sum()), "precision": round(tp / max(flags.sum(), 1), 3),
                             "recall": round(tp / flip.sum(), 3)})
    cols = ["features", "dims", "oof_auc_clean", "flip", "max_p_label", "flags", "precision", "recall"]
    print(f"embedding {len(y)} images: {embed_s:.0f} s\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    args.out.write_text(json.dumps({"embed_seconds": round(embed_s, 1), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
