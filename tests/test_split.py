"""Split: content-addressed (a group's split depends on its key and the seed alone), groups span labels."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from deepfake_detector.data.split import assign_splits, split, split_of, unit_interval
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


def test_a_bridge_between_groups_in_different_splits_moves_nobody_and_sits_out():
    """A new image near two groups that were split apart: the old images keep their splits (the previous split
    files say where they are) and the bridge is kept out of every split, and reported."""
    m = _manifest(300)
    p = SplitParams(val=0.15, test=0.15, group_distance=1)
    before = pd.Series(assign_splits(m, p, seed=3).to_numpy(), index=m["path"])
    a = m.iloc[0]
    b = next(r for _, r in m.iterrows() if before[r["path"]] != before[a["path"]])
    m.loc[m["path"] == b["path"], "phash"] = f"{int(a['phash'], 16) ^ 0b11:016x}"  # b 2 bits from a: two groups
    old = dict(zip(m["sha256"], assign_splits(m, p, seed=3)))
    bridge = {"path": "real/bridge.jpg", "label": "real", "sha256": "0" * 64, "group": "",
              "phash": f"{int(a['phash'], 16) ^ 0b1:016x}"}  # 1 bit from each
    grown = pd.concat([m, pd.DataFrame([bridge])], ignore_index=True)
    after = pd.Series(assign_splits(grown, p, seed=3, previous=old).to_numpy(), index=grown["path"])
    assert after["real/bridge.jpg"] == "excluded"
    assert all(after[path] == old[sha] for path, sha in zip(m["path"], m["sha256"]))  # nobody moved


def test_a_reupload_with_a_smaller_sha256_moves_nothing(tmp_path):
    """A group's key is its smallest member key: a near-copy whose sha256 is smaller re-keys the group. Through
    the stage (the previous split files are read first) the group stays where it was, and so does the copy."""
    m = _manifest(200)
    clean, out = tmp_path / "clean", tmp_path / "splits"
    clean.mkdir()
    m.to_csv(clean / "manifest.csv", index=False)
    split(clean, out, tmp_path / "r", P, seed=5)
    first = pd.concat([pd.read_csv(out / f"{s}.csv", dtype=str).assign(split=s) for s in ("train", "val", "test")])
    where = dict(zip(first["path"], first["split"]))
    # an image whose group would land elsewhere under the re-upload's key (sha256 00...0)
    target = next(r for _, r in m.iterrows() if split_of(unit_interval(5, "sha256:" + "0" * 64), P) != where[r["path"]])
    copy = {"path": "real/reupload.jpg", "label": target["label"], "sha256": "0" * 64, "group": "",
            "phash": f"{int(target['phash'], 16) ^ 0b1:016x}"}  # a re-encode: 1 bit away
    pd.concat([m, pd.DataFrame([copy])]).to_csv(clean / "manifest.csv", index=False)
    split(clean, out, tmp_path / "r", P, seed=5)
    again = pd.concat([pd.read_csv(out / f"{s}.csv", dtype=str).assign(split=s) for s in ("train", "val", "test")])
    now = dict(zip(again["path"], again["split"]))
    assert all(now[path] == where[path] for path in where)  # nothing moved
    assert now["real/reupload.jpg"] == where[target["path"]]  # the copy joined its original


def test_a_mirrored_copy_of_a_test_image_never_trains(tmp_path):
    """Training flips images: a mirror image is the same image to the model. It joins its original's group."""
    from PIL import Image

    from deepfake_detector.core.hashing import phash

    rng = np.random.default_rng(0)
    rows = []
    for i in range(120):
        img = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((32, 32), Image.Resampling.BICUBIC)
        label = ("real", "fake")[i % 2]
        rows.append({"path": f"{label}/{i:04d}.png", "label": label, "sha256": f"{i:064x}", "group": "",
                     "phash": phash(img), "phash_mirror": phash(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
                     "img": img})
    m = pd.DataFrame(rows)
    s = pd.Series(assign_splits(m.drop(columns="img"), P, seed=1).to_numpy(), index=m["path"])
    tests = m[s.to_numpy() == "test"]
    assert len(tests) > 5
    copies = []
    for k, (_, r) in enumerate(tests.iterrows()):
        mirror = r["img"].transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        copies.append({"path": f"{r['label']}/mirror_{k}.png", "label": r["label"], "sha256": f"{10**6 + k:064x}",
                       "group": "", "phash": phash(mirror), "phash_mirror": phash(r["img"])})
    grown = pd.concat([m.drop(columns="img"), pd.DataFrame(copies)], ignore_index=True)
    for previous in (None, dict(zip(m["sha256"], s))):  # a fresh split, and a grown one
        after = pd.Series(assign_splits(grown, P, seed=1, previous=previous).to_numpy(), index=grown["path"])
        assert (after[[c["path"] for c in copies]] == "test").all()


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
