"""Prefect flows for real: retraining on a temp git repo, quarantine, gate, retries, lock, server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image, ImageFilter

from conftest import REPO, free_port, run
from deepfake_detector.data.demo import make_demo

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _land(project: Path, seed: int, per_class: int = 4, corrupt: bool = True, degrade: bool = False) -> Path:
    landing = project / "landing"
    make_demo(landing, per_class=per_class, seed=seed)
    for f in sorted(landing.rglob("*.jpg")):  # unique names per batch
        im = Image.open(f).convert("RGB")
        f.unlink()
        if degrade:
            im = im.filter(ImageFilter.GaussianBlur(1.5))
        im.save(f.with_name(f"s{seed}_{f.name}"), "JPEG", quality=30 if degrade else 92)
    if corrupt:
        (landing / "fake/corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated nonsense")
    return landing


def test_retrain_makes_a_branch_quarantines_bad_files_and_retries_push(repro_project, monkeypatch):
    import flows.retrain as rt

    calls = {"push": 0}
    real_sh = rt.sh

    def flaky_sh(cmd, cwd):
        if cmd[:2] == ["dvc", "push"]:
            calls["push"] += 1
            if calls["push"] == 1:
                raise rt.FlowError("simulated transient remote failure")
        return real_sh(cmd, cwd)

    monkeypatch.setattr(rt, "sh", flaky_sh)
    head = run(["git", "rev-parse", "HEAD"], repro_project).stdout.strip()
    _land(repro_project, seed=7)
    result = rt.retrain(str(repro_project))

    assert result["promoted"] in (True, False) and result["new_images"] == 8 and result["quarantined"] == 1
    stamp = result["branch"].split("/")[1]
    record = json.loads(run(["git", "show", f"{result['branch']}:reports/retrain/{stamp}.json"],
                            repro_project).stdout)
    assert {"promoted", "reason", "metric", "champion", "challenger", "test_split_md5", "ci95"} <= set(record)
    assert record["champion"]["n_test"] == record["challenger"]["n_test"]  # the same current test images
    assert (repro_project / "archive" / stamp / "real").is_dir()  # released only after the commit
    branches = run(["git", "branch", "--list", "retrain/*"], repro_project).stdout
    assert result["branch"] in branches
    changed = run(["git", "diff", "--name-only", head, result["branch"]], repro_project).stdout.split()
    assert "data.dvc" in changed and "dvc.lock" in changed
    q = next((repro_project / "quarantine").glob("*/rejected.csv"))
    assert "fake/corrupt.jpg" in q.read_text() and "unreadable" in q.read_text()
    assert (q.parent / "fake/corrupt.jpg").is_file()
    assert not any(p.is_file() for p in (repro_project / "landing").rglob("*"))  # all processed
    assert run(["git", "rev-parse", "HEAD"], repro_project).stdout.strip() == head  # workspace untouched
    if result["promoted"]:
        assert calls["push"] == 2 and result["pushed"]  # failed once, retried, flow completed
        assert any((repro_project.parent / "dfd-remote").rglob("*"))


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_pipeline_failure_mid_run_loses_no_landed_byte(repro_project):
    """train fails inside `dvc repro` (after validate and split ran): everything is as before."""
    from flows.common import FlowError
    from flows.retrain import retrain

    run(["git", "checkout", "-q", "-b", "broken-train"], repro_project)
    params = yaml.safe_load((repro_project / "params.yaml").read_text())
    params["train"]["device"] = "cuda"  # no GPU here: the train stage fails mid-pipeline
    (repro_project / "params.yaml").write_text(yaml.safe_dump(params))
    run(["git", "commit", "-qam", "a params change that breaks training"], repro_project)
    landing = _land(repro_project, seed=11, per_class=3)
    before_landing, before_data = _tree_bytes(landing), _tree_bytes(repro_project / "data")
    before_moved = {d: _tree_bytes(repro_project / d) for d in ("archive", "quarantine")}  # earlier runs' files
    branches_before = run(["git", "branch", "--list"], repro_project).stdout
    try:
        with pytest.raises(FlowError, match="CUDA"):
            retrain(str(repro_project))
        assert _tree_bytes(landing) == before_landing  # every landed byte still in landing/
        assert _tree_bytes(repro_project / "data") == before_data  # main's data/ untouched
        assert {d: _tree_bytes(repro_project / d) for d in before_moved} == before_moved  # nothing moved there
        assert run(["git", "branch", "--list"], repro_project).stdout == branches_before  # no half-made branch
        worktrees = run(["git", "worktree", "list"], repro_project).stdout.strip().splitlines()
        assert len(worktrees) == 1  # the retrain worktree is gone
        assert run(["git", "status", "--porcelain", "--untracked-files=no"], repro_project).stdout == ""
    finally:
        shutil.rmtree(landing, ignore_errors=True)
        run(["git", "checkout", "-q", "main"], repro_project)


def test_gate_scores_champion_and_challenger_on_the_same_images(prepared, tmp_path):
    """Real scorers on the real test split: a strong champion (FFT spectrum + LR, ~0.99 AUC on the demo)
    and the same model with its sign flipped (ranking inverted) as a clearly worse challenger."""
    from deepfake_detector.evaluation.baselines import train_spectrum_lr
    from deepfake_detector.evaluation.gate import compare
    from deepfake_detector.params import GateParams

    g = GateParams(metric="roc_auc", max_drop=0.01, max_f1_drop=0.05)
    champion, worse = tmp_path / "champion", tmp_path / "worse"
    train_spectrum_lr(prepared / "splits", champion, 64, seed=0)
    cfg = json.loads((champion / "spectrum.json").read_text())
    worse.mkdir()
    (worse / "spectrum.json").write_text(json.dumps({**cfg, "coef": [-c for c in cfg["coef"]],
                                                     "intercept": -cfg["intercept"]}))
    same = compare(champion, champion, prepared / "splits", g)
    assert same["promoted"] and same["ci95"]["difference"] == 0 and same["champion"]["n_test"] == 20
    assert same["challenger"]["value"] == same["champion"]["value"] and len(same["test_split_md5"]) == 32
    assert same["champion"]["value"] > 0.8, same  # else "inverted" below would not be clearly worse
    refused = compare(worse, champion, prepared / "splits", g)
    assert refused["promoted"] is False and "max_drop" in refused["reason"]
    assert refused["ci95"]["ci_low"] <= refused["ci95"]["difference"] <= refused["ci95"]["ci_high"] < 0
    first = compare(champion, None, prepared / "splits", g)
    assert first["promoted"] and "no champion" in first["reason"] and first["champion"] is None
    broken = compare(champion, tmp_path / "missing", prepared / "splits", g)
    assert broken["promoted"] is False and "champion could not be scored" in broken["reason"]


def test_gate_refuses_nan_and_missing_metrics():
    from deepfake_detector.evaluation.gate import decide
    from deepfake_detector.params import load_params

    g = load_params(REPO / "params.yaml").flows.gate
    ok = {"value": 0.9, "f1": 0.8, "n_test": 10}
    assert decide(g, {"value": float("nan"), "f1": 0.5, "n_test": 10}, ok, None)[0] is False
    assert decide(g, {"f1": 0.5, "n_test": 10}, ok, None)[0] is False  # missing metric
    promoted, why = decide(g, ok, {"value": float("nan"), "f1": 0.8}, None)
    assert promoted is False and "cannot compare" in why
    paired = {"difference": -0.005, "ci_low": -0.02, "ci_high": -0.001}
    promoted, why = decide(g, {"value": 0.895, "f1": 0.8, "n_test": 10}, ok, paired)
    assert promoted is False and "significantly worse" in why
    paired = {"difference": -0.005, "ci_low": -0.04, "ci_high": 0.03}
    assert decide(g, {"value": 0.895, "f1": 0.8, "n_test": 10}, ok, paired)[0] is True
    assert decide(g, {"value": 0.895, "f1": 0.6, "n_test": 10}, ok, paired)[0] is False  # f1 drop


def test_a_second_concurrent_run_is_refused(repro_project):
    from flows.common import FlowError
    from flows.retrain import retrain

    _land(repro_project, seed=9, per_class=1, corrupt=False)
    lock = repro_project / ".dvc/tmp/dfd-retrain.lock"
    lock.write_text("12345")
    try:
        with pytest.raises(FlowError, match="refusing to run two at once"):
            retrain(str(repro_project))
    finally:
        lock.unlink()
        for f in (repro_project / "landing").rglob("*.jpg"):
            f.unlink()


def test_monitor_flags_a_drifted_landing_batch(repro_project):
    from flows.monitor import monitor

    _land(repro_project, seed=10, per_class=15, corrupt=False, degrade=True)
    try:
        result = monitor(str(repro_project), retrain_on_drift=False)
    finally:
        for f in (repro_project / "landing").rglob("*.jpg"):
            f.unlink()
    assert result["drift"] is True and result["retrained"] is None
    assert (repro_project / result["report"]).is_file()


def test_pipeline_flow_takes_stages_from_dvc_yaml_and_skipped_from_dvc_status(repro_project):
    from flows.pipeline import pipeline, stage_order

    assert stage_order(repro_project) == list(yaml.safe_load((repro_project / "dvc.yaml").read_text())["stages"])
    results = pipeline(str(repro_project), stages=["split", "validate"])
    assert [r["stage"] for r in results] == ["validate", "split"]  # DVC's order, not the caller's
    assert all(r["skipped"] for r in results)  # nothing changed since the last repro
    assert results[0]["metrics"]["reports/validation/metrics.json"]["total"] == 80
    with pytest.raises(ValueError, match="not stages"):
        pipeline(str(repro_project), stages=["no-such-stage"])

    params = (repro_project / "params.yaml").read_text()
    try:  # a params change makes `split` stale in DVC's status: it runs, and says so
        p = yaml.safe_load(params)
        p["split"]["group_distance"] = p["split"]["group_distance"] + 1
        (repro_project / "params.yaml").write_text(yaml.safe_dump(p))
        (split,) = pipeline(str(repro_project), stages=["split"])
        assert split["skipped"] is False
    finally:
        (repro_project / "params.yaml").write_text(params)
        run(["dvc", "repro", "-q", "--single-item", "split"], repro_project)



def test_deployments_register_and_a_process_work_pool_worker_runs_one(repro_project, tmp_path):
    """A real Prefect server: `flows.deploy apply` (served) and `flows.deploy pool` (prefect.yaml ->
    a process work pool) register the flows with the crons from params.yaml; a `prefect worker`
    picks up a triggered run of the pipeline deployment and runs it to completion."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api}
    prefect = str(Path(sys.executable).parent / "prefect")
    server = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from flows.common import wait_healthy

        wait_healthy(api, timeout_s=120)
        subprocess.run([sys.executable, "-m", "flows.deploy", "apply"], cwd=REPO, env=env, check=True,
                       capture_output=True)
        found = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
        by_name = {d["name"]: d for d in found}
        assert set(by_name) == {"on-demand", "weekly-retrain", "daily-monitor"}
        crons = {name: [s["schedule"].get("cron") for s in d["schedules"]] for name, d in by_name.items()}
        assert crons["weekly-retrain"] == ["0 3 * * 1"] and crons["daily-monitor"] == ["0 6 * * *"]

        # the work-pool path: prefect.yaml, crons from the project's params.yaml, a process worker
        params = yaml.safe_load((repro_project / "params.yaml").read_text())
        params.setdefault("flows", {})["retrain_cron"] = "15 4 * * 2"
        (repro_project / "params.yaml").write_text(yaml.safe_dump(params))
        subprocess.run([prefect, "work-pool", "create", "test-pool", "--type", "process"], cwd=repro_project,
                       env=env, check=True, capture_output=True)
        subprocess.run([sys.executable, "-m", "flows.deploy", "pool", "--pool", "test-pool", "--repo",
                        str(repro_project)], cwd=repro_project, env=env, check=True, capture_output=True)
        pooled = [d for d in httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
                  if d.get("work_pool_name") == "test-pool"]
        assert {d["name"] for d in pooled} == {"on-demand", "weekly-retrain", "daily-monitor"}
        weekly = next(d for d in pooled if d["name"] == "weekly-retrain")
        assert [s["schedule"]["cron"] for s in weekly["schedules"]] == ["15 4 * * 2"]
        on_demand = next(d for d in pooled if d["name"] == "on-demand")
        flow_run = httpx.post(f"{api}/deployments/{on_demand['id']}/create_flow_run",
                              json={"parameters": {"stages": ["split"]}}, timeout=10).json()
        subprocess.run([prefect, "worker", "start", "--pool", "test-pool", "--run-once"], cwd=repro_project,
                       env=env, check=True, capture_output=True, timeout=300)
        state = httpx.get(f"{api}/flow_runs/{flow_run['id']}", timeout=10).json()["state"]
        assert state["type"] == "COMPLETED", state
    finally:
        server.terminate()
        server.wait(timeout=30)
        run(["git", "checkout", "params.yaml"], repro_project)


def test_retraining_refuses_to_start_when_the_raw_data_is_not_in_the_cache(repro_project, tmp_path):
    """A worktree whose data/ cannot be checked out would retrain on the landed batch alone."""
    from flows.common import FlowError
    from flows.retrain import open_worktree

    clone = tmp_path / "clone"  # git history, but an empty DVC cache
    run(["git", "clone", "-q", str(repro_project), str(clone)], tmp_path)
    with pytest.raises(FlowError, match="data"):
        open_worktree.fn(str(clone), "retrain/test")
    assert "retrain/test" not in run(["git", "branch", "--list"], clone).stdout
    assert run(["git", "worktree", "list"], clone).stdout.count("\n") == 1

    shared = tmp_path / "shared"  # a cache elsewhere (`dvc cache dir`): the worktree uses it
    run(["git", "clone", "-q", str(repro_project), str(shared)], tmp_path)
    run(["dvc", "cache", "dir", "--local", str(repro_project / ".dvc/cache")], shared)
    wt = Path(open_worktree.fn(str(shared), "retrain/ok"))
    try:
        assert len([p for p in (wt / "data").rglob("*") if p.is_file()]) == 80
    finally:
        run(["git", "worktree", "remove", "--force", str(wt)], shared)
