"""Flow `retrain`: landed images -> staged -> validated -> the data line -> pipeline -> gate -> registry.

    python -m flows.retrain             # uses flows.* in params.yaml (landing folder, data line, remote, gate)

Data adds up independently of models (flows/dataline.py): every run starts from the tip of the data line
(flows.data_branch) with main merged in, and its commit becomes the new tip whether or not its model is promoted.
The champion is the registry's `prod` model, whichever commit holds it (flows/champion.py): rolling `prod` back
changes the champion, never the data.

A run works in its own git worktree on a new branch `retrain/<UTC time>` (flows/worktree.py), so the user's
workspace is never touched. It uses the working copy's params.yaml (committed with the run, so the record's params
diff against the base is what the pipeline and the gate used):
1. it fetches origin (tags: a `prod` made on another host) and finishes what killed or failed runs owe
   (flows/publish.py: release, DVC push, git push, registration, tag push);
2. it stages the settled landed files as copies (flows/landing.py; an I/O error leaves a file for the next run)
   and validates them with the same GX suite, against the images already in the dataset and with the champion as
   the label judge (flows.label_judge: flagged files are listed, or removed);
3. with at least one file accepted, it merges them under data/<label>/batch-<time>/, runs `dvc add`, the pipeline
   and the gate, and commits (data.dvc, dvc.lock, params.yaml, reports/retrain/<time>.{json,md}); the data line
   moves to that commit. An empty landing folder, or a batch whose every file is rejected, commits nothing: a
   clean no-op whose outcome is in .dfd/retrain/records/<time>.json;
4. from the commit on, the batch is in the data and is never merged again; what follows (flows/publish.py) is
   journaled, and a promoted model is registered only once its data and code are pushed.
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
import yaml
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from deepfake_detector.core.params import Params, load_params
from flows.champion import find_champion, production, seen_from_base_splits
from flows.common import FlowError, model_and_splits, sh, stage_args
from flows.dataline import ahead_of, data_tip, sync
from flows.journal import Journal, RunLock, run_lock
from flows.landing import release, settled_landing, stage
from flows.pipeline import pipeline
from flows.publish import finish, owed_moves
from flows.record import markdown, refused, rejections, write_outcome
from flows.worktree import clear_worktree, open_worktree, pull_outputs


def committed(repo: str, j: Journal) -> bool:
    """Did this journal's commit happen? Its branch exists and holds its record."""
    return subprocess.run(["git", "cat-file", "-e", f"{j.branch}:reports/retrain/{j.stamp}.json"], cwd=repo,
                          capture_output=True).returncode == 0


def clear_uncommitted(repo: str, j: Journal) -> None:
    """A run killed before its commit: its worktree and branch go; its landing files were never moved."""
    clear_worktree(repo, j.branch)
    subprocess.run(["git", "branch", "-D", j.branch], cwd=repo, capture_output=True)
    shutil.rmtree(Path(repo) / ".dvc" / "tmp" / f"landing-{j.stamp}", ignore_errors=True)
    j.close(committed=False)


@task
def validate_landing(repo: str, wt: str, staged_dir: Path, champion: str | None, p: Params
                     ) -> tuple[list[str], pd.DataFrame, list[dict]]:
    """The GX validation of the staged copies, against the images already in the dataset (a landed file that
    repeats or contradicts one is rejected, naming it; the existing one stays) and with the champion as the
    label judge at flows.label_judge: (accepted paths, rejected rows, the judge's verdicts)."""
    out = staged_dir.parent
    clean = Path(wt) / stage_args(wt, "validate")[1]
    reference = clean / "manifest.csv" if (clean / "manifest.csv").is_file() else Path(wt) / "data"
    params = yaml.safe_load((Path(wt) / "params.yaml").read_text())
    params["validate"]["label_issue"].update(p.flows.label_judge.model_dump())  # the champion's own setting
    (out / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cmd = ["dfd", "validate", str(staged_dir), str(out / "clean"), str(out / "reports"), "--no-progress",
           "--params", str(out / "params.yaml"), "--reference", str(reference)]
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
def fetch_champion(repo: str, base: str, prod: dict | None, dest: Path, remote: str
                   ) -> tuple[str | None, str | None, str | None, set[str] | None]:
    """(champion dir, error, where it came from, its train/val hashes when the folder lists none). A `prod` whose
    model this host's cache lacks (made on another host) is fetched from the DVC remote first."""
    from deepfake_detector.core.splits_io import read_seen

    champion, error, source = find_champion(repo, base, dest, prod)
    if error and prod:
        try:
            pull_outputs(repo, prod["commit"], [model_and_splits(repo)[0]], remote)
            champion, error, source = find_champion(repo, base, dest, prod)
        except FlowError as exc:
            error += f"; pulling it from DVC remote {remote} failed too: {str(exc).strip().splitlines()[-1][-200:]}"
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


def ensure_remote(repo: str, fallback: str) -> tuple[str, str]:
    """(remote name, how another clone pulls the branch's data): the project's default DVC remote (`dvc remote
    default`, from .dvc/config or config.local: S3, MinIO, ...); else flows.remote when it names a configured
    remote, or the only configured one; else flows.remote as a URL, added to config.local as `dfd-local` (every
    run's worktree copies config.local)."""
    configured = subprocess.run(["dvc", "remote", "default"], cwd=repo, capture_output=True, text=True)
    name = configured.stdout.strip() if configured.returncode == 0 else ""
    if not name:
        names = [ln.split()[0] for ln in sh(["dvc", "remote", "list"], repo).splitlines() if ln.strip()]
        name = fallback if fallback in names else names[0] if len(names) == 1 else ""
    if not name:
        name = "dfd-local"
        url = fallback if "://" in fallback else str((Path(repo) / fallback).resolve())
        sh(["dvc", "remote", "add", "--local", "-f", name, url], repo)
    tracked = subprocess.run(["dvc", "remote", "list", "--project"], cwd=repo, capture_output=True, text=True)
    if name in tracked.stdout.split():
        return name, "dvc pull"  # in the committed .dvc/config: every clone knows it
    url = sh(["dvc", "config", f"remote.{name}.url"], repo).strip()
    return name, f"dvc remote add -d {name} {url} && dvc pull"


def commit_branch(wt: str, message: str) -> None:
    sh(["git", "add", "data.dvc", "dvc.lock", "params.yaml", "reports"], wt)
    sh(["git", "commit", "-q", "-m", message], wt)


def _noop(repo: str, stamp: str, why: str, **facts) -> dict:
    """A run that commits nothing: its outcome on disk and as the flow's result."""
    out = {"stamp": stamp, "new_images": 0, "committed": False, "registered": None, "noop": why, **facts}
    out["record"] = str(write_outcome(repo, stamp, out).relative_to(repo))
    create_markdown_artifact(key="retrain-report", markdown=f"# Retraining {stamp}\n\nNothing committed: {why}.\n\n"
                             f"```json\n{json.dumps(out, indent=1, default=str)[:4000]}\n```", description="no-op")
    return out


def _finish_pending(repo: str, dirs: tuple[Path, Path, Path], remote: str, data_branch: str) -> tuple[list, list]:
    """Killed or failed runs: finish what a commit owes, forget the rest. (outcomes, journals still open)."""
    owed = []
    for j in Journal.pending(repo):
        if committed(repo, j):
            clear_worktree(repo, j.branch)  # a run killed after its commit left its worktree
            j.steps["committed"] = True
            owed.append(finish(repo, j, *dirs, remote, data_branch))
        else:
            clear_uncommitted(repo, j)
    return owed, Journal.pending(repo)


@flow(name="dfd-retrain")
def retrain(repo: str = ".", landing: str | None = None) -> dict:
    t0 = time.perf_counter()
    repo = str(Path(repo).resolve())
    p = load_params(Path(repo) / "params.yaml")
    f = p.flows
    dirs = (Path(repo) / (landing or f.landing), Path(repo) / f.archive, Path(repo) / f.quarantine)
    with run_lock(repo, f.lock_stale_s, f.lock_heartbeat_s) as lock:
        synced = sync(repo)
        remote, pull = ensure_remote(repo, f.remote)
        owed, still_open = _finish_pending(repo, dirs, remote, f.data_branch)
        ready, left = settled_landing(dirs[0], f.landing_settle_s, owed=owed_moves(still_open))
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        facts = {"left_in_landing": left, "finished_earlier_runs": owed, "lock_taken_over": lock.taken_over,
                 "synced": synced}
        if not ready:
            return _noop(repo, stamp, f"no settled file in {dirs[0]}", **facts)
        result = _run(repo, p, lock, dirs, ready, stamp, remote, pull, facts)
    if result.get("owed_steps"):
        raise FlowError(f"retrain {stamp} is committed on {result['branch']} and on the data line, but "
                        f"{', '.join(result['owed_steps'])} is owed (the next run retries): {result['owed']}")
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _run(repo: str, p: Params, lock: RunLock, dirs: tuple[Path, Path, Path], ready: list[str], stamp: str,
         remote: str, pull: str, facts: dict) -> dict:
    f, branch = p.flows, f"retrain/{stamp}"
    prod = production(repo)
    base, base_why = data_tip(repo, f.data_branch, prod)
    head = sh(["git", "rev-parse", "HEAD"], repo).strip()
    scratch = Path(repo) / ".dvc" / "tmp" / f"landing-{stamp}"
    staged, io_left = stage(dirs[0], ready, scratch / "landed", int(p.validate_.max_file_mb * 2**20))
    facts["left_in_landing"] = facts["left_in_landing"] + io_left
    j, done = Journal(stamp, branch, base, staged, repo=repo), False
    j.save()  # from here a killed run leaves a journal: the next run clears its worktree and branch
    wt = None
    try:
        if all(e["refused"] for e in staged.values()):
            j.outcome["released"] = release(dirs[0], staged, dirs[1] / stamp, dirs[2] / stamp)
            return _noop(repo, stamp, "every landed file was refused before validation", rejected=refused(staged),
                         released=j.outcome["released"], **facts)
        wt = open_worktree(repo, branch, base, head, remote)
        shutil.copyfile(Path(repo) / "params.yaml", Path(wt) / "params.yaml")  # what the pipeline and gate use
        champion, champion_error, source, seen = fetch_champion(repo, base, prod, Path(wt) / ".dvc/tmp/champion",
                                                                remote)
        accepted, rejected, judged = validate_landing(repo, wt, scratch / "landed", champion, p)
        rejections(staged, rejected)
        if not accepted:
            j.outcome["released"] = release(dirs[0], staged, dirs[1] / stamp, dirs[2] / stamp)
            return _noop(repo, stamp, "every landed file was rejected", rejected=refused(staged), label_issues=judged,
                         released=j.outcome["released"], **facts)
        n_new = merge_into_data(wt, scratch / "landed", accepted, stamp)
        pipeline(wt)
        record = run_gate(wt, champion, champion_error, p, seen)
        record.update(
            stamp=stamp, base_commit=base, base_why=base_why, branch=branch, new_images=n_new,
            quarantined=sum(e["refused"] is not None for e in staged.values()), champion_source=source,
            prod_before=prod, label_issues=judged, label_judge=f.label_judge.model_dump(), rejected=refused(staged),
            data_line={"branch": f.data_branch, "ahead_of_head": ahead_of(repo, f.data_branch, head)},
            owed_at_commit=["release", "dvc push", "git push"] + (["registration", "tag push"] if record["promoted"]
                                                                   else []),
            data_location=f"branch `{branch}` and the data line `{f.data_branch}`, images in DVC remote `{remote}` "
                          f"(`git checkout {branch} && {pull}`)", landing_left=facts["left_in_landing"],
            **{k: v for k, v in facts.items() if k != "left_in_landing"})
        diff = sh(["dvc", "metrics", "diff", base, "--md"], wt)
        body = markdown(record, f.quarantine, diff, sh(["dvc", "params", "diff", base, "--md"], wt))
        report = Path(wt) / "reports" / "retrain" / f"{stamp}.md"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(body)
        report.with_suffix(".json").write_text(json.dumps(record, indent=2, default=float) + "\n")
        j.promoted = bool(record["promoted"])
        j.save()  # before the commit: a kill after it is finished by the next run, one before it forgotten
        lock.check()
        commit_branch(wt, f"retrain {stamp}: +{n_new} images, "
                          f"{'promoted' if record['promoted'] else 'NOT promoted'}: {record['reason']}")
        j.done("committed")
        done = True
        finished = finish(repo, j, *dirs, remote, f.data_branch, wt)
        create_markdown_artifact(key="retrain-report", markdown=body, description="PR body")
    finally:
        if wt is not None:
            subprocess.run(["git", "worktree", "remove", "--force", wt], cwd=repo, capture_output=True)
        if not done:
            subprocess.run(["git", "branch", "-D", branch], cwd=repo, capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
        if not done:
            j.close(committed=False)
    return {"branch": branch, "promoted": record["promoted"], "reason": record["reason"],
            "pushed": {"dvc": finished.get("dvc_pushed"), "git": finished.get("git_pushed")},
            "registered": finished.get("registered"), "owed": finished.get("owed", {}),
            "owed_steps": finished.get("owed_steps", []), "new_images": n_new, "quarantined": record["quarantined"],
            "left_in_landing": facts["left_in_landing"], "gate": record, "released": finished.get("released"),
            "finished_earlier_runs": facts["finished_earlier_runs"], "report": f"reports/retrain/{stamp}.md (on {branch})",
            "metrics_diff": diff, "data_line": f.data_branch}


if __name__ == "__main__":
    print(json.dumps(retrain(), indent=2, default=float))
