"""Split: deterministic, stratified, near-duplicates never straddle splits."""

from __future__ import annotations

import pandas as pd

from deepfake_detector.params import SplitParams
from deepfake_detector.data.split import assign_splits, split


def _manifest(n_per_class: int = 50) -> pd.DataFrame:
    rows = []
    for label in ("real", "fake"):
        for i in range(n_per_class):
            h = (i * 0x9E3779B97F4A7C15 + (label == "fake") * 0x5555) % (1 << 64)
            rows.append({"path": f"{label}/{i}.jpg", "label": label, "phash": f"{h:016x}"})
    frame = pd.DataFrame(rows)
    # three near-duplicate pairs (1 bit apart) inside the fake class
    for a, b in ((0, 1), (2, 3), (4, 5)):
        h = int(frame.loc[frame["path"] == f"fake/{a}.jpg", "phash"].iloc[0], 16) ^ 1
        frame.loc[frame["path"] == f"fake/{b}.jpg", "phash"] = f"{h:016x}"
    return frame


def test_split_is_deterministic_stratified_and_groups_near_duplicates():
    m = _manifest()
    p = SplitParams(val=0.2, test=0.2, group_distance=2)
    s1, s2 = assign_splits(m, p, seed=1), assign_splits(m, p, seed=1)
    assert s1.equals(s2)
    assert not s1.equals(assign_splits(m, p, seed=2))
    counts = pd.crosstab(m["label"], s1)
    for label in ("real", "fake"):
        assert abs(counts.loc[label, "test"] - 10) <= 1 and abs(counts.loc[label, "val"] - 10) <= 1
    for a, b in ((0, 1), (2, 3), (4, 5)):
        assert s1[m["path"] == f"fake/{a}.jpg"].iloc[0] == s1[m["path"] == f"fake/{b}.jpg"].iloc[0]


def test_split_stage_writes_csvs_and_metrics(tmp_path):
    clean = tmp_path / "clean"
    clean.mkdir()
    _manifest(20).to_csv(clean / "manifest.csv", index=False)
    metrics = split(clean, tmp_path / "splits", tmp_path / "reports", SplitParams(val=0.25, test=0.25, group_distance=6), seed=0)
    assert sum(metrics[s]["total"] for s in ("train", "val", "test")) == 40
    assert metrics["test"]["real"] == metrics["test"]["fake"] == 5
    assert (tmp_path / "splits/root.txt").read_text().strip() == "../clean"
