"""Do the committed demo metrics reproduce on this CPU (and under another instruction set)?

    python benchmarks/repro_check.py                                  # default ISA
    python benchmarks/repro_check.py --isa default --isa avx2         # ATEN_CPU_CAPABILITY per run

For each setting: `git clone` this repo (committed state) into a temp dir, write the demo data,
`dvc repro` with ATEN_CPU_CAPABILITY set, and compare reports/eval/metrics.json with the committed one.
Pass: ROC-AUC within --tol (0.02) for the model and every baseline. A benchmark, not a test: each run
is a whole pipeline (~5 min on 2 cores), too slow for `make test`. Prints a table, writes
benchmarks/repro_check.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run_once(isa: str | None) -> tuple[dict, float]:
    with tempfile.TemporaryDirectory(prefix="dfd-repro-") as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
        if isa:
            env["ATEN_CPU_CAPABILITY"] = isa
        t0 = time.perf_counter()
        subprocess.run(["dfd", "data", "demo", "data"], cwd=clone, env=env, check=True, capture_output=True)
        subprocess.run(["dfd", "plots-template", ".dvc/plots_offline.html"], cwd=clone, env=env, check=True,
                       capture_output=True)
        subprocess.run(["dvc", "repro", "-q"], cwd=clone, env=env, check=True)
        return json.loads((clone / "reports/eval/metrics.json").read_text()), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--isa", action="append", default=None, help="ATEN_CPU_CAPABILITY value (default, avx2, avx512)")
    ap.add_argument("--tol", type=float, default=0.02)
    args = ap.parse_args()
    committed = json.loads((REPO / "reports/eval/metrics.json").read_text())
    rows = []
    for isa in args.isa or [None]:
        got, secs = run_once(isa)
        models = {"model": (committed["roc_auc"], got["roc_auc"])}
        for name, m in committed.get("baselines", {}).items():
            models[name] = (m["roc_auc"], got["baselines"][name]["roc_auc"])
        for name, (want, have) in models.items():
            rows.append({"isa": isa or "(default)", "model": name, "committed_auc": want, "auc": have,
                         "diff": round(have - want, 6), "ok": abs(have - want) <= args.tol, "seconds": round(secs)})
    print("| ATEN_CPU_CAPABILITY | model | committed AUC | this run | diff | within ±%.2f |" % args.tol)
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['isa']} | {r['model']} | {r['committed_auc']:.4f} | {r['auc']:.4f} | {r['diff']:+.4f} | {r['ok']} |")
    (REPO / "benchmarks/repro_check.json").write_text(json.dumps({"tol": args.tol, "rows": rows}, indent=2) + "\n")
    sys.exit(0 if all(r["ok"] for r in rows) else 1)


if __name__ == "__main__":
    main()
