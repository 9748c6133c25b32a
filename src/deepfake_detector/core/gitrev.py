"""Reading a file as it is at a git revision: the one helper for it (metric diffs, the registry, the champion).

    text = file_at("HEAD~1", "reports/eval/metrics.json", repo=".")   # None: no such file at that revision
"""

from __future__ import annotations

import subprocess
from pathlib import Path


class GitError(RuntimeError):
    """git itself failed (not a repository, an unknown revision): not the same as a file that is not there."""


def file_at(rev: str, path: str, repo: str | Path = ".") -> str | None:
    """The text of `path` at `rev`, or None when the revision exists but holds no such file."""
    known = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=repo,
                           capture_output=True, text=True)
    if known.returncode != 0:
        raise GitError(f"{repo}: no commit {rev!r} ({known.stderr.strip() or 'unknown revision'})")
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None
