"""Decode each image once into a uint8 tensor; every epoch then reads memory, not JPEGs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .images import load_array


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
            if transform is None:
                arr = load_array(paths[i], size)
            else:
                from .images import load_rgb
                img = transform(load_rgb(paths[i]))
                arr = np.array(img.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
        except Exception:  # noqa: BLE001 - counted by the caller via ok
            return
        out[i] = torch.from_numpy(arr).permute(2, 0, 1)
        ok[i] = True

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(tqdm(pool.map(work, range(len(paths))), total=len(paths), desc=desc, unit="img",
                  disable=not progress, leave=False))
    return out, ok
