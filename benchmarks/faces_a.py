"""The faces-a results table: each backbone x resolution we tried, plus the frozen probe, on one split.

    python benchmarks/faces_a.py --work /tmp/faces-a                       # every config (hours on 2 CPU cores)
    python benchmarks/faces_a.py --work /tmp/faces-a --only lite0_224 probe_224

Imports ../shared/benchmarks/faces-a into WORK/data (never into this repo), validates and splits it
with the pipeline's own stages (same seed, same split as `dvc repro` with profiles/faces.yaml), then
per config: `dfd train` with params.yaml + profiles/faces.yaml + the config's overrides, `dfd evaluate`
on the test split. Configs whose WORK/<name>/eval/metrics.json exists are not re-run. Prints a markdown
table and writes benchmarks/faces_a.json. Selection happens on val inside training; test is scored once.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from deepfake_detector.core.params import load_params  # noqa: E402

PROFILE = REPO / "profiles/faces.yaml"
CONFIGS: dict[str, dict] = {  # overrides on top of params.yaml + profiles/faces.yaml
    "lite0_256": {},  # the profile itself: native resolution, mild augmentation, GAN term off
    "lite0_256_gan_on": {"train": {"extra_fakes": "dcgan", "gan_weight": 0.3}},  # the paper's GAN term (ablation)
    "lite0_224_strong_aug": {"train": {"image_size": 224, "extra_fakes": "dcgan", "gan_weight": 0.3, "augment": {
        "scale_min": 0.7, "rotation": 10, "jpeg_prob": 0.5, "jpeg_quality": [30, 95], "blur_prob": 0.3,
        "resize_prob": 0.2, "noise_prob": 0.1}}},
    "lite0_64": {"train": {"image_size": 64, "freeze_blocks": 0, "extra_fakes": "dcgan", "gan_weight": 0.3}},
    "se_resnet34_64_paper": {"model": {"backbone": "se_resnet34", "pretrained": None, "stem": "imagenet"},
                             "train": {"image_size": 64, "epochs": 25, "batch_size": 32, "patience": 8,
                                       "freeze_blocks": 0, "extra_fakes": "dcgan", "gan_weight": 0.3}},
}
PROBES = {"probe_256": 256, "probe_224": 224}  # frozen ImageNet features + logistic regression


def sh(*cmd: str | Path, cwd: Path) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=cwd, check=True)


def prepare(work: Path, source: Path, dfd: Path) -> None:
    if not (work / "data").is_dir():
        sh(dfd, "data", "import", source, "data", cwd=work)
    if not (work / "splits/test.csv").is_file():
        (work / "params.yaml").write_text(yaml.safe_dump(load_params(REPO / "params.yaml", PROFILE)
                                                         .model_dump(by_alias=True), sort_keys=False))
        sh(dfd, "validate", "data", "clean", "reports/validation", "--no-progress", cwd=work)
        sh(dfd, "split", "clean", "splits", "reports/split", cwd=work)


def run_config(work: Path, name: str, overrides: dict, dfd: Path) -> None:
    out = work / name
    if (out / "eval/metrics.json").is_file():
        return
    out.mkdir(parents=True, exist_ok=True)
    p = load_params(REPO / "params.yaml", PROFILE, overrides)
    (out / "params.yaml").write_text(yaml.safe_dump(p.model_dump(by_alias=True), sort_keys=False))
    sh(dfd, "train", "splits", out / "model", out / "reports", "--params", out / "params.yaml",
       "--checkpoints", out / "ckpt", "--run-log", out / "run_log.json", "--no-progress", cwd=work)
    sh(dfd, "evaluate", out / "model", "splits", out / "eval", "--no-progress", cwd=work)


def run_probe(work: Path, name: str, size: int, dfd: Path) -> None:
    out = work / name
    if (out / "eval/metrics.json").is_file():
        return
    import time

    from deepfake_detector.evaluation.baselines import train_lr

    t0 = time.perf_counter()
    train_lr(work / "splits", out / "model", size, 42, "probe_lr")
    (out / "run_log.json").write_text(json.dumps({"fit_s": round(time.perf_counter() - t0, 1)}))
    sh(dfd, "evaluate", out / "model", "splits", out / "eval", "--no-progress", cwd=work)


def row(work: Path, name: str) -> dict | None:
    path = work / name / "eval/metrics.json"
    if not path.is_file():
        return None
    m = json.loads(path.read_text())
    rob = json.loads((work / name / "eval/robustness.json").read_text())
    log = work / name / "run_log.json"
    run = json.loads(log.read_text()) if log.is_file() else {}
    return {"config": name, **{k: m[k] for k in ("accuracy", "precision", "recall", "f1", "roc_auc")},
            "roc_auc_ci95": m.get("ci95", {}).get("roc_auc"),
            "auc_drop_jpeg_q75": rob["jpeg_q75"]["roc_auc_drop"], "auc_drop_resize_0.5x": rob["downscale_0.5x"]["roc_auc_drop"],
            "train_minutes_2cpu": round(run.get("fit_s", float("nan")) / 60, 1),
            "overrides": CONFIGS.get(name, {"probe image_size": PROBES.get(name)})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--source", type=Path, default=REPO.parent / "shared/benchmarks/faces-a")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/faces_a.json")
    args = ap.parse_args()
    dfd = Path(sys.executable).parent / "dfd"
    args.work.mkdir(parents=True, exist_ok=True)
    prepare(args.work, args.source.resolve(), dfd)
    names = args.only or [*CONFIGS, *PROBES]
    for name in names:
        if name in PROBES:
            run_probe(args.work, name, PROBES[name], dfd)
        else:
            run_config(args.work, name, CONFIGS[name], dfd)
    rows = [r for n in [*CONFIGS, *PROBES] if (r := row(args.work, n))]
    cols = ["config", "accuracy", "precision", "recall", "f1", "roc_auc", "auc_drop_jpeg_q75", "auc_drop_resize_0.5x",
            "train_minutes_2cpu"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    args.out.write_text(json.dumps({"profile": str(PROFILE.relative_to(REPO)), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
