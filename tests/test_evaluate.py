"""Evaluation: metric keys, robustness card, shortcut check, any-folder scoring with bad files."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from conftest import LIMITS, REPO
from deepfake_detector.cli import app
from deepfake_detector.core.params import load_params
from deepfake_detector.evaluation.evaluate import PERTURBATIONS, evaluate
from deepfake_detector.core.metrics import binary_metrics, choose_threshold

import numpy as np
import pytest
import torch


def test_metrics_at_a_threshold():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.8, 0.9])
    m = binary_metrics(y, p, 0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 1, 1)
    assert m["precision"] == round(2 / 3, 6) and m["recall"] == round(2 / 3, 6)
    # ECE: each score alone in its bin, mean |p - y| = (0.1 + 0.6 + 0.6 + 0.2 + 0.1) / 5; EER (1/2 + 1/3) / 2
    assert m["ece"] == pytest.approx(0.32, abs=1e-6) and m["eer"] == pytest.approx(5 / 12, abs=1e-6)
    perfect = binary_metrics(np.array([0, 1]), np.array([0.2, 0.9]), choose_threshold(np.array([0, 1]),
                                                                                    np.array([0.2, 0.9])))
    assert perfect["accuracy"] == 1.0 and perfect["roc_auc"] == 1.0


def test_evaluate_on_the_test_split_writes_reports_with_metrics_per_source(prepared, tmp_path):
    import pandas as pd

    splits = tmp_path / "splits"  # the test split as if it came from two imported sources
    shutil.copytree(prepared / "splits", splits)
    (splits / "root.txt").write_text(str((prepared / "clean").resolve()) + "\n")
    test = pd.read_csv(splits / "test.csv", dtype=str)
    test["source"] = ["src-a" if i % 3 else "src-b" for i in range(len(test))]
    test.to_csv(splits / "test.csv", index=False)
    metrics = evaluate(prepared / "model", tmp_path / "eval", LIMITS, load_params(REPO / "params.yaml").evaluate, splits_dir=splits, progress=False)
    by = metrics["by_source"]
    assert set(by) == {"src-a", "src-b"} and sum(v["n"] for v in by.values()) == metrics["n"]
    for name, v in by.items():
        assert v["n_real"] + v["n_fake"] == v["n"] == int((test["source"] == name).sum())
        assert {"roc_auc", "accuracy", "precision", "recall", "f1", "fpr_real"} <= set(v)
        lo, hi = v["ci95"]["accuracy"]["low"], v["ci95"]["accuracy"]["high"]
        assert lo <= v["accuracy"] <= hi
    assert {"accuracy", "precision", "recall", "f1", "roc_auc", "average_precision", "eer", "tpr_at_1pct_fpr",
            "brier", "ece"} <= set(metrics)
    assert metrics["positive_class"] == "fake"
    stored = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert stored["roc_auc"] == metrics["roc_auc"]
    card = json.loads((tmp_path / "eval/robustness.json").read_text())
    assert set(card) == set(PERTURBATIONS) | {"reencoded_same", "jpeg_q75@input", "downscale_0.5x@input"}
    assert all("roc_auc_drop" in v for v in card.values())
    for name in ("roc.csv", "pr.csv", "confusion.csv"):
        assert (tmp_path / "eval/plots" / name).stat().st_size > 0
    assert "paper: proposed hybrid (quoted)" in (tmp_path / "eval/summary.md").read_text()
    model_card = (tmp_path / "eval/model_card.md").read_text()  # honest limits: per source, and what it is not for
    assert all(f"| {name} | {by[name]['n']} |" in model_card for name in by)
    assert "leave-one-source-out" in model_card and "Not for:" in model_card


def test_any_labelled_folder_is_scored_and_bad_files_are_counted(prepared, demo_dir, tmp_path):
    data = tmp_path / "cross"
    shutil.copytree(demo_dir, data)
    (data / "fake/broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (data / "real/empty.png").write_bytes(b"")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["evaluate", "--model", str(prepared / "model"), "--data", str(data), str(out),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_unreadable"] == 2 and metrics["n"] == 80


def test_evaluate_cli_explains_bad_usage(prepared):
    result = CliRunner().invoke(app, ["evaluate", "only-one-path"])
    assert result.exit_code == 2 and "usage" in result.output


def test_paired_difference_is_zero_for_one_model_and_clearly_positive_for_a_better_one():
    """The gate's paired bootstrap (core.metrics.paired_difference), on scores far apart for any CPU."""
    from deepfake_detector.core.metrics import bootstrap_indices, paired_difference

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    good = 0.7 * y + 0.3 * rng.random(200)  # AUC 1
    bad = rng.random(200)  # AUC ~0.5
    idx = bootstrap_indices(200, 300, 0)
    same = paired_difference("roc_auc", y, good, 0.5, good, 0.5, idx)
    assert same["difference"] == same["ci_low"] == same["ci_high"] == 0.0 and same["n_boot"] == 300
    for name in ("roc_auc", "accuracy", "f1", "average_precision"):
        better = paired_difference(name, y, good, 0.5, bad, 0.5, idx)
        assert better["ci_low"] > 0.2 and better["difference"] > 0.3, (name, better)
        worse = paired_difference(name, y, bad, 0.5, good, 0.5, idx)
        assert worse["ci_high"] < -0.2, (name, worse)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_platt_scaling_fitted_on_val_calibrates_fresh_scores(seed):
    """Overconfident, shifted logits (true p = sigmoid(0.25 z - 1)): raw ECE is large, Platt-scaled ECE on a
    fresh sample from the same model is small (wide margins for any CPU)."""
    from deepfake_detector.core.metrics import calibrated, expected_calibration_error, fit_platt

    rng = np.random.default_rng(seed)

    def sample(n):
        z = rng.normal(0, 6, n)
        return z, (rng.random(n) < 1 / (1 + np.exp(-(0.25 * z - 1)))).astype(int)

    z_val, y_val = sample(4000)
    cal = fit_platt(z_val, y_val)
    assert 0.15 < cal["a"] < 0.35 and -1.4 < cal["b"] < -0.6, cal
    z, y = sample(4000)
    raw, fixed = expected_calibration_error(y, calibrated(z, None)), expected_calibration_error(y, calibrated(z, cal))
    assert raw > 0.15 and fixed < 0.04, (raw, fixed)
    assert fit_platt(z_val, np.zeros_like(y_val)) == {"a": 1.0, "b": 0.0}  # one class: identity


def test_every_scorer_returns_the_calibrated_probability(prepared):
    from deepfake_detector.core.metrics import calibrated
    from deepfake_detector.model.checkpoint import safe_load
    from deepfake_detector.model.scoring import TorchScorer

    info = safe_load(prepared / "model/detector.pt")
    assert info["calibration"]["a"] > 0
    scorer = TorchScorer(prepared / "model")
    x = torch.randint(0, 256, (6, 3, 40, 40), dtype=torch.uint8)
    logit = scorer.logits(x)
    assert np.allclose(scorer.predict(x), calibrated(logit, info["calibration"]), atol=1e-4)
    card = json.loads((prepared / "model/model_card.json").read_text())
    assert card["calibration"]["a"] == info["calibration"]["a"]


@pytest.mark.parametrize("extra,toggle", [("dcgan", "gan_off"), ("none", "gan_on")])
def test_baselines_train_the_cnn_ablations_only_when_asked(prepared, tmp_path, extra, toggle):
    """profiles/faces.yaml turns the two extra fine-tunes off (the test params too): then only the cheap
    models train, and the stage still writes every declared output. With baselines.cnn_ablations the plain
    backbone and the GAN toggle (the opposite of what the main model does) train as well."""
    from deepfake_detector.core.params import load_params
    from deepfake_detector.evaluation.baselines import run_baselines

    from conftest import write_params

    p = load_params(write_params(tmp_path / "p.yaml", train={"extra_fakes": extra}))
    assert p.baselines.cnn_ablations is False
    metrics = run_baselines(prepared / "splits", tmp_path / "b", tmp_path / "r", p, ckpt_dir=tmp_path / "ckpt",
                            progress=False)
    assert set(metrics) == {"probe_lr", "spectrum_lr"} and (tmp_path / "ckpt").is_dir()
    assert sorted(x.name for x in (tmp_path / "b").iterdir()) == ["probe_lr", "spectrum_lr"]

    on = load_params(write_params(tmp_path / "on.yaml", train={"extra_fakes": extra},
                                  baselines={"cnn_ablations": True}))
    metrics = run_baselines(prepared / "splits", tmp_path / "b2", tmp_path / "r2", on, ckpt_dir=tmp_path / "ckpt2",
                            progress=False, dry_run=True)
    assert set(metrics) == {"plain", toggle, "probe_lr", "spectrum_lr"}
    for name in ("plain", toggle):
        card = json.loads((tmp_path / "b2" / name / "model_card.json").read_text())
        assert card["params"]["train"]["extra_fakes"] == ("dcgan" if name == "gan_on" else "none")
    assert json.loads((tmp_path / "b2/plain/model_card.json").read_text())["params"]["model"]["se_reduction"] == 0
