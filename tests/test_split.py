"""Split: content-addressed (a group's split depends on its key and the seed alone), groups span labels."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from deepfake_detector.data.split import assign_splits, split
from deepfake_detector.core.params import SplitParams

P = SplitParams(val=0.15, test=0.15, group_distance=4)


def _rows(start: int, n: int, label: str) -> list[dict]:
    """Images with distinct bytes and pHashes far apart (no accidental near-duplicates)."""
    rows = []
    for i in range(start, start + n):
        h = hashlib.sha256(f"{label}-{i}".encode()).hexdigest()
        rows.append({"path": f"{label}/{i:06d}.jpg", "label": label, "sha256": h, "phash": h[:16], "group": ""})
    return rows


def _manifest(n_per_label: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame(_rows(start, n_per_label, "real") + _rows(start, n_per_label, "fake"))


def test_adding_1_and_10_percent_new_images_moves_no_existing_image():
    base = _manifest(1000)
    before = pd.Series(assign_splits(base, P, seed=42).to_numpy(), index=base["path"])
    for added in (10, 100):  # 1 % and 10 % of the 2,000 images
        grown = pd.concat([base, _manifest(added, start=10_000)], ignore_index=True).sample(frac=1, random_state=1)
        after = pd.Series(assign_splits(grown, P, seed=42).to_numpy(), index=grown["path"])
        moved = (after[before.index] != before).sum()
        assert moved == 0, f"{moved} existing images changed split when {added * 2} were added"
        new = after.drop(before.index)
        assert set(new) == {"train", "val", "test"}  # the new images are dealt too
    # removing images moves none of the others either
    kept = base.iloc[::3]
    assert (assign_splits(kept, P, seed=42).to_numpy() == before[kept["path"]].to_numpy()).all()
    # and the seed matters
    assert (assign_splits(base, P, seed=7).to_numpy() != before.to_numpy()).sum() > 100


def test_fractions_per_label_stay_within_two_points_on_a_large_set():
    m = _manifest(3000)
    s = assign_splits(m, P, seed=42)
    for label in ("real", "fake"):
        share = s[m["label"] == label].value_counts(normalize=True)
        assert abs(share["test"] - P.test) <= 0.02 and abs(share["val"] - P.val) <= 0.02, share


def test_a_group_that_holds_both_labels_stays_in_one_split():
    m = _manifest(200)
    # a face swap and the real video it was made from share a metadata group (dfd data import --groups)
    for k in range(40):
        m.loc[m["path"] == f"real/{k:06d}.jpg", "group"] = f"video{k}"
        m.loc[m["path"] == f"fake/{k:06d}.jpg", "group"] = f"video{k}"
    # a near-duplicate across labels (1 bit apart) with no metadata group
    src = m.loc[m["path"] == "real/000100.jpg", "phash"].iloc[0]
    m.loc[m["path"] == "fake/000150.jpg", "phash"] = f"{int(src, 16) ^ 1:016x}"
    for seed in (0, 1, 2):
        s = pd.Series(assign_splits(m, P, seed).to_numpy(), index=m["path"])
        for k in range(40):
            assert s[f"real/{k:06d}.jpg"] == s[f"fake/{k:06d}.jpg"]
        assert s["real/000100.jpg"] == s["fake/000150.jpg"]
        assert s[[f"real/{k:06d}.jpg" for k in range(40)]].nunique() > 1  # groups are still dealt, not lumped


def test_a_merge_moves_only_the_merged_group():
    """The stated exception: a new image near two groups joins them under the smaller key."""
    m = _manifest(300)
    before = pd.Series(assign_splits(m, P, seed=3).to_numpy(), index=m["path"])
    # find two images in different splits; add one image within 2 bits of both pHashes' common pattern
    a, b = m.iloc[0], next(r for _, r in m.iterrows() if before[r["path"]] != before[m.iloc[0]["path"]])
    m.loc[m["path"] == b["path"], "phash"] = f"{int(a['phash'], 16) ^ 0b11:016x}"  # b 2 bits from a ...
    bridge = {"path": "real/bridge.jpg", "label": "real", "sha256": "0" * 64, "group": "",
              "phash": f"{int(a['phash'], 16) ^ 0b1:016x}"}  # ... the bridge 1 bit from each
    p = SplitParams(val=0.15, test=0.15, group_distance=1)  # a and b alone are 2 bits apart: two groups
    alone = pd.Series(assign_splits(m, p, seed=3).to_numpy(), index=m["path"])
    grown = pd.concat([m, pd.DataFrame([bridge])], ignore_index=True)
    after = pd.Series(assign_splits(grown, p, seed=3).to_numpy(), index=grown["path"])
    assert after[a["path"]] == after[b["path"]] == after["real/bridge.jpg"]
    moved = [path for path in alone.index if after[path] != alone[path]]
    assert set(moved) <= {a["path"], b["path"]}


def test_split_stage_writes_groups_and_fractions(tmp_path):
    clean = tmp_path / "clean"
    clean.mkdir()
    m = _manifest(20)
    m.loc[0, "group"], m.loc[20, "group"] = "v", "v"  # real/0 and fake/0 share a group
    m.to_csv(clean / "manifest.csv", index=False)
    metrics = split(clean, tmp_path / "splits", tmp_path / "reports", SplitParams(val=0.25, test=0.25, group_distance=6),
                    seed=0)
    assert sum(metrics[s]["total"] for s in ("train", "val", "test")) == 40
    assert metrics["groups_spanning_labels"] == 1
    assert set(metrics["fraction_real"]) == {"val", "test"}
    assert (tmp_path / "splits/root.txt").read_text().strip() == "../clean"
    parts = pd.concat([pd.read_csv(tmp_path / f"splits/{s}.csv").assign(split=s) for s in ("train", "val", "test")])
    assert {"group", "split_group", "sha256"} <= set(parts.columns)
    pair = parts[parts["group"] == "v"]
    assert len(pair) == 2 and pair["split"].nunique() == 1 and set(pair["split_group"]) == {"group:v"}
    assert np.all(parts.loc[parts["group"] != "v", "split_group"].str.startswith("sha256:"))
