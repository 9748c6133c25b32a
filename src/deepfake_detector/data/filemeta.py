"""Per-file validation work, one pass over each file's bytes: sha256, decode, pHash, statistics.

    records = read_files(paths, limits, max_bytes, cached_keys, version, workers=0)  # 0 = every core

Runs in worker processes (`dfd validate --workers N`), so this module imports no torch: a worker
starts in about a second. A file whose `sha256:version` key is cached is read and hashed, not decoded.
Memory stays bounded: a file over `max_bytes` (validate.max_file_mb) is hashed in chunks and never read
whole or decoded; every other file is opened through core.images.open_image (format allowlist, pixel cap).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .features import FEATURE_SIZE, cheap_features
from ..core.hashing import phash
from ..core.faces import FaceFinder, FinderSettings
from ..core.images import DecodeLimits, ImageRefused, clean_message, decode_image, open_image, sniff, to_rgb

CACHED_KEYS = ("decodes", "format_allowed", "error", "format", "mode", "bands", "width", "height", "n_frames",
               "exif_orientation", "phash", "phash_mirror", "features", "n_faces", "face")
HASH_CHUNK = 2**20


def decode_metadata(data: bytes, limits: DecodeLimits) -> tuple[dict[str, Any], np.ndarray | None]:
    """Decode image bytes once; never raises. Returns (metadata with CACHED_KEYS but "features",
    the FEATURE_SIZE x FEATURE_SIZE RGB image the features are computed from, batched, or None).

    JPEGs are decoded in draft mode at the smallest DCT scale (1/2, 1/4, 1/8) that is still at least
    FEATURE_SIZE (32) px: libjpeg still entropy-decodes every byte (a truncated or corrupt file fails
    as in a full decode) but skips most of the inverse DCT. pHash (and the pHash of the mirror image) and the
    statistics are computed from that image resized to 32 x 32 (comparable across resolutions; a 256 px JPEG
    decodes at 1/8 straight to 32 px). A format outside the allowlist is never handed to a decoder:
    format_allowed False, decodes None (not tried).
    """
    import io

    meta: dict[str, Any] = {k: None for k in CACHED_KEYS}
    meta.update(decodes=False, format_allowed=True, n_frames=None)
    if not data:
        meta["error"] = "empty file"
        return meta, None
    try:
        with open_image(io.BytesIO(data), limits) as img:
            w, h = img.size
            meta.update(format=img.format, mode=img.mode, bands=len(img.getbands()),
                        width=w, height=h, n_frames=int(getattr(img, "n_frames", 1)),
                        exif_orientation=int(img.getexif().get(0x0112, 1)))
            img.draft(None, (FEATURE_SIZE, FEATURE_SIZE))  # JPEG only; other formats ignore it
            img.load()
            rgb = to_rgb(img) if img.mode not in ("I;16", "I;16B", "I;16L", "I", "F") else None
    except ImageRefused as exc:
        if exc.kind == "format":
            meta.update(decodes=None, format_allowed=False, format=sniff(data[:16]))
        meta["error"] = str(exc)
        return meta, None
    except Exception as exc:  # noqa: BLE001 - any decoder failure means unreadable
        meta["error"] = f"{type(exc).__name__}: {clean_message(exc)}"
        return meta, None
    meta["decodes"] = True
    if rgb is None:
        return meta, None
    if meta["exif_orientation"] in (5, 6, 7, 8):
        meta["width"], meta["height"] = meta["height"], meta["width"]
    small = rgb if rgb.size == (FEATURE_SIZE, FEATURE_SIZE) else rgb.resize((FEATURE_SIZE, FEATURE_SIZE),
                                                                        Image.Resampling.BILINEAR)
    meta["phash"] = phash(small)
    meta["phash_mirror"] = phash(small.transpose(Image.Transpose.FLIP_LEFT_RIGHT))  # mirrors group in the split
    return meta, np.asarray(small)


_SKIP: frozenset[str] = frozenset()
_VERSION = ""
_LIMITS = DecodeLimits(0, ())
_MAX_BYTES = 0
_FINDER: FaceFinder | None = None


def _init(skip: frozenset[str], version: str, limits: DecodeLimits, max_bytes: int,
          finder: FinderSettings | None = None) -> None:
    global _SKIP, _VERSION, _LIMITS, _MAX_BYTES, _FINDER
    _SKIP, _VERSION, _LIMITS, _MAX_BYTES = skip, version, limits, max_bytes
    _FINDER = None if finder is None else FaceFinder(finder)


def find_faces(data: bytes, meta: dict[str, Any], limits: DecodeLimits, finder: FaceFinder) -> None:
    """n_faces and the largest face's record (core.faces.Face.to_json: box + 68 landmarks) of a decodable
    picture, at full resolution; a failure leaves n_faces None (the picture is judged on its other columns)."""
    try:
        faces = finder.find(decode_image(data, limits))
    except Exception:  # noqa: BLE001 - decodes in draft mode but not fully: unreadable by its own checks
        return
    meta["n_faces"] = len(faces)
    meta["face"] = faces[0].to_json() if faces else ""


def _record(path: str) -> tuple[dict[str, Any], np.ndarray | None]:
    """{bytes, sha256, key} (+ meta unless cached); a file over the size cap is hashed in chunks, never decoded."""
    try:
        size = os.stat(path).st_size
        if size > _MAX_BYTES:
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                while chunk := fh.read(HASH_CHUNK):
                    h.update(chunk)
            return {"bytes": size, "sha256": h.hexdigest(), "key": None, "decodes": False,
                    "error": f"file of {size / 2**20:.1f} MB is over validate.max_file_mb "
                             f"({_MAX_BYTES / 2**20:g} MB): not read"}, None
        with open(path, "rb") as fh:
            data = fh.read(_MAX_BYTES + 1)
    except OSError as exc:
        return {"bytes": 0, "sha256": None, "key": None, "decodes": False, "error": clean_message(exc)}, None
    sha = hashlib.sha256(data).hexdigest()
    key = f"{sha}:{_VERSION}"
    rec: dict[str, Any] = {"bytes": len(data), "sha256": sha, "key": key}
    if key in _SKIP:
        return rec, None
    rec["meta"], small = decode_metadata(data, _LIMITS)
    if _FINDER is not None and rec["meta"]["decodes"]:
        find_faces(data, rec["meta"], _LIMITS, _FINDER)
    return rec, small


def _chunk(paths: list[str]) -> list[dict[str, Any]]:
    """Records for a chunk of files: {"bytes", "sha256", "key"} plus "meta" unless the key is cached
    ("error" on OSError). The statistics of the chunk's decoded images are computed as one batch."""
    recs, smalls = zip(*map(_record, paths))
    todo = [i for i, s in enumerate(smalls) if s is not None]
    feats = cheap_features(np.stack([smalls[i] for i in todo])) if todo else []
    for i, f in zip(todo, feats):
        recs[i]["meta"]["features"] = [float(v) for v in f]
    return list(recs)


CHUNK = 32


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def read_files(paths: Sequence[str | Path], limits: DecodeLimits, max_bytes: int, cached_keys: frozenset[str],
               version: str, workers: int = 0, finder: FinderSettings | None = None) -> Iterator[dict[str, Any]]:
    """One record per path, in order. workers: processes (0 = every core, 1 = this process). finder: also find
    each picture's faces and landmarks (n_faces, face)."""
    if workers == 0:  # auto: every core, but a pool is not worth starting for a handful of files
        workers = default_workers() if len(paths) >= 64 else 1
    args = (frozenset(cached_keys), version, limits, max_bytes, finder)
    chunks = [list(map(str, paths[i:i + CHUNK])) for i in range(0, len(paths), CHUNK)]
    if workers == 1:
        _init(*args)
        for chunk in chunks:
            yield from _chunk(chunk)
        return
    # forkserver: workers do not inherit the parent's torch/OpenMP threads (fork can deadlock on them);
    # the server imports this module once, so each worker starts as a cheap fork of it
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=args) as pool:
        for recs in pool.map(_chunk, chunks):
            yield from recs
