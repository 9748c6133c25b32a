"""Git worktrees for a retraining run: its own checkout on its own branch, sharing the repo's DVC cache and config
(config.local included), so the user's workspace is never touched. No ML here.

    wt = open_worktree(repo, branch, base, head, remote)     # base + main merged in, data/ checked out (or pulled)
    close_worktree(repo, wt, branch, keep_branch=True)
    with detached(repo, commit) as tmp: ...                    # a throwaway checkout: push or pull a commit's data
"""

from __future__ import annotations

import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from prefect import task

from flows.common import FlowError, sh, stage_option
from flows.dataline import merge_head


def worktree_path(repo: str, branch: str) -> Path:
    return Path(repo).parent / f".{Path(repo).name}-{branch.replace('/', '-')}"


def _quiet(cmd: list[str], cwd: str) -> None:
    subprocess.run(cmd, cwd=cwd, capture_output=True)


def share_dvc(repo: str, wt: str | Path) -> None:
    """The worktree uses the repo's DVC cache and its config.local (remotes and credentials set with --local)."""
    local = Path(repo) / ".dvc" / "config.local"
    if local.is_file():
        shutil.copy2(local, Path(wt) / ".dvc" / "config.local")
    sh(["dvc", "config", "--local", "cache.dir", sh(["dvc", "cache", "dir"], repo).strip()], wt)


def checkout_data(wt: str | Path, remote: str | None, targets: list[str]) -> str:
    """`dvc checkout` of targets, pulling from the remote what this host's cache lacks: 'cache' or 'remote'."""
    try:
        sh(["dvc", "checkout", "-q", *targets], wt)
        return "cache"
    except FlowError:
        if remote is None:
            raise
    sh(["dvc", "pull", "-q", "-r", remote, *targets], wt)
    return "remote"


@task
def open_worktree(repo: str, branch: str, base: str = "HEAD", head: str | None = None,
                  remote: str | None = None) -> str:
    """A git worktree of `base` on a new branch, main (`head`) merged in, with the repo's DVC cache and config and
    data/ checked out (pulled from `remote` when this host's cache lacks it)."""
    wt = worktree_path(repo, branch)
    sh(["git", "worktree", "add", "-q", "-b", branch, str(wt), base], repo)
    try:
        share_dvc(repo, wt)
        if head is not None:
            merge_head(str(wt), head)
        sh(["dvc", "checkout", "--allow-missing", "-q"], wt)  # stage outputs may be absent (uncached)...
        checkout_data(wt, remote, ["data.dvc"])  # ...the raw data may not: never retrain on the new batch alone
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


def clear_worktree(repo: str, branch: str) -> None:
    """The worktree folder a killed run left (the branch stays)."""
    wt = worktree_path(repo, branch)
    _quiet(["git", "worktree", "remove", "--force", str(wt)], repo)
    shutil.rmtree(wt, ignore_errors=True)
    _quiet(["git", "worktree", "prune"], repo)


@contextmanager
def detached(repo: str, commit: str) -> Iterator[str]:
    """A throwaway detached checkout of `commit` sharing the repo's DVC cache and config (no data checked out)."""
    tmp = worktree_path(repo, f"tmp-{commit[:12]}")
    clear_worktree(repo, f"tmp-{commit[:12]}")
    sh(["git", "worktree", "add", "-q", "--detach", str(tmp), commit], repo)
    try:
        share_dvc(repo, tmp)
        yield str(tmp)
    finally:
        _quiet(["git", "worktree", "remove", "--force", str(tmp)], repo)


def pull_outputs(repo: str, commit: str, targets: list[str], remote: str) -> None:
    """Bring a commit's DVC outputs (e.g. prod's model) into this host's cache from the remote."""
    with detached(repo, commit) as tmp:
        sh(["dvc", "fetch", "-q", "-r", remote, *targets], tmp)
