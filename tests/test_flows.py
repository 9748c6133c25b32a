"""Prefect flows for real: retraining on a temp git repo, quarantine, gate, retries, lock, server."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageFilter

from conftest import REPO, run
from deepfake_detector.demo import make_demo

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


def test_gate_refuses_a_worse_model(repro_project):
    from flows.retrain import retrain

    run(["git", "checkout", "-q", "-b", "great-model"], repro_project)
    metrics = repro_project / "reports/eval/metrics.json"
    original = metrics.read_text()
    inflated = {**json.loads(original), "roc_auc": 1.0, "f1": 1.0}
    metrics.write_text(json.dumps(inflated))
    run(["git", "commit", "-qam", "an excellent accepted model"], repro_project)
    try:
        _land(repro_project, seed=8, corrupt=False)
        result = retrain(str(repro_project))
    finally:
        run(["git", "checkout", "-q", "main"], repro_project)
    assert result["promoted"] is False and result["pushed"] is False
    assert "roc_auc" in result["reason"] and "max drop" in result["reason"]
    body = run(["git", "show", f"{result['branch']}:reports/retrain/{result['branch'].split('/')[1]}.md"],
               repro_project).stdout
    assert "NOT PROMOTED" in body and "Metrics diff" in body


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


def test_pipeline_flow_records_stage_metrics(repro_project):
    from flows.pipeline import pipeline

    results = pipeline(str(repro_project), stages=["validate", "split"])
    assert [r["stage"] for r in results] == ["validate", "split"]
    assert all(r["skipped"] for r in results)  # nothing changed since the last repro
    assert results[0]["metrics"]["reports/validation/metrics.json"]["total"] == 80


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_deployments_and_crons_register_on_a_real_server(tmp_path):
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api}
    server = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    finally:
        server.terminate()
        server.wait(timeout=30)
