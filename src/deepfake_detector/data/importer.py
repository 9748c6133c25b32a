"""Copy a labelled dataset into `data/`, original bytes and names kept.

    dfd data import ../shared/benchmarks/faces-a data/ && dvc add data

Recognised layouts:
- plain:   SRC/real/...  SRC/fake/...
- Kaggle "140k Real and Fake Faces": SRC/real_vs_fake/real-vs-fake/{train,valid,test}/{real,fake}
- ciplab "real_and_fake_face": SRC/training_real/, SRC/training_fake/
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .images import LABELS


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
    if all((src / label).is_dir() for label in LABELS):
        return {label: [(src / label, "")] for label in LABELS}
    raise ImportLayoutError(
        f"{src}: unrecognised layout; expected real/ + fake/, the Kaggle "
        "real_vs_fake/real-vs-fake/{train,valid,test}/{real,fake} tree, or training_real/ + training_fake/"
    )


def import_dataset(src: str | Path, dest: str | Path) -> dict[str, int]:
    """Copy every file (bytes and names kept; Kaggle split names become subfolders)."""
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise ImportLayoutError(f"source folder not found: {src}")
    counts = {label: 0 for label in LABELS}
    for label, folders in detect_layout(src).items():
        for folder, prefix in folders:
            for path in sorted(folder.rglob("*")):
                if not path.is_file() or path.name.startswith("."):
                    continue
                target = dest / label / prefix / path.relative_to(folder)
                if target.exists():
                    continue  # never overwrite what is already versioned
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
                counts[label] += 1
    return counts
