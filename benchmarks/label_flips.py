"""How well does validation find mislabeled images? Flip a seeded share of faces-a labels and count.

    python benchmarks/label_flips.py --work /tmp/flips            # clean, 5 % and 10 % flipped
    python benchmarks/label_flips.py --work /tmp/flips --features cheap

Copies faces-a into WORK/<case>/data with the chosen files moved to the other label folder, runs the
validation stage's core (`validate`, same params as params.yaml), and compares
reports/validation/label_issues.csv with the flipped set: flags, precision, recall, seconds. The
embedding cache is shared between cases (same bytes), so only the first case pays for embeddings;
its time is reported separately. Prints a table and writes benchmarks/label_flips.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from deepfake_detector.data.demo import flip_labels  # noqa: E402
from deepfake_detector.core.params import load_params  # noqa: E402
from deepfake_detector.data.validate import validate  # noqa: E402
from deepfake_detector.model.embeddings import embed_files  # noqa: E402


def make_case(source: Path, dest: Path, share: float, seed: int) -> set[str]:
    """A fresh dest: source with `share` of each class moved to the other; return the moved paths."""
    if dest.exists():
        shutil.rmtree(dest)
    return flip_labels(source, dest, share, seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--source", type=Path, default=REPO.parent / "shared/benchmarks/faces-a")
    ap.add_argument("--features", choices=["embeddings", "cheap"], default="embeddings")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-self-confidence", type=float, default=None, help="override the params value")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/label_flips.json")
    args = ap.parse_args()
    li = {"features": args.features}
    if args.min_self_confidence is not None:
        li["min_self_confidence"] = args.min_self_confidence
    p = load_params(REPO / "params.yaml", {"validate": {"label_issue": li}})
    rows = []
    cache = args.work / "cache/validate.jsonl"
    for name, share in (("clean", 0.0), ("flip_5pct", 0.05), ("flip_10pct", 0.10)):
        case = args.work / name
        flipped = make_case(args.source, case / "data", share, args.seed)
        t0 = time.perf_counter()
        m = validate(case / "data", case / "clean", case / "reports", p.validate_, p.seed, cache, progress=False,
                     embed=embed_files)
        secs = time.perf_counter() - t0
        flags = set(pd.read_csv(case / "reports/label_issues.csv")["path"])
        tp = len(flags & flipped)
        rows.append({"case": name, "flipped": len(flipped), "flags": len(flags), "true_flags": tp,
                     "precision": round(tp / len(flags), 3) if flags else None,
                     "recall": round(tp / len(flipped), 3) if flipped else None, "seconds": round(secs, 1),
                     "features": m["label_issue_features"], "embedded": m["cache"]["decoded"] if name == "clean" else 0})
    cols = ["case", "flipped", "flags", "true_flags", "precision", "recall", "seconds"]
    print(f"features: {rows[0]['features']}\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    args.out.write_text(json.dumps({"features": args.features, "seed": args.seed,
                                    "params": p.validate_.label_issue.model_dump(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
