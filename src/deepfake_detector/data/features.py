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


STAT_NAMES = ("brightness", "contrast", "saturation", "sharpness", "hf_energy")


def batch_stats(rgbs: np.ndarray, fast_fft: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(B, n, n, 3) uint8 -> ((B, 5) STAT_NAMES, (B, n*n) power spectrum; FFT order with fast_fft).

    brightness, contrast, saturation, sharpness (Laplacian variance), hf_energy (power share beyond half
    the Nyquist radius). fast_fft: scipy's float32 FFT (10x faster; validation's per-file features) instead
    of numpy's float64 one (drift's statistics, comparable across releases).
    """
    b, n = len(rgbs), rgbs.shape[1]
    planes = np.ascontiguousarray(rgbs.transpose(0, 3, 1, 2), np.float32)  # (B, 3, n, n)
    gray = rgbs.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)  # (B, n, n)
    centred = gray - gray.reshape(b, -1).mean(1)[:, None, None]
    if fast_fft:  # FFT order, float32
        import scipy.fft

        power = (np.abs(scipy.fft.fft2(centred)) ** 2).reshape(b, -1)
        high = _feature_grids(n)[2]
    else:  # centred (fftshift) order: the sums below add up in the order drift's statistics always did
        power = (np.abs(np.fft.fftshift(np.fft.fft2(centred), axes=(-2, -1))) ** 2).reshape(b, -1)
        high = _radius(n, n).ravel() > 0.5
    lap = (-4 * gray[:, 1:-1, 1:-1] + gray[:, :-2, 1:-1] + gray[:, 2:, 1:-1] + gray[:, 1:-1, :-2]
           + gray[:, 1:-1, 2:]).reshape(b, -1)
    mx, mn = planes.max(1), planes.min(1)  # elementwise over channels: axis=-1 reductions are 20x slower
    sat = ((mx - mn) / np.maximum(mx, 1)).reshape(b, -1)  # 0 where mx = 0 (then mn = 0 too)
    total = power.sum(1)
    hf = power[:, high].sum(1) / np.where(total > 0, total, 1)
    flat = gray.reshape(b, -1)
    return np.column_stack([flat.mean(1) / 255, flat.std(1) / 255, sat.mean(1), lap.var(1), hf]), power


def image_stats(rgb: np.ndarray) -> dict[str, float]:
    """STAT_NAMES of one (n, n, 3) uint8 image (drift computes them at STAT_SIZE)."""
    return dict(zip(STAT_NAMES, (float(v) for v in batch_stats(rgb[None])[0][0])))


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

    Colour moments (6), batch_stats (5) and the radial spectrum (12) at FEATURE_SIZE px, for the whole
    batch in one set of numpy calls. Validation computes them for every file, so they are kept cheap.
    """
    if rgbs.shape[1] == 2 * FEATURE_SIZE:  # 2x2 mean pooling (10x faster than reshape().mean())
        r = rgbs.astype(np.float32)
        rgbs = (r[:, 0::2, 0::2] + r[:, 1::2, 0::2] + r[:, 0::2, 1::2] + r[:, 1::2, 1::2]) * 0.25
    x = np.ascontiguousarray(rgbs.transpose(0, 3, 1, 2), np.float32).reshape(len(rgbs), 3, -1) / 255
    stats, power = batch_stats(rgbs, fast_fft=True)
    onehot, counts, _ = _feature_grids(FEATURE_SIZE)
    radial = (np.log1p(power) @ onehot) / counts
    return np.column_stack([x.mean(2), x.std(2), stats, radial]).astype(np.float64)


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
