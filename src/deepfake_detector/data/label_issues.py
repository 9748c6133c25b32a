"""Likely-mislabeled images by confident learning (cleanlab) on frozen pretrained embeddings.

Out-of-fold probabilities from a logistic regression on frozen ImageNet EfficientNet-Lite0
embeddings (`probe.frozen_features`, cached per file by sha256); cleanlab's `find_label_issues`
ranks the suspects; a file is flagged only if cleanlab flags it AND the model's probability for
its given label is below `min_self_confidence`. Without the weights package the cheap colour/spectrum
features (`features.cheap_features`, held-out AUC ~0.6 on faces-a) are the fallback, and the
validation metrics say which features were used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def find_label_issues(features: np.ndarray, labels: np.ndarray, folds: int,
                      min_self_confidence: float, seed: int, c: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Return (flag per row, out-of-fold probability of the given label per row)."""
    from cleanlab.filter import find_label_issues as cl_find
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = len(labels)
    counts = np.bincount(labels, minlength=2)
    if n == 0 or counts.min() < folds:
        return np.zeros(n, bool), np.full(n, np.nan)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=c))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probs = cross_val_predict(model, features, labels, cv=cv, method="predict_proba")
    self_conf = probs[np.arange(n), labels]
    flags = cl_find(labels=labels, pred_probs=probs) & (self_conf < min_self_confidence)
    return flags, self_conf


EMBED_SIZE = 224  # frozen EfficientNet-Lite0 features at its native resolution


def embed_version() -> str:
    """Cached embeddings are reused only while the embedding code is unchanged."""
    import hashlib

    h = hashlib.sha256(f"size={EMBED_SIZE}".encode())
    for name in ("model/probe.py", "model/efficientnet.py", "model/tensorcache.py", "data/images.py"):
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


def embed_files(paths: list[Path], shas: list[str], cache_path: Path | None = None,
                progress: bool = False) -> np.ndarray | None:
    """Frozen pretrained embeddings per file, cached by sha256 + embed_version(); None if no weights.

    Only files not in the cache are decoded and embedded, so re-validating after adding 1 % new files
    embeds only those. The cache keeps this run's files only (sorted: same files -> same bytes).
    """
    from ..model.pretrained import WeightsNotFound

    try:
        from ..model.probe import N_FEATURES, frozen_features
        from ..model.tensorcache import decode_all
    except ImportError:
        return None
    cache = _load_embedding_cache(cache_path)
    version = embed_version()
    keys = [f"{sha}:{version}" for sha in shas]
    todo = sorted({i for i, k in enumerate(keys) if k not in cache}, key=lambda i: keys[i])
    if todo:
        try:
            images, ok = decode_all([str(paths[i]) for i in todo], EMBED_SIZE, progress, "embed")
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


def thumbnails_html(rows: list[dict], data_dir: Path, out: Path, limit: int = 60) -> None:
    """A self-contained page (inline PNG thumbnails, no network) of the top flagged images."""
    import base64
    import html
    import io

    from .images import load_rgb

    cells = []
    for r in rows[:limit]:
        try:
            img = load_rgb(data_dir / r["path"])
            img.thumbnail((128, 128))
            buf = io.BytesIO()
            img.save(buf, "PNG")
            src = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        except OSError:
            src = ""
        cells.append(f'<figure><img src="{src}" alt=""><figcaption>#{r["rank"]} {html.escape(r["path"])}<br>'
                     f'labelled <b>{r["label"]}</b>, p(label) = {r["label_confidence"]:.3f}</figcaption></figure>')
    out.write_text(
        "<!doctype html><meta charset='utf-8'><title>Likely mislabeled images</title>"
        "<style>body{font-family:sans-serif;margin:1em}figure{display:inline-block;width:150px;margin:6px;"
        "vertical-align:top;font-size:11px;word-break:break-all}img{width:128px;height:128px;object-fit:contain;"
        "background:#eee}</style>"
        f"<h1>Likely mislabeled images ({len(rows)} flagged, top {min(limit, len(rows))} shown)</h1>"
        "<p>Ranked by the out-of-fold probability of the given label (lowest first). Review them; "
        "set validate.label_issue.remove to drop flagged files from the cleaned dataset.</p>"
        + "".join(cells) + "\n")
