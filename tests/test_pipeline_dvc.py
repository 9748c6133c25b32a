"""The real pipeline: `dvc repro` in a temp git repo, a no-op second run, metrics/params/plots diffs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import clone_project, run, write_params

pytestmark = pytest.mark.slow  # a real `dvc repro` of the demo project, then diffs and experiments on it


@pytest.fixture(scope="module")
def project(repro_project) -> Path:
    return repro_project


def test_repro_runs_every_stage_and_writes_tracked_reports(project):
    for rel in ("reports/validation/metrics.json", "reports/split/metrics.json", "reports/train/metrics.json",
                "reports/eval/metrics.json", "reports/eval/robustness.json", "reports/eval/summary.md",
                "reports/drift/metrics.json", "reports/drift/report.html", "artifacts/model/detector.pt",
                "reports/validation/data_docs/index.html"):
        assert (project / rel).is_file(), rel
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"validate", "split", "train", "baselines", "evaluate", "drift"}
    ev = json.loads((project / "reports/eval/metrics.json").read_text())
    assert {"accuracy", "precision", "recall", "f1", "roc_auc", "average_precision", "eer"} <= set(ev)
    assert set(ev["baselines"]) == {"probe_lr", "spectrum_lr"}  # the CNN ablations: tests/test_evaluate.py
    for m in [ev, *ev["baselines"].values()]:  # paired bootstrap intervals around every model's metrics
        for k in ("roc_auc", "accuracy", "f1"):
            lo, hi = m["ci95"][k]["low"], m["ci95"][k]["high"]
            assert lo <= m[k] <= hi, (k, m)
    summary = (project / "reports/eval/summary.md").read_text()
    assert "(quoted)" in summary and "(measured)" in summary


def test_second_repro_does_nothing(project):
    out = run(["dvc", "repro"], project).stdout
    assert "didn't change, skipping" in out or "up to date" in out
    assert "Running stage" not in out
    assert "Data and pipelines are up to date" in run(["dvc", "status"], project).stdout


def test_forced_repro_on_the_same_inputs_changes_no_tracked_byte(project):
    """Quiet diffs: Data Docs, model card, checkpoints and drift report are the same bytes again;
    only the run logs (artifacts/logs/, untracked) hold timings."""
    lock = (project / "dvc.lock").read_text()
    run(["dvc", "repro", "--force", "-q"], project)
    assert (project / "dvc.lock").read_text() == lock
    assert run(["git", "status", "--porcelain"], project).stdout == ""
    log = json.loads((project / "artifacts/logs/train.json").read_text())
    assert log["fit_s"] > 0 and all(e["images_per_s"] > 0 for e in log["epochs"])
    assert "fit_s" not in json.loads((project / "artifacts/model/model_card.json").read_text())


def test_runtime_train_settings_leave_the_pipeline_up_to_date(project, tmp_path):
    """train.threads, device, cache_ram_gb and ddp_backend place a run; they never make the model stale."""
    proj = clone_project(project, tmp_path / "clone")
    write_params(proj / "params.yaml", train={"threads": 1, "device": "cpu", "cache_ram_gb": 0.5, "ddp_backend": "gloo"})
    assert "Data and pipelines are up to date" in run(["dvc", "status"], proj).stdout
    write_params(proj / "params.yaml", train={"threads": 1, "lr": 0.002})  # a key that changes what is learned
    stale = run(["dvc", "status", "--json"], proj).stdout
    assert '"train"' in stale and '"train.lr": "modified"' in stale


def test_metrics_show_lists_the_stage_metrics(project):
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)
    files = set(next(iter(shown.values()))["data"])
    assert {"reports/validation/metrics.json", "reports/split/metrics.json", "reports/train/metrics.json",
            "reports/eval/metrics.json", "reports/drift/metrics.json"} <= files


def test_a_params_change_shows_in_params_metrics_and_plots_diffs(project, tmp_path):
    """evaluate.bootstrap re-runs the evaluate stage alone (its intervals move): params, metrics and plots diffs
    against the commit before show it."""
    project = clone_project(project, tmp_path / "clone")  # the shared project stays at its first run
    write_params(project / "params.yaml", evaluate={"bootstrap": 300})
    out = run(["dvc", "repro"], project).stdout
    assert "Running stage 'evaluate'" in out and "Running stage 'train'" not in out
    run(["git", "commit", "-qam", "300 bootstrap resamples"], project)
    params = run(["dvc", "params", "diff", "HEAD~1", "--md"], project).stdout
    assert "evaluate.bootstrap" in params and "| 1000 " in params and "| 300 " in params
    metrics = run(["dvc", "metrics", "diff", "HEAD~1", "--md"], project).stdout
    assert "reports/eval/metrics.json" in metrics and "ci95.roc_auc.low" in metrics  # the intervals moved
    plots = run(["dvc", "plots", "diff", "HEAD~1", "-o", "plots_out"], project)
    page = (project / "plots_out/index.html").read_text()
    assert "vegaEmbed(" in page and "window.vegaEmbed=" in page, plots.stdout  # charts + inlined library
    assert not REMOTE_ASSET.search(page)


REMOTE_ASSET = re.compile(r"<script[^>]+src=[\"']https?://|<link[^>]+href=[\"']https?://[^\"']+\.css", re.I)


def test_generated_reports_load_nothing_from_the_network(project):
    """Every page a reviewer opens renders offline: no remote script, stylesheet, image or CSS url()."""
    from deepfake_detector.data.datadocs import remote_refs

    docs = sorted((project / "reports/validation/data_docs").rglob("*.html"))
    assert len(docs) >= 3  # index, suite, one validation result
    pages = [project / "reports/drift/report.html", project / "reports/validation/label_issues.html", *docs]
    for page in pages:
        html = page.read_text()
        assert page.is_file() and not REMOTE_ASSET.search(html) and not remote_refs(html), page
    index = (project / "reports/validation/data_docs/index.html").read_text()
    for local in re.findall(r'(?:src|href)="(static/vendor/[^"]+)"', index):  # every local asset is there
        assert (project / "reports/validation/data_docs" / local).is_file(), local
    assert "static/vendor/jquery.min.js" in index and "static/vendor/bootstrap-table.min.js" in index


def test_metrics_diff_marks_changes_against_the_base_interval(project):
    from deepfake_detector.evaluation.review import compare, read_at_revision

    base = read_at_revision("HEAD", cwd=project)  # the first pipeline run
    assert base is not None and "ci95" in base
    same = compare(base, base)
    assert same and all(r["mark"] == "inside (noise)" for r in same if r["metric"] == "roc_auc")
    moved = dict(base, roc_auc=base["ci95"]["roc_auc"]["low"] - 0.05)
    (row,) = [r for r in compare(base, moved) if r["model"] == "model" and r["metric"] == "roc_auc"]
    assert row["mark"] == "**outside**" and row["change"] < 0
    out = run(["dfd", "metrics-diff", "--base", "HEAD"], project).stdout
    assert "| model | roc_auc |" in out and "base 95 % CI" in out


def test_queued_experiments_are_listed_with_their_params_and_metrics(repro_project, tmp_path):
    """`dvc exp run --queue -S ...` twice, `dvc queue start`, then `dvc exp show --json` has both
    experiments, each with the param it set and the metrics its run wrote."""
    proj = clone_project(repro_project, tmp_path / "proj")
    for n in (300, 400):  # re-runs evaluate only: two quick experiments
        run(["dvc", "exp", "run", "--queue", "-S", f"evaluate.bootstrap={n}", "-n", f"boot-{n}"], proj)
    run(["dvc", "queue", "start", "-j", "1"], proj)
    for name in ("boot-300", "boot-400"):
        run(["dvc", "queue", "logs", "-f", name], proj)  # returns when that experiment has finished
    shown = json.loads(run(["dvc", "exp", "show", "--json"], proj).stdout)
    found = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs", []):
                data = rev.get("data") or {}
                found[rev.get("name")] = data
    assert {"boot-300", "boot-400"} <= set(found), list(found)
    for n in (300, 400):
        data = found[f"boot-{n}"]
        assert data["params"]["params.yaml"]["data"]["evaluate"]["bootstrap"] == n
        metrics = data["metrics"]
        assert "n_current" in metrics["reports/drift/metrics.json"]["data"]
        assert "roc_auc" in metrics["reports/eval/metrics.json"]["data"]
