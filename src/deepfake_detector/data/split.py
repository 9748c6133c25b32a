"""Stage `split`: deterministic, stratified, leakage-free train/val/test.

    dfd split artifacts/clean artifacts/splits reports/split

Near-duplicates (pHash within split.group_distance) form one group, and a group goes to one
split, so no face appears on both sides of train/test. Groups are shuffled with the seed and
dealt per class until each split holds its fraction.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .hashing import components, near_pairs
from ..params import SplitParams

SPLITS = ("train", "val", "test")


def assign_splits(manifest: pd.DataFrame, p: SplitParams, seed: int) -> pd.Series:
    """A split name per row (index aligned with manifest)."""
    groups = pd.Series(components(len(manifest), near_pairs(manifest["phash"].tolist(), p.group_distance)),
                       index=manifest.index)
    rng = np.random.default_rng(seed)
    out = pd.Series("train", index=manifest.index)
    fractions = {"test": p.test, "val": p.val}
    for label in sorted(manifest["label"].unique()):
        rows = manifest["label"] == label
        sizes = groups[rows].value_counts().sort_index()
        order = sizes.index.to_numpy()[rng.permutation(len(sizes))]
        n_label = int(rows.sum())
        targets = {name: round(frac * n_label) for name, frac in fractions.items()}
        filled = {name: 0 for name in fractions}
        for g in order:
            for name in ("test", "val"):
                if filled[name] < targets[name]:
                    out[rows & (groups == g)] = name
                    filled[name] += int(sizes[g])
                    break
    return out


def split(clean_dir: str | Path, out_dir: str | Path, report_dir: str | Path, p: SplitParams,
          seed: int = 42) -> dict:
    """Write out_dir/{train,val,test}.csv and the split metrics.

    CSV paths are relative to clean_dir; out_dir/root.txt holds clean_dir relative to out_dir.
    """
    clean_dir, out_dir, report_dir = Path(clean_dir), Path(out_dir), Path(report_dir)
    manifest_path = clean_dir / "manifest.csv"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} not found: run `dfd validate` first")
    manifest = pd.read_csv(manifest_path, dtype={"phash": str})
    if manifest.empty:
        raise ValueError(f"{manifest_path} lists no images: nothing to split")
    manifest = manifest.sort_values("path").reset_index(drop=True)
    manifest["split"] = assign_splits(manifest, p, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    import os

    root = os.path.relpath(clean_dir.resolve(), out_dir.resolve())  # relative: same hash on every machine
    metrics: dict = {}
    for name in SPLITS:
        part = manifest[manifest["split"] == name].drop(columns="split")
        part.to_csv(out_dir / f"{name}.csv", index=False)
        metrics[name] = {lab: int((part["label"] == lab).sum()) for lab in ("real", "fake")}
        metrics[name]["total"] = int(len(part))
    (out_dir / "root.txt").write_text(root + "\n")
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
