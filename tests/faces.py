"""Pictures with real faces for the tests, made from the two public-domain portraits in tests/assets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ASSETS = Path(__file__).parent / "assets"


def portrait(name: str = "astronaut") -> Image.Image:
    return Image.open(ASSETS / f"{name}.jpg").convert("RGB")


def background(width: int, height: int, seed: int) -> Image.Image:
    """A smooth, blurred colour field with no face in it."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(8))


def pasted(face: Image.Image, width: int, height: int, x: int, y: int, seed: int = 0) -> Image.Image:
    """face pasted pixel for pixel at (x, y) into a larger faceless picture."""
    pic = background(width, height, seed)
    pic.paste(face, (x, y))
    return pic


def two_faces(seed: int = 0) -> Image.Image:
    """Both portraits side by side in one picture."""
    pic = background(1100, 640, seed)
    pic.paste(portrait("astronaut"), (10, 60))
    pic.paste(portrait("grace_hopper"), (560, 20))
    return pic


def face_set(root: Path, per_label: int = 12, seed: int = 0) -> Path:
    """root/real, root/fake: jittered 256 px crops around the two faces (shifts, scales, flips, colour); each fake
    is its real twin with the face region colour-shifted and blurred (a crude swap): every picture has one face."""
    rng = np.random.default_rng(seed)
    for label in ("real", "fake"):
        (root / label).mkdir(parents=True, exist_ok=True)
    for i in range(per_label):
        name = ("astronaut", "grace_hopper")[i % 2]
        src = portrait(name)
        cx, cy = ((222, 126), (268, 244))[i % 2]  # face centres in the portraits
        side = int(rng.integers(380, 440))  # the face is ~30-60 % of the crop, as in FFHQ-style crops
        x0 = int(np.clip(cx - side // 2 + rng.integers(-20, 21), 0, src.width - side))
        y0 = int(np.clip(cy - side // 2 + rng.integers(-20, 21), 0, src.height - side))
        crop = src.crop((x0, y0, x0 + side, y0 + side)).resize((256, 256), Image.Resampling.BILINEAR)
        if i % 4 >= 2:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        arr = np.asarray(crop, np.float32) * rng.uniform(0.85, 1.15, 3)
        real = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        real.save(root / "real" / f"r{i:03d}.png")
        fake = np.asarray(real, np.float32).copy()
        face = np.asarray(real.filter(ImageFilter.GaussianBlur(1)), np.float32) * [1.1, 0.95, 0.9]
        yy, xx = np.mgrid[:256, :256]
        mask = (((xx - 128) / 45) ** 2 + ((yy - 125) / 55) ** 2 <= 1)[..., None]
        fake = np.where(mask, face, fake)
        Image.fromarray(np.clip(fake, 0, 255).astype(np.uint8)).save(root / "fake" / f"f{i:03d}.png")
    return root
