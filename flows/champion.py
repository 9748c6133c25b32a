"""Finding the champion for the retrain gate, and the commit a run starts from. No ML here: git, GTO, DVC and
lock-file comparisons.

    prod = production(repo)                          # {"version", "commit"} of detector@prod, or None
    champion, error, source = find_champion(repo, base, dest, prod)     # base: the run's start (the data line)

The champion is the registry's `prod` model, whichever commit holds it. With no `prod`, it is the base commit's
model. Either way:
1. `dvc get <model> --rev <commit>` from the DVC cache or remote: that commit's own model.
2. When that model is in no cache or remote (e.g. a fresh clone whose `make repro` ran on another
   CPU, so the rebuilt model has other bytes than the committed dvc.lock names), the workspace model
   is the champion if it was built from the same inputs: for `train` and every stage upstream of
   it, the workspace dvc.lock's deps (paths + hashes) and params equal that commit's, and
   `dvc status train` says the workspace files match the workspace dvc.lock.
3. Otherwise the gate refuses, and the error names the fix (`dvc pull`, or commit the new dvc.lock).
"First model" (no champion) only when there is no `prod` and the base commit has no dvc.lock or no `train`
stage in it; a base commit whose lock cannot be read, or whose train stage lacks the model dvc.yaml names, is an
error: never a promotion by failure.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from deepfake_detector.core.gitrev import GitError, file_at
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


def production(repo: str) -> dict | None:
    """The registry's `prod` model: {"version", "commit"}, or None when no version holds the stage."""
    from deepfake_detector.serving.registry import RegistryError, find_version

    try:
        version, commit = find_version(repo, "detector", "prod")
    except RegistryError:
        return None
    return {"version": version, "commit": commit}


def find_champion(repo: str, base: str, dest: Path, prod: dict | None = None
                  ) -> tuple[str | None, str | None, str | None]:
    """(model dir, None, source) | (None, None, None): first model, no prod and no trained model on the base
    commit | (None, error naming the fix, None)."""
    model_dir, _ = model_and_splits(repo)
    commit = prod["commit"] if prod else base
    what = f"prod {prod['version']} (commit {commit[:10]})" if prod else f"base commit {commit[:10]}"
    try:
        text = file_at(commit, "dvc.lock", repo)
    except GitError as exc:
        return None, f"{what}: {exc}", None
    stages = ((yaml.safe_load(text) or {}) if text else {}).get("stages") or {}
    if "train" not in stages:
        if prod:
            return None, f"{what} has no trained model in its dvc.lock: the registry names a commit without one", None
        return None, None, None  # the first model of this project
    base_lock = {"stages": stages}
    md5 = _out_hash(base_lock, "train", model_dir)
    if md5 is None:
        return None, (f"{what}'s dvc.lock trains no {model_dir} (dvc.yaml names it as the model): cannot tell "
                      "which model is the champion"), None
    try:
        sh(["dvc", "get", repo, model_dir, "--rev", commit, "-o", str(dest)], repo)
        return str(dest), None, f"{what} ({model_dir} {md5}, from the DVC cache or remote)"
    except FlowError as exc:
        lines = [ln for ln in str(exc).splitlines() if "ERROR" in ln] or str(exc).strip().splitlines()[-1:]
        fetch_error = lines[0][-200:]
    lock_file = Path(repo) / "dvc.lock"
    work_lock = yaml.safe_load(lock_file.read_text()) or {} if lock_file.is_file() else {}
    why = input_differences(base_lock, work_lock) or _stale(repo, model_dir)
    if why:
        return None, (f"{what}'s model ({model_dir} {md5}) is in no DVC cache or remote "
                      f"({fetch_error}), and the workspace model cannot stand in: {'; '.join(why[:5])}. "
                      "Fix: `dvc pull` from the remote that holds it, or run `dvc repro` and commit the new "
                      "dvc.lock so that its model becomes the champion"), None
    shutil.copytree(Path(repo) / model_dir, dest)
    return str(dest), None, (f"workspace {model_dir} ({_out_hash(work_lock, 'train', model_dir)}): built from the "
                             f"same inputs as {what} (deps and params of train and every stage upstream match its "
                             f"dvc.lock), whose own model {md5} is in no DVC cache or remote")


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
