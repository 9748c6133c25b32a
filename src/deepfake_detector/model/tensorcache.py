"""Decode each image once into uint8 arrays; every epoch then reads arrays, not JPEGs.

    x, ok = decode_all(paths, 280, limits)                                              # in RAM
    x, ok = decode_all(paths, 280, limits, disk_dir="artifacts/cache/train", ram_limit_bytes=4 * 2**30,
                       hashes=sha256_per_file)                                          # on disk
    variants = decode_variants(paths, 256, {"clean": None, "jpeg50": fn}, limits)       # each file decoded once

Every file goes through core.images.decode_image (`limits`: format allowlist and pixel cap, from params).

Above `ram_limit_bytes` the cache is a set of shard files in `disk_dir` (at most ~SHARD_BYTES each;
raw (n, 3, S, S) uint8 arrays that np.memmap can open), written once and reused by any later run. Images go to shards by their content
hash (sha256 from the split CSVs; path + size + mtime when no hash is given), sorted within a shard,
and a shard's name hashes the decode size and its images' hashes: re-splitting or moving files
reuses every shard, and new images rebuild only the shards they fall into.
`x[idx]` then reads just the requested images with `pread` into a batch buffer: the OS page cache
does the caching and this process's resident memory stays at one batch however large the dataset
(benchmarks/cache_memory.py measures it). Sizes: 3 x S^2 bytes per image, e.g. 307 KB at S = 320
(256 px training): 0.5 GB for 1.7k images, 30.7 GB for 100k.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..core.faces import FaceInput
from ..core.images import DecodeLimits, decode_image, to_tensor

SHARD_BYTES = 256 * 2**20
WRITE_CHUNK = 256  # images decoded per write while building a shard


def cache_bytes(n: int, size: int) -> int:
    return n * 3 * size * size


class DiskCache:
    """(N, 3, S, S) uint8 images in shard files; indexing with row ids returns a torch tensor."""

    def __init__(self, files: list[Path], shard: np.ndarray, offset: np.ndarray, size: int) -> None:
        self.files, self.shard, self.offset, self.size = files, shard, offset, size
        self.shape = (len(shard), 3, size, size)
        self._fds: list[int] | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:  # picklable (e.g. DataLoader workers): files reopen there
        return {**self.__dict__, "_fds": None}

    def __getitem__(self, idx) -> torch.Tensor:
        rows = np.atleast_1d(np.asarray(idx, dtype=np.int64))
        item = 3 * self.size * self.size
        out = np.empty((len(rows), 3, self.size, self.size), np.uint8)
        flat = out.reshape(len(rows), item)
        if self._fds is None:
            self._fds = [os.open(f, os.O_RDONLY) for f in self.files]
        for j, i in enumerate(rows):
            s = self.shard[i]
            if os.preadv(self._fds[s], [flat[j]], int(self.offset[i]) * item) != item:
                raise OSError(f"{self.files[s]}: short read (cache file truncated?)")
        t = torch.from_numpy(out)
        return t[0] if np.ndim(idx) == 0 else t

    def __del__(self) -> None:
        for fd in self._fds or []:
            os.close(fd)


def _content_ids(paths: Sequence[str], hashes: Sequence[str] | None) -> list[str]:
    """A hex id per image: its content hash, or a hash of path + size + mtime."""
    if hashes is not None:
        return [str(h) for h in hashes]
    out = []
    for p in paths:
        st = os.stat(p) if os.path.exists(p) else None
        key = f"{p}\0{st.st_size if st else -1}\0{st.st_mtime_ns if st else -1}"
        out.append(hashlib.sha256(key.encode()).hexdigest())
    return out


def _shards(ids: list[str], size: int) -> list[np.ndarray]:
    """Row indices per shard: bucket by hash prefix (a power-of-two count, so it only changes when
    the dataset doubles), content-hash order within a bucket."""
    n_min = -(-cache_bytes(len(ids), size) // SHARD_BYTES)
    n_buckets = 1 << max(0, (n_min - 1).bit_length())
    bucket = np.array([int(i[:8], 16) % n_buckets if i else 0 for i in ids], dtype=np.int64)
    order = np.lexsort((np.array(ids), bucket))
    return [r for r in np.split(order, np.searchsorted(bucket[order], np.arange(1, n_buckets))) if len(r)]


def decode_all(paths: Sequence[str], size: int, limits: DecodeLimits, progress: bool = True, desc: str = "decode",
               transform: Callable[[Image.Image], Image.Image] | None = None, workers: int = 2,
               disk_dir: str | Path | None = None, ram_limit_bytes: int | None = None,
               hashes: Sequence[str] | None = None, faces: Sequence[str | None] | None = None,
               face_input: FaceInput | None = None, crop_size: int | None = None
               ) -> tuple[torch.Tensor | DiskCache, np.ndarray]:
    """(N, 3, size, size) uint8 images (a tensor in RAM, or a DiskCache) and a mask of files that decoded.

    Unreadable or refused files become zero images with ok=False (callers skip or count them).
    transform, if given, is applied to the decoded full-resolution RGB image before resizing
    (used by the robustness card to JPEG/blur/resize at source resolution). face_input: each picture is first
    cropped to its face (faces: the row's stored record, core/faces.py) as chosen for a crop_size model input
    (default size; size > crop_size widens the window at the same scale).
    """
    crop = Cropper.of(faces, face_input, crop_size or size, size)
    on_disk = (disk_dir is not None and ram_limit_bytes is not None and transform is None
               and cache_bytes(len(paths), size) > ram_limit_bytes)
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, leave=False)
    if not on_disk:
        out = decode_variants(paths, size, {"x": transform}, limits, workers, bar, crop)["x"]
        bar.close()
        return out
    ids = _content_ids(paths, hashes)
    if crop is not None:  # the shard holds crops: its id names the face record and the policy too
        tag = f"{face_input.policy.to_dict()} {crop_size or size}"
        ids = [hashlib.sha256(f"{i} {f} {tag}".encode()).hexdigest() for i, f in zip(ids, faces or [None] * len(ids))]
    files, shard_of, offset = [], np.zeros(len(paths), np.int32), np.zeros(len(paths), np.int64)
    ok = np.zeros(len(paths), dtype=bool)
    Path(disk_dir).mkdir(parents=True, exist_ok=True)
    for s, rows in enumerate(_shards(ids, size)):
        base = Path(disk_dir) / hashlib.sha256(f"v2 {size} {' '.join(ids[i] for i in rows)}".encode()).hexdigest()[:24]
        data, mask = base.with_suffix(".u8"), base.with_suffix(".ok.npy")
        if not (data.is_file() and mask.is_file()):  # else: built by an earlier run, reused
            tmp, part_ok = data.with_suffix(".tmp"), []
            with open(tmp, "wb") as fh:  # decoded in chunks, appended: memory holds one chunk
                for c in range(0, len(rows), WRITE_CHUNK):
                    part = rows[c:c + WRITE_CHUNK]
                    chunk_crop = None if crop is None else crop.subset(part)
                    buf, chunk_ok = decode_variants([paths[i] for i in part], size, {"x": None}, limits, workers, bar,
                                                    chunk_crop)["x"]
                    part_ok.append(chunk_ok)
                    fh.write(buf.numpy().tobytes())
            mask_tmp = mask.with_name(mask.name + ".tmp")
            with open(mask_tmp, "wb") as fh:
                np.save(fh, np.concatenate(part_ok))
            os.replace(tmp, data)  # complete shards only (data, then its mask): a killed build is rebuilt
            os.replace(mask_tmp, mask)
        else:
            bar.update(len(rows))
        files.append(data)
        shard_of[rows], offset[rows], ok[rows] = s, np.arange(len(rows)), np.load(mask)
    bar.close()
    return DiskCache(files, shard_of, offset, size), ok


@dataclass(frozen=True)
class Cropper:
    """Row i's decoded picture -> its face crop (core.faces.FaceInput), chosen for a crop_size model input and cut
    at out_size. records: each row's stored face record (None: no records, faces are found)."""

    face_input: FaceInput
    crop_size: int
    out_size: int
    records: tuple[str | None, ...] | None = None

    @classmethod
    def of(cls, faces: Sequence[str | None] | None, face_input: FaceInput | None, crop_size: int,
           out_size: int) -> "Cropper | None":
        """None when pictures are used whole (no face input, or a policy that finds no faces)."""
        if face_input is None or not face_input.policy.finds_faces:
            return None
        return cls(face_input, crop_size, out_size, None if faces is None else tuple(faces))

    def __call__(self, i: int, img: Image.Image) -> Image.Image:
        return self.face_input.crop(img, None if self.records is None else self.records[i], self.crop_size,
                                    self.out_size)

    def subset(self, rows: Sequence[int]) -> "Cropper":
        """The cropper of some rows (a shard's chunk), indexed from 0."""
        return replace(self, records=None if self.records is None else tuple(self.records[i] for i in rows))


def decode_variants(paths: Sequence[str], size: int, transforms: dict[str, Callable[[Image.Image], Image.Image] | None],
                    limits: DecodeLimits, workers: int = 2, bar=None,
                    crop: Cropper | None = None) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    """Each file decoded once (and cropped to its face: crop), every transform applied to that image in memory
    (None = as is): {name: ((N, 3, size, size) uint8, ok mask)}. The one decode loop of this module."""
    out = {name: (torch.zeros((len(paths), 3, size, size), dtype=torch.uint8), np.zeros(len(paths), dtype=bool))
           for name in transforms}

    def work(i: int) -> None:
        try:
            img = decode_image(paths[i], limits)
            if crop is not None:
                img = crop(i, img)
        except Exception:  # noqa: BLE001 - unreadable or refused: ok stays False everywhere
            return
        for name, fn in transforms.items():
            try:
                out[name][0][i] = to_tensor(fn(img) if fn is not None else img, size)
                out[name][1][i] = True
            except Exception:  # noqa: BLE001 - a transform that fails on one file fails only there
                continue

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(work, range(len(paths))):
            if bar is not None:
                bar.update()
    return out
