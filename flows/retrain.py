"""Flow `retrain`: landed images -> validated -> new DVC data version -> pipeline -> gate -> branch.

    python -m flows.retrain             # uses flows.* in params.yaml (landing folder, remote, gate)

Runs in its own git worktree on a new branch `retrain/<UTC time>`, sharing the repo's DVC
cache, so the user's workspace is never touched and overlapping runs cannot corrupt each
other (a second run is also refused by a lock). Only settled landed files are taken
(`flows.common.settled_landing`: no hidden, partial or still-changing files; those wait, reported).
Good ones are merged under data/<label>/batch-<time>/ in the worktree. The gate
(`deepfake_detector.evaluation.gate`) scores the champion (`flows.champion.find_champion`: the
base commit's model, or a workspace model built from the same inputs) and the new model on the
same current test images, less every image either trained on, and decides with a paired bootstrap.
Whatever the verdict, the branch (data.dvc, dvc.lock, reports/retrain/<time>.{json,md}) is
committed and pushed, to the git remote `origin` when there is one and to the DVC remote: a
refused run's data is on its branch, never lost. Only then do landed files leave landing/ (bad
ones to quarantine/<time>/ with rejected.csv, good ones to archive/<time>/). On any failure
before that, landing/ is as it was, main's data/ is untouched, and the worktree and branch are removed.
A promoted model is registered (GTO): the next version, stage `prod`, tags on its branch commit.
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

from deepfake_detector.core.params import GateParams, load_params
from flows.champion import find_champion, seen_from_base_splits
from flows.common import FlowError, model_and_splits, repo_lock, settled_landing, sh, stage_files, stage_option
from flows.pipeline import pipeline


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
def validate_landing(repo: str, landing: Path, ready: list[str], stamp: str) -> tuple[list[str], pd.DataFrame]:
    """The same GX validation on the ready landed files: (accepted paths, rejected rows). Moves nothing."""
    scratch = Path(repo) / ".dvc" / "tmp" / f"landing-{stamp}"
    try:
        staged = stage_files(landing, ready, scratch / "landed")
        sh(["dfd", "validate", str(staged), str(scratch / "clean"), str(scratch / "reports"), "--no-progress",
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
def fetch_champion(repo: str, base: str, dest: Path) -> tuple[str | None, str | None, str | None, set[str] | None]:
    """(champion dir, error, where it came from, its train/val hashes when the folder lists none)."""
    from deepfake_detector.core.splits_io import read_seen

    champion, error, source = find_champion(repo, base, dest)
    seen = None
    if champion is not None and read_seen(champion) is None:  # a model from before seen_sha256.txt
        seen = seen_from_base_splits(repo, base, dest.with_name("champion-splits"))
    return champion, error, source, seen


@task
def run_gate(worktree: str, champion: str | None, champion_error: str | None, g: GateParams,
             champion_seen: set[str] | None = None) -> dict:
    from deepfake_detector.evaluation.gate import compare

    model_dir, splits_dir = model_and_splits(worktree)
    return compare(Path(worktree) / model_dir, champion, Path(worktree) / splits_dir, g,
                   champion_error=champion_error, champion_seen=champion_seen)


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


def has_origin(repo: str) -> bool:
    return "origin" in sh(["git", "remote"], repo).split()


@task(retries=2, retry_delay_seconds=1)
def git_push(repo: str, branch: str) -> str | None:
    """Push the branch to the git remote `origin` (None when the repo has no such remote: the branch
    then lives in this repository alone)."""
    if not has_origin(repo):
        return None
    sh(["git", "push", "-q", "origin", f"{branch}:{branch}"], repo)
    return "origin"


@task
def register_promoted(repo: str, branch: str, stamp: str) -> dict:
    """A promoted model gets the next version and stage `prod` in the GTO registry (tags on its branch
    commit, pushed with it when there is an origin): `dfd serve --model detector@prod` serves it."""
    from deepfake_detector.serving.registry import register

    return register(repo, "detector", branch, stage="prod", message=f"retrain {stamp}: promoted by the gate",
                    push=has_origin(repo))


def unmerged_branches(repo: str) -> list[str]:
    """Earlier retrain branches not merged into HEAD: each holds data that main does not have yet."""
    out = sh(["git", "branch", "--list", "retrain/*", "--no-merged", "HEAD", "--format=%(refname:short)"], repo)
    return sorted(out.split())


def _report(stamp: str, record: dict, quarantine: str, diff: str, pdiff: str) -> str:
    verdict = "PROMOTED" if record["promoted"] else "NOT PROMOTED"
    left = "".join(f"\n  - `{x['path']}`: {x['why']}" for x in record["landing_left"])
    older = "".join(f"\n  - `{b}`" for b in record["unmerged_retrain_branches"])
    return (f"# Retraining {stamp}\n\n**Gate: {verdict}** — {record['reason']}\n\n"
            f"Champion: {record['champion_source'] or 'none'}. Champion and challenger were scored on the same "
            f"current test images (split md5 `{record['test_split_md5']}`), less "
            f"{record['n_excluded_seen_by_champion']} the champion trained on; machine-readable record: "
            f"`reports/retrain/{stamp}.json`.\n\n"
            f"- new images merged: {record['new_images']} — **where they are:** {record['data_location']}\n"
            f"- quarantined: {record['quarantined']} (`{quarantine}/{stamp}/rejected.csv`, moved once this branch "
            f"was pushed)\n- left in landing for the next run: {len(record['landing_left'])}{left}\n"
            f"- earlier retrain branches not merged yet: {len(record['unmerged_retrain_branches'])}{older}\n\n"
            f"## Metrics diff (each commit on its own test split: context, not the gate)\n\n{diff or '(no change)'}\n\n"
            f"## Params diff\n\n{pdiff or '(no change)'}\n")


@flow(name="dfd-retrain")
def retrain(repo: str = ".", landing: str | None = None) -> dict:
    t0 = time.perf_counter()
    repo = str(Path(repo).resolve())
    f = load_params(Path(repo) / "params.yaml").flows
    landing_dir = Path(repo) / (landing or f.landing)
    ready, left = settled_landing(landing_dir, f.landing_settle_s)
    if not ready:
        raise FlowError(f"nothing to retrain on: no settled file in {landing_dir}"
                        + "".join(f"\n  left: {x['path']}: {x['why']}" for x in left))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    branch = f"retrain/{stamp}"
    with repo_lock(repo):
        base = sh(["git", "rev-parse", "HEAD"], repo).strip()
        older = unmerged_branches(repo)
        accepted, rejected = validate_landing(repo, landing_dir, ready, stamp)
        wt = open_worktree(repo, branch)
        committed = False
        try:
            n_new = merge_into_data(wt, landing_dir, accepted, stamp)
            pipeline(wt)
            champion, champion_error, source, seen = fetch_champion(repo, base, Path(wt) / ".dvc/tmp/champion")
            record = run_gate(wt, champion, champion_error, f.gate, seen)
            remote = _ensure_remote(repo, wt, f.remote)
            where = "pushed to git remote origin" if has_origin(repo) else "in this repository; no git remote origin"
            record.update(stamp=stamp, base_commit=base, branch=branch, new_images=n_new,
                          quarantined=int(len(rejected)), champion_source=source, landing_left=left,
                          unmerged_retrain_branches=older,
                          data_location=(f"branch `{branch}` ({where}), images in DVC remote `{remote}` "
                                         f"(`git checkout {branch} && dvc pull`)"))
            diff = sh(["dvc", "metrics", "diff", base, "--md"], wt)
            body = _report(stamp, record, f.quarantine, diff, sh(["dvc", "params", "diff", base, "--md"], wt))
            report = Path(wt) / "reports" / "retrain" / f"{stamp}.md"
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(body)
            report.with_suffix(".json").write_text(json.dumps(record, indent=2, default=float) + "\n")
            sh(["git", "add", "data.dvc", "dvc.lock", "reports"], wt)
            sh(["git", "commit", "-q", "-m", f"retrain {stamp}: +{n_new} images, "
                f"{'promoted' if record['promoted'] else 'NOT promoted'}: {record['reason']}"], wt)
            committed = True  # from here on the branch stays, whatever happens next
            dvc_push(wt, remote)  # whatever the verdict: a refused run's data is on its branch and remote
            pushed_git = git_push(repo, branch)
            registered = register_promoted(repo, branch, stamp) if record["promoted"] else None
            release_landing(landing_dir, accepted, rejected, Path(repo) / f.archive, Path(repo) / f.quarantine, stamp)
            create_markdown_artifact(key="retrain-report", markdown=body, description="PR body")
        finally:
            close_worktree(repo, wt, branch, keep_branch=committed)
    return {"branch": branch, "promoted": record["promoted"], "reason": record["reason"],
            "pushed": {"dvc": remote, "git": pushed_git}, "registered": registered, "new_images": n_new,
            "quarantined": int(len(rejected)),
            "left_in_landing": left, "gate": record, "report": f"reports/retrain/{stamp}.md (on {branch})",
            "metrics_diff": diff, "seconds": round(time.perf_counter() - t0, 1)}


if __name__ == "__main__":
    print(json.dumps(retrain(), indent=2, default=float))
