"""Cheap per-image statistics shared by validation (label-issue model) and drift.

All take an RGB uint8 array (H, W, 3), computed at a fixed size so files of any
resolution are comparable.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

STAT_SIZE = 64
SPECTRUM_BINS = 12


def _gray(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


@lru_cache(maxsize=8)
def _radius(h: int, w: int) -> np.ndarray:
    """Distance of each (fftshifted) frequency from DC, 1.0 = half the shorter side."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.hypot(yy - h / 2, xx - w / 2) / (min(h, w) / 2)


@lru_cache(maxsize=8)
def _bands(h: int, w: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.clip((_radius(h, w) * bins).astype(int), 0, bins).ravel()
    return idx, np.bincount(idx, minlength=bins + 1)[:bins]


def _power(gray: np.ndarray) -> np.ndarray:
    return np.abs(np.fft.fftshift(np.fft.fft2(gray - gray.mean()))) ** 2


def _radial(power: np.ndarray, bins: int) -> np.ndarray:
    idx, counts = _bands(*power.shape, bins)
    sums = np.bincount(idx, np.log1p(power).ravel(), bins + 1)[:bins]
    return sums / np.maximum(counts, 1)


def radial_spectrum(gray: np.ndarray, bins: int = SPECTRUM_BINS) -> np.ndarray:
    """Mean log power per radial frequency band (DC excluded), low to high."""
    return _radial(_power(gray), bins)


def _stats(rgb: np.ndarray, gray: np.ndarray, power: np.ndarray) -> dict[str, float]:
    lap = (-4 * gray[1:-1, 1:-1] + gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:])
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]  # elementwise max/min: axis=2 reductions are 20x slower
    mx = np.maximum(np.maximum(r, g), b).astype(np.float32)
    mn = np.minimum(np.minimum(r, g), b).astype(np.float32)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1), 0)
    total = float(power.sum()) or 1.0
    return {
        "brightness": float(gray.mean() / 255),
        "contrast": float(gray.std() / 255),
        "saturation": float(sat.mean()),
        "sharpness": float(lap.var()),
        "hf_energy": float(power[_radius(*gray.shape) > 0.5].sum() / total),
    }


def image_stats(rgb: np.ndarray) -> dict[str, float]:
    """brightness, contrast, saturation, sharpness (Laplacian variance), hf_energy share."""
    gray = _gray(rgb)
    return _stats(rgb, gray, _power(gray))


FEATURE_SIZE = 32  # cheap_features works on a 2x-reduced STAT_SIZE image: 4x fewer pixels to pay for


@lru_cache(maxsize=4)
def _feature_grids(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For an unshifted n x n FFT: band one-hot (n*n, bins), band sizes, and the r > 0.5 mask."""
    radius = np.fft.ifftshift(_radius(n, n)).ravel()  # grid in FFT order: no fftshift per image
    idx = np.clip((radius * SPECTRUM_BINS).astype(int), 0, SPECTRUM_BINS)
    onehot = np.zeros((n * n, SPECTRUM_BINS))
    keep = idx < SPECTRUM_BINS
    onehot[np.flatnonzero(keep), idx[keep]] = 1.0
    return onehot, np.maximum(onehot.sum(0), 1), radius > 0.5


def cheap_features(rgbs: np.ndarray) -> np.ndarray:
    """(B, n, n, 3) uint8, n = FEATURE_SIZE or 2 x FEATURE_SIZE -> (B, 23) label-issue fallback features.

    Colour moments (6), brightness/contrast/saturation/sharpness/hf_energy (5) and the radial
    spectrum (12) at FEATURE_SIZE px, for the whole batch in one set of numpy calls. Validation
    computes them for every file, so they are kept cheap (validation runs at decode speed).
    """
    import scipy.fft

    if rgbs.shape[1] == 2 * FEATURE_SIZE:  # 2x2 mean pooling (10x faster than reshape().mean())
        r = rgbs.astype(np.float32)
        rgbs = (r[:, 0::2, 0::2] + r[:, 1::2, 0::2] + r[:, 0::2, 1::2] + r[:, 1::2, 1::2]) * 0.25
    b = len(rgbs)
    planes = np.ascontiguousarray(rgbs.transpose(0, 3, 1, 2), np.float32)  # (B, 3, n, n)
    x = planes.reshape(b, 3, -1) / 255
    gray = np.einsum("bchw,c->bhw", planes, np.array([0.299, 0.587, 0.114], np.float32))
    flat = gray.reshape(b, -1)
    # scipy's FFT: 10x faster than numpy's on (B, n, n) float32 here
    power = (np.abs(scipy.fft.fft2(gray - flat.mean(1)[:, None, None])) ** 2).reshape(b, -1)
    lap = (-4 * gray[:, 1:-1, 1:-1] + gray[:, :-2, 1:-1] + gray[:, 2:, 1:-1] + gray[:, 1:-1, :-2]
           + gray[:, 1:-1, 2:]).reshape(b, -1)
    mx, mn = planes.max(1), planes.min(1)
    sat = ((mx - mn) / np.maximum(mx, 1)).reshape(b, -1)  # 0 where mx = 0 (then mn = 0 too)
    onehot, counts, high = _feature_grids(FEATURE_SIZE)
    total = power.sum(1)
    hf = power[:, high].sum(1) / np.where(total > 0, total, 1)
    radial = (np.log1p(power) @ onehot) / counts
    return np.column_stack([x.mean(2), x.std(2), flat.mean(1) / 255, flat.std(1) / 255, sat.mean(1),
                            lap.var(1), hf, radial]).astype(np.float64)


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
