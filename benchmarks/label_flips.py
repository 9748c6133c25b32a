"""Mislabeled images: what each judge removes, and what removal does to the model trained after it.

    python benchmarks/label_flips.py PROJECT --work /tmp/flips                        # flags only (fast)
    python benchmarks/label_flips.py PROJECT --work /tmp/flips --downstream \
        --champion PROJECT/artifacts/model                                            # + a model per row

    python benchmarks/label_flips.py PROJECT --work /tmp/flips --landed \
        --thresholds 0.02 0.1 0.3                                                     # the retrain flow's case

PROJECT is a real-data project after `dfd validate` and `dfd split` with faces-a imported (docs/real-data.md):
its split gives faces-a's train + val rows (whose labels are flipped, a seeded share per seed) and its test rows
(never flipped). Rows, for 0 %, 5 % and 10 % flips and 2 seeds each:
- `remove off`: the flipped train + val set as it is;
- `out-of-fold judge`: `dfd validate` with label_issue.remove on (the out-of-fold judge on frozen features);
- `champion judge, landed 10 % batch`: the champion (--champion: the README's real-data model, which never trained
  on faces-a's test rows) judges faces-a's test rows with 10 % of labels flipped, as the retrain flow judges a
  landed batch (no downstream model: those rows are the only clean test set).
`--landed` measures what the retrain flow does (its champion judges a landed batch): faces-a's train + val rows
are cut in two halves by content hash; a champion is fine-tuned on the first (clean) half; the second half is the
landed batch, 0 / 5 / 10 % of it flipped per seed. The champion's probability of each batch file's own label is
swept over thresholds (files removed, precision, recall, share of clean files removed), and for each threshold of
--thresholds and for `remove off` a detector is fine-tuned on old half + what is left of the batch and scored on
the clean test rows.
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
    # another seed than the project's: with its own, every train + val row lands in train (u >= its test share)
    split(clean_dir, work / "splits", work / "split_reports", p.split, p.seed + 1)
    shutil.rmtree(work / "ckpt", ignore_errors=True)
    train(work / "splits", work / "model", work / "train_reports", p, ckpt_dir=work / "ckpt", progress=False,
          cache_dir=work / "cache")
    scorer = load_scorer(work / "model")
    prob, ok = score_frame(scorer, test, p.decode_limits())
    y = test["y"].to_numpy()[ok]
    auc = binary_metrics(y, prob, scorer.threshold)["roc_auc"]
    ci = bootstrap_ci(y, prob, scorer.threshold, bootstrap_indices(len(y), p.evaluate.bootstrap, 0))["roc_auc"]
    return {"test_roc_auc": round(auc, 4), "ci95": ci}


def _halves(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two halves by content hash: the same cut for every seed and every run."""
    first = rows["sha256"].str[:8].apply(lambda h: int(h, 16) % 2 == 0)
    return rows[first].reset_index(drop=True), rows[~first].reset_index(drop=True)


def _folder(old: pd.DataFrame, batch: Path, keep: set[str], dest: Path) -> Path:
    """dest/<label>/: hard links of the old rows (their own labels) and of the kept batch files (their landed labels)."""
    shutil.rmtree(dest, ignore_errors=True)
    for r in old.itertuples(index=False):
        (dest / r.label).mkdir(parents=True, exist_ok=True)
        os.link(r.path, dest / r.label / f"old_{Path(r.path).name}")
    for rel in keep:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(batch / rel, dest / rel)
    return dest


def landed(args: argparse.Namespace, p, trainval: pd.DataFrame, test: pd.DataFrame) -> list[dict]:
    """The retrain flow's case: a champion trained on old (clean) rows judges a landed batch with flipped labels."""
    from deepfake_detector.serving.detector import Detector

    params, limits = args.project / "params.yaml", p.decode_limits()
    old, new = _halves(trainval)
    cache, rows = args.work / "cache/validate.jsonl", []
    clean_p = p.validate_.model_copy(update={"label_issue": p.validate_.label_issue.model_copy(update={"remove": False})})

    def fit(folder: Path, work: Path) -> dict:
        done = work / "result.json"  # a finished fine-tune is reused when the benchmark is run again
        if done.is_file():
            return json.loads(done.read_text())
        validate(folder, work / "clean", work / "reports", clean_p, limits, p.seed, cache, progress=False,
                 faces=p.faces)
        out = downstream_auc(work / "clean", test, work / "down", params, args.size, args.epochs)
        done.write_text(json.dumps(out))
        return out

    t0 = time.perf_counter()
    champ = args.work / "champion"
    first = fit(champ / "data" if (champ / "result.json").is_file() else
                _folder(old, Path("/nonexistent"), set(), champ / "data"), champ)
    det = Detector.load(champ / "down/model", params=params)
    rows.append({"case": "champion: old half only", "judge": "—", "flipped": 0, "n_train_val": len(old), **first,
                 "seconds": round(time.perf_counter() - t0, 1)})
    print(rows[-1], flush=True)
    for share in (0.0, 0.05, 0.10):
        for seed in args.seeds[:1] if share == 0 else args.seeds:  # nothing flipped: the seed changes nothing
            case = args.work / f"landed{int(share * 100)}_s{seed}"
            flipped = flipped_folder(new, case / "batch", share, seed)
            files = sorted(x.relative_to(case / "batch").as_posix() for x in (case / "batch").rglob("*") if x.is_file())
            p_fake = det.fake_probabilities([case / "batch" / f for f in files])
            own = {f: (1 - q if f.startswith("real/") else q) for f, q in zip(files, p_fake)}  # p(its landed label)
            sweep = []
            for t in sorted({0.02, 0.05, 0.1, 0.2, 0.3, 0.5, *args.thresholds}):
                removed = {f for f, q in own.items() if q < t}
                tp = len(removed & flipped)
                clean = len(files) - len(flipped)
                sweep.append({"threshold": t, "removed": len(removed),
                              "precision": round(tp / len(removed), 3) if removed else None,
                              "recall": round(tp / len(flipped), 3) if flipped else None,
                              "clean_removed_share": round((len(removed) - tp) / clean, 4)})
            for t in [None, *args.thresholds]:
                t1 = time.perf_counter()
                keep = set(files) if t is None else {f for f, q in own.items() if not q < t}
                down = fit(_folder(old, case / "batch", keep, case / f"data_{t}"), case / f"work_{t}")
                stat = next((s for s in sweep if s["threshold"] == t), {"removed": 0, "precision": None,
                                                                         "recall": None, "clean_removed_share": 0.0})
                rows.append({"case": f"landed batch, {share:.0%} flipped", "seed": seed,
                             "judge": "remove off" if t is None else f"champion, p(label) < {t:g}",
                             "flipped": len(flipped), "batch": len(files), **stat, **down,
                             "seconds": round(time.perf_counter() - t1, 1)})
                rows[-1]["sweep"] = sweep if t is None else None
                print({k: v for k, v in rows[-1].items() if k != "sweep"}, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("project", type=Path)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--source", default="faces-a")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--downstream", action="store_true", help="fine-tune a detector per row and score the test rows")
    ap.add_argument("--champion", type=Path, default=None, help="a trained model: the landed-batch judge row")
    ap.add_argument("--landed", action="store_true", help="the retrain flow's case: champion judge on a landed half")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.3])
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
    rows = landed(args, p, trainval, test) if args.landed else []
    for share in () if args.landed else (0.0, 0.05, 0.10):
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
    if args.champion is not None and not args.landed:
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
    cols = ["case", "seed", "judge", "flipped", "removed", "precision", "recall", "clean_removed_share",
            "test_roc_auc", "ci95", "seconds"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "—")) for c in cols) + " |")
    args.out.write_text(json.dumps({"source": args.source, "max_label_probability":
                                    p.validate_.label_issue.max_label_probability, "downstream":
                                    {"size": args.size, "epochs": args.epochs}
                                    if args.downstream or args.landed else None, "landed": args.landed,
                                    "rows": rows}, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
