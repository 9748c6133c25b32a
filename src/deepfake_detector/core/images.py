"""Listing and decoding labelled face images (`data/<label>/...`).

Every stage reads images through here so that decoding, EXIF orientation and colour
conversion are identical in validation, training, evaluation, drift and prediction.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

LABELS: tuple[str, ...] = ("real", "fake")  # index = class id; fake (1) is the positive class
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# Modes converted to RGB on load (the conversion is lossless or colour-only); see validate.py.
CONVERTIBLE_MODES = {"RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"}
GRAYSCALE_MODES = {"L", "LA", "1"}


class DataLayoutError(ValueError):
    """The data folder does not follow `data/<real|fake>/...`."""


def iter_labelled_files(root: str | Path) -> Iterator[tuple[Path, str]]:
    """Yield (path, label) for every file under root/<label>/, sorted, symlinks included.

    Hidden files (e.g. .DS_Store, .gitignore) and files directly in root are skipped; anything
    else is yielded so that validation can judge it. A top-level folder other than real/fake is
    an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"data folder not found: {root}")
    # top-level files (a README, MANIFEST.csv) are not images of any label: ignored
    tops = sorted(p for p in root.iterdir() if not p.name.startswith(".") and p.is_dir())
    for top in tops:
        if top.name not in LABELS:
            raise DataLayoutError(
                f"{top}: unknown label folder '{top.name}'; expected {' or '.join(LABELS)}"
            )
    for label in LABELS:
        base = root / label
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith("."):
                    yield Path(dirpath) / name, label


def to_rgb(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert to 8-bit RGB (alpha composited on white)."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "PA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def load_rgb(path: str | Path, size: int | None = None) -> Image.Image:
    """Decode a file to RGB, optionally resized to size x size (antialiased)."""
    with Image.open(path) as img:
        img.load()
        rgb = to_rgb(img)
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    return rgb


def source_of(path: str | Path) -> str:
    """`<source>__name.ext` file names carry their source (as in faces-a); else 'unknown'."""
    name = Path(path).name
    return name.split("__", 1)[0] if "__" in name else "unknown"


METADATA_FILE = "metadata.csv"  # data/metadata.csv: path (relative to data/), source, group (dfd data import)


def read_metadata(root: str | Path) -> "pd.DataFrame":
    """Per-file metadata of a data folder, indexed by path: source and group (empty when unknown).

    Written by `dfd data import --source/--groups`; a folder without the file has none."""
    import pandas as pd

    path = Path(root) / METADATA_FILE
    if not path.is_file():
        return pd.DataFrame(columns=["source", "group"], index=pd.Index([], name="path"), dtype=str)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"path", "source", "group"} - set(frame.columns)
    if missing:
        raise DataLayoutError(f"{path}: missing column(s) {sorted(missing)}; expected path,source,group")
    return frame.drop_duplicates("path", keep="last").set_index("path")[["source", "group"]]


def to_tensor(img: Image.Image, size: int):
    """RGB image -> uint8 torch tensor (3, size, size), resized like load_rgb."""
    import torch

    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)
