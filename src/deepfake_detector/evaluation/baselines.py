"""Stage `baselines`: the comparison models, on the same splits, reusing the training code.

    dfd baselines artifacts/splits artifacts/baselines reports/baselines

- plain:       the same backbone fine-tuned plainly (no SE attention, no extra convs, no GAN)
- gan_off:     the hybrid with its extra-fakes term off (ablation; train.extra_fakes: none); `gan_on` (the
               DCGAN term at baselines.gan_on_weight) instead when the main model trains without extra fakes.
               Both fine-tunes only with baselines.cnn_ablations
- probe_lr:    frozen ImageNet EfficientNet-Lite0 features + logistic regression (cheap and strong:
               every fine-tuned model must clear it)
- spectrum_lr: FFT radial spectrum + logistic regression (a classic GAN-trace detector)
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.images import DecodeLimits
from ..core.metrics import binary_metrics, choose_threshold
from ..core.param_reads import snapshot
from ..core.params import Params, merge
from ..model.scoring import ProbeScorer, SpectrumScorer, spectrum_features
from ..core.splits_io import read_split, write_seen
from ..core.faces import FaceInput, face_column
from ..model.tensorcache import decode_all

CNN_BASELINES = {
    "plain": {"model": {"se_reduction": 0, "extra_convs": 0}, "train": {"extra_fakes": "none"}},
    "gan_off": {"train": {"extra_fakes": "none"}},
}


def cnn_baselines(p: Params) -> dict[str, dict]:
    """The CNN comparisons for these params (none unless baselines.cnn_ablations): the GAN ablation
    flips whatever the main model does."""
    if not p.baselines.cnn_ablations:
        return {}
    if p.train.extra_fakes != "none":
        return CNN_BASELINES
    return {"plain": CNN_BASELINES["plain"],
            "gan_on": {"train": {"extra_fakes": "dcgan", "gan_weight": p.baselines.gan_on_weight}}}


def _override(p: Params, patch: dict) -> Params:
    """p with a baseline's patch deep-merged (params.merge, as load_params applies overrides)."""
    return Params.model_validate(merge(snapshot(p), patch))  # the variant's own reads are recorded


def train_lr(splits_dir: Path, out_dir: Path, size: int, seed: int, kind: str, limits: DecodeLimits,
             c: float, max_iter: int, faces: FaceInput | None = None) -> dict[str, float]:
    """A feature + logistic-regression baseline (kind: spectrum_lr | probe_lr) fitted on train (inverse L2
    strength c, baselines.*), thresholded on val, stored as JSON in out_dir; returns its val metrics."""
    from ..model.probe import fit_probe, frozen_features

    features = spectrum_features if kind == "spectrum_lr" else (lambda x: frozen_features(x, size))
    tr, va = read_split(splits_dir, "train"), read_split(splits_dir, "val")
    xtr, oktr = decode_all(tr["path"].tolist(), size, limits, progress=False, faces=face_column(tr), face_input=faces)
    xva, okva = decode_all(va["path"].tolist(), size, limits, progress=False, faces=face_column(va), face_input=faces)
    ftr, ytr = features(xtr[oktr]), tr["y"].to_numpy()[oktr]
    scaler, lr = fit_probe(ftr, ytr, seed, c, max_iter)
    yva = va["y"].to_numpy()[okva]
    pva = lr.predict_proba(scaler.transform(features(xva[okva])))[:, 1]
    thr = choose_threshold(yva, pva)
    (SpectrumScorer if kind == "spectrum_lr" else ProbeScorer).save(out_dir, size, thr, scaler, lr,
                                                                    faces.policy.to_dict() if faces else None)
    write_seen(out_dir, splits_dir)
    return binary_metrics(yva, pva, thr)


def run_baselines(splits_dir: str | Path, out_dir: str | Path, report_dir: str | Path, p: Params,
                  ckpt_dir: str | Path = "artifacts/baseline_checkpoints", progress: bool = True,
                  dry_run: bool = False, log_dir: str | Path | None = None) -> dict[str, dict]:
    from ..model.train import train

    splits_dir, out_dir, report_dir = Path(splits_dir), Path(out_dir), Path(report_dir)
    Path(ckpt_dir).mkdir(parents=True, exist_ok=True)  # a declared stage output, also with no CNN baseline
    results = {}
    for name, patch in cnn_baselines(p).items():
        card = train(splits_dir, out_dir / name, report_dir / name, _override(p, patch),
                     ckpt_dir=Path(ckpt_dir) / name, progress=progress, dry_run=dry_run,
                     run_log=None if log_dir is None else Path(log_dir) / f"baseline-{name}.json")
        results[name] = card["val_metrics"]
    b = p.baselines
    for kind, c in (("probe_lr", b.probe_c), ("spectrum_lr", b.spectrum_c)):
        results[kind] = train_lr(splits_dir, out_dir / kind, p.train.image_size, p.seed, kind, p.decode_limits(), c,
                                 b.max_iter, p.faces.face_input())
    report_dir.mkdir(parents=True, exist_ok=True)
    metrics = {name: {k: m[k] for k in ("roc_auc", "accuracy", "f1")} for name, m in results.items()}
    (report_dir / "metrics.json").write_text(json.dumps({"val": metrics}, indent=2, default=float) + "\n")
    return metrics
