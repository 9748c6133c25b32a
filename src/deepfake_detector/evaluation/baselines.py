"""Stage `baselines`: the comparison models, on the same splits, reusing the training code.

    dfd baselines artifacts/splits artifacts/baselines reports/baselines

- plain:       the same backbone fine-tuned plainly (no SE attention, no extra convs, no GAN)
- gan_off:     the hybrid with the GAN term off (ablation); `gan_on` (weight 0.3) instead when the main
               model trains without it
- probe_lr:    frozen ImageNet EfficientNet-Lite0 features + logistic regression (cheap and strong:
               every fine-tuned model must clear it)
- spectrum_lr: FFT radial spectrum + logistic regression (a classic GAN-trace detector)
"""

from __future__ import annotations

import json
from pathlib import Path

from .metrics import binary_metrics, choose_threshold
from ..params import Params, merge
from ..serving.scoring import SPECTRUM_LR_BINS, SpectrumScorer, spectrum_features
from ..data.splits_io import read_split, write_seen
from ..model.tensorcache import decode_all

CNN_BASELINES = {
    "plain": {"model": {"se_reduction": 0, "extra_convs": 0}, "train": {"gan_weight": 0.0}},
    "gan_off": {"train": {"gan_weight": 0.0}},
}
GAN_ON_WEIGHT = 0.3  # the GAN ablation's weight when the main model trains without the GAN term


def cnn_baselines(p: Params) -> dict[str, dict]:
    """The CNN comparisons for these params: the GAN ablation flips whatever the main model does."""
    if p.train.gan_weight > 0:
        return CNN_BASELINES
    return {"plain": CNN_BASELINES["plain"], "gan_on": {"train": {"gan_weight": GAN_ON_WEIGHT}}}


def _override(p: Params, patch: dict) -> Params:
    """p with a baseline's patch deep-merged (params.merge, as load_params applies overrides)."""
    return Params.model_validate(merge(p.model_dump(by_alias=True), patch))


def train_spectrum_lr(splits_dir: Path, out_dir: Path, size: int, seed: int) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    tr, va = read_split(splits_dir, "train"), read_split(splits_dir, "val")
    xtr, oktr = decode_all(tr["path"].tolist(), size, progress=False)
    xva, okva = decode_all(va["path"].tolist(), size, progress=False)
    ftr, ytr = spectrum_features(xtr[oktr]), tr["y"].to_numpy()[oktr]
    scaler = StandardScaler().fit(ftr)
    lr = LogisticRegression(max_iter=5000, C=1.0, random_state=seed).fit(scaler.transform(ftr), ytr)
    yva = va["y"].to_numpy()[okva]
    pva = lr.predict_proba(scaler.transform(spectrum_features(xva[okva])))[:, 1]
    thr = choose_threshold(yva, pva)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SpectrumScorer.FILE).write_text(json.dumps({
        "image_size": size, "threshold": thr, "bins": SPECTRUM_LR_BINS,
        "mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(),
        "coef": lr.coef_[0].tolist(), "intercept": float(lr.intercept_[0]),
    }, indent=1))
    write_seen(out_dir, splits_dir)
    return binary_metrics(yva, pva, thr)


def train_probe_lr(splits_dir: Path, out_dir: Path, size: int, seed: int) -> dict[str, float]:
    from ..model.probe import fit_probe, frozen_features
    from ..serving.scoring import ProbeScorer

    tr, va = read_split(splits_dir, "train"), read_split(splits_dir, "val")
    xtr, oktr = decode_all(tr["path"].tolist(), size, progress=False)
    xva, okva = decode_all(va["path"].tolist(), size, progress=False)
    scaler, lr = fit_probe(frozen_features(xtr[oktr], size), tr["y"].to_numpy()[oktr], seed)
    yva = va["y"].to_numpy()[okva]
    pva = lr.predict_proba(scaler.transform(frozen_features(xva[okva], size)))[:, 1]
    thr = choose_threshold(yva, pva)
    ProbeScorer.save(out_dir, size, thr, scaler, lr)
    write_seen(out_dir, splits_dir)
    return binary_metrics(yva, pva, thr)


def run_baselines(splits_dir: str | Path, out_dir: str | Path, report_dir: str | Path, p: Params,
                  ckpt_dir: str | Path = "artifacts/baseline_checkpoints", progress: bool = True,
                  dry_run: bool = False, log_dir: str | Path | None = None) -> dict[str, dict]:
    from ..model.train import train

    splits_dir, out_dir, report_dir = Path(splits_dir), Path(out_dir), Path(report_dir)
    results = {}
    for name, patch in cnn_baselines(p).items():
        card = train(splits_dir, out_dir / name, report_dir / name, _override(p, patch),
                     ckpt_dir=Path(ckpt_dir) / name, progress=progress, dry_run=dry_run,
                     run_log=None if log_dir is None else Path(log_dir) / f"baseline-{name}.json")
        results[name] = card["val_metrics"]
    results["probe_lr"] = train_probe_lr(splits_dir, out_dir / "probe_lr", p.train.image_size, p.seed)
    results["spectrum_lr"] = train_spectrum_lr(splits_dir, out_dir / "spectrum_lr", p.train.image_size, p.seed)
    report_dir.mkdir(parents=True, exist_ok=True)
    metrics = {name: {k: m[k] for k in ("roc_auc", "accuracy", "f1")} for name, m in results.items()}
    (report_dir / "metrics.json").write_text(json.dumps({"val": metrics}, indent=2, default=float) + "\n")
    return metrics
