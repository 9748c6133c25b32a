"""Decode each image once into a uint8 tensor; every epoch then reads memory, not JPEGs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .images import load_rgb, to_tensor


def decode_all(paths: Sequence[str], size: int, progress: bool = True, desc: str = "decode",
               transform: Callable[[Image.Image], Image.Image] | None = None,
               workers: int = 2) -> tuple[torch.Tensor, np.ndarray]:
    """(N, 3, size, size) uint8 tensor and a bool mask of files that decoded.

    Unreadable files become zero images with ok=False (callers skip or count them).
    transform, if given, is applied to the decoded full-resolution RGB image before resizing
    (used by the robustness card to JPEG/blur/resize at source resolution).
    """
    out = torch.zeros((len(paths), 3, size, size), dtype=torch.uint8)
    ok = np.zeros(len(paths), dtype=bool)

    def work(i: int) -> None:
        try:
            img = load_rgb(paths[i])
            out[i] = to_tensor(transform(img) if transform is not None else img, size)
        except Exception:  # noqa: BLE001 - counted by the caller via ok
            return
        ok[i] = True

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(tqdm(pool.map(work, range(len(paths))), total=len(paths), desc=desc, unit="img",
                  disable=not progress, leave=False))
    return out, ok
