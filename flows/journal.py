"""What a retraining run holds and owes: a lock that recovers from a killed run, and a journal that makes each
landed batch count exactly once. No ML here.

    with run_lock(repo, max_age_h=12) as taken_over:     # None, or what was taken over from a dead run
        for j in Journal.pending(repo): ...                # runs that committed but still owe release/push/registration

The lock file (.dvc/tmp/dfd-retrain.lock) holds host, pid and start time. A lock whose process is gone (same
host) or older than flows.lock_max_age_h is taken over, and the run's record says so; a live one refuses the run.

The journal (.dfd/retrain/<stamp>.json) is written before the branch commit and names the staged files (with
the sha256 and inode of each landing original), the branch and the steps done. The commit is the point of no
return: from it on, the batch is in the data and is never merged again. A later run finds a journal whose branch
holds the commit and finishes its steps (release the landing files, push, register); a journal whose commit never
happened is dropped, and its landing files, never moved, are simply taken again.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from flows.common import FlowError

STEPS = ("committed", "released", "dvc_pushed", "git_pushed", "registered")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


@contextmanager
def run_lock(repo: str | Path, max_age_h: float, name: str = "dfd-retrain.lock") -> Iterator[dict | None]:
    """One retraining at a time per repo. Yields None, or the stale lock that was taken over (and why)."""
    path = Path(repo) / ".dvc" / "tmp" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = {"host": socket.gethostname(), "pid": os.getpid(), "started": round(time.time(), 3)}
    taken_over = None
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, json.dumps(mine).encode())
        os.close(fd)
    except FileExistsError:
        try:
            held = json.loads(path.read_text() or "{}")
        except (json.JSONDecodeError, OSError):
            held = {}
        if not isinstance(held, dict):  # a lock file from before it held JSON (a bare pid)
            held = {}
        age_h = (time.time() - float(held.get("started", 0))) / 3600
        dead = held.get("host") == mine["host"] and isinstance(held.get("pid"), int) and not _alive(held["pid"])
        if not (dead or age_h > max_age_h or not held):
            raise FlowError(f"another retraining run holds {path} (host {held.get('host')}, pid {held.get('pid')}, "
                            f"started {age_h:.1f} h ago); refusing to run two at once. It is taken over once its "
                            f"process is gone or after flows.lock_max_age_h ({max_age_h:g} h)")
        why = ("its process is gone" if dead else f"older than flows.lock_max_age_h ({age_h:.1f} h > {max_age_h:g} h)"
               if held else "unreadable lock file")
        taken_over = {**held, "why": why}
        _write_atomic(path, json.dumps(mine))
    try:
        yield taken_over
    finally:
        try:
            if json.loads(path.read_text()).get("pid") == mine["pid"]:
                path.unlink()
        except (OSError, json.JSONDecodeError):
            pass


@dataclass
class Journal:
    stamp: str
    branch: str
    base: str
    staged: dict[str, dict] = field(default_factory=dict)  # landing rel -> {sha256, dev, ino, accepted, reason}
    promoted: bool | None = None
    steps: dict[str, bool] = field(default_factory=lambda: {s: False for s in STEPS})
    repo: str = ""

    @property
    def path(self) -> Path:
        return Path(self.repo) / ".dfd" / "retrain" / f"{self.stamp}.json"

    def save(self) -> None:
        _write_atomic(self.path, json.dumps(asdict(self), indent=1, default=str))

    def done(self, step: str) -> None:
        self.steps[step] = True
        self.save()

    def owes(self) -> list[str]:
        """Steps still to do after the commit (registration only for a promoted model)."""
        return [s for s in STEPS[1:] if not self.steps[s] and (s != "registered" or self.promoted)]

    def close(self) -> None:
        self.path.unlink(missing_ok=True)

    @classmethod
    def pending(cls, repo: str | Path) -> list["Journal"]:
        folder = Path(repo) / ".dfd" / "retrain"
        out = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                out.append(cls(**{**json.loads(path.read_text()), "repo": str(repo)}))
            except (json.JSONDecodeError, TypeError):
                path.rename(path.with_suffix(".unreadable"))  # kept for a person, never read again
        return out
