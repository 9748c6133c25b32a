"""The Python API (`from deepfake_detector import Detector`) and the GTO model registry."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import REPO


def test_detector_scores_paths_pil_images_and_arrays_the_same(prepared, demo_dir):
    from deepfake_detector import Detector, Prediction

    det = Detector.load(prepared / "model", band=0.1, batch_size=4)
    files = sorted((demo_dir / "fake").glob("*.jpg"))[:6]
    by_path = det.predict([str(f) for f in files])
    assert all(isinstance(p, Prediction) and p.error is None for p in by_path)
    pil = det.predict([Image.open(f) for f in files])
    arrays = det.predict([np.asarray(Image.open(f).convert("RGB")) for f in files], batch_size=1)
    probs = np.array([p.fake_probability for p in by_path])
    assert np.allclose(probs, [p.fake_probability for p in pil], atol=1e-5)
    assert np.allclose(probs, [p.fake_probability for p in arrays], atol=1e-5)  # batch 1 == batch 4
    for p in by_path:
        assert p.label == ("fake" if p.fake_probability >= p.threshold else "real")
        assert p.uncertain == (abs(p.fake_probability - p.threshold) < 0.1)
        assert p.model_version.startswith("sha256:")
    assert len({p.fake_probability for p in by_path}) > 1  # different images, different answers


def test_detector_reports_bad_inputs_and_scores_the_rest(prepared, demo_dir, tmp_path):
    from deepfake_detector import Detector

    det = Detector.load(prepared / "model", band=0.1, batch_size=8)
    good = sorted((demo_dir / "real").glob("*.jpg"))[0]
    out = det.predict([tmp_path / "missing.jpg", good, np.zeros((4, 4), np.float32), "x"])
    assert [p.error is None for p in out] == [False, True, False, False]
    assert "uint8" in out[2].error and out[1].fake_probability is not None
    with pytest.raises(FileNotFoundError, match="band=, batch_size= and limits="):
        Detector.load(prepared / "model", params=tmp_path / "none.yaml")
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        Detector.load(tmp_path / "nothing", band=0.1, batch_size=1)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def _dvc(repo: Path, *args: str) -> None:
    subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def registry_repo(tmp_path, prepared) -> Path:
    """A git + DVC repo whose dvc.yaml declares the `detector` artifact; the model is DVC-tracked."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@example.com")
    _git(repo, "config", "user.name", "t")
    _dvc(repo, "init", "-q")
    shutil.copytree(prepared / "model", repo / "artifacts/model")
    (repo / "dvc.yaml").write_text("artifacts:\n  detector:\n    path: artifacts/model\n    type: model\n")
    shutil.copy(REPO / "params.yaml", repo / "params.yaml")
    _dvc(repo, "add", "-q", "artifacts/model")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "model one")
    return repo


def test_register_assign_and_resolve_a_version_by_stage(registry_repo, prepared):
    from deepfake_detector import Detector
    from deepfake_detector.serving.registry import RegistryError, register, resolve

    repo = registry_repo
    first = register(repo, "detector", "HEAD", stage="prod")
    assert first["version"] == "v0.1.0" and "detector@v0.1.0" in _git(repo, "tag")
    # a second model, registered without a stage: prod stays on v0.1.0, latest moves
    (repo / "artifacts/model/model_card.json").write_text('{"model": "two"}\n')
    _dvc(repo, "add", "-q", "artifacts/model")
    _git(repo, "commit", "-qam", "model two")
    assert register(repo, "detector", "HEAD", stage=None)["version"] == "v0.2.0"
    prod_dir, prod_version = resolve("detector@prod", repo)
    assert prod_version == "v0.1.0" and prod_dir == repo / ".dfd/registry/detector/v0.1.0"
    assert (prod_dir / "detector.pt").read_bytes() == (prepared / "model/detector.pt").read_bytes()
    assert "two" not in (prod_dir / "model_card.json").read_text()
    assert resolve("detector@latest", repo)[1] == "v0.2.0"
    assert resolve("detector@v0.2.0", repo)[1] == "v0.2.0"
    with pytest.raises(RegistryError, match="stage 'staging'"):
        resolve("detector@staging", repo)
    det = Detector.load("detector@prod", repo=repo)  # band and batch size from repo/params.yaml
    assert det.version == "v0.1.0" and det.predict([np.zeros((40, 40, 3), np.uint8)])[0].model_version == "v0.1.0"


def test_predict_cli_takes_a_registry_ref(registry_repo, demo_dir, monkeypatch):
    import json

    from deepfake_detector.cli import app

    monkeypatch.chdir(registry_repo)
    assert CliRunner().invoke(app, ["registry", "register", "--stage", "prod"]).exit_code == 0
    face = sorted((demo_dir / "real").glob("*.jpg"))[0]
    result = CliRunner().invoke(app, ["predict", str(face), "--model", "detector@prod", "--format", "json",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["model_version"] == "v0.1.0" and row["label"] in ("fake", "real")
    missing = CliRunner().invoke(app, ["predict", str(face), "--model", "detector@v9.9.9", "--no-progress"])
    assert missing.exit_code != 0 and "no version detector@v9.9.9" in missing.output
