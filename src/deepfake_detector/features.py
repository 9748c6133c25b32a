"""Cheap per-image statistics shared by validation (label-issue model) and drift.

All take an RGB uint8 array (H, W, 3), computed at a fixed size so files of any
resolution are comparable.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

STAT_SIZE = 64
SPECTRUM_BINS = 12


def _gray(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def radial_spectrum(gray: np.ndarray, bins: int = SPECTRUM_BINS) -> np.ndarray:
    """Mean log power per radial frequency band (DC excluded), low to high."""
    f = np.fft.fftshift(np.fft.fft2(gray - gray.mean()))
    power = np.log1p(np.abs(f) ** 2)
    h, w = gray.shape
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(yy - h / 2, xx - w / 2) / (min(h, w) / 2)
    idx = np.clip((r * bins).astype(int), 0, bins)
    sums = np.bincount(idx.ravel(), power.ravel(), bins + 1)[:bins]
    counts = np.bincount(idx.ravel(), minlength=bins + 1)[:bins]
    return sums / np.maximum(counts, 1)


def image_stats(rgb: np.ndarray) -> dict[str, float]:
    """brightness, contrast, saturation, sharpness (Laplacian variance), hf_energy share."""
    gray = _gray(rgb)
    lap = (-4 * gray[1:-1, 1:-1] + gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:])
    mx, mn = rgb.max(axis=2).astype(np.float32), rgb.min(axis=2).astype(np.float32)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1), 0)
    f = np.abs(np.fft.fftshift(np.fft.fft2(gray - gray.mean()))) ** 2
    h, w = gray.shape
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(yy - h / 2, xx - w / 2) / (min(h, w) / 2)
    total = float(f.sum()) or 1.0
    return {
        "brightness": float(gray.mean() / 255),
        "contrast": float(gray.std() / 255),
        "saturation": float(sat.mean()),
        "sharpness": float(lap.var()),
        "hf_energy": float(f[r > 0.5].sum() / total),
    }


def cheap_features(rgb: np.ndarray) -> list[float]:
    """A small vector for the label-issue model: colour moments, stats, radial spectrum."""
    if rgb.shape[:2] != (STAT_SIZE, STAT_SIZE):
        rgb = np.asarray(Image.fromarray(rgb).resize((STAT_SIZE, STAT_SIZE), Image.Resampling.BILINEAR))
    x = rgb.astype(np.float32) / 255
    moments = list(x.mean(axis=(0, 1))) + list(x.std(axis=(0, 1)))
    stats = image_stats(rgb)
    return [float(v) for v in moments + list(stats.values()) + list(radial_spectrum(_gray(rgb)))]


def jpeg_quality(img: Image.Image) -> float:
    """Estimated JPEG quality (1-100) from the luminance quantisation table; 100 for non-JPEG."""
    tables = getattr(img, "quantization", None)
    if not tables:
        return 100.0
    # IJG standard luminance table (quality 50), in natural order; Pillow returns zigzag order
    # but the mean ratio is order-independent.
    std = np.array([16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40,
                    57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35,
                    55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112,
                    100, 103, 99], np.float64)
    q = np.asarray(tables[min(tables)], np.float64)
    scale = float(np.mean(q) / np.mean(std)) * 100  # IJG: table = std * scale / 100
    quality = (200 - scale) / 2 if scale <= 100 else 5000 / scale
    return float(np.clip(quality, 1, 100))
