"""Binary detection metrics (fake = positive class = 1), via scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def choose_threshold(y: np.ndarray, prob: np.ndarray, objective: str = "youden", max_fpr: float = 0.05) -> float:
    """The operating point on validation data; 0.5 if undefined. youden: max TPR - FPR (balanced accuracy);
    max_fpr: the lowest threshold whose real FPR on val is <= max_fpr (the most recall a user gets at that rate
    of real faces called fake)."""
    if len(np.unique(y)) < 2:
        return 0.5
    fpr, tpr, thr = skm.roc_curve(y, prob, drop_intermediate=objective != "max_fpr")
    if objective == "max_fpr":
        best = int(np.flatnonzero(fpr <= max_fpr).max())  # fpr[0] == 0: always one
        thr_best = thr[best] if np.isfinite(thr[best]) else thr[min(best + 1, len(thr) - 1)]
        return float(np.clip(thr_best, 1e-6, 1 - 1e-6))
    j = tpr - fpr
    best = int(np.argmax(j))
    return float(np.clip(thr[best], 1e-6, 1 - 1e-6))


def fit_platt(logit: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Platt scaling on validation logits: p = sigmoid(a * logit + b), by logistic regression with a mild
    L2 penalty (C=1): a val set the model separates perfectly would otherwise drive `a` to infinity and
    every probability to exactly 0 or 1 (ties that destroy the ranking). The identity (a=1, b=0) when
    val has one class or the fit would reverse the ranking."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y, int)
    if len(np.unique(y)) < 2:
        return {"a": 1.0, "b": 0.0}
    lr = LogisticRegression(C=1.0, max_iter=1000).fit(np.asarray(logit, np.float64).reshape(-1, 1), y)
    a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    return {"a": round(a, 6), "b": round(b, 6)} if a > 0 else {"a": 1.0, "b": 0.0}


def calibrated(logit: np.ndarray, cal: dict[str, float] | None) -> np.ndarray:
    """Fake probability from logits, through the stored Platt scaling (none: plain sigmoid)."""
    z = np.asarray(logit, np.float64)
    if cal:
        z = cal["a"] * z + cal["b"]
    return 1 / (1 + np.exp(-z))  # float64: probabilities near 0 and 1 keep their order


def _bin_index(prob: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width probability bin of each score, 0 .. bins-1."""
    return np.clip(np.digitize(prob, np.linspace(0, 1, bins + 1)[1:-1]), 0, bins - 1)


def reliability_table(y: np.ndarray, prob: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Per probability bin (equal width): mean predicted fake probability, observed share of fakes, count."""
    idx = _bin_index(prob, bins)
    return [{"bin": b, "mean_predicted": round(float(prob[idx == b].mean()), 6),
             "fraction_fake": round(float(np.asarray(y)[idx == b].mean()), 6), "n": int((idx == b).sum())}
            for b in range(bins) if (idx == b).any()]


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, bins: int = 15) -> float:
    idx = _bin_index(prob, bins)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(prob[m].mean() - y[m].mean())
    return float(ece)


def equal_error_rate(y: np.ndarray, prob: np.ndarray) -> float:
    fpr, tpr, _ = skm.roc_curve(y, prob)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2)


def tpr_at_fpr(y: np.ndarray, prob: np.ndarray, max_fpr: float = 0.01) -> float:
    fpr, tpr, _ = skm.roc_curve(y, prob)
    ok = fpr <= max_fpr
    return float(tpr[ok].max()) if ok.any() else 0.0


def binary_metrics(y: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, float]:
    """Threshold metrics at `threshold` plus ranking and calibration metrics."""
    y, prob = np.asarray(y, int), np.asarray(prob, float)
    pred = (prob >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    out = {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, zero_division=0),
        "recall": skm.recall_score(y, pred, zero_division=0),
        "f1": skm.f1_score(y, pred, zero_division=0),
        "roc_auc": skm.roc_auc_score(y, prob) if both else float("nan"),
        "average_precision": skm.average_precision_score(y, prob) if both else float("nan"),
        "eer": equal_error_rate(y, prob) if both else float("nan"),
        "tpr_at_1pct_fpr": tpr_at_fpr(y, prob, 0.01) if both else float("nan"),
        "brier": skm.brier_score_loss(y, prob) if both else float(np.mean((prob - y) ** 2)),
        "ece": expected_calibration_error(y, prob),
        "fpr_real": fp / max(fp + tn, 1),
        "threshold": threshold,
        "n": len(y),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
    }
    return {k: (int(v) if k in ("n", "tp", "fp", "tn", "fn") else round(float(v), 6)) for k, v in out.items()}


CI_METRICS = ("roc_auc", "accuracy", "f1", "fpr_real")


def bootstrap_indices(n: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_boot, n) resampled row indices; the same for every model scored on the same rows (paired)."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def resampled(name: str, y: np.ndarray, prob: np.ndarray, threshold: float, idx: np.ndarray) -> np.ndarray:
    """`metric_value(name, ...)` on every resample of idx at once (n_boot,); NaN where a ranking metric is
    undefined (one class drawn). Vectorised: ROC-AUC as the Mann-Whitney statistic on average ranks (ties
    counted half, as scikit-learn), the other metrics from per-resample confusion counts."""
    from scipy.stats import rankdata

    y, prob = np.asarray(y, int), np.asarray(prob, float)
    yy = y[idx]  # (n_boot, n)
    pos = yy.sum(1)
    neg = yy.shape[1] - pos
    if name == "roc_auc":
        ranks = rankdata(prob[idx], axis=1)
        u = (ranks * yy).sum(1) - pos * (pos + 1) / 2
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((pos > 0) & (neg > 0), u / (pos * neg), np.nan)
    if name == "average_precision":  # no closed form worth vectorising: per resample
        return np.array([metric_value(name, y[r], prob[r], threshold) for r in idx])
    pred = (prob >= threshold).astype(int)[idx]
    if name == "accuracy":
        return (pred == yy).mean(1)
    if name == "fpr_real":  # the share of the drawn reals called fake (NaN when none was drawn)
        fp = (pred & (1 - yy)).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(neg > 0, fp / neg, np.nan)
    tp = (pred & yy).sum(1)
    denom = 2 * tp + (pred & (1 - yy)).sum(1) + ((1 - pred) & yy).sum(1)  # 2tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)  # f1, 0 when undefined (zero_division=0)


def bootstrap_ci(y: np.ndarray, prob: np.ndarray, threshold: float, idx: np.ndarray,
                 level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of ROC-AUC, accuracy and F1 over the resamples in idx."""
    alpha = (1 - level) / 2
    out = {}
    for k in CI_METRICS:
        v = resampled(k, y, prob, threshold, idx)
        v = v[np.isfinite(v)]
        out[k] = ([round(float(np.quantile(v, alpha)), 6), round(float(np.quantile(v, 1 - alpha)), 6)] if len(v)
                  else [float("nan"), float("nan")])
    return out


def ci_record(ci: dict[str, list[float]]) -> dict[str, dict[str, float | None]]:
    """Intervals as they are written to metrics files: {metric: {"low", "high"}}, numbers that `dvc metrics
    diff` shows (it skips lists); NaN (an undefined metric) becomes null."""
    clean = lambda v: None if v is None or v != v else v  # noqa: E731 - JSON has no NaN
    return {k: {"low": clean(lo), "high": clean(hi)} for k, (lo, hi) in ci.items()}


def ci_bounds(m: dict, key: str) -> tuple[float | None, float | None]:
    """(low, high) of metric `key` from a metrics record's `ci95`, or (None, None). Reads both the written form
    ({"low", "high"}) and the [low, high] pairs of earlier releases (older commits in a metrics diff)."""
    v = (m.get("ci95") or {}).get(key)
    if isinstance(v, dict):
        return v.get("low"), v.get("high")
    return (v[0], v[1]) if v else (None, None)


def metric_value(name: str, y: np.ndarray, prob: np.ndarray, threshold: float) -> float:
    """One metric by name: ranking metrics from prob (NaN with one class), the others at threshold."""
    if name in ("roc_auc", "average_precision"):
        if len(np.unique(y)) < 2:
            return float("nan")
        return float(skm.roc_auc_score(y, prob) if name == "roc_auc" else skm.average_precision_score(y, prob))
    pred = (prob >= threshold).astype(int)
    return float((pred == y).mean()) if name == "accuracy" else float(skm.f1_score(y, pred, zero_division=0))


def paired_difference(name: str, y: np.ndarray, a: np.ndarray, thr_a: float, b: np.ndarray, thr_b: float,
                      idx: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """metric(a) - metric(b) on the same images, with its paired percentile bootstrap interval over idx."""
    d = resampled(name, y, a, thr_a, idx) - resampled(name, y, b, thr_b, idx)
    diffs = d[np.isfinite(d)]
    point = metric_value(name, y, a, thr_a) - metric_value(name, y, b, thr_b)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(diffs, [alpha, 1 - alpha]) if len(diffs) else (float("nan"), float("nan"))
    return {"difference": round(point, 6), "ci_low": round(float(lo), 6), "ci_high": round(float(hi), 6),
            "n_boot": len(diffs)}
