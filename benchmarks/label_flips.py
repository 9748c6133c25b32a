"""Mislabeled images: what each judge removes, and what removal does to the model trained after it.

    python benchmarks/label_flips.py PROJECT --work /tmp/flips                        # flags only (fast)
    python benchmarks/label_flips.py PROJECT --work /tmp/flips --downstream \
        --champion PROJECT/artifacts/model                                            # + a model per row

PROJECT is a real-data project after `dfd validate` and `dfd split` with faces-a imported (docs/real-data.md):
its split gives faces-a's train + val rows (whose labels are flipped, a seeded share per seed) and its test rows
(never flipped). Rows, for 0 %, 5 % and 10 % flips and 2 seeds each:
- `remove off`: the flipped train + val set as it is;
- `out-of-fold judge`: `dfd validate` with label_issue.remove on (the out-of-fold judge on frozen features);
- `champion judge, landed 10 % batch`: the champion (--champion: the README's real-data model, which never trained
  on faces-a's test rows) judges faces-a's test rows with 10 % of labels flipped, as the retrain flow judges a
  landed batch (no downstream model: those rows are the only clean test set).
Columns: files removed, precision and recall of the removed files against the flips, test ROC-AUC (clean test
labels) of a detector fine-tuned on what is left (--downstream: the faces profile at --size px for --epochs
epochs, to keep 12 fine-tunes within a CPU hour), its 95 % bootstrap CI, and seconds. Prints a table and writes
benchmarks/label_flips.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from deepfake_detector.core.metrics import binary_metrics, bootstrap_ci, bootstrap_indices  # noqa: E402
from deepfake_detector.core.params import load_params  # noqa: E402
from deepfake_detector.core.splits_io import read_split  # noqa: E402
from deepfake_detector.data.validate import validate  # noqa: E402
from deepfake_detector.model.embeddings import embed_files  # noqa: E402


def flipped_folder(rows: pd.DataFrame, dest: Path, share: float, seed: int) -> set[str]:
    """dest/<label>/<name> hard links of the rows, `share` of each class under the other label; the flipped names."""
    shutil.rmtree(dest, ignore_errors=True)
    rng = np.random.default_rng(seed)
    flipped = set()
    for label, other in (("real", "fake"), ("fake", "real")):
        part = rows[rows["label"] == label]
        chosen = set(rng.choice(part.index, size=round(share * len(part)), replace=False)) if share else set()
        for i, r in part.iterrows():
            to = other if i in chosen else label
            (dest / to).mkdir(parents=True, exist_ok=True)
            os.link(r["path"], dest / to / Path(r["path"]).name)
            if i in chosen:
                flipped.add(f"{to}/{Path(r['path']).name}")
    return flipped


def removed_stats(report_dir: Path, flipped: set[str]) -> dict:
    rejected = pd.read_csv(report_dir / "rejected.csv")
    removed = set(rejected.loc[rejected["reason"] == "label_issue", "path"])
    tp = len(removed & flipped)
    return {"removed": len(removed), "precision": round(tp / len(removed), 3) if removed else None,
            "recall": round(tp / len(flipped), 3) if flipped else None}


def downstream_auc(clean_dir: Path, test: pd.DataFrame, work: Path, params: Path, size: int, epochs: int) -> dict:
    """Fine-tune on the cleaned train + val set (its own content-addressed split into train/val) and score the clean
    faces-a test rows: ROC-AUC with its 95 % bootstrap interval."""
    from deepfake_detector.data.split import split
    from deepfake_detector.evaluation.evaluate import score_frame
    from deepfake_detector.model.scoring import load_scorer
    from deepfake_detector.model.train import train

    p = load_params(params, {"split": {"val": 0.15, "test": 0.0}, "train": {"image_size": size, "epochs": epochs}})
    split(clean_dir, work / "splits", work / "split_reports", p.split, p.seed)
    shutil.rmtree(work / "ckpt", ignore_errors=True)
    train(work / "splits", work / "model", work / "train_reports", p, ckpt_dir=work / "ckpt", progress=False,
          cache_dir=work / "cache")
    scorer = load_scorer(work / "model")
    prob, ok = score_frame(scorer, test, p.decode_limits())
    y = test["y"].to_numpy()[ok]
    auc = binary_metrics(y, prob, scorer.threshold)["roc_auc"]
    ci = bootstrap_ci(y, prob, scorer.threshold, bootstrap_indices(len(y), p.evaluate.bootstrap, 0))["roc_auc"]
    return {"test_roc_auc": round(auc, 4), "ci95": ci}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("project", type=Path)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--source", default="faces-a")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--downstream", action="store_true", help="fine-tune a detector per row and score the test rows")
    ap.add_argument("--champion", type=Path, default=None, help="a trained model: the landed-batch judge row")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/label_flips.json")
    args = ap.parse_args()
    params = args.project / "params.yaml"
    p = load_params(params)
    limits = p.decode_limits()
    splits = args.project / "artifacts/splits"
    trainval = pd.concat([read_split(splits, "train"), read_split(splits, "val")], ignore_index=True)
    trainval = trainval[trainval["source"] == args.source].reset_index(drop=True)
    test = read_split(splits, "test")
    test = test[test["source"] == args.source].reset_index(drop=True)
    cache = args.work / "cache/validate.jsonl"
    rows = []
    for share in (0.0, 0.05, 0.10):
        for seed in args.seeds:
            case = args.work / f"flip{int(share * 100)}_s{seed}"
            flipped = flipped_folder(trainval, case / "data", share, seed)
            for judge, remove in (("remove off", False), ("out-of-fold judge", True)):
                q = p.validate_.model_copy(update={"label_issue": p.validate_.label_issue.model_copy(
                    update={"remove": remove})})
                t0 = time.perf_counter()
                validate(case / "data", case / f"clean_{remove}", case / f"reports_{remove}", q, limits, p.seed, cache,
                         progress=False, embed=embed_files)
                row = {"case": f"{share:.0%} flipped", "seed": seed, "judge": judge, "flipped": len(flipped),
                       **(removed_stats(case / f"reports_{remove}", flipped) if remove else
                          {"removed": 0, "precision": None, "recall": None})}
                if args.downstream:
                    row.update(downstream_auc(case / f"clean_{remove}", test, case / f"down_{remove}", params,
                                              args.size, args.epochs))
                row["seconds"] = round(time.perf_counter() - t0, 1)
                rows.append(row)
                print(row, flush=True)
    if args.champion is not None:
        from deepfake_detector.serving.detector import Detector

        det = Detector.load(args.champion, params=params)
        for seed in args.seeds:
            case = args.work / f"landed10_s{seed}"
            flipped = flipped_folder(test, case / "data", 0.10, seed)
            q = p.validate_.model_copy(update={"label_issue": p.validate_.label_issue.model_copy(update={"remove": True})})
            t0 = time.perf_counter()
            validate(case / "data", case / "clean", case / "reports", q, limits, p.seed, cache, progress=False,
                     judge=det.fake_probabilities, judge_name=str(args.champion))
            rows.append({"case": "landed batch, 10 % flipped", "seed": seed, "judge": "champion",
                         "flipped": len(flipped), **removed_stats(case / "reports", flipped),
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(rows[-1], flush=True)
    cols = ["case", "seed", "judge", "flipped", "removed", "precision", "recall", "test_roc_auc", "ci95", "seconds"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "—")) for c in cols) + " |")
    args.out.write_text(json.dumps({"source": args.source, "max_label_probability":
                                    p.validate_.label_issue.max_label_probability, "downstream":
                                    {"size": args.size, "epochs": args.epochs} if args.downstream else None,
                                    "rows": rows}, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
