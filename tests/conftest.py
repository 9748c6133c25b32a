"""Shared fixtures: offline/quiet env, tiny demo data, tiny params, temp DVC projects."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

os.environ.update({
    "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1", "ITERATIVE_DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "t@example.com",
})
os.environ.pop("PREFECT_API_URL", None)

def _limits():
    from deepfake_detector.core.params import load_params

    return load_params(REPO / "params.yaml").decode_limits()


LIMITS = _limits()  # the decode limits of this repo's params.yaml (format allowlist, pixel cap)

TINY = {  # params that make every stage take seconds on 2 cores
    "seed": 0,
    "validate": {"min_size": 16},
    "split": {"val": 0.25, "test": 0.25},
    "model": {"extra_convs": 1, "generator_width": 8, "latent_dim": 16, "generator_size": 32},  # default backbone
    "train": {"image_size": 32, "epochs": 1, "batch_size": 8, "patience": 3},
    "drift": {"embedding_dims": 4},
    "baselines": {"cnn_ablations": False},  # two more fine-tunes per repro; tests/test_evaluate.py turns them on
    "flows": {"landing_settle_s": 0},  # files the tests land are complete when written
}


def write_params(path: Path, **overrides: dict) -> Path:
    """A complete params file: this repo's params.yaml with TINY and the overrides merged on top
    (the same load_params/merge the CLI and the baselines use; every key is required)."""
    from deepfake_detector.core.params import load_params

    params = load_params(REPO / "params.yaml", TINY, overrides).model_dump(by_alias=True)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def free_port() -> int:
    """A TCP port nobody listens on at 127.0.0.1 (for servers the tests start)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def pytest_configure(config):
    """Under pytest-xdist (`make test`: `-n 2`), one compute thread per worker and for every process a test
    starts (OMP_NUM_THREADS is inherited): two workers with two torch threads each on 2 cores run several times
    slower than two with one (OpenMP threads spin while they wait)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """A small deterministic demo set: data/real, data/fake (40 each)."""
    from deepfake_detector.data.demo import make_demo

    root = tmp_path_factory.mktemp("demo") / "data"
    make_demo(root, per_class=40, seed=0)
    return root


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, demo_dir) -> Path:
    """validate + split + train run once (core functions, tiny params) for downstream tests."""
    from deepfake_detector.core.params import load_params
    from deepfake_detector.data.split import split
    from deepfake_detector.model.train import train
    from deepfake_detector.data.validate import validate
    from deepfake_detector.model.embeddings import embed_files

    work = tmp_path_factory.mktemp("prepared")
    p = load_params(write_params(work / "params.yaml"))
    validate(demo_dir, work / "clean", work / "reports/validation", p.validate_, p.decode_limits(), p.seed,
             progress=False, embed=embed_files)
    split(work / "clean", work / "splits", work / "reports/split", p.split, p.seed)
    train(work / "splits", work / "model", work / "reports/train", p, ckpt_dir=work / "ckpt", progress=False)
    return work


def init_project(dest: Path, data: Path, params: Path | None = None) -> Path:
    """A temp git + DVC project: this repo's pipeline and flow files, the given data, `dvc add data`, committed."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".gitignore", "prefect.yaml"):
        shutil.copy(REPO / name, dest / name)
    for name in ("src", "flows"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    if params is None:
        write_params(dest / "params.yaml")
    else:
        shutil.copy(params, dest / "params.yaml")
    shutil.copytree(data, dest / "data")
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["dvc", "init", "-q"], dest)
    run(["dvc", "config", "core.analytics", "false"], dest)
    run(["dvc", "config", "plots.html_template", "plots_offline.html"], dest)  # as this repo's .dvc/config
    run(["dfd", "plots-template", ".dvc/plots_offline.html"], dest)
    run(["dvc", "add", "-q", "data"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "init"], dest)
    return dest


@pytest.fixture(scope="session")
def repro_project(tmp_path_factory, demo_dir) -> Path:
    """A temp git+DVC project on tiny demo data after one full `dvc repro`, committed."""
    proj = init_project(tmp_path_factory.mktemp("proj") / "repo", demo_dir)
    run(["dvc", "repro", "-q"], proj)
    run(["git", "add", "-A"], proj)
    run(["git", "commit", "-qm", "first pipeline run"], proj)
    return proj


@pytest.fixture(scope="session")
def lean_project(tmp_path_factory, repro_project) -> Path:
    """repro_project with the stages the retrain flow's decision does not need removed (baselines, drift),
    committed: a project whose pipeline runs in half the time. The flow runs whatever stages dvc.yaml has."""
    proj = clone_project(repro_project, tmp_path_factory.mktemp("lean") / "repo")
    stages = yaml.safe_load((proj / "dvc.yaml").read_text())
    for name in ("baselines", "drift"):
        stages["stages"].pop(name)
    evaluate = stages["stages"]["evaluate"]
    evaluate["cmd"] = evaluate["cmd"].replace(" --baselines artifacts/baselines", "")
    evaluate["deps"].remove("artifacts/baselines")
    (proj / "dvc.yaml").write_text(yaml.safe_dump(stages, sort_keys=False))
    run(["dvc", "commit", "-q", "-f"], proj)
    run(["git", "add", "-A"], proj)
    run(["git", "commit", "-qm", "a lean pipeline: no baselines, no drift"], proj)
    return proj


def clone_project(project: Path, dest: Path) -> Path:
    """A git clone of a project sharing its DVC cache, outputs checked out: a test may change its history
    or its files without touching the shared project (no `origin`: a flow that pushes in the clone never writes
    branches or registry tags back into the shared project; a test that wants a remote adds its own)."""
    run(["git", "clone", "-q", str(project), str(dest)], project.parent)
    run(["git", "remote", "remove", "origin"], dest)
    cache = run(["dvc", "cache", "dir"], project).stdout.strip()  # wherever the project's cache really is
    run(["dvc", "cache", "dir", "--local", cache], dest)
    run(["dvc", "checkout", "-q"], dest)
    return dest


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the whole session (first start is slow); yields its API URL, which flow runs
    in subprocesses use too."""
    import prefect.settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield prefect.settings.PREFECT_API_URL.value()
