"""Trained on X -> scored on Y: ROC-AUC and real-image FPR for every (training sources, test source).

    python benchmarks/cross_source.py PROJECT --method probe                      # frozen features + LR: minutes
    python benchmarks/cross_source.py PROJECT --method spectrum                   # FFT spectrum features + LR
    python benchmarks/cross_source.py PROJECT --method finetune --reuse-all PROJECT/artifacts/model
    python benchmarks/cross_source.py PROJECT --method finetune --sources-only --tta          # flip TTA, reusing
    python benchmarks/cross_source.py PROJECT --method finetune --sources-only --tag npr --set model.input=npr
    python benchmarks/cross_source.py PROJECT --method finetune --all-only --tag balanced --set train.balance_sources=true
    python benchmarks/cross_source.py PROJECT --method finetune --sources-only --tag blurjpeg \
        --set train.augment.blur_prob=0.5 --set train.augment.jpeg_prob=0.5 --set train.augment.jpeg_quality=[30,95]

PROJECT is a repo after `dvc repro` on several sources (docs/real-data.md, profiles/multi-source.yaml).
Its split (one content-addressed split over all sources, video groups kept together) gives every test
row; the model for a training set sees only the train/val rows of its sources, so no test image is
trained on in any cell. Diagonal cells are in-source; off-diagonal cells are leave-one-source-out
transfer. `--reuse-all` scores the pipeline's own model for the "all" row instead of training it again.
`--tta` averages each image's probability with its horizontal mirror's (scoring only: it reuses models
already trained under the same work folder). Prints a markdown matrix and writes
benchmarks/cross_source_<method>[_<tag>][_tta].json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from deepfake_detector.core.metrics import binary_metrics
from deepfake_detector.core.params import load_params
from deepfake_detector.core.splits_io import read_split
from deepfake_detector.evaluation.baselines import train_lr
from deepfake_detector.core.faces import face_column
from deepfake_detector.evaluation.evaluate import face_input, score_frame
from deepfake_detector.model.scoring import load_scorer
from deepfake_detector.model.tensorcache import decode_all


def subset_splits(splits: Path, dest: Path, sources: list[str]) -> Path:
    """dest/{train,val,test}.csv: train/val rows of these sources; test rows of every source."""
    dest.mkdir(parents=True, exist_ok=True)
    root = (splits / (splits / "root.txt").read_text().strip()).resolve()
    (dest / "root.txt").write_text(str(root))
    for name in ("train", "val", "test"):
        frame = pd.read_csv(splits / f"{name}.csv", dtype=str)
        (frame if name == "test" else frame[frame["source"].isin(sources)]).to_csv(dest / f"{name}.csv", index=False)
    return dest


def overrides(sets: list[str], epochs: int | None) -> dict:
    """--set a.b.c=VALUE (YAML value) and --epochs as one nested override dict."""
    import yaml

    out: dict = {"train": {"epochs": epochs}} if epochs else {}
    for item in sets:
        key, _, value = item.partition("=")
        node = out
        *parents, leaf = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = yaml.safe_load(value)
    return out


def train_model(method: str, splits: Path, out: Path, params_path: Path, patch: dict) -> Path:
    p = load_params(params_path, patch)
    if method in ("probe", "spectrum"):
        c = p.baselines.probe_c if method == "probe" else p.baselines.spectrum_c
        train_lr(splits, out, p.train.image_size, p.seed, f"{method}_lr", p.decode_limits(), c, p.baselines.max_iter,
                 p.faces.face_input())
    else:
        from deepfake_detector.model.train import train

        shutil.rmtree(out.parent / "ckpt", ignore_errors=True)
        train(splits, out, out.parent / "reports", p, ckpt_dir=out.parent / "ckpt", progress=False,
              cache_dir=out.parent / "cache")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("project", type=Path)
    ap.add_argument("--method", choices=["probe", "spectrum", "finetune"], default="probe")
    ap.add_argument("--reuse-all", type=Path, default=None, help="score this model for the 'all' row")
    ap.add_argument("--epochs", type=int, default=None, help="override train.epochs (finetune)")
    ap.add_argument("--set", action="append", default=[], help="params override, e.g. train.augment.blur_prob=0.5")
    ap.add_argument("--tag", default="", help="names this setting's work folder and JSON")
    ap.add_argument("--tta", action="store_true", help="score with horizontal-flip test-time augmentation")
    ap.add_argument("--sources-only", action="store_true", help="skip the all-sources row")
    ap.add_argument("--all-only", action="store_true", help="only the all-sources row (e.g. train.balance_sources)")
    ap.add_argument("--train-on", action="append", default=[],
                    help="only these training sets (a source, or sources joined by +), e.g. faces-a")
    ap.add_argument("--work", type=Path, default=Path("/tmp/cross_source"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    splits = args.project / "artifacts/splits"
    test = read_split(splits, "test")
    limits = load_params(args.project / "params.yaml").decode_limits()
    sources = sorted(test["source"].unique())
    rows = []
    setting = args.method + (f"_{args.tag}" if args.tag else "")
    sets = ([] if args.all_only else [[s] for s in sources]) + ([] if args.sources_only else [sources])
    if args.train_on:
        sets = [t.split("+") for t in args.train_on]
    for train_on in sets:
        name = "+".join(train_on) if len(train_on) > 1 else train_on[0]
        t0 = time.perf_counter()
        model = args.work / setting / name / "model"
        if len(train_on) > 1 and args.reuse_all is not None:
            model = args.reuse_all
        elif not (args.tta and model.is_dir()):
            sub = subset_splits(splits, args.work / setting / name / "splits", train_on)
            train_model(args.method, sub, model, args.project / "params.yaml", overrides(args.set, args.epochs))
        scorer = load_scorer(model)
        images, ok = decode_all(test["path"].tolist(), scorer.image_size, limits, progress=False,
                                faces=face_column(test), face_input=face_input(scorer))
        prob, novelty = scorer.score(images[ok])
        if args.tta:
            from PIL import ImageOps

            flipped, _ = score_frame(scorer, test, limits, transform=ImageOps.mirror)
            prob = (prob + flipped) / 2
        y, src = test["y"].to_numpy()[ok], test["source"].to_numpy()[ok]
        unfamiliar = None if novelty is None else novelty > scorer.novelty_threshold
        row = {"trained_on": name, "seconds": round(time.perf_counter() - t0, 1)}
        for s in sources:
            m = binary_metrics(y[src == s], prob[src == s], scorer.threshold)
            row[s] = {"roc_auc": m["roc_auc"], "fpr_real": m["fpr_real"], "recall": m["recall"], "n": m["n"]}
            if unfamiliar is not None:  # coverage: unfamiliar overall, and among the images the model gets wrong
                wrong = (prob[src == s] >= scorer.threshold) != y[src == s]
                row[s]["unfamiliar"] = round(float(unfamiliar[src == s].mean()), 3)
                row[s]["unfamiliar_of_wrong"] = round(float(unfamiliar[src == s][wrong].mean()), 3) if wrong.any() else None
        rows.append(row)
        print(f"{name}: " + ", ".join(f"{s} AUC {row[s]['roc_auc']:.3f} FPR {row[s]['fpr_real']:.3f} unfamiliar "
                                      f"{row[s].get('unfamiliar')} (of wrong {row[s].get('unfamiliar_of_wrong')})"
                                      for s in sources), flush=True)
    print(f"\n{setting}{' + flip TTA' if args.tta else ''}: trained on (rows) -> scored on the test split of (columns): ROC-AUC / real-image FPR "
          "at the model's stored threshold\n")
    print("| trained on | " + " | ".join(sources) + " | seconds |\n|---|" + "---|" * (len(sources) + 1))
    for r in rows:
        print(f"| {r['trained_on']} | " + " | ".join(f"{r[s]['roc_auc']:.3f} / {r[s]['fpr_real']:.3f}" for s in sources)
              + f" | {r['seconds']} |")
    out = args.out or Path(__file__).with_name(f"cross_source_{setting}{'_tta' if args.tta else ''}.json")
    out.write_text(json.dumps({"method": args.method, "setting": setting, "overrides": args.set, "tta": args.tta,
                               "project": "faces-a + faces-d (profiles/faces.yaml + profiles/multi-source.yaml)",
                               "sources": sources,
                               "n_test": {s: int((test['source'] == s).sum()) for s in sources}, "rows": rows},
                              indent=2, default=float) + "\n")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
