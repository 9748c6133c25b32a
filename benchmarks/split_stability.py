"""How many existing images change split when data is added (the split stage on real data).

    python benchmarks/split_stability.py ../shared/benchmarks/faces-a --out benchmarks/split_stability.json
    python benchmarks/split_stability.py /tmp/faces-ad/data          # after `dfd data import ... --groups`

Reads every file once (sha256 + pHash, the validate stage's per-file pass, no model), then for each
rate r removes a seeded r share of the images ("the new batch"), splits the rest, adds the batch
back and splits again. Prints: existing images that moved, new test images that sat in the old
train split (what a gate would score the champion on), and the per-label val/test fractions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from deepfake_detector.data.split import assign_splits
from deepfake_detector.data.validate import collect_metadata
from deepfake_detector.core.params import load_params

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--rates", type=float, nargs="+", default=[0.01, 0.10])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    p = load_params(REPO / "params.yaml")
    frame, _ = collect_metadata(a.data, p.validate_, progress=False)
    frame = frame[frame["decodes"].fillna(False).astype(bool)].sort_values("path").reset_index(drop=True)
    full = assign_splits(frame, p.split, p.seed)
    rows = []
    for rate in a.rates:
        for seed in a.seeds:
            new = np.zeros(len(frame), bool)
            new[np.random.default_rng(seed).choice(len(frame), round(rate * len(frame)), replace=False)] = True
            old = assign_splits(frame[~new], p.split, p.seed)
            moved = int((old != full[~new]).sum())
            new_test = new & (full == "test").to_numpy()
            rows.append({"rate": rate, "seed": seed, "existing": int((~new).sum()), "added": int(new.sum()),
                         "moved": moved, "new_test": int(new_test.sum()),
                         # rows of the grown test split that the previous split had in train
                         "test_in_old_train": int(((full[~new] == "test") & (old == "train")).sum())})
    fractions = {lab: {s: round(float(((frame["label"] == lab) & (full == s)).sum() / (frame["label"] == lab).sum()), 4)
                       for s in ("val", "test")} for lab in sorted(frame["label"].unique())}
    print(f"{len(frame)} images; split.val {p.split.val}, split.test {p.split.test}; realised per label: {fractions}")
    print("| added | seed | existing | moved | new in test | test rows that were in old train |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['added']} ({r['rate']:.0%}) | {r['seed']} | {r['existing']} | {r['moved']} | {r['new_test']} | "
              f"{r['test_in_old_train']} |")
    if a.out:
        a.out.write_text(json.dumps({"data": str(a.data), "n": len(frame), "fractions": fractions, "rows": rows},
                                    indent=2) + "\n")


if __name__ == "__main__":
    main()
