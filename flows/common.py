"""Small helpers shared by the flows: running commands, reading dvc.yaml stages and their metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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


def read_metrics(repo: str | Path, rel: str) -> dict:
    path = Path(repo) / rel
    return json.loads(path.read_text()) if path.is_file() else {}


def metrics_markdown(title: str, metrics: dict) -> str:
    rows = [f"### {title}", "", "| metric | value |", "|---|---|"]
    for key, value in metrics.items():
        if isinstance(value, (int, float, bool, str)) or value is None:
            rows.append(f"| {key} | {value} |")
    return "\n".join(rows) + "\n"


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
