"""Likely-mislabeled images by confident learning (cleanlab) on frozen pretrained embeddings.

Out-of-fold probabilities from a logistic regression on per-file features (frozen ImageNet
embeddings, computed by the model layer's `model.embeddings.embed_files` and handed in by the
caller, or the cheap colour/spectrum statistics of `data.features`); cleanlab's `find_label_issues`
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


def thumbnails_html(rows: list[dict], data_dir: Path, out: Path, method: str, removed: bool,
                    limit: int = 60) -> None:
    """A self-contained page (inline PNG thumbnails, no network) of the top flagged images: given label,
    p(given label), and what happened to each file (removed from the cleaned dataset, or kept)."""
    import base64
    import html
    import io

    from ..core.images import load_rgb

    action = "<b>removed</b> from the cleaned dataset" if removed else "kept (flag only)"
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
                     f'labelled <b>{r["label"]}</b>, p(label) = {r["label_confidence"]:.3f}<br>{action}'
                     '</figcaption></figure>')
    out.write_text(
        "<!doctype html><meta charset='utf-8'><title>Likely mislabeled images</title>"
        "<style>body{font-family:sans-serif;margin:1em}figure{display:inline-block;width:150px;margin:6px;"
        "vertical-align:top;font-size:11px;word-break:break-all}img{width:128px;height:128px;object-fit:contain;"
        "background:#eee}</style>"
        f"<h1>Likely mislabeled images: {len(rows)} flagged" + (f", top {limit} shown" if len(rows) > limit else "")
        + f"</h1><p>Method: {html.escape(method)}. Files in data/ are never touched. "
        + ("Flagged files were <b>removed</b> from the cleaned dataset (validate.label_issue.remove: true)."
           if removed else "Flagged files were kept (validate.label_issue.remove: false): review them.")
        + " Ranked by the out-of-fold probability of the given label, lowest first.</p>"
        + ("".join(cells) if rows else "<p><b>0 flagged.</b></p>") + "\n")
