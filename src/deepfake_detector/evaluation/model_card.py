"""The model card a reader can use: reports/eval/model_card.md, written by the `evaluate` stage.

    model_card_markdown(train_card, metrics, robustness)      # -> markdown text

Intended use, what the model was trained on (sources, counts, data version), its test metrics per
source with 95 % bootstrap intervals, calibration, robustness, and the failure modes measured on
data outside this repository. Numbers come from this run's files; nothing here is tuned.
"""

from __future__ import annotations

from ..core.metrics import ci_bounds

# Measured by the project on held-out faces that are in no folder of this repository, for the model
# trained on faces-a with profiles/faces.yaml (issue #21). Kept here so every card states them.
HELD_OUT_FAILURES = [
    ("Stable Diffusion 2.1 faces (768 px) vs FFHQ reals", "ROC-AUC 0.279; 98 % of diffusion faces called real"),
    ("DFDC face swaps of unseen people (224 px)", "ROC-AUC 0.549; recall 0.224, real-image FPR 0.216"),
    ("in-the-wild real photos (UTKFace, 200 px)", "FPR 0.164: one ordinary photo in six called fake"),
    ("StyleGAN2 faces (1024 px) vs FFHQ reals", "ROC-AUC 0.943; recall 0.745"),
]
# Leave-one-source-out on faces-a + faces-d (benchmarks/cross_source.py; docs/results.md)
CROSS_SOURCE = [
    ("trained on faces-a (StyleGAN) only, scored on faces-d (DFDC face swaps)", "ROC-AUC 0.47 (NPR inputs 0.57, "
     "FFT spectrum 0.61: each at a cost on faces-a)"),
    ("trained on faces-d only, scored on faces-a", "ROC-AUC 0.46-0.53 in every setting tried"),
]


def _f(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def _ci(m: dict, key: str) -> str:
    lo, hi = ci_bounds(m, key)
    return f"{_f(m.get(key))} [{_f(lo)}, {_f(hi)}]"


def _faces_lines(p: dict) -> list[str]:
    """What the model sees of a picture, and the operating point it stores."""
    faces, op = p.get("faces") or {}, (p.get("evaluate") or {}).get("threshold") or {}
    policy = faces.get("policy", "whole")
    out = ["## Faces and operating point"]
    if policy == "whole":
        out.append("- Input: the whole picture (`faces.policy: whole`): no face is looked for.")
    else:
        out.append(f"- Input: each face found in a picture (dlib HOG detector, 68 landmarks), cropped `{policy}` "
                   f"(margin {faces.get('margin')}); a picture's verdict is its most suspicious face; a picture with "
                   "no face is answered `no_face`. The 68-point landmark model was trained on iBUG 300-W, whose "
                   "terms exclude commercial use.")
    if op.get("objective") == "max_fpr":
        out.append(f"- Threshold: the most recall with at most {op.get('max_fpr'):.0%} of real validation faces "
                   "called fake; the table below gives, per source, the recall and real-image FPR a user gets there.")
    else:
        out.append("- Threshold: the validation point of max TPR - FPR (`evaluate.threshold.objective: youden`).")
    return out


def model_card_markdown(train_card: dict, metrics: dict, robustness: dict) -> str:
    p = train_card.get("params", {})
    sources = ", ".join(f"`{s}` ({m['n']} test images)" for s, m in metrics.get("by_source", {}).items()) or "—"
    cal = train_card.get("calibration") or {}
    lines = [
        "# Model card: deepfake face-image detector", "",
        "## Intended use",
        "Flag likely generated or swapped faces, in photos or face crops like the training data, as a triage "
        "signal for a human reviewer. `fake_probability` is calibrated on the validation split (Platt scaling); "
        "`uncertain` marks answers near the stored threshold. Not for: deciding about a person without review, "
        "images unlike the training sources (diffusion faces, face swaps, ordinary photos: see failure modes), "
        "non-face images, or heavily re-compressed or resized copies.", "",
        "## Model and training data",
        f"- {train_card.get('model', 'hybrid detector')}: backbone `{p.get('model', {}).get('backbone')}`, "
        f"input {p.get('train', {}).get('image_size')} px, best epoch {train_card.get('best_epoch')} of "
        f"{train_card.get('epochs_run')}, trained on {train_card.get('device')}.",
        f"- Trained on {train_card.get('n_train')} images, validated on {train_card.get('n_val')}; test sources: "
        f"{sources}. Data version (sha256 of the train/val rows): "
        f"`{(train_card.get('data_version') or {}).get('train_val_sha256', '—')}`.",
        f"- Calibration: {cal.get('method', 'none')} (a = {cal.get('a', 1.0)}, b = {cal.get('b', 0.0)}); "
        f"stored threshold {_f(metrics.get('threshold'))}.", "",
        *_faces_lines(p), "",
        "## Test metrics (fake = positive; 95 % bootstrap intervals)",
        f"- ROC-AUC {_ci(metrics, 'roc_auc')}, accuracy {_ci(metrics, 'accuracy')}, F1 {_ci(metrics, 'f1')}, "
        f"precision {_f(metrics.get('precision'))}, recall {_f(metrics.get('recall'))}, "
        f"real-image FPR {_f(metrics.get('fpr_real'))} (n = {metrics.get('n')}).",
        f"- Calibration: ECE {_f(metrics.get('ece'))} (before Platt scaling {_f(metrics.get('ece_uncalibrated'))}).",
        "", "| source | n | ROC-AUC [95 % CI] | accuracy | recall | real-image FPR [95 % CI] | familiar (coverage) | "
            "accuracy on the familiar part |", "|---|---|---|---|---|---|---|---|"]
    for name, m in metrics.get("by_source", {}).items():
        lines.append(f"| {name} | {m['n']} | {_ci(m, 'roc_auc')} | {_f(m.get('accuracy'))} | {_f(m.get('recall'))} | "
                     f"{_ci(m, 'fpr_real')} | {_f(m.get('familiar_share'))} | {_f(m.get('accuracy_familiar'))} |")
    nov = train_card.get("novelty")
    if nov:
        lines += ["", f"Coverage: each answer carries `novelty` (how unlike the training images, {nov['method']} on the "
                      f"detector's multi-layer embedding) and `unfamiliar` (novelty above {nov['threshold']:.4f}, the "
                      f"{nov['quantile']:.0%} quantile of val): an unfamiliar image's verdict is not to be trusted."]
    if robustness:
        worst = sorted(robustness.items(), key=lambda kv: -(kv[1].get("roc_auc_drop") or 0))[:4]
        lines += ["", "## Robustness (largest ROC-AUC drops on this test split)", ""]
        lines += [f"- {name}: ROC-AUC {_f(m['roc_auc'])} (drop {_f(m['roc_auc_drop'])}), real-image FPR "
                  f"{_f(m['fpr_real'])}" for name, m in worst]
    lines += ["", "## Known failure modes (held-out data, outside this repository)", "",
              "Measured for the faces-a model (`profiles/faces.yaml`); a model trained on other sources needs "
              "its own measurement (`benchmarks/cross_source.py`).", ""]
    lines += [f"- {what}: {result}" for what, result in HELD_OUT_FAILURES]
    lines += ["", "Between the two benchmark sources nothing carries over (leave-one-source-out):", ""]
    lines += [f"- {what}: {result}" for what, result in CROSS_SOURCE]
    lines += ["", "Not for: generators, face-swap methods or photo sources absent from training, and no decision "
              "about a person without human review."]
    return "\n".join(lines) + "\n"
