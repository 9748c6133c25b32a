"""Finding the champion for the retrain gate: the base commit's model, or a workspace model that
provably stands in for it. No ML here: git, DVC and lock-file comparisons.

    champion, error, source = find_champion(repo, base, dest)

1. `dvc get <model> --rev <base>` from the DVC cache or remote: the base commit's own model.
2. When that model is in no cache or remote (e.g. a fresh clone whose `make repro` ran on another
   CPU, so the rebuilt model has other bytes than the committed dvc.lock names), the workspace model
   is the champion if it was built from the same inputs: for `train` and every stage upstream of
   it, the workspace dvc.lock's deps (paths + hashes) and params equal the base commit's, and
   `dvc status train` says the workspace files match the workspace dvc.lock.
3. Otherwise the gate refuses, and the error names the fix (`dvc pull`, or commit the new dvc.lock).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from flows.common import FlowError, model_and_splits, sh


def _hash(entry: dict) -> str | None:
    """A dvc.lock dep's or out's content hash."""
    return entry.get("md5") or entry.get("hash")


def _deps(stage: dict) -> dict[str, str | None]:
    return {d["path"]: _hash(d) for d in stage.get("deps", [])}


def input_differences(base_lock: dict, work_lock: dict, stage: str = "train") -> list[str]:
    """What differs between two dvc.lock files in the deps and params of `stage` and every stage
    upstream of it (those whose outs it depends on). [] = built from the same inputs."""
    base, work = base_lock.get("stages") or {}, work_lock.get("stages") or {}
    todo, done, diffs = [stage], set(), []
    while todo:
        name = todo.pop()
        if name in done:
            continue
        done.add(name)
        b, w = base.get(name), work.get(name)
        if b is None or w is None:
            diffs.append(f"{name}: not in both dvc.lock files")
            continue
        bd, wd = _deps(b), _deps(w)
        diffs += [f"{name}: dep {p} ({bd.get(p)} vs {wd.get(p)})" for p in sorted(set(bd) | set(wd)) if bd.get(p) != wd.get(p)]
        if (b.get("params") or {}) != (w.get("params") or {}):
            diffs.append(f"{name}: params")
        todo += [other for other, st in base.items() if {o["path"] for o in st.get("outs", [])} & set(bd)]
    return diffs


def _stale(repo: str, model_dir: str) -> list[str]:
    """What `dvc status train` finds stale that matters here: any dep, param or command, or the model
    itself (a missing uncached out such as the checkpoints does not)."""
    import json

    status = json.loads(sh(["dvc", "status", "--json", "train"], repo) or "{}")
    why = []
    for entry in status.get("train", []):
        if isinstance(entry, dict):
            for kind, changed in entry.items():
                if kind != "changed outs" or model_dir in changed:
                    why.append(f"`dvc status train`: {kind} {changed}")
        else:
            why.append(f"`dvc status train`: {entry}")
    return why


def _out_hash(lock: dict, stage: str, path: str) -> str | None:
    for out in ((lock.get("stages") or {}).get(stage) or {}).get("outs", []):
        if out.get("path") == path:
            return _hash(out)
    return None


def find_champion(repo: str, base: str, dest: Path) -> tuple[str | None, str | None, str | None]:
    """(model dir, None, source) | (None, None, None) when the base commit has no trained model |
    (None, error naming the fix, None) when it has one that cannot be had."""
    try:
        base_lock = yaml.safe_load(sh(["git", "show", f"{base}:dvc.lock"], repo)) or {}
    except FlowError:
        return None, None, None
    model_dir, _ = model_and_splits(repo)
    md5 = _out_hash(base_lock, "train", model_dir)
    if md5 is None:
        return None, None, None
    try:
        sh(["dvc", "get", repo, model_dir, "--rev", base, "-o", str(dest)], repo)
        return str(dest), None, f"base commit {base[:10]} ({model_dir} {md5}, from the DVC cache or remote)"
    except FlowError as exc:
        lines = [ln for ln in str(exc).splitlines() if "ERROR" in ln] or str(exc).strip().splitlines()[-1:]
        fetch_error = lines[0][-200:]
    lock_file = Path(repo) / "dvc.lock"
    work_lock = yaml.safe_load(lock_file.read_text()) or {} if lock_file.is_file() else {}
    why = input_differences(base_lock, work_lock) or _stale(repo, model_dir)
    if why:
        return None, (f"the base commit {base[:10]}'s model ({model_dir} {md5}) is in no DVC cache or remote "
                      f"({fetch_error}), and the workspace model cannot stand in: {'; '.join(why[:5])}. "
                      "Fix: `dvc pull` from the remote that holds it, or run `dvc repro` and commit the new "
                      "dvc.lock so that its model becomes the champion"), None
    shutil.copytree(Path(repo) / model_dir, dest)
    return str(dest), None, (f"workspace {model_dir} ({_out_hash(work_lock, 'train', model_dir)}): built from the "
                             f"same inputs as base commit {base[:10]} (deps and params of train and every stage "
                             f"upstream match its dvc.lock), whose own model {md5} is in no DVC cache or remote")


def seen_from_base_splits(repo: str, base: str, dest: Path) -> set[str] | None:
    """sha256 of the base commit's train + val images (for a champion made before models listed
    them, seen_sha256.txt), or None when those split files cannot be had either."""
    from deepfake_detector.core.splits_io import split_hashes

    _, splits = model_and_splits(repo)
    try:
        sh(["dvc", "get", repo, splits, "--rev", base, "-o", str(dest)], repo)
    except FlowError:
        return None
    return split_hashes(dest)
