"""torchrun with 2 CPU processes (gloo): disjoint shards, all-reduced weights, rank-0 outputs, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import BIN, run, write_params

pytestmark = pytest.mark.slow  # torchrun: two training processes per test
from deepfake_detector.model.checkpoint import load_detector


def _torchrun(prepared, out, params, *extra: str):
    return run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(BIN / "dfd"), "train",
                str(prepared / "splits"), str(out / "model"), str(out / "reports"), "--params", str(params),
                "--checkpoints", str(out / "ckpt"), "--run-log", str(out / "log.json"), "--log-seen",
                "--no-progress", *extra], prepared)


def test_torchrun_two_processes_train_disjoint_shards_and_resume(prepared, tmp_path):
    _torchrun(prepared, tmp_path, write_params(tmp_path / "p1.yaml", train={"epochs": 1}))
    r0 = json.loads((tmp_path / "log.json").read_text())
    r1 = json.loads((tmp_path / "log.rank1.json").read_text())
    assert (r0["rank"], r1["rank"], r0["world_size"], r1["world_size"]) == (0, 1, 2, 2)
    (s0,), (s1,) = r0["seen"], r1["seen"]  # one epoch each
    assert s0 and len(s0) == len(s1) and not set(s0) & set(s1), "ranks must see disjoint images"
    n_train = len((prepared / "splits/train.csv").read_text().splitlines()) - 1
    assert len(s0) + len(s1) >= n_train - 2 * 8 - 1  # whole epoch minus dropped remainders
    assert r0["params_sha256"] == r1["params_sha256"], "DDP must keep the ranks' weights identical"

    # only rank 0 wrote the model and the reports; the model loads and predicts
    assert not (tmp_path / "log.rank0.json").exists()
    card = json.loads((tmp_path / "model/model_card.json").read_text())
    assert card["device"] == "2 x cpu"
    load_detector(tmp_path / "model/detector.pt")
    out = run([str(BIN / "dfd"), "predict", str(prepared / "clean/fake"), "--model", str(tmp_path / "model"),
               "--format", "json", "--no-progress"], prepared).stdout
    rows = json.loads(out)
    from deepfake_detector import Detector

    files = sorted((prepared / "clean/fake").rglob("*.jpg"))
    expected = Detector.load(tmp_path / "model", band=0.1, batch_size=8).predict(files)
    got = {Path(r["path"]).name: r["fake_probability"] for r in rows}
    assert len(rows) == len(files) and all(got[f.name] == pytest.approx(e.fake_probability, abs=1e-5)
                                           for f, e in zip(files, expected))

    # resume: the second epoch continues from last.pt on both ranks
    _torchrun(prepared, tmp_path, write_params(tmp_path / "p2.yaml", train={"epochs": 2}), "--resume")
    r0b = json.loads((tmp_path / "log.json").read_text())
    r1b = json.loads((tmp_path / "log.rank1.json").read_text())
    assert [e["epoch"] for e in r0b["epochs"]] == [1] == [e["epoch"] for e in r1b["epochs"]]
    assert r0b["params_sha256"] == r1b["params_sha256"] != r0["params_sha256"]
    assert json.loads((tmp_path / "model/model_card.json").read_text())["epochs_run"] == 2


def test_torchrun_with_the_gan_term_off_and_frozen_sync_bn(prepared, tmp_path):
    """profiles/faces.yaml trains without the DCGAN: the generator must not sit unused inside DDP."""
    _torchrun(prepared, tmp_path, write_params(tmp_path / "p.yaml", train={"epochs": 2, "extra_fakes": "none",
                                                                          "freeze_bn": True, "sync_bn": True}))
    r0 = json.loads((tmp_path / "log.json").read_text())
    r1 = json.loads((tmp_path / "log.rank1.json").read_text())
    assert [e["epoch"] for e in r0["epochs"]] == [0, 1] == [e["epoch"] for e in r1["epochs"]]
    assert r0["params_sha256"] == r1["params_sha256"]
    card = json.loads((tmp_path / "model/model_card.json").read_text())
    assert card["epochs_run"] == 2 and card["params"]["train"]["extra_fakes"] == "none"
