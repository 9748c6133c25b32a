"""What a retraining run holds and owes: a lock that is safe on shared storage, and a journal that makes each
landed batch count exactly once. No ML here.

    with run_lock(repo, stale_s=900, heartbeat_s=30) as lock:   # lock.taken_over: None, or the stale lock taken
        for j in Journal.pending(repo): ...                        # runs that committed but still owe steps
        lock.check()                                               # before a commit: still ours?

The lock file (.dvc/tmp/dfd-retrain.lock) names its owner (host, pid and a random id: unique across hosts and
containers that share small pids and hostnames), when it started and its last heartbeat. A thread rewrites the
heartbeat every flows.lock_heartbeat_s. A lock is stale when its heartbeat is older than flows.lock_stale_s, or
when its process is gone and the pid is checkable (same host, same pid namespace and boot). Creation is exclusive
(a hard link of a complete file: no reader sees a half-written lock); so is a takeover: a marker file created
with O_EXCL per stale owner, so that of two runs that find one stale lock only one takes it.

The journal (.dfd/retrain/<stamp>.json) is written before the branch commit and names the staged files (with the
sha256 and inode of each landing original), the branch and the steps done. The commit is the point of no return:
from it on the batch is in the data line and is never merged again. A later run finds a journal whose branch
holds the commit and finishes its steps (release the landing files, DVC push, git push, registration, tag push,
in that order: a model is registered only once its data and code are in the remotes); a journal whose commit
never happened is dropped, and its landing files, never moved, are taken again. A closed journal leaves its
outcome in .dfd/retrain/records/<stamp>.json: what was pushed and registered, or what is still owed.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from flows.common import FlowError

STEPS = ("committed", "released", "dvc_pushed", "git_pushed", "registered", "tags_pushed")
MODEL_STEPS = ("registered", "tags_pushed")  # owed by a promoted model only


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _pid_scope() -> str:
    """Where a pid means one process: this boot and this pid namespace (containers on one host differ)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""  # no /proc: a pid is never trusted, only the heartbeat


class RunLock:
    """One retraining at a time per repo (see the module docstring)."""

    def __init__(self, path: Path, stale_s: float, heartbeat_s: float):
        self.path, self.stale_s, self.heartbeat_s = path, stale_s, heartbeat_s
        now = round(time.time(), 3)
        self.me = {"owner": f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}",
                   "host": socket.gethostname(), "pid": os.getpid(), "scope": _pid_scope(), "started": now, "beat": now}
        self.taken_over: dict | None = None
        self.lost: str | None = None
        self._marker: Path | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> dict | None:
        """The lock's content; {} when unreadable; None when there is no lock."""
        try:
            held = json.loads(self.path.read_text() or "{}")
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, OSError):
            return {}
        return held if isinstance(held, dict) else {}

    def _create(self) -> bool:
        """Exclusive creation of a complete lock file: a hard link of a written temporary file."""
        tmp = self.path.with_name(f".{self.path.name}.{self.me['owner'].replace(':', '-')}.tmp")
        tmp.write_text(json.dumps(self.me))
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _stale_why(self, held: dict) -> str | None:
        if not held:
            age = time.time() - self.path.stat().st_mtime
            return f"unreadable lock file, unchanged for {age:.0f} s" if age > self.stale_s else None
        beat = time.time() - float(held.get("beat", held.get("started", 0)))
        if (held.get("host") == self.me["host"] and held.get("scope") and held.get("scope") == self.me["scope"]
                and isinstance(held.get("pid"), int) and not _alive(held["pid"])):
            return "its process is gone"
        if beat > self.stale_s:
            return f"no heartbeat for {beat:.0f} s (> flows.lock_stale_s {self.stale_s:g})"
        return None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while not self._create():
            held = self._read()
            if held is None:
                continue  # released in between: try again
            why = self._stale_why(held)
            if why is None:
                beat = time.time() - float(held.get("beat", 0))
                raise FlowError(f"another retraining run holds {self.path} (owner {held.get('owner')}, last heartbeat "
                                f"{beat:.0f} s ago); refusing to run two at once. It is taken over once its process "
                                f"is gone or its heartbeat is older than flows.lock_stale_s ({self.stale_s:g} s)")
            stale_id = held.get("owner") or f"unreadable-{self.path.stat().st_mtime_ns}"
            marker = self.path.with_name(f"{self.path.name}.takeover-{stale_id.replace(':', '-').replace('/', '-')}")
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                raise FlowError(f"another run is taking over the stale lock {self.path} ({why})") from None
            if (self._read() or {}).get("owner") != held.get("owner"):  # it changed since we read it: not stale
                marker.unlink(missing_ok=True)
                continue
            write_atomic(self.path, json.dumps(self.me))
            self._marker, self.taken_over = marker, {**held, "why": why}
            break
        self._thread = threading.Thread(target=self._beat, name="dfd-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            held = self._read()
            if not held or held.get("owner") != self.me["owner"]:
                self.lost = f"the lock now names {held.get('owner') if held else 'nobody'}"
                return
            write_atomic(self.path, json.dumps({**self.me, "beat": round(time.time(), 3)}))

    def check(self) -> None:
        """Before a point of no return: the lock must still be ours."""
        held = self._read() or {}
        if self.lost or held.get("owner") != self.me["owner"]:
            raise FlowError(f"this run lost its lock {self.path} ({self.lost or 'taken over'}): stopping before "
                            "its commit")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if (self._read() or {}).get("owner") == self.me["owner"]:
            self.path.unlink(missing_ok=True)
        if self._marker is not None:
            self._marker.unlink(missing_ok=True)


@contextmanager
def run_lock(repo: str | Path, stale_s: float, heartbeat_s: float, name: str = "dfd-retrain.lock"
             ) -> Iterator[RunLock]:
    lock = RunLock(Path(repo) / ".dvc" / "tmp" / name, stale_s, heartbeat_s)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


@dataclass
class Journal:
    stamp: str
    branch: str
    base: str
    staged: dict[str, dict] = field(default_factory=dict)  # landing rel -> {sha256, dev, ino, refused}
    promoted: bool | None = None
    steps: dict[str, bool] = field(default_factory=lambda: {s: False for s in STEPS})
    outcome: dict = field(default_factory=dict)  # what each step did, and the errors of those still owed
    repo: str = ""

    @property
    def path(self) -> Path:
        return Path(self.repo) / ".dfd" / "retrain" / f"{self.stamp}.json"

    @property
    def record_path(self) -> Path:
        return Path(self.repo) / ".dfd" / "retrain" / "records" / f"{self.stamp}.json"

    def save(self) -> None:
        write_atomic(self.path, json.dumps(asdict(self), indent=1, default=str))

    def done(self, step: str, result: object = True) -> None:
        self.steps[step] = True
        self.outcome[step] = result
        self.outcome.get("owed", {}).pop(step, None)
        self.save()

    def failed(self, step: str, error: str) -> None:
        self.outcome.setdefault("owed", {})[step] = error[-500:]
        self.save()

    def owes(self) -> list[str]:
        """Steps still to do after the commit, in order (the model's only for a promoted one)."""
        return [s for s in STEPS[1:] if not self.steps[s] and (s not in MODEL_STEPS or self.promoted)]

    def close(self, committed: bool = True) -> None:
        if committed:
            write_atomic(self.record_path, json.dumps(
                {"stamp": self.stamp, "branch": self.branch, "promoted": self.promoted, "steps": self.steps,
                 **self.outcome}, indent=1, default=str))
        self.path.unlink(missing_ok=True)

    @classmethod
    def pending(cls, repo: str | Path) -> list["Journal"]:
        folder = Path(repo) / ".dfd" / "retrain"
        out = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                data = json.loads(path.read_text())
                data["steps"] = {s: bool(data.get("steps", {}).get(s)) for s in STEPS}  # journals from before a step
                out.append(cls(**{**data, "repo": str(repo)}))
            except (json.JSONDecodeError, TypeError):
                path.rename(path.with_suffix(".unreadable"))  # kept for a person, never read again
        return out
