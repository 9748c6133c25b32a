"""Small helpers shared by the flows: running commands, reading stage metrics, the repo lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

BIN = str(Path(sys.executable).parent)  # the venv's dvc/dfd


class FlowError(RuntimeError):
    """A command the flow ran failed; the message carries its output."""


def sh(cmd: list[str], cwd: str | Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise FlowError(f"`{' '.join(cmd)}` failed in {cwd} ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                        f"{proc.stderr[-4000:]}")
    return proc.stdout


def _stages(repo: str | Path) -> dict:
    return yaml.safe_load((Path(repo) / "dvc.yaml").read_text())["stages"]


def _argv(repo: str | Path, stage: str) -> list[str]:
    """A dvc.yaml stage's cmd as argv (the last command if it is a list)."""
    import shlex

    cmd = _stages(repo)[stage]["cmd"]
    return shlex.split(cmd if isinstance(cmd, str) else cmd[-1])


def stage_metric_files(repo: str | Path) -> dict[str, list[str]]:
    """{stage: [metrics files]} as declared in dvc.yaml (no paths hard-coded in flows)."""
    out = {}
    for name, stage in _stages(repo).items():
        files = []
        for entry in stage.get("metrics", []):
            files.append(entry if isinstance(entry, str) else next(iter(entry)))
        out[name] = files
    return out


def stage_option(repo: str | Path, stage: str, option: str) -> str:
    """The value of `option` in a dvc.yaml stage's cmd (e.g. drift's --reference): paths stay in dvc.yaml."""
    argv = _argv(repo, stage)
    if option not in argv[:-1]:
        raise FlowError(f"dvc.yaml stage {stage!r} has no {option} in its cmd: {' '.join(argv)}")
    return argv[argv.index(option) + 1]


def stage_args(repo: str | Path, stage: str) -> list[str]:
    """The positional arguments of a dvc.yaml stage's `dfd <command>` (e.g. train: splits, model, reports)."""
    out, skip = [], False
    for tok in _argv(repo, stage)[2:]:
        if skip:
            skip = False
        elif tok.startswith("--"):
            skip = not tok.startswith("--no-") and "=" not in tok
        else:
            out.append(tok)
    return out


def model_and_splits(repo: str | Path) -> tuple[str, str]:
    """Where the train stage reads its splits and writes the model: `dfd train SPLITS MODEL REPORTS` in dvc.yaml."""
    splits, model = stage_args(repo, "train")[:2]
    return model, splits


PARTIAL_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload", ".download", ".filepart")


def settled_landing(landing: Path, settle_s: float, now: float | None = None) -> tuple[list[str], list[dict]]:
    """(ready, left): the landed files (paths relative to landing, under real/ or fake/) a run may
    take, and those it leaves for the next one, each with why: hidden files and folders (.DS_Store,
    rsync's .name.XXXXXX), partial uploads (*.part, *.tmp, ...), files modified less than settle_s
    seconds ago (still being written), files outside real/ and fake/. Nothing is moved; a missing
    folder has nothing ready."""
    now = time.time() if now is None else now
    ready, left = [], []
    if not landing.is_dir():
        return ready, left
    for path in sorted(p for p in landing.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(landing)
        age = now - path.lstat().st_mtime
        if any(part.startswith(".") for part in rel.parts):
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
        left.append({"path": rel.as_posix(), "why": why})
    return ready, left


def stage_files(landing: Path, rels: list[str], dest: Path) -> Path:
    """dest/<rel> hard links (copies across file systems) to landing/<rel>: a folder holding only the
    ready files, for the stages to read. landing/ is not touched."""
    import shutil

    for rel in rels:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(landing / rel, dest / rel, follow_symlinks=False)  # a symlink stays one (validation rejects it)
        except OSError:
            shutil.copy2(landing / rel, dest / rel)
    return dest


def read_metrics(repo: str | Path, rel: str) -> dict:
    path = Path(repo) / rel
    return json.loads(path.read_text()) if path.is_file() else {}


def metrics_markdown(title: str, metrics: dict) -> str:
    rows = [f"### {title}", "", "| metric | value |", "|---|---|"]
    for key, value in metrics.items():
        if isinstance(value, (int, float, bool, str)) or value is None:
            rows.append(f"| {key} | {value} |")
    return "\n".join(rows) + "\n"


@contextmanager
def repo_lock(repo: str | Path, name: str = "dfd-retrain.lock"):
    """One retraining at a time per repo: a second run is refused with a clear error."""
    path = Path(repo) / ".dvc" / "tmp" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise FlowError(f"another retraining run holds {path} (pid {path.read_text().strip() or '?'}); "
                        "refusing to run two at once. Delete the file if that run is dead.") from None
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def wait_healthy(api_url: str, timeout_s: float = 90.0) -> None:
    """Poll `GET {api_url}/health` until the Prefect server answers true (or time out)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api_url}/health", timeout=2).json() is True:
                return
        except (httpx.HTTPError, ValueError) as exc:
            last = exc
        time.sleep(0.5)
    raise FlowError(f"Prefect server at {api_url} not healthy after {timeout_s}s: {last}")


if __name__ == "__main__":  # python -m flows.common wait URL
    wait_healthy(sys.argv[2])
