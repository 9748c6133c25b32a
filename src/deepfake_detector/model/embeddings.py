"""Frozen ImageNet embeddings per file, cached by sha256: the label-issue pass's strong features.

    emb = embed_files(paths, shas, limits, cache_path=Path("artifacts/cache/embeddings.npy"))   # (N, 1752) or None

`probe.frozen_features` at EMBED_SIZE, one row per file (NaN where a file does not decode). The
validate CLI hands this function to `data.validate.validate` (the data layer does not import models).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.images import DecodeLimits
from .pretrained import WeightsNotFound
from .probe import N_FEATURES, frozen_features
from .tensorcache import decode_all


EMBED_SIZE = 224  # frozen EfficientNet-Lite0 features at its native resolution


def embed_version() -> str:
    """Cached embeddings are reused only while the embedding code is unchanged."""
    import hashlib

    h = hashlib.sha256(f"size={EMBED_SIZE}".encode())
    for name in ("model/probe.py", "model/efficientnet.py", "model/tensorcache.py", "core/images.py"):
        h.update((Path(__file__).parents[1] / name).read_bytes())
    return h.hexdigest()[:12]


def _load_embedding_cache(path: Path | None) -> dict[str, np.ndarray]:
    if path is None or not path.is_file():
        return {}
    try:
        rec = np.load(path, allow_pickle=False)
        return {k.decode(): v for k, v in zip(rec["key"], rec["emb"])}
    except (ValueError, OSError, KeyError):
        return {}  # damaged or old format: recomputed


def embed_files(paths: list[Path], shas: list[str], limits: DecodeLimits, cache_path: Path | None = None,
                progress: bool = False) -> np.ndarray | None:
    """Frozen pretrained embeddings per file, cached by sha256 + embed_version(); None if no weights.

    Only files not in the cache are decoded and embedded, so re-validating after adding 1 % new files
    embeds only those. The cache keeps this run's files only (sorted: same files -> same bytes).
    """
    cache = _load_embedding_cache(cache_path)
    version = embed_version()
    keys = [f"{sha}:{version}" for sha in shas]
    todo = sorted({i for i, k in enumerate(keys) if k not in cache}, key=lambda i: keys[i])
    if todo:
        try:
            images, ok = decode_all([str(paths[i]) for i in todo], EMBED_SIZE, limits, progress, "embed")
            feats = frozen_features(images, EMBED_SIZE)
        except WeightsNotFound:
            return None
        for j, i in enumerate(todo):
            cache[keys[i]] = feats[j].astype(np.float16) if ok[j] else np.full(N_FEATURES, np.nan, np.float16)
    if cache_path is not None:
        used = sorted(set(keys))
        rec = np.zeros(len(used), dtype=[("key", f"S{max(len(k) for k in used) if used else 1}"),
                                         ("emb", np.float16, (N_FEATURES,))])
        rec["key"] = [k.encode() for k in used]
        rec["emb"] = np.stack([cache[k] for k in used]) if used else rec["emb"]
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        with open(cache_path.with_suffix(".tmp"), "wb") as fh:
            np.save(fh, rec, allow_pickle=False)
        cache_path.with_suffix(".tmp").replace(cache_path)
    return np.stack([cache[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, N_FEATURES), np.float32)
