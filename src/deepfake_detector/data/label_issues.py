"""Likely-mislabeled images: two judges, one rule.

An image is a label issue when a judge gives its own label a probability below
`validate.label_issue.max_label_probability`:
- the out-of-fold judge (a first dataset): a logistic regression on per-file features (frozen ImageNet
  embeddings, computed by the model layer's `model.embeddings.embed_files` and handed in by the caller, or the
  cheap colour/spectrum statistics of `data.features` without the weights package), each file scored by the
  model of the folds it was not in;
- a trained model (`dfd validate --label-judge MODEL`, and the champion in the retrain flow for landed batches):
  its calibrated fake probability, handed in by the caller (this layer does not import models).
Flagged files are removed from the cleaned dataset only with `validate.label_issue.remove`; either way they are
listed (label_issues.csv) and shown (label_issues.html) with their probability, so a person can put one back.
Measured in docs/validation.md (benchmarks/label_flips.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.params import LabelIssueParams


def out_of_fold(features: np.ndarray, labels: np.ndarray, folds: int, seed: int, c: float) -> np.ndarray:
    """Each row's probability of its given label from the logistic regression fitted on the other folds
    (NaN for all when a class has fewer rows than folds)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = len(labels)
    if n == 0 or np.bincount(labels, minlength=2).min() < folds:
        return np.full(n, np.nan)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=c))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probs = cross_val_predict(model, features, labels, cv=cv, method="predict_proba")
    return probs[np.arange(n), labels]


def flag_label_issues(frame: pd.DataFrame, lp: LabelIssueParams, seed: int, embeddings: np.ndarray | None = None,
                      judged: np.ndarray | None = None) -> pd.DataFrame:
    """Add label_issue, label_confidence (p(given label)) and the judge's word to `detail` (rows that are
    not duplicates or conflicts and decode). judged: a model's fake probability per row, else the out-of-fold judge."""
    frame["label_issue"] = False
    frame["label_confidence"] = np.nan
    usable = frame["decodes"].fillna(False).astype(bool) & ~frame["is_duplicate"] & ~frame["conflicting_label"]
    fake = (frame["label"] == "fake").to_numpy()
    if judged is not None:
        conf = np.where(fake, judged, 1 - np.asarray(judged, float))
        judge = "the model judge"
    else:
        usable &= frame["features"].map(lambda f: isinstance(f, list))
        if embeddings is not None:
            usable &= pd.Series(np.isfinite(embeddings).all(1), index=frame.index)
        conf = np.full(len(frame), np.nan)
        if usable.any():
            feats = (embeddings[usable.to_numpy()] if embeddings is not None
                     else np.array(frame.loc[usable, "features"].tolist(), dtype=np.float64))
            conf[usable.to_numpy()] = out_of_fold(feats, fake[usable.to_numpy()].astype(int), lp.folds, seed,
                                                  lp.c if embeddings is not None else 1.0)
        judge = "out-of-fold"
    usable &= np.isfinite(conf)
    frame.loc[usable, "label_confidence"] = conf[usable.to_numpy()]
    frame["label_issue"] = usable & (frame["label_confidence"] < lp.max_label_probability)
    for i in frame.index[frame["label_issue"] & (frame["detail"] == "")]:
        frame.at[i, "detail"] = f"p(given label)={frame.at[i, 'label_confidence']:.3f} ({judge})"
    return frame


def thumbnails_html(rows: list[dict], data_dir: Path, out: Path, method: str, removed: bool,
                    limits: "DecodeLimits", limit: int = 60) -> None:
    """A self-contained page (inline PNG thumbnails, no network) of the top flagged images: given label,
    p(given label), and what happened to each file (removed from the cleaned dataset, or kept)."""
    import base64
    import html
    import io

    from ..core.images import decode_image

    action = "<b>removed</b> from the cleaned dataset" if removed else "kept (flag only)"
    cells = []
    for r in rows[:limit]:
        try:
            img = decode_image(data_dir / r["path"], limits)
            img.thumbnail((128, 128))
            buf = io.BytesIO()
            img.save(buf, "PNG")
            src = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        except (OSError, ValueError):  # ImageRefused is a ValueError
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
