"""Reading split CSVs (written by the `split` stage) back into absolute paths and labels."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .images import LABELS


def read_split(splits_dir: str | Path, name: str) -> pd.DataFrame:
    """Columns path (absolute), label, y (0 real / 1 fake), source, plus the manifest columns."""
    splits_dir = Path(splits_dir)
    csv = splits_dir / f"{name}.csv"
    if not csv.is_file():
        raise FileNotFoundError(f"{csv} not found: run `dfd split` first")
    frame = pd.read_csv(csv, dtype={"phash": str})
    root_file = splits_dir / "root.txt"
    root = (splits_dir / root_file.read_text().strip()) if root_file.is_file() else splits_dir
    frame["path"] = [str((root / p).resolve()) for p in frame["path"]]
    frame["y"] = frame["label"].map({lab: i for i, lab in enumerate(LABELS)}).astype(int)
    if "source" not in frame:
        frame["source"] = "unknown"
    return frame


def split_version(splits_dir: str | Path, names: tuple[str, ...] = ("train", "val")) -> str:
    """sha256 of the (split, path, label, sha256) rows of these splits: the version of the data a model
    was trained on (the same files in the same splits give the same version, wherever they live)."""
    import hashlib

    h = hashlib.sha256()
    for name in names:
        frame = pd.read_csv(Path(splits_dir) / f"{name}.csv", dtype=str)
        cols = [c for c in ("path", "label", "sha256") if c in frame]
        for row in sorted(frame[cols].itertuples(index=False, name=None)):
            h.update(("\t".join([name, *map(str, row)]) + "\n").encode())
    return h.hexdigest()


SEEN_FILE = "seen_sha256.txt"  # in every model folder: the images its training saw (train + val)


def split_hashes(splits_dir: str | Path, names: tuple[str, ...] = ("train", "val")) -> set[str] | None:
    """sha256 of every image in these splits, or None when a split CSV has no sha256 column."""
    frames = [pd.read_csv(Path(splits_dir) / f"{name}.csv", dtype=str) for name in names]
    if not all("sha256" in f for f in frames):
        return None
    return {h for f in frames for h in f["sha256"].dropna() if h}


def write_seen(model_dir: str | Path, splits_dir: str | Path) -> int:
    """Store, with a model, the sha256 of every image it was trained or selected on (train + val; sorted,
    one per line), so that a later gate never scores it on them. Returns how many."""
    hashes = sorted(split_hashes(splits_dir) or ())
    Path(model_dir).mkdir(parents=True, exist_ok=True)
    (Path(model_dir) / SEEN_FILE).write_text("".join(h + "\n" for h in hashes))
    return len(hashes)


def read_seen(model_dir: str | Path) -> set[str] | None:
    """The images a model saw in training (write_seen), or None when the folder carries no list."""
    path = Path(model_dir) / SEEN_FILE
    return set(path.read_text().split()) if path.is_file() else None


def read_folder(folder: str | Path) -> pd.DataFrame:
    """A labelled folder (real/, fake/) as a split-like frame; unlabelled files get label ''."""
    from .images import iter_labelled_files, source_of

    rows = [{"path": str(p.resolve()), "label": lab} for p, lab in iter_labelled_files(folder)]
    frame = pd.DataFrame(rows, columns=["path", "label"])
    frame["y"] = frame["label"].map({lab: i for i, lab in enumerate(LABELS)}).astype(int)
    frame["source"] = frame["path"].map(source_of)
    return frame
