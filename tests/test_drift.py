"""Drift: no alarm on the same distribution; alarms on JPEG q30, blur, downscale, another source."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from deepfake_detector.data.demo import make_demo
from deepfake_detector.core.params import load_params
from deepfake_detector.evaluation.drift import drift

from conftest import LIMITS, REPO

D = load_params(REPO / "params.yaml").drift


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("drift")
    make_demo(root / "ref", per_class=60, seed=1)
    make_demo(root / "same", per_class=30, seed=2)
    out = {"ref": root / "ref", "same": root / "same"}

    def variant(name: str, fn) -> None:
        for src in sorted((root / "same").rglob("*.jpg")):
            dst = root / name / src.relative_to(root / "same")
            dst.parent.mkdir(parents=True, exist_ok=True)
            fn(Image.open(src).convert("RGB"), dst)
        out[name] = root / name

    variant("jpeg_q30", lambda im, d: im.save(d, "JPEG", quality=30))
    variant("blurred", lambda im, d: im.filter(ImageFilter.GaussianBlur(1.5)).save(d, "JPEG", quality=92))
    variant("downscaled", lambda im, d: im.resize((32, 32), Image.Resampling.BILINEAR).save(d, "JPEG", quality=92))
    rng = np.random.default_rng(0)

    def other_source(im: Image.Image, d: Path) -> None:  # another camera: larger PNGs, brighter, smoother
        arr = np.asarray(im.resize((96, 96), Image.Resampling.BICUBIC), np.float32) * 0.6 + 100
        Image.fromarray(np.clip(arr + rng.normal(0, 1, arr.shape), 0, 255).astype(np.uint8)).save(d.with_suffix(".png"))

    variant("other_source", other_source)
    return out


def test_same_distribution_gives_no_dataset_drift(sets, tmp_path):
    m = drift(sets["ref"], sets["same"], tmp_path, D, LIMITS, progress=False)
    assert m["dataset_drift"] is False
    assert m["n_current"] == 60 and m["n_unreadable_current"] == 0
    assert (tmp_path / "report.html").stat().st_size > 100_000
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert {"dataset_drift", "drift_share", "n_drifted_columns", "embedding_drift_score", "columns"} <= set(stored)


@pytest.mark.parametrize("name", ["jpeg_q30", "blurred", "downscaled", "other_source"])
def test_changed_data_gives_drift(sets, tmp_path, name):
    m = drift(sets["ref"], sets[name], tmp_path, D, LIMITS, progress=False)
    assert m["dataset_drift"] is True, {k: v for k, v in m["columns"].items() if v.get("drifted")}


def test_corrupt_files_are_counted_and_embeddings_used(sets, prepared, tmp_path):
    cur = tmp_path / "landing"
    cur.mkdir()
    for i, src in enumerate(sorted(sets["same"].rglob("*.jpg"))[:20]):
        (cur / f"{i}.jpg").write_bytes(src.read_bytes())
    (cur / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (cur / "empty.jpg").write_bytes(b"")
    m = drift(sets["ref"], cur, tmp_path / "out", D.model_copy(update={"embedding_dims": 4}), LIMITS,
              model_dir=prepared / "model", progress=False)
    assert m["n_unreadable_current"] == 2 and m["n_current"] == 20
    assert m["embedding_drift_score"] is not None and "fake_prob" in m["columns"]


def test_empty_or_missing_current_is_a_clear_error(sets, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        drift(sets["ref"], tmp_path / "empty", tmp_path / "o", D, LIMITS, progress=False)
    with pytest.raises(FileNotFoundError, match="not found"):
        drift(sets["ref"], tmp_path / "missing", tmp_path / "o", D, LIMITS, progress=False)
