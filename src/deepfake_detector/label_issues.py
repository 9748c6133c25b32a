"""Likely-mislabeled images by confident learning (cleanlab) on cheap features.

Out-of-fold probabilities from a logistic regression on `features.cheap_features`; cleanlab's
`find_label_issues` ranks the suspects; a file is flagged only if cleanlab flags it AND the
model's probability for its given label is below `min_self_confidence`.
"""

from __future__ import annotations

import numpy as np


def find_label_issues(features: np.ndarray, labels: np.ndarray, folds: int,
                      min_self_confidence: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
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
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probs = cross_val_predict(model, features, labels, cv=cv, method="predict_proba")
    self_conf = probs[np.arange(n), labels]
    flags = cl_find(labels=labels, pred_probs=probs) & (self_conf < min_self_confidence)
    return flags, self_conf
