"""Deterministic synthetic demo faces so the pipeline runs anywhere.

    dfd data demo data/ --per-class 160

Real class: procedural faces (skin-tone ellipse, eyes, brows, mouth, hair, cluttered lit
background, sensor noise). Fake class: the same kind of faces plus generator-like traces: a
faint transposed-convolution checkerboard, a periodic spectral peak, a blend seam and colour
cast around the face, and mismatched irises. Both classes: same size, same JPEG settings, so file format is no shortcut.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 64
JPEG_QUALITY = 92


def _face(rng: np.random.Generator, fake: bool = False) -> Image.Image:
    bg_top, bg_bottom = rng.integers(40, 220, 3), rng.integers(40, 220, 3)
    t = np.linspace(0, 1, SIZE)[:, None, None]
    canvas = (bg_top * (1 - t) + bg_bottom * t) * np.ones((SIZE, SIZE, 3))
    img = Image.fromarray(canvas.astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):  # background clutter makes every scene distinct
        x0, y0 = rng.uniform(-10, SIZE, 2)
        r = rng.uniform(6, 22)
        d.ellipse([x0, y0, x0 + r * rng.uniform(0.5, 2), y0 + r], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    skin = tuple(int(v) for v in rng.integers([150, 100, 70], [250, 200, 170]))
    cx, cy = SIZE / 2 + rng.normal(0, 5), SIZE / 2 + rng.normal(2, 4)
    w, h = rng.uniform(17, 23), rng.uniform(22, 28)
    hair = tuple(int(v) for v in rng.integers(10, 120, 3))
    d.ellipse([cx - w - 2, cy - h - 4, cx + w + 2, cy + h * 0.3], fill=hair)
    d.ellipse([cx - w, cy - h, cx + w, cy + h], fill=skin)
    eye_y, eye_dx = cy - h * rng.uniform(0.1, 0.3), w * rng.uniform(0.35, 0.5)
    iris = tuple(int(v) for v in rng.integers(20, 140, 3))
    for sx in (-1, 1):
        ex = cx + sx * eye_dx
        if fake and sx == 1:  # GAN faces often get mismatched irises (heterochromia)
            iris = tuple(int(v) for v in rng.integers(20, 240, 3))
        d.ellipse([ex - 4, eye_y - 2.5, ex + 4, eye_y + 2.5], fill=(240, 240, 235))
        d.ellipse([ex - 2, eye_y - 2, ex + 2, eye_y + 2], fill=iris)
        d.line([ex - 4, eye_y - 5, ex + 4, eye_y - 5 - rng.uniform(0, 1.5)], fill=hair, width=1)
    d.line([cx, eye_y + 2, cx + rng.uniform(-1, 1), cy + h * 0.25], fill=tuple(int(c * 0.8) for c in skin))
    mouth_y, mw = cy + h * rng.uniform(0.45, 0.6), w * rng.uniform(0.3, 0.5)
    d.arc([cx - mw, mouth_y - 3, cx + mw, mouth_y + 3], 10, 170, fill=(150, 50, 60), width=2)
    img = img.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR, fillcolor=tuple(int(v) for v in bg_top))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 0.9)))
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 3.0, (SIZE, SIZE, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _add_generator_traces(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    checker = ((yy % 2) ^ (xx % 2)).astype(np.float32) * 2 - 1  # transposed-conv checkerboard
    arr += checker[..., None] * rng.uniform(3, 6)
    fy, fx = rng.uniform(0.18, 0.3, 2)  # a periodic spectral peak
    arr += np.sin(2 * np.pi * (fy * yy + fx * xx))[..., None] * rng.uniform(2, 4)
    mask = np.zeros((SIZE, SIZE), np.float32)  # blend seam: a ring where two renders meet
    r = np.hypot(yy - SIZE / 2, (xx - SIZE / 2) * 1.2)
    ring = np.abs(r - rng.uniform(22, 26)) < 1.2
    mask[ring] = 1
    arr += mask[..., None] * rng.normal(0, 10, 3)
    inner = (r < 20)[..., None]  # blended face region with a colour cast
    arr += inner * rng.normal(0, 6, 3)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_demo(out: str | Path, per_class: int = 160, seed: int = 0) -> dict[str, int]:
    """Write out/real/*.jpg and out/fake/*.jpg; same bytes for the same seed and count."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    counts = {}
    for label in ("real", "fake"):
        folder = out / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = _face(rng, fake=label == "fake")
            if label == "fake":
                img = _add_generator_traces(img, rng)
            img.save(folder / f"demo__{label}_{i:04d}.jpg", "JPEG", quality=JPEG_QUALITY, subsampling=0)
        counts[label] = per_class
    return counts


def flip_labels(source: str | Path, dest: str | Path, share: float, seed: int) -> set[str]:
    """Copy source/{real,fake} to dest with `share` of each class filed under the other label (label
    noise for measuring the label-issue finder); return the flipped files' new paths ("fake/x.jpg")."""
    source, dest = Path(source), Path(dest)
    rng = np.random.default_rng(seed)
    flipped = set()
    for label, other in (("real", "fake"), ("fake", "real")):
        files = sorted((source / label).iterdir())
        chosen = set(rng.choice(len(files), size=round(share * len(files)), replace=False).tolist())
        for i, f in enumerate(files):
            target = dest / (other if i in chosen else label) / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
            if i in chosen:
                flipped.add(f"{other}/{f.name}")
    return flipped
