"""Flow `retrain`: landed images -> validated -> new DVC data version -> pipeline -> gate -> branch.

    python -m flows.retrain             # uses flows.* in params.yaml (landing folder, remote, gate)

Runs in its own git worktree on a new branch `retrain/<UTC time>`, sharing the repo's DVC
cache, so the user's workspace is never touched and overlapping runs cannot corrupt each
other (a second run is also refused by a lock). Good landed files are merged under
data/<label>/batch-<time>/ in the worktree. The gate (`deepfake_detector.evaluation.gate`) scores the base
commit's accepted model (champion, fetched with `dvc get` from the DVC cache or remote) and the
new one (challenger) on the same current test split and decides with a paired bootstrap; the
decision is committed as reports/retrain/<time>.{json,md}. Only after that commit exists do
landed files leave landing/ (bad ones to quarantine/<time>/ with rejected.csv, good ones to
archive/<time>/): on any failure before it, landing/ is as it was, main's data/ is untouched,
and the worktree and its branch are removed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from deepfake_detector.params import GateParams, load_params
from flows.common import FlowError, repo_lock, sh, stage_args, stage_option
from flows.pipeline import pipeline



def model_and_splits(repo: str | Path) -> tuple[str, str]:
    """Where the train stage reads its splits and writes the model: `dfd train SPLITS MODEL REPORTS` in dvc.yaml."""
    splits, model = stage_args(repo, "train")[:2]
    return model, splits


@task
def open_worktree(repo: str, branch: str) -> str:
    """A git worktree on a new branch sharing the repo's DVC cache, with data/ checked out in full."""
    wt = Path(repo).parent / f".{Path(repo).name}-{branch.replace('/', '-')}"
    cache_dir = sh(["dvc", "cache", "dir"], repo).strip()  # wherever the repo's cache really is
    sh(["git", "worktree", "add", "-q", "-b", branch, str(wt), "HEAD"], repo)
    try:
        sh(["dvc", "config", "--local", "cache.dir", cache_dir], wt)
        sh(["dvc", "checkout", "--allow-missing", "-q"], wt)  # stage outputs may be absent (uncached)...
        sh(["dvc", "checkout", "-q", "data.dvc"], wt)  # ...the raw data may not: never retrain on the new batch alone
        cache = Path(stage_option(repo, "validate", "--cache")).parent  # validation + embedding caches (dvc.yaml)
        if (Path(repo) / cache).is_dir():  # per-file validation results: only new files get decoded
            shutil.copytree(Path(repo) / cache, wt / cache, dirs_exist_ok=True)
    except Exception:
        close_worktree(repo, str(wt), branch, keep_branch=False)
        raise
    return str(wt)


def close_worktree(repo: str, wt: str, branch: str, keep_branch: bool) -> None:
    """Remove the worktree; the branch too unless it holds a finished commit (no half-made branch)."""
    sh(["git", "worktree", "remove", "--force", wt], repo)
    if not keep_branch:
        sh(["git", "branch", "-D", branch], repo)


@task
def validate_landing(repo: str, landing: Path, stamp: str) -> tuple[list[str], pd.DataFrame]:
    """The same GX validation on the landed batch: (accepted paths, rejected rows). Moves nothing."""
    scratch = Path(repo) / ".dvc" / "tmp" / f"landing-{stamp}"
    try:
        sh(["dfd", "validate", str(landing), str(scratch / "clean"), str(scratch / "reports"), "--no-progress",
            "--params", str(Path(repo) / "params.yaml")], repo)
        rejected = pd.read_csv(scratch / "reports/rejected.csv")
        accepted = pd.read_csv(scratch / "clean/manifest.csv")["path"].tolist()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return accepted, rejected


@task
def merge_into_data(worktree: str, landing: Path, accepted: list[str], stamp: str) -> int:
    """Copy accepted files into the worktree's data/ (landing/ is only read) and `dvc add` it."""
    for rel in accepted:
        label, rest = rel.split("/", 1)
        dest = Path(worktree) / "data" / label / f"batch-{stamp}" / rest
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(landing / rel, dest)
    sh(["dvc", "add", "-q", "data"], worktree)
    return len(accepted)


@task
def fetch_champion(repo: str, base: str, dest: Path) -> tuple[str | None, str | None]:
    """The base commit's accepted model: (dir, None); (None, None) if the base has no trained model;
    (None, error) if it has one that cannot be fetched (the gate then refuses, naming the error)."""
    try:
        lock = yaml.safe_load(sh(["git", "show", f"{base}:dvc.lock"], repo)) or {}
    except FlowError:
        return None, None
    outs = [o.get("path") for o in ((lock.get("stages") or {}).get("train") or {}).get("outs", [])]
    model_dir, _ = model_and_splits(repo)
    if model_dir not in outs:
        return None, None
    try:
        sh(["dvc", "get", repo, model_dir, "--rev", base, "-o", str(dest)], repo)
    except FlowError as exc:
        return None, f"dvc get {model_dir} at {base[:10]} failed: {str(exc)[-300:]}"
    return str(dest), None


@task
def run_gate(worktree: str, champion: str | None, champion_error: str | None, g: GateParams) -> dict:
    from deepfake_detector.evaluation.gate import compare

    model_dir, splits_dir = model_and_splits(worktree)
    return compare(Path(worktree) / model_dir, champion, Path(worktree) / splits_dir, g,
                   champion_error=champion_error)


def _move_all(landing: Path, rels: list[str], dest: Path) -> None:
    for rel in rels:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(landing / rel), dest / rel)


@task
def release_landing(landing: Path, accepted: list[str], rejected: pd.DataFrame, archive: Path, quarantine: Path,
                    stamp: str) -> None:
    """After the branch commit: rejects to quarantine/<stamp>/ (+ rejected.csv), the rest to archive/<stamp>/."""
    if len(rejected):
        _move_all(landing, rejected["path"].tolist(), quarantine / stamp)
        rejected.to_csv(quarantine / stamp / "rejected.csv", index=False)
    _move_all(landing, accepted, archive / stamp)


@task(retries=2, retry_delay_seconds=1)
def dvc_push(worktree: str, remote: str) -> str:
    """Transient by nature (network, remote storage): retried."""
    return sh(["dvc", "push", "-q", "-r", remote], worktree)


def _ensure_remote(repo: str, worktree: str, fallback: str) -> str:
    """The project's default DVC remote (`dvc remote default`: S3, MinIO, ...), else flows.remote."""
    configured = subprocess.run(["dvc", "remote", "default"], cwd=worktree, capture_output=True, text=True)
    if configured.returncode == 0 and configured.stdout.strip():
        return configured.stdout.strip()
    url = fallback if "://" in fallback else str((Path(repo) / fallback).resolve())
    sh(["dvc", "remote", "add", "--local", "-f", "dfd-local", url], worktree)
    return "dfd-local"


def _report(stamp: str, base: str, record: dict, quarantine: str, diff: str, pdiff: str) -> str:
    verdict = "PROMOTED" if record["promoted"] else "NOT PROMOTED"
    return (f"# Retraining {stamp}\n\n**Gate: {verdict}** — {record['reason']}\n\n"
            f"Champion (base `{base[:10]}`) and challenger were scored on the same current test split "
            f"(md5 `{record['test_split_md5']}`); machine-readable record: `reports/retrain/{stamp}.json`.\n\n"
            f"- new images merged: {record['new_images']}\n- quarantined: {record['quarantined']} "
            f"(`{quarantine}/{stamp}/rejected.csv`, moved once this commit existed)\n\n"
            f"## Metrics diff (each commit on its own test split: context, not the gate)\n\n{diff or '(no change)'}\n\n"
            f"## Params diff\n\n{pdiff or '(no change)'}\n")


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
        accepted, rejected = validate_landing(repo, landing_dir, stamp)
        wt = open_worktree(repo, branch)
        committed = False
        try:
            n_new = merge_into_data(wt, landing_dir, accepted, stamp)
            pipeline(wt)
            champion, champion_error = fetch_champion(repo, base, Path(wt) / ".dvc/tmp/champion")
            record = run_gate(wt, champion, champion_error, f.gate)
            record.update(stamp=stamp, base_commit=base, branch=branch, new_images=n_new,
                          quarantined=int(len(rejected)))
            diff = sh(["dvc", "metrics", "diff", base, "--md"], wt)
            body = _report(stamp, base, record, f.quarantine, diff, sh(["dvc", "params", "diff", base, "--md"], wt))
            report = Path(wt) / "reports" / "retrain" / f"{stamp}.md"
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(body)
            report.with_suffix(".json").write_text(json.dumps(record, indent=2, default=float) + "\n")
            sh(["git", "add", "data.dvc", "dvc.lock", "reports"], wt)
            sh(["git", "commit", "-q", "-m", f"retrain {stamp}: +{n_new} images, "
                f"{'promoted' if record['promoted'] else 'NOT promoted'}: {record['reason']}"], wt)
            committed = True
            release_landing(landing_dir, accepted, rejected, Path(repo) / f.archive, Path(repo) / f.quarantine, stamp)
            pushed = False
            if record["promoted"]:
                dvc_push(wt, _ensure_remote(repo, wt, f.remote))
                pushed = True
            create_markdown_artifact(key="retrain-report", markdown=body, description="PR body")
        finally:
            close_worktree(repo, wt, branch, keep_branch=committed)
    return {"branch": branch, "promoted": record["promoted"], "reason": record["reason"], "pushed": pushed,
            "new_images": n_new, "quarantined": int(len(rejected)), "gate": record,
            "report": f"reports/retrain/{stamp}.md (on {branch})", "metrics_diff": diff,
            "seconds": round(time.perf_counter() - t0, 1)}


if __name__ == "__main__":
    print(json.dumps(retrain(), indent=2, default=float))
