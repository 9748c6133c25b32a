"""Stage `split`: content-addressed, leakage-free train/val/test that never moves as data grows.

    dfd split artifacts/clean artifacts/splits reports/split

Groups. Each image starts with a member key: `group:<g>` when the dataset names a group for it
(`manifest.group`, from `dfd data import --groups`, e.g. the source video of a face swap), else
`sha256:<its bytes' hash>`. Images that share a member key, or whose pHashes lie within
`split.group_distance` bits of each other or of each other's mirror image (training flips images), of either
label, are one group (union-find), so a face swap and the frame it was made from, two near-copies or an
image and its mirror never sit on both sides of train/test. A group's key is the smallest member key in it.

Assignment. Images that were already split keep their split: the previous split files (this stage's own
output, `persist` in dvc.yaml, or any folder given as `previous`) are read before they are rewritten. A group
with already-split members takes their split, so a re-upload, re-encode or mirror of an existing image lands
where that image is, whatever its sha256. A new image that joins groups already in different splits is kept
out of every split and listed (`excluded.csv`, `excluded_bridging` in the metrics); the old images stay put.
A group with no previous member gets u = sha256(seed:key) as a number in [0, 1): test if u < split.test,
val if u < split.test + split.val, else train. Without previous files (a fresh clone) that pure function
decides for every group. Fractions are binomial around split.val/split.test: with n groups per label, one
standard deviation is sqrt(f(1-f)/n) (±1.2 pp at 850 per label, ±2.8 pp on the 160-per-label demo);
`reports/split/metrics.json` records the realised fractions.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.hashing import components, near_pairs
from ..core.params import SplitParams

SPLITS = ("train", "val", "test")
EXCLUDED = "excluded"
SETTINGS_FILE = "settings.json"  # the seed and split params the files were made with


def member_keys(manifest: pd.DataFrame) -> pd.Series:
    """`group:<g>` where the manifest names a group, else `sha256:<hash>` (the path when no hash)."""
    sha = manifest["sha256"] if "sha256" in manifest else pd.Series(np.nan, index=manifest.index)
    own = np.where(sha.notna() & (sha.astype(str) != ""), "sha256:" + sha.astype(str), "path:" + manifest["path"])
    keys = pd.Series(own, index=manifest.index)
    if "group" in manifest:
        named = manifest["group"].notna() & (manifest["group"].astype(str).str.strip() != "")
        keys[named] = "group:" + manifest.loc[named, "group"].astype(str).str.strip()
    return keys


def linked_pairs(manifest: pd.DataFrame, group_distance: int) -> set[tuple[int, int]]:
    """Row pairs that must share a split: near pHashes, an image near another's mirror, the same member key."""
    n = len(manifest)
    hashes = manifest["phash"].tolist() if "phash" in manifest else [None] * n
    mirrors = manifest["phash_mirror"].tolist() if "phash_mirror" in manifest else [None] * n
    pairs = {(min(i % n, j % n), max(i % n, j % n)) for i, j in near_pairs(hashes + mirrors, group_distance)
             if i % n != j % n}
    first: dict[str, int] = {}
    for i, k in enumerate(member_keys(manifest).to_numpy()):
        j = first.setdefault(k, i)
        if j != i:
            pairs.add((j, i))
    return pairs


def group_keys(manifest: pd.DataFrame, group_distance: int) -> pd.Series:
    """Each row's group key: the smallest member key among the rows it is linked to."""
    keys = member_keys(manifest).to_numpy()
    comp = np.asarray(components(len(keys), linked_pairs(manifest, group_distance)))
    smallest = pd.Series(keys).groupby(comp).min()
    return pd.Series(smallest.loc[comp].to_numpy(), index=manifest.index)


def unit_interval(seed: int, key: str) -> float:
    """sha256(seed:key) as a number in [0, 1): the same on every machine, for every dataset."""
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:15], 16) / 16**15


def split_of(u: float, p: SplitParams) -> str:
    return "test" if u < p.test else "val" if u < p.test + p.val else "train"


def assign_splits(manifest: pd.DataFrame, p: SplitParams, seed: int,
                  previous: dict[str, str] | None = None) -> pd.Series:
    """A split name per row (index aligned with manifest): train | val | test | excluded. previous: {sha256:
    split} of images split before (they keep it; their groups follow them)."""
    keys = group_keys(manifest, p.group_distance)
    fresh = keys.map({k: split_of(unit_interval(seed, k), p) for k in keys.unique()})
    if not previous:
        return fresh
    old = manifest["sha256"].map(previous) if "sha256" in manifest else pd.Series(np.nan, index=manifest.index)
    out = fresh.copy()
    for key, rows in keys.groupby(keys).groups.items():
        had = old[rows].dropna()
        if had.empty:
            continue  # a new group: the content-addressed split
        if had.nunique() == 1:
            out[rows] = had.iloc[0]  # the whole group (old members and new ones) where it already was
        else:  # a new image bridging groups in different splits: old images stay, new ones sit out
            out[rows] = old[rows].fillna(EXCLUDED)
    return out


def read_previous(folder: Path, settings: dict) -> dict[str, str]:
    """{sha256: split} from split files written earlier with the same settings (seed, fractions, distance):
    other settings mean a new split, not a grown one ({})."""
    out: dict[str, str] = {}
    used = folder / SETTINGS_FILE
    if not used.is_file() or json.loads(used.read_text()) != settings:
        return out
    for name in SPLITS:
        csv = folder / f"{name}.csv"
        if csv.is_file():
            frame = pd.read_csv(csv, dtype=str, usecols=lambda c: c == "sha256")
            out.update(dict.fromkeys(frame["sha256"].dropna(), name) if "sha256" in frame else {})
    return out


def split(clean_dir: str | Path, out_dir: str | Path, report_dir: str | Path, p: SplitParams,
          seed: int = 42, previous: str | Path | None = None) -> dict:
    """Write out_dir/{train,val,test}.csv (manifest columns + split_group), excluded.csv, and the split metrics.

    previous: the folder of earlier split files (default: out_dir itself, read before it is rewritten). CSV
    paths are relative to clean_dir; out_dir/root.txt holds clean_dir relative to out_dir.
    """
    clean_dir, out_dir, report_dir = Path(clean_dir), Path(out_dir), Path(report_dir)
    manifest_path = clean_dir / "manifest.csv"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} not found: run `dfd validate` first")
    manifest = pd.read_csv(manifest_path, dtype={"phash": str, "phash_mirror": str, "group": str, "source": str})
    if manifest.empty:
        raise ValueError(f"{manifest_path} lists no images: nothing to split")
    settings = {"seed": seed, **p.model_dump()}
    before = read_previous(Path(previous) if previous is not None else out_dir, settings)
    manifest = manifest.sort_values("path").reset_index(drop=True)
    manifest["split_group"] = group_keys(manifest, p.group_distance)
    manifest["split"] = assign_splits(manifest, p, seed, before)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = os.path.relpath(clean_dir.resolve(), out_dir.resolve())  # relative: same hash on every machine
    metrics: dict = {}
    for name in (*SPLITS, EXCLUDED):
        part = manifest[manifest["split"] == name].drop(columns="split")
        part.to_csv(out_dir / f"{name}.csv", index=False)
        if name == EXCLUDED:
            break
        metrics[name] = {lab: int((part["label"] == lab).sum()) for lab in ("real", "fake")}
        metrics[name]["total"] = int(len(part))
        metrics[name]["groups"] = int(part["split_group"].nunique())
    for lab in ("real", "fake"):
        n = max(1, int((manifest["label"] == lab).sum()))
        metrics[f"fraction_{lab}"] = {s: round(metrics[s][lab] / n, 4) for s in ("val", "test")}
    metrics["groups_spanning_labels"] = int((manifest.groupby("split_group")["label"].nunique() > 1).sum())
    metrics["excluded_bridging"] = int((manifest["split"] == EXCLUDED).sum())
    (out_dir / "root.txt").write_text(root + "\n")
    (out_dir / SETTINGS_FILE).write_text(json.dumps(settings, sort_keys=True) + "\n")
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
