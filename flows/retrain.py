"""Flow `retrain`: landed images -> staged -> validated -> new DVC data version -> pipeline -> gate -> branch.

    python -m flows.retrain             # uses flows.* in params.yaml (landing folder, remote, gate)

Weeks add up. The champion is the registry's `prod` model, whichever commit holds it (flows/champion.py); the
run starts from that commit when main does not contain it yet, so every promoted batch stays in the data, and
each new `prod` has been gated against the one before it. With no `prod` the base is HEAD and its model the
champion; "first model" only when neither a `prod` nor a trained model on the base commit exists. A champion
that cannot be had or scored means refused, with the reason.

A run works in its own git worktree on a new branch `retrain/<UTC time>` sharing the repo's DVC cache and config
(config.local included), so the user's workspace is never touched:
1. it finishes what killed or failed runs owe (flows/journal.py: release, push, registration);
2. it stages the settled landed files as copies (flows/landing.py) and validates the copies with the same GX
   suite, against the images already in the dataset (`--reference`: a landed file never removes an existing one)
   and with the champion as the label judge (`--label-judge`);
3. it merges the accepted copies under data/<label>/batch-<time>/, runs `dvc add`, the pipeline and the gate;
4. it commits the branch (data.dvc, dvc.lock, reports/retrain/<time>.{json,md}). From here on the batch is in
   the data and is never merged again: the landing files are released (archive/<time>/, quarantine/<time>/),
   then the branch is pushed (DVC remote, git `origin`) and a promoted model registered (GTO, stage `prod`). A
   failure in those steps leaves them owed in the journal; the next run does them.
Before the commit, any failure leaves landing/ and main's data/ as they were and removes the worktree and branch.
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

from deepfake_detector.core.params import GateParams, Params, load_params
from flows.champion import choose_base, find_champion, production, seen_from_base_splits
from flows.common import FlowError, model_and_splits, sh, stage_args, stage_option
from flows.journal import Journal, run_lock
from flows.landing import printable, release, settled_landing, stage
from flows.pipeline import pipeline


def worktree_path(repo: str, branch: str) -> Path:
    return Path(repo).parent / f".{Path(repo).name}-{branch.replace('/', '-')}"


@task
def open_worktree(repo: str, branch: str, base: str = "HEAD") -> str:
    """A git worktree of `base` on a new branch, with the repo's DVC cache and config and data/ checked out."""
    wt = worktree_path(repo, branch)
    cache_dir = sh(["dvc", "cache", "dir"], repo).strip()  # wherever the repo's cache really is
    sh(["git", "worktree", "add", "-q", "-b", branch, str(wt), base], repo)
    try:
        local = Path(repo) / ".dvc" / "config.local"  # remotes and credentials set with --local
        if local.is_file():
            shutil.copy2(local, wt / ".dvc" / "config.local")
        sh(["dvc", "config", "--local", "cache.dir", cache_dir], wt)
        sh(["dvc", "checkout", "--allow-missing", "-q"], wt)  # stage outputs may be absent (uncached)...
        sh(["dvc", "checkout", "-q", "data.dvc"], wt)  # ...the raw data may not: never retrain on the new batch alone
        copy_validation_caches(repo, str(wt))
    except Exception:
        close_worktree(repo, str(wt), branch, keep_branch=False)
        raise
    return str(wt)


def copy_validation_caches(repo: str, wt: str) -> None:
    """The per-file validation and embedding caches (only new files get decoded), each written to a temporary
    name and renamed. Never the training shard cache (tens of GB on real data)."""
    cache = Path(repo) / stage_option(repo, "validate", "--cache")
    for src in (cache, cache.with_name("embeddings.npy")):
        if src.is_file():
            dest = Path(wt) / src.relative_to(repo)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".tmp")
            shutil.copy2(src, tmp)
            tmp.replace(dest)


def close_worktree(repo: str, wt: str, branch: str, keep_branch: bool) -> None:
    """Remove the worktree; the branch too unless it holds a finished commit (no half-made branch)."""
    sh(["git", "worktree", "remove", "--force", wt], repo)
    if not keep_branch:
        sh(["git", "branch", "-D", branch], repo)


def _quiet(cmd: list[str], cwd: str) -> None:
    subprocess.run(cmd, cwd=cwd, capture_output=True)


def committed(repo: str, j: Journal) -> bool:
    """Did this journal's commit happen? Its branch exists and holds its record."""
    return subprocess.run(["git", "cat-file", "-e", f"{j.branch}:reports/retrain/{j.stamp}.json"], cwd=repo,
                          capture_output=True).returncode == 0


def clear_worktree(repo: str, branch: str) -> None:
    """The worktree folder a killed run left (the branch stays)."""
    wt = worktree_path(repo, branch)
    _quiet(["git", "worktree", "remove", "--force", str(wt)], repo)
    shutil.rmtree(wt, ignore_errors=True)
    _quiet(["git", "worktree", "prune"], repo)


def clear_uncommitted(repo: str, j: Journal) -> None:
    """A run killed before its commit: its worktree and branch go; its landing files were never moved."""
    clear_worktree(repo, j.branch)
    _quiet(["git", "branch", "-D", j.branch], repo)
    shutil.rmtree(Path(repo) / ".dvc" / "tmp" / f"landing-{j.stamp}", ignore_errors=True)
    j.close()


@task
def validate_landing(repo: str, wt: str, staged_dir: Path, champion: str | None) -> tuple[list[str], pd.DataFrame, list[dict]]:
    """The GX validation of the staged copies, against the images already in the dataset (a landed file that
    repeats or contradicts one is rejected, naming it; the existing one stays) and with the champion as the
    label judge: (accepted paths, rejected rows, the judge's verdicts)."""
    out = staged_dir.parent
    clean = Path(wt) / stage_args(wt, "validate")[1]
    reference = clean / "manifest.csv" if (clean / "manifest.csv").is_file() else Path(wt) / "data"
    cmd = ["dfd", "validate", str(staged_dir), str(out / "clean"), str(out / "reports"), "--no-progress",
           "--params", str(Path(repo) / "params.yaml"), "--reference", str(reference)]
    sh(cmd + (["--label-judge", champion] if champion else []), repo)
    rejected = pd.read_csv(out / "reports/rejected.csv", dtype=str, keep_default_na=False)
    accepted = pd.read_csv(out / "clean/manifest.csv", dtype=str)["path"].tolist()
    judged = pd.read_csv(out / "reports/label_issues.csv", dtype=str).to_dict("records")
    return accepted, rejected, judged


@task
def merge_into_data(worktree: str, staged_dir: Path, accepted: list[str], stamp: str) -> int:
    """Copy the accepted staged copies (the validated bytes) into the worktree's data/ and `dvc add` it."""
    for rel in accepted:
        label, rest = rel.split("/", 1)
        dest = Path(worktree) / "data" / label / f"batch-{stamp}" / rest
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(staged_dir / rel, dest)
    sh(["dvc", "add", "-q", "data"], worktree)
    return len(accepted)


@task
def fetch_champion(repo: str, base: str, prod: dict | None, dest: Path) -> tuple[str | None, str | None, str | None, set[str] | None]:
    """(champion dir, error, where it came from, its train/val hashes when the folder lists none)."""
    from deepfake_detector.core.splits_io import read_seen

    champion, error, source = find_champion(repo, base, dest, prod)
    seen = None
    if champion is not None and read_seen(champion) is None:  # a model from before seen_sha256.txt
        seen = seen_from_base_splits(repo, prod["commit"] if prod else base, dest.with_name("champion-splits"))
    return champion, error, source, seen


@task
def run_gate(worktree: str, champion: str | None, champion_error: str | None, p: Params,
             champion_seen: set[str] | None = None) -> dict:
    from deepfake_detector.evaluation.gate import compare

    model_dir, splits_dir = model_and_splits(worktree)
    return compare(Path(worktree) / model_dir, champion, Path(worktree) / splits_dir, p.flows.gate, p.decode_limits(),
                   p.evaluate.bootstrap, champion_error=champion_error, champion_seen=champion_seen)


@task(retries=2, retry_delay_seconds=1)
def dvc_push(worktree: str, remote: str) -> str:
    """Transient by nature (network, remote storage): retried."""
    return sh(["dvc", "push", "-q", "-r", remote], worktree)


def ensure_remote(repo: str, fallback: str) -> tuple[str, str]:
    """(remote name, how another clone pulls the branch's data): the project's default DVC remote (`dvc remote
    default`, from .dvc/config or config.local: S3, MinIO, ...), else flows.remote, added to the repo's
    config.local as `dfd-local` (every run's worktree copies config.local)."""
    configured = subprocess.run(["dvc", "remote", "default"], cwd=repo, capture_output=True, text=True)
    name = configured.stdout.strip() if configured.returncode == 0 else ""
    if not name:
        name = "dfd-local"
        url = fallback if "://" in fallback else str((Path(repo) / fallback).resolve())
        sh(["dvc", "remote", "add", "--local", "-f", name, url], repo)
    tracked = subprocess.run(["dvc", "remote", "list", "--project"], cwd=repo, capture_output=True, text=True)
    if name in tracked.stdout.split():
        return name, "dvc pull"  # in the committed .dvc/config: every clone knows it
    url = sh(["dvc", "config", f"remote.{name}.url"], repo).strip()
    return name, f"dvc remote add -d {name} {url} && dvc pull"


def has_origin(repo: str) -> bool:
    return "origin" in sh(["git", "remote"], repo).split()


@task(retries=2, retry_delay_seconds=1)
def git_push(repo: str, branch: str) -> str | None:
    """Push the branch to the git remote `origin` (None when the repo has no such remote)."""
    if not has_origin(repo):
        return None
    sh(["git", "push", "-q", "origin", f"{branch}:{branch}"], repo)
    return "origin"


@task
def register_promoted(repo: str, branch: str, stamp: str) -> dict:
    """A promoted model gets the next version and stage `prod` in the GTO registry (tags on its branch commit,
    pushed with it when there is an origin): `dfd serve --model detector@prod` serves it. Once per commit: a
    commit that already carries a version (a run killed after registering) is not registered again."""
    from deepfake_detector.serving.registry import register, version_at

    commit = sh(["git", "rev-parse", branch], repo).strip()
    done = version_at(repo, "detector", commit, stage="prod")
    if done is not None:
        return done
    return register(repo, "detector", branch, stage="prod", message=f"retrain {stamp}: promoted by the gate",
                    push=has_origin(repo))


def commit_branch(wt: str, message: str) -> None:
    sh(["git", "add", "data.dvc", "dvc.lock", "reports"], wt)
    sh(["git", "commit", "-q", "-m", message], wt)


def finish(repo: str, j: Journal, landing: Path, archive: Path, quarantine: Path, remote: str,
           wt: str | None = None) -> dict:
    """What a committed run owes, each step journaled when done: release, DVC push, git push, registration. The
    landing files are released first, whatever follows; a failed push or registration stays owed to the next run."""
    out: dict = {"branch": j.branch, "failed": {}}
    if not j.steps["released"]:
        out["released"] = release_landing(landing, j.staged, archive / j.stamp, quarantine / j.stamp)
        j.done("released")
    steps = {"dvc_pushed": lambda: push_data(repo, j.branch, remote, wt),
             "git_pushed": lambda: git_push(repo, j.branch),
             "registered": lambda: register_promoted(repo, j.branch, j.stamp)}
    for step in j.owes():
        try:
            out[step] = steps[step]()
            j.done(step)
        except Exception as exc:  # noqa: BLE001 - owed to the next run, and said in the result
            out["failed"][step] = str(exc)[-500:]
    if not j.owes():
        j.close()
    return out


@task
def release_landing(landing: Path, staged: dict, archive: Path, quarantine: Path) -> dict:
    return release(landing, staged, archive, quarantine)


def push_data(repo: str, branch: str, remote: str, wt: str | None = None) -> str:
    """`dvc push` of a committed branch: from its run's worktree, or from a throwaway one sharing the cache."""
    if wt is not None:
        return dvc_push(wt, remote)
    tmp = worktree_path(repo, f"push-{branch}")
    sh(["git", "worktree", "add", "-q", "--detach", str(tmp), branch], repo)
    try:
        local = Path(repo) / ".dvc" / "config.local"
        if local.is_file():
            shutil.copy2(local, tmp / ".dvc" / "config.local")
        sh(["dvc", "config", "--local", "cache.dir", sh(["dvc", "cache", "dir"], repo).strip()], str(tmp))
        return dvc_push(str(tmp), remote)
    finally:
        _quiet(["git", "worktree", "remove", "--force", str(tmp)], repo)


def unmerged_branches(repo: str, into: str = "HEAD") -> list[str]:
    """Retrain branches not merged into `into`: each holds data that main does not have yet."""
    out = sh(["git", "branch", "--list", "retrain/*", "--no-merged", into, "--format=%(refname:short)"], repo)
    return sorted(out.split())


def _report(record: dict, quarantine: str, diff: str, pdiff: str) -> str:
    stamp = record["stamp"]
    verdict = "PROMOTED" if record["promoted"] else "NOT PROMOTED"
    left = "".join(f"\n  - `{x['path']}`: {x['why']}" for x in record["landing_left"])
    older = "".join(f"\n  - `{b}`" for b in record["unmerged_retrain_branches"])
    judged = "".join(f"\n  - `{x['path']}` labelled {x['label']}: p(label) = {float(x['label_confidence']):.3f}"
                     for x in record["label_issues"])
    taken = (f"\n- a stale lock was taken over: {record['lock_taken_over']['why']}" if record["lock_taken_over"] else "")
    return (f"# Retraining {stamp}\n\n**Gate: {verdict}** — {record['reason']}\n\n"
            f"Base: `{record['base_commit'][:10]}` ({record['base_why']}). Champion: {record['champion_source'] or 'none'}. "
            f"Champion and challenger were scored on the same current test images (split md5 "
            f"`{record['test_split_md5']}`), less {record['n_excluded_seen_by_champion']} the champion trained on; "
            f"machine-readable record: `reports/retrain/{stamp}.json`.\n\n"
            f"- new images merged: {record['new_images']} — **where they are:** {record['data_location']}\n"
            f"- quarantined: {record['quarantined']} (`{quarantine}/{stamp}/rejected.csv`)\n"
            f"- judged mislabeled by the champion: {len(record['label_issues'])}{judged}\n"
            f"- left in landing for the next run: {len(record['landing_left'])}{left}\n"
            f"- earlier retrain branches not merged yet: {len(record['unmerged_retrain_branches'])}{older}{taken}\n\n"
            f"## Metrics diff (each commit on its own test split: context, not the gate)\n\n{diff or '(no change)'}\n\n"
            f"## Params diff\n\n{pdiff or '(no change)'}\n")


def _rejections(staged: dict[str, dict], rejected: pd.DataFrame) -> None:
    """Put validation's verdicts on the staged entries (validation names files as `printable` shows them)."""
    by_name = {printable(rel): rel for rel in staged}
    for row in rejected.itertuples(index=False):
        rel = by_name.get(row.path)
        if rel is not None and staged[rel]["refused"] is None:
            staged[rel]["refused"] = {"reason": row.reason, "detail": row.detail}


@flow(name="dfd-retrain")
def retrain(repo: str = ".", landing: str | None = None) -> dict:
    t0 = time.perf_counter()
    repo = str(Path(repo).resolve())
    p = load_params(Path(repo) / "params.yaml")
    f = p.flows
    landing_dir, archive, quarantine = (Path(repo) / (landing or f.landing), Path(repo) / f.archive,
                                        Path(repo) / f.quarantine)
    with run_lock(repo, f.lock_max_age_h) as taken_over:
        remote, pull = ensure_remote(repo, f.remote)
        owed = []
        for j in Journal.pending(repo):  # killed or failed runs: finish what a commit owes, forget the rest
            if committed(repo, j):
                clear_worktree(repo, j.branch)  # a run killed after its commit left its worktree
                owed.append(finish(repo, j, landing_dir, archive, quarantine, remote))
            else:
                clear_uncommitted(repo, j)
        ready, left = settled_landing(landing_dir, f.landing_settle_s)
        if not ready:
            if owed:
                return {"new_images": 0, "finished_earlier_runs": owed, "left_in_landing": left,
                        "lock_taken_over": taken_over}
            raise FlowError(f"nothing to retrain on: no settled file in {landing_dir}"
                            + "".join(f"\n  left: {x['path']}: {x['why']}" for x in left))
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        branch = f"retrain/{stamp}"
        prod = production(repo)
        base, base_why = choose_base(repo, prod)
        older = unmerged_branches(repo, base)
        scratch = Path(repo) / ".dvc" / "tmp" / f"landing-{stamp}"
        staged = stage(landing_dir, ready, scratch / "landed", int(p.validate_.max_file_mb * 2**20))
        j, done = Journal(stamp, branch, base, staged, repo=repo), False
        j.save()  # from here a killed run leaves a journal: the next run clears its worktree and branch
        wt = open_worktree(repo, branch, base)
        try:
            champion, champion_error, source, seen = fetch_champion(repo, base, prod, Path(wt) / ".dvc/tmp/champion")
            accepted, rejected, judged = validate_landing(repo, wt, scratch / "landed", champion)
            _rejections(staged, rejected)
            n_new = merge_into_data(wt, scratch / "landed", accepted, stamp)
            pipeline(wt)
            record = run_gate(wt, champion, champion_error, p, seen)
            record.update(
                stamp=stamp, base_commit=base, base_why=base_why, branch=branch, new_images=n_new,
                quarantined=sum(e["refused"] is not None for e in staged.values()), champion_source=source,
                prod_before=prod, landing_left=left, unmerged_retrain_branches=older, label_issues=judged,
                rejected=[{"path": printable(r), **e["refused"]} for r, e in staged.items() if e["refused"]],
                lock_taken_over=taken_over, finished_earlier_runs=owed,
                data_location=f"branch `{branch}`, images in DVC remote `{remote}` (`git checkout {branch} && {pull}`)")
            diff = sh(["dvc", "metrics", "diff", base, "--md"], wt)
            body = _report(record, f.quarantine, diff, sh(["dvc", "params", "diff", base, "--md"], wt))
            report = Path(wt) / "reports" / "retrain" / f"{stamp}.md"
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(body)
            report.with_suffix(".json").write_text(json.dumps(record, indent=2, default=float) + "\n")
            j.promoted = bool(record["promoted"])
            j.save()  # before the commit: a kill after it is finished by the next run, one before it forgotten
            commit_branch(wt, f"retrain {stamp}: +{n_new} images, "
                              f"{'promoted' if record['promoted'] else 'NOT promoted'}: {record['reason']}")
            j.done("committed")
            done = True
            finished = finish(repo, j, landing_dir, archive, quarantine, remote, wt)
            create_markdown_artifact(key="retrain-report", markdown=body, description="PR body")
        finally:
            close_worktree(repo, wt, branch, keep_branch=done)
            shutil.rmtree(scratch, ignore_errors=True)
            if not done:
                j.close()
    if finished["failed"]:
        raise FlowError(f"retrain {stamp} is committed on {branch} and its landing files are released, but "
                        f"{', '.join(finished['failed'])} failed; the next run retries: {finished['failed']}")
    return {"branch": branch, "promoted": record["promoted"], "reason": record["reason"],
            "pushed": {"dvc": remote, "git": finished.get("git_pushed")}, "registered": finished.get("registered"),
            "new_images": n_new, "quarantined": record["quarantined"], "left_in_landing": left, "gate": record,
            "released": finished.get("released"), "finished_earlier_runs": owed,
            "report": f"reports/retrain/{stamp}.md (on {branch})", "metrics_diff": diff,
            "seconds": round(time.perf_counter() - t0, 1)}


if __name__ == "__main__":
    print(json.dumps(retrain(), indent=2, default=float))
