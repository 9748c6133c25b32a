"""Stage `evaluate`: test-split metrics, robustness card, shortcut check, baselines, summary.

    dfd evaluate artifacts/model artifacts/splits reports/eval --baselines artifacts/baselines
    dfd evaluate --model artifacts/model --data path/with/real+fake reports/cross   # any folder

Fake is the positive class. Every model is scored at the threshold it stored from val;
nothing here is tuned on test. Perturbations are applied at the file's own resolution,
before the model's resize, as they would happen to an image in the wild.
"""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from ..core.metrics import (CI_METRICS, binary_metrics, bootstrap_ci, bootstrap_indices, calibrated, ci_record,
                            expected_calibration_error, reliability_table)
from ..model.scoring import Scorer, load_scorer
from .model_card import model_card_markdown
from ..core.faces import FaceInput, FinderSettings, face_column
from ..core.splits_io import read_folder, read_split
from ..core.images import DecodeLimits
from ..core.params import EvaluateParams
from ..model.tensorcache import decode_all, decode_variants

Perturb = Callable[[Image.Image], Image.Image]
PAPER_ROWS = {  # quoted from the paper's Table 1, not measured here
    "paper: proposed hybrid (quoted)": {"accuracy": 0.8906, "precision": 0.9709, "recall": 0.8000, "f1": 0.8767},
    "paper: compared ResNet50 hybrid (quoted)": {"accuracy": 0.8298, "precision": 0.7916, "recall": 0.8824,
                                                 "f1": 0.8345},
}
KEY_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "average_precision", "eer")


def _jpeg(quality: int) -> Perturb:
    def f(img: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return f


def _downscale(img: Image.Image) -> Image.Image:
    w, h = img.size
    return img.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.BILINEAR).resize((w, h), Image.Resampling.BILINEAR)


def _noise(img: Image.Image) -> Image.Image:
    arr = np.asarray(img, np.float32)
    rng = np.random.default_rng(zlib.crc32(arr.tobytes()))  # same noise for the same image, every run
    return Image.fromarray(np.clip(arr + rng.normal(0, 8, arr.shape), 0, 255).astype(np.uint8))


def _reencode(img: Image.Image) -> Image.Image:
    """Shortcut check: every image to the same size and the same JPEG settings."""
    return _jpeg(90)(img.resize((256, 256), Image.Resampling.BILINEAR))


def _at_size(fn: Perturb, size: int) -> Perturb:
    """Apply a perturbation after resizing to the model's input size (harsher than at source size)."""
    return lambda img: fn(img.resize((size, size), Image.Resampling.BILINEAR))


AT_INPUT = ("jpeg_q75", "downscale_0.5x")
PERTURBATIONS: dict[str, Perturb] = {
    "jpeg_q90": _jpeg(90), "jpeg_q75": _jpeg(75), "jpeg_q50": _jpeg(50),
    "downscale_0.5x": _downscale, "blur_sigma1": lambda im: im.filter(ImageFilter.GaussianBlur(1)),
    "noise_sigma8": _noise,
}


def face_input(scorer: Scorer, finder: FinderSettings | None = None) -> FaceInput:
    """How the rows become this scorer's input: its stored crop policy; rows with no stored face record (a folder
    given with --data) are searched with `finder`."""
    return FaceInput.for_model(getattr(scorer, "face_crop", None), finder)


def score_frame(scorer: Scorer, frame: pd.DataFrame, limits: DecodeLimits, transform: Perturb | None = None,
                progress: bool = False, finder: FinderSettings | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities for decodable rows, ok mask over frame rows); each row cropped to its face as the scorer
    was trained."""
    images, ok = decode_all(frame["path"].tolist(), scorer.image_size, limits, progress, transform=transform,
                            faces=face_column(frame), face_input=face_input(scorer, finder))
    return scorer.predict(images[ok]), ok


SOURCE_METRICS = ("n", "roc_auc", "accuracy", "precision", "recall", "f1", "fpr_real")


def source_metrics(y: np.ndarray, prob: np.ndarray, threshold: float, n_boot: int,
                   unfamiliar: np.ndarray | None = None) -> dict:
    """One source's metrics at the model's stored threshold, with 95 % bootstrap intervals (n_boot resamples
    of that source's images). A one-class source has no ROC-AUC (null): read its real-image FPR (reals, with its
    interval) or recall. With the model's novelty verdicts: coverage (the familiar share) and accuracy there."""
    m = binary_metrics(y, prob, threshold)
    ci = bootstrap_ci(y, prob, threshold, bootstrap_indices(len(y), n_boot, seed=0))
    clean = lambda v: None if isinstance(v, float) and np.isnan(v) else v  # noqa: E731 - JSON has no NaN
    out = {**{k: clean(m[k]) for k in SOURCE_METRICS}, "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum()),
           "ci95": ci_record(ci)}
    if unfamiliar is not None and len(y):
        familiar = ~unfamiliar
        out["familiar_share"] = round(float(familiar.mean()), 6)
        out["accuracy_familiar"] = (round(float(((prob[familiar] >= threshold) == y[familiar]).mean()), 6)
                                    if familiar.any() else None)
    return out


def score_variants(scorer: Scorer, paths: list[str], transforms: dict[str, Perturb | None], limits: DecodeLimits,
                   workers: int, chunk: int = 256, progress: bool = False, faces: list[str | None] | None = None,
                   finder: FinderSettings | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (probabilities for its decodable rows, ok mask)}: every file decoded once per chunk (and cropped to its
    face: faces, the rows' records), each perturbation applied in memory (threads) to that crop, so memory holds
    `chunk` files x conditions at the model size."""
    from tqdm import tqdm

    from ..model.tensorcache import Cropper

    fi = face_input(scorer, finder)
    faces = faces if faces is not None else [None] * len(paths)

    probs = {n: [] for n in transforms}
    oks = {n: [] for n in transforms}
    for start in tqdm(range(0, len(paths), chunk), desc="evaluate", unit="chunk", disable=not progress, leave=False):
        crop = Cropper.of(faces[start:start + chunk], fi, scorer.image_size, scorer.image_size)
        for name, (images, ok) in decode_variants(paths[start:start + chunk], scorer.image_size, transforms, limits,
                                                  workers, crop=crop).items():
            oks[name].append(ok)
            if name == "clean" and hasattr(scorer, "logits"):  # one forward: calibrated, the reliability "before",
                # and each image's novelty when the (torch) model stores a novelty model
                with_novelty = getattr(scorer, "novelty", None) is not None and hasattr(scorer, "logits_novelty")
                z, novelty = np.zeros(0), np.zeros(0)
                if ok.any():
                    z, novelty = scorer.logits_novelty(images[ok]) if with_novelty else (scorer.logits(images[ok]), None)
                probs[name].append(calibrated(z, scorer.calibration))
                probs.setdefault("uncalibrated", []).append(calibrated(z, None))
                oks.setdefault("uncalibrated", []).append(ok)
                if with_novelty:
                    probs.setdefault("novelty", []).append(novelty)
                    oks.setdefault("novelty", []).append(ok)
            else:
                probs[name].append(scorer.predict(images[ok]) if ok.any() else np.zeros(0))
    return {n: (np.concatenate(probs[n]) if probs[n] else np.zeros(0),
                np.concatenate(oks[n]) if oks[n] else np.zeros(0, bool)) for n in probs}


def robustness_conditions(size: int) -> dict[str, Perturb]:
    at_input = {f"{name}@input": _at_size(PERTURBATIONS[name], size) for name in AT_INPUT}
    return {**PERTURBATIONS, **at_input, "reencoded_same": _reencode}


def evaluate_model(scorer: Scorer, frame: pd.DataFrame, limits: DecodeLimits, e: EvaluateParams,
                   robustness: bool = True, progress: bool = False, finder: FinderSettings | None = None) -> dict:
    y_all = frame["y"].to_numpy()
    conditions = robustness_conditions(scorer.image_size) if robustness else {}
    scored = score_variants(scorer, frame["path"].tolist(), {"clean": None, **conditions}, limits, e.workers,
                            progress=progress, faces=face_column(frame), finder=finder)
    prob, ok = scored.pop("clean")
    raw = scored.pop("uncalibrated", (prob, ok))[0]  # scorers without a stored calibration: the same
    novelty = scored.pop("novelty", (None, None))[0]
    unfamiliar = None if novelty is None else novelty > scorer.novelty_threshold
    y = y_all[ok]
    clean = binary_metrics(y, prob, scorer.threshold)
    clean["ece_uncalibrated"] = round(expected_calibration_error(y, raw), 6)
    out = {"metrics": clean, "n_unreadable": int((~ok).sum()), "prob": prob, "y": y, "raw": raw,
           "source": frame["source"].to_numpy()[ok]}
    out["by_source"] = {src: source_metrics(y[out["source"] == src], prob[out["source"] == src], scorer.threshold,
                                            e.bootstrap, None if unfamiliar is None else unfamiliar[out["source"] == src])
                        for src in sorted(set(out["source"]))}
    if unfamiliar is not None:
        out["metrics"]["unfamiliar_share"] = round(float(unfamiliar.mean()), 6) if len(unfamiliar) else None
    if robustness:
        card = {}
        for name, (p2, ok2) in scored.items():
            m = binary_metrics(y_all[ok2], p2, scorer.threshold)
            card[name] = {k: m[k] for k in ("accuracy", "f1", "roc_auc", "recall", "fpr_real")}
            card[name]["roc_auc_drop"] = round(clean["roc_auc"] - m["roc_auc"], 6)
        out["robustness"] = card
    return out


def _write_plots(out_dir: Path, y: np.ndarray, prob: np.ndarray, threshold: float, raw: np.ndarray) -> None:
    from sklearn.metrics import precision_recall_curve, roc_curve

    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    for name, p in (("calibrated", prob), ("uncalibrated", raw)):  # reliability diagram, before/after Platt
        pd.DataFrame(reliability_table(y, p)).to_csv(plots / f"reliability_{name}.csv", index=False)
    fpr, tpr, _ = roc_curve(y, prob)
    pd.DataFrame({"fpr": fpr, "tpr": tpr}).to_csv(plots / "roc.csv", index=False)
    precision, recall, _ = precision_recall_curve(y, prob)
    pd.DataFrame({"recall": recall, "precision": precision}).to_csv(plots / "pr.csv", index=False)
    names = np.array(["real", "fake"])
    pd.DataFrame({"actual": names[y], "predicted": names[(prob >= threshold).astype(int)]}).to_csv(
        plots / "confusion.csv", index=False)


def _fmt(v: float | None) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"


def summary_markdown(results: dict[str, dict], primary: str, robustness: dict) -> str:
    lines = ["# Evaluation summary (test split; fake = positive class)", "",
             "Measured rows: this run, threshold chosen on val and stored with each model. "
             "Paper rows: quoted from its Table 1 (its own data and split), not measured here.", "",
             "| model | " + " | ".join(KEY_METRICS) + " |", "|---" * (len(KEY_METRICS) + 1) + "|"]
    for name, m in results.items():
        lines.append(f"| {name} (measured) | " + " | ".join(_fmt(m.get(k)) for k in KEY_METRICS) + " |")
    for name, m in PAPER_ROWS.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(m.get(k)) for k in KEY_METRICS) + " |")
    for base, label in (("plain", "the plain fine-tuned backbone"), ("probe_lr", "the frozen-feature probe")):
        if base in results:
            ours, other = results[primary]["roc_auc"], results[base]["roc_auc"]
            verdict = "beats" if ours > other else "does NOT beat"
            lines += ["", f"The hybrid ({primary}) {verdict} {label} on test ROC-AUC ({ours:.4f} vs {other:.4f})."]
    if "gan_off" in results:
        lines.append(f"GAN term ablation: ROC-AUC with GAN {results[primary]['roc_auc']:.4f}, "
                     f"without {results['gan_off']['roc_auc']:.4f}.")
    if "gan_on" in results:
        lines.append(f"GAN term ablation: ROC-AUC without GAN (main) {results[primary]['roc_auc']:.4f}, "
                     f"with {results['gan_on']['roc_auc']:.4f}.")
    lines += ["", f"## Robustness card ({primary})", "",
              "| condition | accuracy | f1 | roc_auc | AUC drop | recall | FPR on real |", "|---|---|---|---|---|---|---|"]
    for name, m in robustness.items():
        lines.append(f"| {name} | {_fmt(m['accuracy'])} | {_fmt(m['f1'])} | {_fmt(m['roc_auc'])} | "
                     f"{_fmt(m['roc_auc_drop'])} | {_fmt(m['recall'])} | {_fmt(m['fpr_real'])} |")
    lines += ["", "Perturbations are applied at the file's own resolution, then the model's resize; `@input` rows "
                  "apply them after resizing to the model's input size (harsher: nothing is averaged away).",
              "`reencoded_same`: every test image resized to 256x256 and re-encoded as JPEG q90 for both "
              "classes (shortcut check: a large drop means the model used format, not faces)."]
    return "\n".join(lines) + "\n"


def evaluate(model_dir: str | Path, out_dir: str | Path, limits: DecodeLimits, e: EvaluateParams, *,
             splits_dir: str | Path | None = None, data_dir: str | Path | None = None,
             baselines_dir: str | Path | None = None, device: str = "cpu", progress: bool = True,
             robustness: bool = True, finder: FinderSettings | None = None) -> dict:
    """Score the model (and baselines) on the test split or on a labelled folder; write reports.

    robustness: also score the primary model under every perturbation (each file decoded once, the
    perturbations applied in memory on evaluate.workers threads); off, only clean scores (e.g. per source)."""
    if (splits_dir is None) == (data_dir is None):
        raise ValueError("give exactly one of splits_dir (test split) or data_dir (a real/ + fake/ folder)")
    frame = read_split(splits_dir, "test") if splits_dir is not None else read_folder(data_dir)
    if frame.empty:
        raise ValueError("no images to evaluate")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    primary = "hybrid"
    scorers = {primary: load_scorer(model_dir, device)}
    if baselines_dir is not None:
        for sub in sorted(Path(baselines_dir).iterdir()):
            if sub.is_dir():
                scorers[sub.name] = load_scorer(sub, device)
    results, main = {}, None
    for name, scorer in scorers.items():
        res = evaluate_model(scorer, frame, limits, e, robustness=robustness and name == primary,
                             progress=progress and name == primary, finder=finder)
        results[name] = res
        if name == primary:
            main = res
    # 95 % bootstrap intervals, paired by image: every model is resampled with the same indices
    idx = bootstrap_indices(len(main["y"]), e.bootstrap, seed=0)
    ci = {n: bootstrap_ci(r["y"], r["prob"], scorers[n].threshold, idx) if len(r["y"]) == len(main["y"]) else None
          for n, r in results.items()}
    metrics = {**main["metrics"], "ci95": ci_record(ci[primary]), "n_unreadable": main["n_unreadable"],
               "positive_class": "fake", "by_source": main["by_source"],
               "baselines": {n: {**{k: r["metrics"][k] for k in CI_METRICS}, "ci95": ci_record(ci[n]) if ci[n] else None}
                             for n, r in results.items() if n != primary}}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out_dir / "robustness.json").write_text(json.dumps(main.get("robustness", {}), indent=2) + "\n")
    _write_plots(out_dir, main["y"], main["prob"], scorers[primary].threshold, main["raw"])
    table = {n: r["metrics"] for n, r in results.items()}
    (out_dir / "summary.md").write_text(summary_markdown(table, primary, main.get("robustness", {})))
    card_path = Path(model_dir) / "model_card.json"
    if card_path.is_file():  # detector folders (not the JSON baselines) carry the training card
        (out_dir / "model_card.md").write_text(model_card_markdown(json.loads(card_path.read_text()), metrics,
                                                                   main.get("robustness", {})))
    return metrics
