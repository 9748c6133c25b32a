"""The landing folder: which files a run may take, their staged copies, and releasing them. No ML here.

    ready, left = settled_landing(landing, settle_s)          # what may be taken now, what waits (and why)
    staged = stage(landing, ready, scratch, max_bytes)          # copies: the bytes validation reads and merge merges
    release(landing, staged, archive / stamp, quarantine / stamp)   # only files still identical to their staged copy

Staging copies each ready file once, never through a symlink (a symlink, or a file over validate.max_file_mb, is
not copied: it is refused at once), and notes the sha256, device and inode of the original. Validation reads the
copies, the merge copies from them, and release moves a landing file only while it is still that same file (same
inode and hash): one replaced in between stays in landing/ for the next run, which validates it anew.

An I/O error (a full disk, a stale network share) is never a verdict on a file: one that cannot be read while
staging, or moved while releasing, stays in landing/ and is retried by the next run, named in the record. A file
whose bytes are already merged but whose move failed is not taken again: `settled_landing(..., owed=...)` leaves it
to the journal that owes its move.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import time
from pathlib import Path

import pandas as pd

PARTIAL_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload", ".download", ".filepart")
CHUNK = 2**20


def settled_landing(landing: Path, settle_s: float, now: float | None = None,
                    owed: dict[str, str] | None = None) -> tuple[list[str], list[dict]]:
    """(ready, left): the landed files (paths relative to landing, under real/ or fake/) a run may take, and those
    it leaves for the next one, each with why: hidden files and folders (.DS_Store, rsync's .name.XXXXXX), partial
    uploads (*.part, *.tmp, ...), files modified less than settle_s seconds ago (still being written), files outside
    real/ and fake/, files an earlier run merged and still owes a move (`owed`: {rel: why}). Nothing is moved; a
    missing folder has nothing ready. Names need not be UTF-8."""
    owed = owed or {}
    now = time.time() if now is None else now
    ready, left = [], []
    if not landing.is_dir():
        return ready, left
    for path in sorted(p for p in landing.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(landing)
        age = now - path.lstat().st_mtime
        if rel.as_posix() in owed:
            why = owed[rel.as_posix()]
        elif any(part.startswith(".") for part in rel.parts):
            why = "hidden file"
        elif path.name.lower().endswith(PARTIAL_SUFFIXES):
            why = "partial upload"
        elif rel.parts[0] not in ("real", "fake") or len(rel.parts) < 2:
            why = "not under real/ or fake/"
        elif age < settle_s:
            why = f"modified {max(age, 0):.0f} s ago (< flows.landing_settle_s {settle_s:g}): may still be arriving"
        else:
            ready.append(rel.as_posix())
            continue
        left.append({"path": printable(rel.as_posix()), "why": why})
    return ready, left


def printable(rel: str) -> str:
    """A landed path as JSON, CSV and Markdown can hold it (names that are not UTF-8: backslash escapes)."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def _copy_hashed(src: Path, dst: Path) -> str:
    """Copy src (opened without following a symlink) to dst; its sha256."""
    h = hashlib.sha256()
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(CHUNK):
            h.update(chunk)
            fout.write(chunk)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def stage(landing: Path, ready: list[str], dest: Path, max_bytes: int) -> tuple[dict[str, dict], list[dict]]:
    """Copy each ready file to dest/<rel>: ({rel: {sha256, dev, ino, refused}}, left). `refused` (a symlink, a file
    over max_bytes) means it was not copied and is quarantined with that reason; a file that cannot be read (an I/O
    error) is in `left`, with why, for the next run. landing/ is only read."""
    out: dict[str, dict] = {}
    left: list[dict] = []
    for rel in ready:
        src = landing / rel
        st = os.lstat(src)
        entry = {"dev": st.st_dev, "ino": st.st_ino, "sha256": None, "refused": None}
        if stat.S_ISLNK(st.st_mode):
            entry["refused"] = {"reason": "unsupported", "detail": "symlink: its bytes are not versioned"}
        elif st.st_size > max_bytes:
            entry["refused"] = {"reason": "unreadable", "detail": f"file of {st.st_size / 2**20:.1f} MB is over "
                                                                  f"validate.max_file_mb ({max_bytes / 2**20:g} MB)"}
        else:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            try:
                entry["sha256"] = _copy_hashed(src, dest / rel)
            except OSError as exc:  # the storage's fault, not the file's: retried next run
                (dest / rel).unlink(missing_ok=True)
                left.append({"path": printable(rel), "why": f"I/O error while staging ({exc.strerror or exc}): "
                                                            "retried by the next run"})
                continue
        out[rel] = entry
    return out, left


def _unchanged(path: Path, entry: dict) -> bool:
    """Still the file that was staged: same device and inode, and (when it was copied) the same bytes."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if (st.st_dev, st.st_ino) != (entry["dev"], entry["ino"]):
        return False
    return entry["sha256"] is None or (stat.S_ISREG(st.st_mode) and _sha256(path) == entry["sha256"])


def release(landing: Path, staged: dict[str, dict], archive: Path, quarantine: Path) -> dict[str, list]:
    """Move each staged landing file to archive/ (merged) or quarantine/ (refused; rejected.csv says why) while it
    is still the staged file; one that changed since, or is gone, stays. A move that fails (an I/O error) is in
    `not_moved` with its error: the caller keeps owing it. Returns what went where."""
    moved: dict[str, list] = {"archived": [], "quarantined": [], "changed_since_staging": [], "not_moved": []}
    rejected = []
    for rel, entry in staged.items():
        src = landing / rel
        if not _unchanged(src, entry):
            moved["changed_since_staging"].append(printable(rel))
            continue
        bad = entry.get("refused")
        dest = (quarantine if bad else archive) / rel
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), dest)
        except OSError as exc:
            moved["not_moved"].append({"path": rel, "error": f"{exc.strerror or exc}"})
            continue
        moved["quarantined" if bad else "archived"].append(printable(rel))
        if bad:
            rejected.append({"path": printable(rel), "label": rel.split("/", 1)[0], **bad})
    if rejected:
        csv = quarantine / "rejected.csv"  # a retried release adds to what the first one wrote
        frame = pd.DataFrame(rejected, columns=["path", "label", "reason", "detail"])
        if csv.is_file():
            frame = pd.concat([pd.read_csv(csv, dtype=str, keep_default_na=False), frame], ignore_index=True)
        frame.to_csv(csv, index=False)
    return moved
