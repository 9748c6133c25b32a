"""Faces in photos: does the picture's verdict agree with its face crop's? A photo set made from the test split.

    python benchmarks/photo_set.py PROJECT [--n 400] [--out benchmarks/photo_set.json]

PROJECT is a repo after `dvc repro` on real data (README "Real data"). From its test split, each face crop file is
pasted pixel for pixel (or rescaled 0.6x / 1.6x) at a random place into a larger picture (0.6-1.3 MP) whose
background is generated (smooth colour fields, blurred noise and shapes: no face in it); a quarter of the pictures
hold two test faces (the picture is fake when either is). The model scores:

- the crops, as evaluation scores them (each row cropped from its stored landmarks);
- the pictures, as users send them: `Detector.predict` (every face found, the verdict the most suspicious);
- the pictures scored whole (what this product did before it looked for faces).

Prints a markdown table (ROC-AUC with a 95 % bootstrap interval, fakes caught and real pictures called fake at the
model's stored threshold, faces found, verdict agreement with the crops) and the per-image cost of finding faces
(`Detector.predict` on 256 px crop files with and without face finding), and writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from deepfake_detector.core.faces import CropPolicy
from deepfake_detector.core.metrics import binary_metrics, bootstrap_indices
from deepfake_detector.core.params import load_params
from deepfake_detector.core.splits_io import read_split
from deepfake_detector.evaluation.evaluate import score_frame
from deepfake_detector.serving.detector import Detector


def background(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A generated faceless background: a smooth colour field, blurred noise texture and a few blurred shapes."""
    field = Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).resize((width, height),
                                                                                    Image.Resampling.BICUBIC)
    noise = Image.fromarray(rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)).resize(
        (width, height), Image.Resampling.BILINEAR)
    pic = Image.blend(field, noise, 0.25)
    draw = ImageDraw.Draw(pic)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = (x0, y0, x0 + int(rng.integers(40, 300)), y0 + int(rng.integers(40, 300)))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)(box, fill=colour)
    return pic.filter(ImageFilter.GaussianBlur(float(rng.uniform(2, 6))))


def make_photos(test, n: int, seed: int) -> list[dict]:
    """[{image, y, rows (test row indices), scale}]: one or two test faces in a generated picture."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(test))[:n]
    photos, k = [], 0
    while k < len(order):
        two = rng.random() < 0.25 and k + 1 < len(order)
        rows = [int(order[k])] + ([int(order[k + 1])] if two else [])
        k += len(rows)
        scale = float(rng.choice([1.0, 1.0, 0.6, 1.6]))
        faces = []
        for r in rows:
            img = Image.open(test["path"].iloc[r]).convert("RGB")
            if scale != 1.0:
                img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
            faces.append(img)
        mp = rng.uniform(0.6, 1.3) * 1e6
        aspect = rng.uniform(0.75, 1.5)
        width = max(int(np.sqrt(mp * aspect)), sum(f.width for f in faces) + 40)
        height = max(int(mp / width), max(f.height for f in faces) + 20)
        pic = background(width, height, rng)
        x = 0
        for f in faces:  # left to right, never overlapping
            slot = (width - x) // (len(faces) - faces.index(f)) - f.width
            x += int(rng.integers(0, max(1, slot)))
            pic.paste(f, (x, int(rng.integers(0, height - f.height + 1))))
            x += f.width
        photos.append({"image": pic, "y": int(test["y"].iloc[rows].max()), "rows": rows, "scale": scale})
    return photos


def auc_ci(y: np.ndarray, p: np.ndarray, n_boot: int = 1000) -> tuple[float, float, float]:
    from sklearn.metrics import roc_auc_score

    if len(set(y)) < 2:
        return float("nan"), float("nan"), float("nan")
    idx = bootstrap_indices(len(y), n_boot, seed=0)
    boots = [roc_auc_score(y[i], p[i]) for i in idx if len(set(y[i])) == 2]
    return float(roc_auc_score(y, p)), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def row(name: str, y: np.ndarray, p: np.ndarray, thr: float, found: float | None, agree: float | None) -> dict:
    m = binary_metrics(y, p, thr)
    auc, lo, hi = auc_ci(y, p)
    return {"what": name, "n": int(len(y)), "roc_auc": auc, "ci95": [lo, hi], "recall": m["recall"],
            "fpr_real": m["fpr_real"], "faces_found": found, "agrees_with_crops": agree}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("project", type=Path)
    ap.add_argument("--n", type=int, default=400, help="test faces used")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("photo_set.json"))
    args = ap.parse_args()
    p = load_params(args.project / "params.yaml")
    det = Detector.load(args.project / "artifacts/model", params=args.project / "params.yaml")
    test = read_split(args.project / "artifacts/splits", "test").reset_index(drop=True)
    t0 = time.perf_counter()
    crop_prob, ok = score_frame(det.scorer, test, p.decode_limits(), finder=p.faces.finder())
    crop = np.full(len(test), np.nan)
    crop[ok] = crop_prob
    photos = make_photos(test, min(args.n, len(test)), args.seed)
    preds = det.predict([ph["image"] for ph in photos])
    y = np.array([ph["y"] for ph in photos])
    photo_p = np.array([np.nan if q.fake_probability is None else q.fake_probability for q in preds])
    crop_p = np.array([np.nanmax(crop[ph["rows"]]) for ph in photos])  # the same verdict rule on the crops
    found = np.array([(q.n_faces or 0) >= len(ph["rows"]) for q, ph in zip(preds, photos)])
    whole = Detector.load(args.project / "artifacts/model", params=args.project / "params.yaml")
    whole.crop = CropPolicy("whole")
    whole_p = np.array([q.fake_probability for q in whole.predict([ph["image"] for ph in photos])])
    thr = det.threshold
    scored = ~np.isnan(photo_p)
    agree = float(((photo_p[scored] >= thr) == (crop_p[scored] >= thr)).mean())
    rows = [row("the face crops (evaluation's input)", y, crop_p, thr, None, None),
            row("the pictures, every face found (dfd predict, Detector.predict, the service)", y[scored],
                photo_p[scored], thr, float(found.mean()), agree),
            row("the pictures scored whole (before this release)", y, whole_p, thr, None,
                float(((whole_p >= thr) == (crop_p >= thr)).mean()))]
    by_scale = {str(s): row(f"pictures, faces at {s}x", y[scored & (sc == s)], photo_p[scored & (sc == s)], thr,
                            float(found[sc == s].mean()), None)
                for sc in [np.array([ph["scale"] for ph in photos])] for s in sorted(set(sc))}
    # the cost of finding faces: Detector.predict on 256 px crop files, with and without the face finder
    files = test["path"].tolist()[:100]
    timing = {}
    for name, policy in (("faces", det.crop), ("whole", CropPolicy("whole"))):
        det.crop = policy
        det.predict(files[:8])  # warm
        t = time.perf_counter()
        det.predict(files)
        timing[name] = (time.perf_counter() - t) / len(files)
    out = {"project": str(args.project), "n_pictures": len(photos), "two_face_pictures": sum(len(ph["rows"]) == 2
                                                                                              for ph in photos),
           "threshold": thr, "rows": rows, "by_scale": by_scale,
           "seconds_per_picture": {"dfd_predict_with_faces": timing["faces"], "dfd_predict_whole": timing["whole"],
                                   "added": timing["faces"] / timing["whole"] - 1},
           "wall_s": round(time.perf_counter() - t0, 1)}
    args.out.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print("| what the product is given | n | ROC-AUC [95 % CI] | fakes caught | real called fake | faces found | "
          "verdict = crop's |\n|---|---|---|---|---|---|---|")
    for r in rows + list(by_scale.values()):
        f = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"| {r['what']} | {r['n']} | {r['roc_auc']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | "
              f"{r['recall']:.3f} | {r['fpr_real']:.3f} | {f(r['faces_found'])} | {f(r['agrees_with_crops'])} |")
    print(f"\nper picture (256 px crop files, {len(files)}): dfd predict {timing['faces'] * 1000:.0f} ms with face "
          f"finding, {timing['whole'] * 1000:.0f} ms whole: +{out['seconds_per_picture']['added'] * 100:.0f} %")


if __name__ == "__main__":
    main()
