"""Does "unfamiliar" catch what the model gets wrong on a source it never saw? Three novelty features compared.

    python benchmarks/novelty_sources.py PROJECT MODEL --train-sources faces-a [--out benchmarks/novelty_sources.json]

MODEL was trained on the train/val rows of --train-sources only (e.g. `benchmarks/cross_source.py --train-on
faces-a`); PROJECT's test split holds every source. On the model's own train rows a kNN novelty score (model/
novelty.py, params.yaml `novelty`) is fitted on three features of each face crop, its threshold the `quantile` of
its val rows:

- detector: the detector's multi-layer embedding (what the product stores with the model today);
- frozen: frozen ImageNet EfficientNet-Lite0 features at 224 px (the probe's features);
- both: a face is unfamiliar when its larger val percentile of the two scores passes the quantile (so both
  flag the same share of familiar data).

Per test source: the share flagged, and the share of the model's errors (at its stored threshold) flagged; the
goal is most of a left-out source's errors flagged while <= 5 % of the model's own test rows are.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from deepfake_detector.core.faces import face_column
from deepfake_detector.core.metrics import calibrated
from deepfake_detector.core.params import load_params
from deepfake_detector.core.splits_io import read_split
from deepfake_detector.evaluation.evaluate import face_input
from deepfake_detector.model.novelty import embedding, fit_novelty, novelty_scores
from deepfake_detector.model.probe import frozen_features
from deepfake_detector.model.scoring import TorchScorer
from deepfake_detector.model.tensorcache import decode_all


def percentile_of(ref: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.sort(ref), x, side="right") / max(len(ref), 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("project", type=Path)
    ap.add_argument("model", type=Path)
    ap.add_argument("--train-sources", nargs="+", required=True)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("novelty_sources.json"))
    args = ap.parse_args()
    p = load_params(args.project / "params.yaml")
    scorer = TorchScorer(args.model)
    fi, size, limits = face_input(scorer, p.faces.finder()), scorer.image_size, p.decode_limits()
    splits = args.project / "artifacts/splits"
    frames = {n: read_split(splits, n) for n in ("train", "val", "test")}
    for n in ("train", "val"):
        frames[n] = frames[n][frames[n]["source"].isin(args.train_sources)].reset_index(drop=True)
    feats: dict[str, dict[str, np.ndarray]] = {}
    logits = {}
    for n, frame in frames.items():
        x, ok = decode_all(frame["path"].tolist(), size, limits, progress=False, faces=face_column(frame),
                           face_input=fi)
        frames[n] = frame[ok].reset_index(drop=True)
        det, z = embedding(scorer.model, x[ok], size)
        feats[n] = {"detector": det, "frozen": frozen_features(x[ok], 224)}
        logits[n] = z
    scores = {}
    for kind in ("detector", "frozen"):
        nov = fit_novelty(feats["train"][kind], feats["val"][kind], p.novelty)
        scores[kind] = {n: novelty_scores(feats[n][kind], nov) for n in ("val", "test")}
    val_pct = {k: percentile_of(scores[k]["val"], scores[k]["val"]) for k in scores}
    both_val = np.maximum(*val_pct.values())
    both_test = np.maximum(*(percentile_of(scores[k]["val"], scores[k]["test"]) for k in scores))
    flagged = {k: scores[k]["test"] > np.quantile(scores[k]["val"], p.novelty.quantile) for k in scores}
    flagged["both"] = both_test > np.quantile(both_val, p.novelty.quantile)
    test = frames["test"]
    prob = calibrated(logits["test"], scorer.calibration)
    wrong = (prob >= scorer.threshold) != test["y"].to_numpy().astype(bool)
    rows = []
    for src in sorted(test["source"].unique()):
        here = (test["source"] == src).to_numpy()
        row = {"source": src, "in_training": src in args.train_sources, "n": int(here.sum()),
               "errors": int((wrong & here).sum())}
        for k, f in flagged.items():
            row[k] = {"flagged": float(f[here].mean()),
                      "errors_flagged": float(f[wrong & here].mean()) if (wrong & here).any() else None}
        rows.append(row)
    args.out.write_text(json.dumps({"model": str(args.model), "train_sources": args.train_sources,
                                    "quantile": p.novelty.quantile, "rows": rows}, indent=2) + "\n")
    print("| test source | n | errors | " + " | ".join(f"{k}: flagged / errors flagged" for k in flagged) + " |")
    print("|---|---|---|" + "---|" * len(flagged))
    f = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
    for r in rows:
        print(f"| {r['source']}{' (trained on)' if r['in_training'] else ''} | {r['n']} | {r['errors']} | "
              + " | ".join(f"{f(r[k]['flagged'])} / {f(r[k]['errors_flagged'])}" for k in flagged) + " |")


if __name__ == "__main__":
    main()
