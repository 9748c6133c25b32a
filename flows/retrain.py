"""Flow `retrain`: landed images -> validated -> new DVC data version -> pipeline -> gate -> branch.

    python -m flows.retrain             # uses flows.* in params.yaml (landing folder, remote, gate)

Runs in its own git worktree on a new branch `retrain/<UTC time>`, sharing the repo's DVC
cache, so the user's workspace is never touched and overlapping runs cannot corrupt each
other (a second run is also refused by a lock). Bad landed files go to quarantine/<time>/
with the reasons; good ones are merged under data/<label>/batch-<time>/ and archived.
A model worse than the last accepted one (the base commit's reports/eval/metrics.json) is
not promoted: the branch is kept for review, the push is skipped, and the report says why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from deepfake_detector.params import GateParams, load_params
from flows.common import FlowError, repo_lock, sh
from flows.pipeline import pipeline

EVAL_METRICS = "reports/eval/metrics.json"


@task
def open_worktree(repo: str, branch: str) -> str:
    wt = Path(repo).parent / f".{Path(repo).name}-{branch.replace('/', '-')}"
    sh(["git", "worktree", "add", "-q", "-b", branch, str(wt), "HEAD"], repo)
    sh(["dvc", "config", "--local", "cache.dir", str(Path(repo) / ".dvc" / "cache")], wt)
    sh(["dvc", "checkout", "--allow-missing", "-q"], wt)
    if (Path(repo) / "artifacts/cache").is_dir():  # per-file validation results: only new files get decoded
        shutil.copytree(Path(repo) / "artifacts/cache", wt / "artifacts/cache", dirs_exist_ok=True)
    return str(wt)


@task
def validate_landing(repo: str, landing: Path, quarantine: Path, stamp: str) -> list[str]:
    """Run the same GX validation on the landed batch; quarantine rejects; return accepted paths."""
    scratch = Path(repo) / ".dvc" / "tmp" / f"landing-{stamp}"
    sh(["dfd", "validate", str(landing), str(scratch / "clean"), str(scratch / "reports"), "--no-progress",
        "--params", str(Path(repo) / "params.yaml")], repo)
    rejected = pd.read_csv(scratch / "reports/rejected.csv")
    if len(rejected):
        qdir = quarantine / stamp
        for rel in rejected["path"]:
            (qdir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(landing / rel), qdir / rel)
        rejected.to_csv(qdir / "rejected.csv", index=False)
    accepted = pd.read_csv(scratch / "clean/manifest.csv")["path"].tolist()
    shutil.rmtree(scratch, ignore_errors=True)
    return accepted


@task
def merge_into_data(worktree: str, landing: Path, archive: Path, accepted: list[str], stamp: str) -> int:
    for rel in accepted:
        label, rest = rel.split("/", 1)
        dest = Path(worktree) / "data" / label / f"batch-{stamp}" / rest
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(landing / rel, dest)
        (archive / stamp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(landing / rel), archive / stamp / rel)
    sh(["dvc", "add", "-q", "data"], worktree)
    return len(accepted)


@task
def gate(previous: dict, current: dict, g: GateParams) -> tuple[bool, str]:
    if not previous:
        return True, "no accepted model on the base commit: first model is accepted"
    old, new = previous.get(g.metric), current.get(g.metric)
    if new is None:
        return False, f"the new run produced no {g.metric}"
    if new < old - g.max_drop:
        return False, f"{g.metric} {new:.4f} < accepted {old:.4f} - {g.max_drop} (max drop)"
    if current.get("f1", 0) < previous.get("f1", 0) - g.max_f1_drop:
        return False, f"f1 {current.get('f1'):.4f} < accepted {previous.get('f1'):.4f} - {g.max_f1_drop}"
    return True, f"{g.metric} {new:.4f} vs accepted {old:.4f} (max drop {g.max_drop})"


@task(retries=2, retry_delay_seconds=1)
def dvc_push(worktree: str, remote: str) -> str:
    """Transient by nature (network, remote storage): retried."""
    return sh(["dvc", "push", "-q", "-r", remote], worktree)


def _ensure_remote(repo: str, worktree: str, fallback: str) -> str:
    configured = subprocess.run(["git", "config", "-f", str(Path(repo) / ".dvc/config"), "core.remote"],
                                capture_output=True, text=True).stdout.strip()
    if configured:
        return configured
    url = fallback if "://" in fallback else str((Path(repo) / fallback).resolve())
    sh(["dvc", "remote", "add", "--local", "-f", "dfd-local", url], worktree)
    return "dfd-local"


@flow(name="dfd-retrain")
def retrain(repo: str = ".", landing: str | None = None) -> dict:
    t0 = time.perf_counter()
    repo = str(Path(repo).resolve())
    f = load_params(Path(repo) / "params.yaml").flows
    landing_dir = Path(repo) / (landing or f.landing)
    if not landing_dir.is_dir() or not any(p.is_file() for p in landing_dir.rglob("*")):
        raise FlowError(f"nothing to retrain on: landing folder {landing_dir} is missing or empty")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    branch = f"retrain/{stamp}"
    with repo_lock(repo):
        base = sh(["git", "rev-parse", "HEAD"], repo).strip()
        try:
            previous = json.loads(sh(["git", "show", f"{base}:{EVAL_METRICS}"], repo))
        except FlowError:
            previous = {}
        accepted = validate_landing(repo, landing_dir, Path(repo) / f.quarantine, stamp)
        quarantined = Path(repo) / f.quarantine / stamp / "rejected.csv"
        n_quarantined = len(pd.read_csv(quarantined)) if quarantined.is_file() else 0
        wt = open_worktree(repo, branch)
        try:
            n_new = merge_into_data(wt, landing_dir, Path(repo) / f.archive, accepted, stamp)
            pipeline(wt)
            current = json.loads((Path(wt) / EVAL_METRICS).read_text())
            promoted, why = gate(previous, current, f.gate)
            diff = sh(["dvc", "metrics", "diff", base, "--md"], wt)
            pdiff = sh(["dvc", "params", "diff", base, "--md"], wt)
            body = (f"# Retraining {stamp}\n\n**Gate: {'PROMOTED' if promoted else 'NOT PROMOTED'}** — {why}\n\n"
                    f"- new images merged: {n_new}\n- quarantined: {n_quarantined} "
                    f"(`{f.quarantine}/{stamp}/rejected.csv`)\n- base commit: `{base[:10]}`\n\n"
                    f"## Metrics diff\n\n{diff or '(no change)'}\n\n## Params diff\n\n{pdiff or '(no change)'}\n")
            report = Path(wt) / "reports" / "retrain" / f"{stamp}.md"
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(body)
            sh(["git", "add", "data.dvc", "dvc.lock", "reports"], wt)
            sh(["git", "commit", "-q", "-m", f"retrain {stamp}: +{n_new} images, "
                f"{'promoted' if promoted else 'NOT promoted'}: {why}"], wt)
            pushed = False
            if promoted:
                dvc_push(wt, _ensure_remote(repo, wt, f.remote))
                pushed = True
            create_markdown_artifact(key="retrain-report", markdown=body, description="PR body")
        finally:
            sh(["git", "worktree", "remove", "--force", wt], repo)
    return {"branch": branch, "promoted": promoted, "reason": why, "pushed": pushed, "new_images": n_new,
            "quarantined": n_quarantined, "report": f"reports/retrain/{stamp}.md (on {branch})",
            "metrics_diff": diff, "seconds": round(time.perf_counter() - t0, 1)}


if __name__ == "__main__":
    print(json.dumps(retrain(), indent=2))
