"""Listing and decoding labelled face images (`data/<label>/...`).

Every stage reads images through here so that decoding, EXIF orientation and colour
conversion are identical in validation, training, evaluation, drift and prediction.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

from .params import DecodeLimits

__all__ = ["DecodeLimits", "ImageRefused", "decode_image", "image_files", "iter_labelled_files", "open_image",
           "sniff", "walk_files"]

LABELS: tuple[str, ...] = ("real", "fake")  # index = class id; fake (1) is the positive class
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# Modes converted to RGB on load (the conversion is lossless or colour-only); see validate.py.
CONVERTIBLE_MODES = {"RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"}
GRAYSCALE_MODES = {"L", "LA", "1"}


# A PNG's text chunks are inflated when its header is read; a few KB of zTXt can inflate to 63 MB (0.3 s of CPU,
# benchmarks/load_test.py --soak). Real metadata (XMP, ICC notes) stays far below this.
MAX_PNG_TEXT_BYTES = 4 * 2**20

# Magic numbers, to name a file's type without handing it to any decoder (EPS would run Ghostscript)
SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF87a": "GIF", b"GIF89a": "GIF",
              b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"%!PS": "EPS", b"\xc5\xd0\xd3\xc6": "EPS",
              b"%PDF": "PDF"}


def sniff(head: bytes) -> str | None:
    """The file type its first bytes announce (Pillow's format names), or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((kind for sig, kind in SIGNATURES.items() if head.startswith(sig)), None)


class ImageRefused(ValueError):
    """An image refused before or while decoding; the message names the problem, never an object, a path or a
    trace. `kind`: format (a known image type outside the allowlist), unknown (no image an allowed decoder
    recognises), pixels (over the cap), corrupt (an allowed type that does not decode)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def clean_message(exc: Exception) -> str:
    """An exception's text without object reprs ('<_io.BytesIO object at 0x..>') or file paths."""
    text = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the image", str(exc))
    return re.sub(r"(?:[A-Za-z]:)?/[^\s'\"]+", "the file", text)[:200]


def open_image(fp: str | Path | IO[bytes], limits: DecodeLimits) -> Image.Image:
    """Open (header only) an image allowed by limits; raises ImageRefused. The caller closes it."""
    if isinstance(fp, (str, Path)):
        with open(fp, "rb") as fh:
            head = fh.read(16)
    else:
        head = fp.read(16)
        fp.seek(0)
    kind = sniff(head)
    # Pillow's own bomb check runs inside its plugins too, before a decoder allocates a canvas (an animated WebP
    # declaring 13000^2 would reserve GBs): with the cap as its limit, nothing over 2x the cap is ever allocated
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    PngImagePlugin.MAX_TEXT_MEMORY = MAX_PNG_TEXT_BYTES
    if kind is not None and kind not in limits.formats:
        raise ImageRefused("format", f"{kind} images are not accepted (allowed: {', '.join(limits.formats)})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp, formats=limits.formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRefused("pixels", f"decompression bomb refused: over the {limits.max_pixels}-pixel cap "
                                     f"(validate.max_pixels): {clean_message(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - UnidentifiedImageError, truncated headers, ...
        if isinstance(exc, ValueError) and ("text chunk" in str(exc) or "Decompressed Data Too Large" in str(exc)):
            raise ImageRefused("pixels", f"decompression bomb refused: its text chunks inflate past "
                                         f"{MAX_PNG_TEXT_BYTES // 2**20} MB") from None
        raise ImageRefused("corrupt" if kind else "unknown",
                           f"corrupt {kind} image" if kind else
                           f"not an image (or not one of the allowed formats: {', '.join(limits.formats)})") from None
    if img.width * img.height > limits.max_pixels:
        img.close()
        raise ImageRefused("pixels", f"decompression bomb refused: {img.width}x{img.height} pixels exceeds the "
                                     f"{limits.max_pixels}-pixel cap (validate.max_pixels)")
    return img


def decode_image(src: str | Path | bytes, limits: DecodeLimits, size: int | None = None) -> Image.Image:
    """The one decoder: header checks (format allowlist, pixel cap) before any pixel is decoded, then the first
    frame only, EXIF orientation and 8-bit RGB; resized to size x size (antialiased) when given."""
    fp = io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src
    with open_image(fp, limits) as img:
        try:
            img.seek(0)  # the first frame of an animated file
            img.load()
            rgb = to_rgb(img)
        except Exception as exc:  # noqa: BLE001 - truncated or corrupt data
            raise ImageRefused("corrupt", f"corrupt {img.format} image: {type(exc).__name__}: {clean_message(exc)}") from None
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    return rgb


class DataLayoutError(ValueError):
    """The data folder does not follow `data/<real|fake>/...`."""


def walk_files(root: str | Path) -> Iterator[Path]:
    """The one lister: every file under root (symlinks included), sorted, hidden files and folders skipped."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def image_files(root: str | Path) -> list[Path]:
    """walk_files less what is plainly no image by its suffix (a README, a CSV); files without one stay."""
    return [p for p in walk_files(root) if p.suffix.lower() in IMAGE_SUFFIXES or p.suffix == ""]


def iter_labelled_files(root: str | Path) -> Iterator[tuple[Path, str]]:
    """Yield (path, label) for every file under root/<label>/ (walk_files), symlinks included.

    Files directly in root are skipped; anything else is yielded so that validation can judge it. A top-level
    folder other than real/fake is an error.
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
        for path in walk_files(root / label):
            yield path, label


def to_rgb(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert to 8-bit RGB (alpha composited on white)."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "PA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


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
    """RGB image -> uint8 torch tensor (3, size, size), resized like decode_image."""
    import torch

    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)
