"""params.yaml schema errors, data import layouts, CLI error messages."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from conftest import REPO

from deepfake_detector.cli import app
from deepfake_detector.data.importer import ImportLayoutError, import_dataset
from deepfake_detector.core.params import ParamsError, load_params


def test_repo_params_load():
    from conftest import REPO

    p = load_params(REPO / "params.yaml")
    assert p.model.backbone == "efficientnet_lite0" and p.model.pretrained == "imagenet"
    paper = load_params(REPO / "params.yaml", REPO / "profiles/paper.yaml")
    assert paper.model.backbone == "se_resnet34" and paper.train.image_size == 64
    assert paper.train.epochs > p.train.epochs
    assert load_params(REPO / "params.yaml", REPO / "profiles/faces.yaml").train.image_size == 256


def test_a_profile_is_applied_in_place_keeping_comments(tmp_path):
    from conftest import REPO

    from deepfake_detector.core.params import apply_profile

    target = tmp_path / "params.yaml"
    target.write_text((REPO / "params.yaml").read_text())
    changed = apply_profile(target, REPO / "profiles/paper.yaml")
    assert "model.backbone" in changed and "train.epochs" in changed
    assert load_params(target) == load_params(REPO / "params.yaml", REPO / "profiles/paper.yaml")
    text = target.read_text()
    assert "backbone: se_resnet34" in text and "# efficientnet_lite0 | se_resnet34" in text
    # ruamel round trip: only the changed keys' lines differ; comments, quotes and flow lists stay
    before_lines, after_lines = (REPO / "params.yaml").read_text().splitlines(), text.splitlines()
    assert len(before_lines) == len(after_lines)
    edited = [a.split(":")[0].strip() for a, b in zip(after_lines, before_lines) if a != b]
    assert edited and set(edited) <= {k.rsplit(".", 1)[-1] for k in changed}
    assert 'retrain_cron: "0 3 * * 1"' in text and "pretrained: null " in text
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: many\n")
    before = target.read_text()
    with pytest.raises(ParamsError, match="train.epochs"):
        apply_profile(target, bad)
    assert target.read_text() == before  # validated before writing
    target.write_text((REPO / "params.yaml").read_text())
    result = CliRunner().invoke(app, ["params", "apply", str(REPO / "profiles/faces.yaml"), "--params", str(target)])
    assert result.exit_code == 0 and load_params(target).train.image_size == 256


@pytest.mark.parametrize("text,needle", [
    ("train:\n  epochs: many\n", "train.epochs"),
    ("train:\n  epoch: 3\n", "train.epoch"),
    ("colour: blue\n", "colour"),
    ("model:\n  stem: huge\n", "model.stem"),
    ("model:\n  backbone: vit\n", "model.backbone"),
    ("train:\n  image_size: 100\n", "multiple of 32"),
    (": : :\n", "not valid YAML"),
])
def test_bad_params_name_the_key(tmp_path, text, needle):
    """One bad value in an otherwise complete params file."""
    from deepfake_detector.core.params import merge

    path = tmp_path / "params.yaml"
    try:
        bad = yaml.safe_load(text)
    except yaml.YAMLError:
        bad = None
    path.write_text(yaml.safe_dump(merge(yaml.safe_load((REPO / "params.yaml").read_text()), bad))
                    if isinstance(bad, dict) else text)
    with pytest.raises(ParamsError, match=needle.replace(".", r"\.")):
        load_params(path)
    result = CliRunner().invoke(app, ["split", "a", "b", "c", "--params", str(path)])
    assert result.exit_code == 2 and needle in result.output


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.mark.parametrize("layout", ["plain", "kaggle", "ciplab"])
def test_import_recognises_layouts_and_keeps_bytes(tmp_path, layout):
    src = tmp_path / "src"
    if layout == "plain":
        files = {"real/a.jpg": "real/a.jpg", "fake/b.jpg": "fake/b.jpg"}
    elif layout == "kaggle":
        base = "real_vs_fake/real-vs-fake"
        files = {f"{base}/train/real/a.jpg": "real/train/a.jpg", f"{base}/valid/fake/b.jpg": "fake/valid/b.jpg",
                 f"{base}/test/real/c.jpg": "real/test/c.jpg"}
    else:
        files = {"training_real/real_001.jpg": "real/real_001.jpg", "training_fake/easy_1.jpg": "fake/easy_1.jpg"}
    for i, rel in enumerate(files):
        _touch(src / rel, f"bytes {i}".encode())
    counts = import_dataset(src, tmp_path / "data")
    assert sum(counts.values()) == len(files)
    for i, (rel, dest) in enumerate(files.items()):
        assert (tmp_path / "data" / dest).read_bytes() == f"bytes {i}".encode()


def test_import_rejects_unknown_layout(tmp_path):
    _touch(tmp_path / "src/images/a.jpg")
    with pytest.raises(ImportLayoutError, match="unrecognised layout"):
        import_dataset(tmp_path / "src", tmp_path / "data")
    result = CliRunner().invoke(app, ["data", "import", str(tmp_path / "src"), str(tmp_path / "data")])
    assert result.exit_code == 2 and "unrecognised layout" in result.output


def test_demo_data_is_deterministic(tmp_path):
    from deepfake_detector.data.demo import make_demo

    make_demo(tmp_path / "a", per_class=3, seed=0)
    make_demo(tmp_path / "b", per_class=3, seed=0)
    for f in sorted((tmp_path / "a").rglob("*.jpg")):
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes()


def test_a_missing_key_is_an_error_that_names_it(tmp_path):
    """Values live only in params.yaml: the schema has no defaults to fall back on."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    del raw["train"]["augment"]["jpeg_prob"]
    del raw["flows"]["retrain_cron"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=r"train\.augment\.jpeg_prob: Field required") as err:
        load_params(path)
    assert "flows.retrain_cron: Field required" in str(err.value)


def test_two_sources_with_groups_keep_source_and_group_through_validation_and_split(tmp_path):
    """`dfd data import --source/--groups` twice: per-source validation counts; a video's real and
    fake crops share a split."""
    import pandas as pd

    from deepfake_detector.data.demo import make_demo
    from deepfake_detector.data.split import split
    from deepfake_detector.data.validate import validate

    make_demo(tmp_path / "a", per_class=6, seed=1)
    make_demo(tmp_path / "d", per_class=6, seed=2)
    rows = [{"path": f"{lab}/{p.name}", "label": lab, "video": f"v{i}"}
            for lab in ("real", "fake") for i, p in enumerate(sorted((tmp_path / "d" / lab).iterdir()))]
    pd.DataFrame(rows).to_csv(tmp_path / "groups.csv", index=False)
    data = tmp_path / "data"
    result = CliRunner().invoke(app, ["data", "import", str(tmp_path / "a"), str(data), "--source", "src-a"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["data", "import", str(tmp_path / "d"), str(data), "--source", "src-d",
                                      "--groups", str(tmp_path / "groups.csv")])
    assert result.exit_code == 0, result.output
    meta = pd.read_csv(data / "metadata.csv", keep_default_na=False)
    assert len(meta) == 24 and set(meta["source"]) == {"src-a", "src-d"}
    assert set(meta.loc[meta["source"] == "src-d", "group"]) == {f"src-d/v{i}" for i in range(6)}

    broken = data / "fake" / "src-d" / "broken.jpg"  # a truncated file of the second source
    assert broken.parent.is_dir()
    broken.write_bytes(b"\xff\xd8\xff")
    meta = pd.concat([meta, pd.DataFrame([{"path": broken.relative_to(data).as_posix(), "source": "src-d",
                                           "group": ""}])])
    meta.to_csv(data / "metadata.csv", index=False)

    p = load_params(REPO / "params.yaml", {"validate": {"min_size": 16, "label_issue": {"features": "cheap"}},
                                           "split": {"val": 0.3, "test": 0.3}})
    metrics = validate(data, tmp_path / "clean", tmp_path / "rv", p.validate_, p.decode_limits(), p.seed, progress=False)
    assert metrics["by_source"]["src-a"]["kept"] == 12 and metrics["by_source"]["src-d"]["kept"] == 12
    assert metrics["by_source"]["src-d"]["total"] == 13
    # Data Docs: one validation result per source beside the whole dataset's, each with its own verdict
    gx = json.loads((tmp_path / "rv/gx_result.json").read_text())
    assert gx["by_source"]["src-a"] == {"success": True, "rows": 12, "failed_rows": 0,
                                        "unexpected_by_reason": {r: 0 for r in gx["by_source"]["src-a"]["unexpected_by_reason"]}}
    assert gx["by_source"]["src-d"]["success"] is False and gx["by_source"]["src-d"]["failed_rows"] == 1
    assert gx["by_source"]["src-d"]["unexpected_by_reason"]["unreadable"] >= 1
    index = (tmp_path / "rv/data_docs/index.html").read_text()
    assert "source_src-a" in index and "source_src-d" in index and "metadata" in index
    manifest = pd.read_csv(tmp_path / "clean/manifest.csv", keep_default_na=False)
    assert set(manifest["source"]) == {"src-a", "src-d"} and (manifest["group"] != "").sum() == 12
    split(tmp_path / "clean", tmp_path / "splits", tmp_path / "rs", p.split, p.seed)
    parts = pd.concat([pd.read_csv(tmp_path / f"splits/{s}.csv", keep_default_na=False).assign(split=s)
                       for s in ("train", "val", "test")])
    videos = parts[parts["group"] != ""].groupby("group")
    assert len(videos) == 6 and (videos["label"].nunique() == 2).all() and (videos["split"].nunique() == 1).all()
