"""What a committed retraining run owes, in order, each step journaled when done (flows/journal.py):

    release the landing files -> DVC push -> git push (the run's branch and the data line) -> register a promoted
    model (GTO version + stage prod) -> push its tags

A step runs only when every step before it succeeded: a model is never registered while its data or code is only
on this host, and a registration is only counted done once its tags are on origin. A failed step stays owed, with
its error, in the journal and in the run's outcome (.dfd/retrain/records/<stamp>.json); the next run retries it
before anything else. No ML here.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from flows.common import sh
from flows.dataline import advance, has_origin
from flows.journal import Journal
from flows.landing import printable, release
from flows.worktree import detached


@task(retries=2, retry_delay_seconds=1)
def dvc_push(worktree: str, remote: str) -> str:
    """Transient by nature (network, remote storage): retried."""
    return sh(["dvc", "push", "-q", "-r", remote], worktree)


def push_data(repo: str, branch: str, remote: str, wt: str | None = None) -> str:
    """`dvc push` of a committed branch: from its run's worktree, or from a throwaway one sharing the cache."""
    if wt is not None:
        dvc_push(wt, remote)
        return remote
    with detached(repo, sh(["git", "rev-parse", branch], repo).strip()) as tmp:
        dvc_push(tmp, remote)
    return remote


@task(retries=2, retry_delay_seconds=1)
def git_push(repo: str, branch: str, data_branch: str) -> str | None:
    """Push the run's branch and the data line to `origin` (None when the repo has no such remote)."""
    if not has_origin(repo):
        return None
    sh(["git", "push", "-q", "origin", f"{branch}:{branch}", f"{data_branch}:{data_branch}"], repo)
    return "origin"


@task
def register_promoted(repo: str, branch: str, stamp: str) -> dict:
    """A promoted model gets the next version and stage `prod` in the GTO registry (local tags on its branch
    commit; `push_tags` publishes them): `dfd serve --model detector@prod` serves it. Once per commit: a commit
    that already carries a version (a run killed after registering) is not registered again."""
    from deepfake_detector.serving.registry import register, version_at

    commit = sh(["git", "rev-parse", branch], repo).strip()
    done = version_at(repo, "detector", commit, stage="prod")
    if done is not None:
        return done
    return register(repo, "detector", branch, stage="prod", message=f"retrain {stamp}: promoted by the gate")


@task(retries=2, retry_delay_seconds=1)
def push_registration(repo: str, branch: str) -> list[str] | None:
    from deepfake_detector.serving.registry import push_tags

    if not has_origin(repo):
        return None
    return push_tags(repo, "detector", sh(["git", "rev-parse", branch], repo).strip())


def _release(j: Journal, landing: Path, archive: Path, quarantine: Path) -> dict:
    """Move the landing files; those whose move failed stay owed (and out of the next runs' batches)."""
    moved = release(landing, j.staged, archive / j.stamp, quarantine / j.stamp)
    failed = {x["path"] for x in moved["not_moved"]}
    done = {k: v for k, v in moved.items() if k != "not_moved"}
    for key, value in (j.outcome.get("released") or {}).items():  # an earlier, partial release
        done[key] = list(value) + done.get(key, [])
    j.staged = {rel: e for rel, e in j.staged.items() if rel in failed}
    if failed:
        j.outcome["released"] = done
        j.failed("released", "; ".join(f"{printable(x['path'])}: {x['error']}" for x in moved["not_moved"]))
        raise OSError(f"{len(failed)} landing file(s) could not be moved: retried by the next run")
    return done


def finish(repo: str, j: Journal, landing: Path, archive: Path, quarantine: Path, remote: str, data_branch: str,
           wt: str | None = None) -> dict:
    """Do what the journal owes, in order, stopping at the first failure; closes it once nothing is owed."""
    commit = sh(["git", "rev-parse", j.branch], repo).strip()
    j.outcome["on_data_line"] = advance(repo, data_branch, commit)  # a run killed between its commit and this
    steps = {"released": lambda: _release(j, landing, archive, quarantine),
             "dvc_pushed": lambda: push_data(repo, j.branch, remote, wt),
             "git_pushed": lambda: git_push(repo, j.branch, data_branch),
             "registered": lambda: register_promoted(repo, j.branch, j.stamp),
             "tags_pushed": lambda: push_registration(repo, j.branch)}
    for step in j.owes():
        try:
            j.done(step, steps[step]())
        except Exception as exc:  # noqa: BLE001 - owed to the next run, and said in the outcome
            j.failed(step, str(exc))
            if step != "released":  # a file that cannot be moved holds nothing up; a failed push holds up the rest
                break
    out = {"branch": j.branch, "promoted": j.promoted, **j.outcome, "owed": dict(j.outcome.get("owed", {}))}
    if j.owes():
        out["owed_steps"] = j.owes()
    else:
        j.close()
    return out


def owed_moves(journals: list[Journal]) -> dict[str, str]:
    """{landing rel: why} of files whose bytes are merged but whose move an open journal still owes."""
    return {rel: f"merged by retrain {j.stamp}; its move failed and is retried" for j in journals
            for rel in j.staged if not j.steps["released"]}
