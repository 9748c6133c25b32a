"""Copy a labelled dataset into `data/`, original bytes and names kept.

    dfd data import ../shared/benchmarks/faces-a data/ && dvc add data
    dfd data import ../shared/benchmarks/faces-d data/ --source faces-d --groups ../shared/benchmarks/faces-d/groups.csv

With --source NAME, files land under data/<label>/NAME/... and data/metadata.csv records the
source of each; with --groups CSV (a `path` column relative to SRC and one group column, e.g.
`video`), it records each file's group, namespaced by the source (`faces-d/<video>`). The split
keeps a group in one split, across labels.

Recognised layouts:
- plain:   SRC/real/...  SRC/fake/...   (or only one of them: a real-only source such as faces-u)
- Kaggle "140k Real and Fake Faces": SRC/real_vs_fake/real-vs-fake/{train,valid,test}/{real,fake}
- ciplab "real_and_fake_face": SRC/training_real/, SRC/training_fake/
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from ..core.images import LABELS, METADATA_FILE


class ImportLayoutError(ValueError):
    """The source folder is in none of the recognised layouts."""


def detect_layout(src: Path) -> dict[str, list[tuple[Path, str]]]:
    """Map each label to (source folder, prefix for names) pairs."""
    kaggle = src / "real_vs_fake" / "real-vs-fake"
    if not kaggle.is_dir() and (src / "real-vs-fake").is_dir():
        kaggle = src / "real-vs-fake"
    if kaggle.is_dir():
        return {
            label: [(kaggle / part / label, part) for part in ("train", "valid", "test")
                    if (kaggle / part / label).is_dir()]
            for label in LABELS
        }
    if (src / "training_real").is_dir() or (src / "training_fake").is_dir():
        return {label: [(src / f"training_{label}", "")] for label in LABELS}
    if any((src / label).is_dir() for label in LABELS):  # a one-label source (faces-u: real/ only) too
        return {label: [(src / label, "")] if (src / label).is_dir() else [] for label in LABELS}
    raise ImportLayoutError(
        f"{src}: unrecognised layout; expected real/ and/or fake/, the Kaggle "
        "real_vs_fake/real-vs-fake/{train,valid,test}/{real,fake} tree, or training_real/ + training_fake/"
    )


def read_groups(csv: str | Path, column: str | None = None) -> dict[str, str]:
    """{path relative to the source folder: group} from a CSV with `path` and one group column."""
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    others = [c for c in frame.columns if c not in ("path", "label")]
    if "path" not in frame or (column is None and len(others) != 1) or (column and column not in frame):
        raise ImportLayoutError(f"{csv}: need a `path` column and one group column (or --group-column); "
                                f"found {list(frame.columns)}")
    return dict(zip(frame["path"].map(lambda p: Path(p).as_posix()), frame[column or others[0]]))


def import_dataset(src: str | Path, dest: str | Path, source: str | None = None, groups: str | Path | None = None,
                   group_column: str | None = None) -> dict[str, int]:
    """Copy every file (bytes and names kept; Kaggle split names become subfolders); with a source
    or groups, record them in dest/metadata.csv. Existing files are never overwritten."""
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise ImportLayoutError(f"source folder not found: {src}")
    if source is not None and (not source or "/" in source or source.startswith(".")):
        raise ImportLayoutError(f"--source {source!r}: a plain folder name is needed (e.g. faces-d)")
    group_of = read_groups(groups, group_column) if groups else {}
    counts = {label: 0 for label in LABELS}
    meta = []
    for label, folders in detect_layout(src).items():
        for folder, prefix in folders:
            for path in sorted(folder.rglob("*")):
                if not path.is_file() or path.name.startswith("."):
                    continue
                rel = Path(label, source or "", prefix, path.relative_to(folder)).as_posix()
                group = group_of.get(path.relative_to(src).as_posix(), "")
                meta.append({"path": rel, "source": source or "", "group": f"{source}/{group}" if source and group
                             else group})
                target = dest / rel
                if target.exists():
                    continue  # never overwrite what is already versioned
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
                counts[label] += 1
    if source or group_of:
        _merge_metadata(dest / METADATA_FILE, pd.DataFrame(meta, columns=["path", "source", "group"]))
    return counts


def _merge_metadata(path: Path, new: pd.DataFrame) -> None:
    """Add or update rows by path; sorted, so the same imports give the same bytes."""
    old = pd.read_csv(path, dtype=str, keep_default_na=False) if path.is_file() else new.iloc[:0]
    merged = pd.concat([old, new]).drop_duplicates("path", keep="last").sort_values("path")
    path.parent.mkdir(parents=True, exist_ok=True)
    merged.to_csv(path, index=False)
