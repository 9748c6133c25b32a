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

from conftest import LIMITS, REPO, clone_project, free_port, run
from deepfake_detector.data.demo import make_demo

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]


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


def _set_params(project: Path, **sections: dict) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    for name, patch in sections.items():
        params[name].update(patch)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_a_champion_missing_from_every_cache_is_replaced_by_a_workspace_model_built_from_the_same_inputs(
        repro_project, tmp_path):
    """A fresh clone on another CPU: `make repro` rebuilds the model with other bytes than main's dvc.lock
    names, and main's model is in no cache. The workspace model stands in, and the record says so; a
    workspace model from other inputs does not, and the refusal names the fix."""
    from flows.champion import find_champion

    proj = clone_project(repro_project, tmp_path / "proj")
    real_lock = (proj / "dvc.lock").read_text()
    lock = yaml.safe_load(real_lock)
    out = next(o for o in lock["stages"]["train"]["outs"] if o["path"] == "artifacts/model")
    out["md5"] = "0" * 32 + ".dir"  # a model that no cache or remote holds
    (proj / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    run(["git", "commit", "-qam", "main's lock, made on another CPU"], proj)
    base = run(["git", "rev-parse", "HEAD"], proj).stdout.strip()
    (proj / "dvc.lock").write_text(real_lock)  # what `dvc repro` wrote here

    champion, error, source = find_champion(str(proj), base, tmp_path / "champion")
    assert error is None and source.startswith("workspace artifacts/model") and "no DVC cache" in source
    assert (Path(champion) / "detector.pt").read_bytes() == (proj / "artifacts/model/detector.pt").read_bytes()

    other = yaml.safe_load(real_lock)
    other["stages"]["train"]["params"]["params.yaml"]["train.lr"] = 0.5  # built with other params
    (proj / "dvc.lock").write_text(yaml.safe_dump(other, sort_keys=False))
    champion, error, source = find_champion(str(proj), base, tmp_path / "champion2")
    assert champion is None and source is None
    assert "train: params" in error and "dvc pull" in error and "commit the new dvc.lock" in error


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_pipeline_failure_mid_run_loses_no_landed_byte(repro_project):
    """train fails inside `dvc repro` (after validate and split ran): everything is as before."""
    from flows.common import FlowError
    from flows.retrain import retrain

    run(["git", "checkout", "-q", "-b", "broken-train"], repro_project)
    params = yaml.safe_load((repro_project / "params.yaml").read_text())
    params["model"]["pretrained"] = "no-such-weights.pt"  # train fails mid-pipeline, on any machine, GPU or not
    (repro_project / "params.yaml").write_text(yaml.safe_dump(params))
    run(["git", "commit", "-qam", "a params change that breaks training"], repro_project)
    landing = _land(repro_project, seed=11, per_class=3)
    before_landing, before_data = _tree_bytes(landing), _tree_bytes(repro_project / "data")
    before_moved = {d: _tree_bytes(repro_project / d) for d in ("archive", "quarantine")}  # earlier runs' files
    branches_before = run(["git", "branch", "--list"], repro_project).stdout
    try:
        with pytest.raises(FlowError, match="no-such-weights.pt"):
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
    from deepfake_detector.evaluation.baselines import train_lr
    from deepfake_detector.evaluation.gate import compare
    from deepfake_detector.core.params import GateParams

    g = GateParams(metric="roc_auc", max_drop=0.01, max_f1_drop=0.05)
    champion, worse = tmp_path / "champion", tmp_path / "worse"
    train_lr(prepared / "splits", champion, 64, 0, "spectrum_lr", LIMITS, 0.5, 3000)
    cfg = json.loads((champion / "spectrum.json").read_text())
    worse.mkdir()
    (worse / "spectrum.json").write_text(json.dumps({**cfg, "coef": [-c for c in cfg["coef"]],
                                                     "intercept": -cfg["intercept"]}))
    same = compare(champion, champion, prepared / "splits", g, LIMITS, 1000)
    n_test = len((prepared / "splits/test.csv").read_text().splitlines()) - 1
    assert same["promoted"] and same["ci95"]["difference"] == 0 and same["champion"]["n_test"] == n_test
    assert same["challenger"]["value"] == same["champion"]["value"] and len(same["test_split_md5"]) == 32
    assert same["champion"]["value"] > 0.8, same  # else "inverted" below would not be clearly worse
    refused = compare(worse, champion, prepared / "splits", g, LIMITS, 1000)
    assert refused["promoted"] is False and "max_drop" in refused["reason"]
    assert refused["ci95"]["ci_low"] <= refused["ci95"]["difference"] <= refused["ci95"]["ci_high"] < 0
    first = compare(champion, None, prepared / "splits", g, LIMITS, 1000)
    assert first["promoted"] and "no champion" in first["reason"] and first["champion"] is None
    broken = compare(champion, tmp_path / "missing", prepared / "splits", g, LIMITS, 1000)
    assert broken["promoted"] is False and "champion could not be scored" in broken["reason"]

    # a champion that trained on 7 of today's test images is never scored on them (nor is the challenger)
    import pandas as pd

    test = pd.read_csv(prepared / "splits/test.csv", dtype=str)
    seen = tmp_path / "seen"
    shutil.copytree(champion, seen)
    with (seen / "seen_sha256.txt").open("a") as fh:
        fh.writelines(h + "\n" for h in test["sha256"].iloc[:7])
    fair = compare(champion, seen, prepared / "splits", g, LIMITS, 1000)
    assert fair["n_excluded_seen_by_champion"] == 7 and fair["n_excluded_seen_by_challenger"] == 0
    assert fair["champion"]["n_test"] == fair["challenger"]["n_test"] == len(test) - 7 == fair["n_test_split"] - 7
    (seen / "seen_sha256.txt").unlink()  # a champion that cannot say what it trained on is refused ...
    unknown = compare(champion, seen, prepared / "splits", g, LIMITS, 1000)
    assert unknown["promoted"] is False and "lists no training images" in unknown["reason"]
    given = compare(champion, seen, prepared / "splits", g, LIMITS, 1000, champion_seen=set(test["sha256"].iloc[:3]))
    assert given["n_excluded_seen_by_champion"] == 3  # ... unless the caller knows (its base commit's splits)


def test_gate_refuses_nan_and_missing_metrics():
    from deepfake_detector.evaluation.gate import decide
    from deepfake_detector.core.params import load_params

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


def test_a_live_lock_refuses_a_second_run_and_a_dead_or_silent_one_is_taken_over(tmp_path):
    """The lock names a unique owner and renews a heartbeat: a live run refuses another; one whose process is gone
    (same host and pid namespace) or whose heartbeat stopped (another host, a pod evicted) is taken over, and said
    so. Release removes only a lock that is still this run's own."""
    import socket
    import subprocess
    import time

    from flows.common import FlowError
    from flows.journal import _pid_scope, run_lock

    lock = tmp_path / ".dvc/tmp/dfd-retrain.lock"
    lock.parent.mkdir(parents=True)
    here, now = socket.gethostname(), time.time()
    alive = {"owner": "me-elsewhere", "host": here, "pid": os.getpid(), "scope": _pid_scope(), "beat": now}
    lock.write_text(json.dumps(alive))
    with pytest.raises(FlowError, match="refusing to run two at once"):
        with run_lock(tmp_path, stale_s=900, heartbeat_s=30):
            pass
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer exists
    lock.write_text(json.dumps({**alive, "owner": "dead", "pid": gone.pid}))
    with run_lock(tmp_path, stale_s=900, heartbeat_s=30) as held:
        assert held.taken_over["why"] == "its process is gone"
        assert json.loads(lock.read_text())["owner"] == held.me["owner"] != "dead"
    assert not lock.exists()  # released
    other_ns = {**alive, "owner": "container", "pid": gone.pid, "scope": "another-namespace"}
    lock.write_text(json.dumps(other_ns))  # a small pid that means another process in another container
    with pytest.raises(FlowError, match="container"):
        with run_lock(tmp_path, stale_s=900, heartbeat_s=30):
            pass
    lock.write_text(json.dumps({**other_ns, "beat": now - 1000}))  # ... whose heartbeat stopped
    with run_lock(tmp_path, stale_s=900, heartbeat_s=30) as held:
        assert held.taken_over["why"].startswith("no heartbeat for")
        lock.write_text(json.dumps({**alive, "owner": "thief"}))  # taken from under us
        with pytest.raises(FlowError, match="lost its lock"):
            held.check()
    assert json.loads(lock.read_text())["owner"] == "thief"  # not ours: release leaves it


def test_a_heartbeat_renews_a_running_lock_and_one_of_eight_racers_takes_a_stale_one(tmp_path):
    import threading
    import time

    from flows.common import FlowError
    from flows.journal import RunLock, run_lock

    with run_lock(tmp_path, stale_s=900, heartbeat_s=0.05) as held:
        path = held.path
        first = json.loads(path.read_text())["beat"]
        deadline = time.monotonic() + 10
        while json.loads(path.read_text())["beat"] == first and time.monotonic() < deadline:
            time.sleep(0.02)
        assert json.loads(path.read_text())["beat"] > first  # renewed while the run works
        held.check()
    path.write_text(json.dumps({"owner": "evicted", "host": "gone-node", "pid": 1, "beat": time.time() - 10_000}))
    racers = [RunLock(path, 900, 30) for _ in range(8)]
    results: list = [None] * len(racers)
    start = threading.Barrier(len(racers))

    def race(i: int) -> None:
        start.wait()
        try:
            racers[i].acquire()
            results[i] = "took"
        except FlowError as exc:
            results[i] = str(exc)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(racers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("took") == 1, results  # exclusive takeover
    winner = racers[results.index("took")]
    assert json.loads(path.read_text())["owner"] == winner.me["owner"]
    winner.release()
    assert not path.exists()


def test_an_io_error_leaves_a_file_for_the_next_run_and_a_failed_move_stays_owed(tmp_path, monkeypatch):
    """A read error while staging is the storage's fault, not the file's: left in landing/, never quarantined. A
    merged file that cannot be moved stays owed by its run's journal, is not taken again, and moves next time."""
    import errno

    import flows.landing as landing_mod
    from flows.journal import Journal
    from flows.publish import _release, owed_moves

    landing = tmp_path / "landing"
    (landing / "real").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (landing / "real" / name).write_bytes(name.encode() * 10)
    real_copy, real_move = landing_mod._copy_hashed, shutil.move

    def flaky_copy(src, dst):
        if src.name == "b.jpg":
            raise OSError(errno.EIO, "Input/output error")
        return real_copy(src, dst)

    def stuck_move(src, dst):
        if str(src).endswith("c.jpg"):
            raise OSError(errno.ESTALE, "Stale file handle")
        return real_move(src, dst)

    monkeypatch.setattr(landing_mod, "_copy_hashed", flaky_copy)
    staged, left = landing_mod.stage(landing, ["real/a.jpg", "real/b.jpg", "real/c.jpg"], tmp_path / "scratch", 10**6)
    assert sorted(staged) == ["real/a.jpg", "real/c.jpg"] and all(e["refused"] is None for e in staged.values())
    assert [x["path"] for x in left] == ["real/b.jpg"] and "I/O error" in left[0]["why"]
    j = Journal("s1", "retrain/s1", "0" * 40, staged, promoted=False, repo=str(tmp_path))
    monkeypatch.setattr(landing_mod.shutil, "move", stuck_move)
    with pytest.raises(OSError, match="retried by the next run"):
        _release(j, landing, tmp_path / "archive", tmp_path / "quarantine")
    assert list(j.staged) == ["real/c.jpg"] and "Stale file handle" in j.outcome["owed"]["released"]
    ready, waiting = landing_mod.settled_landing(landing, 0, owed=owed_moves([j]))
    assert ready == ["real/b.jpg"]  # retried; c.jpg's bytes are merged already: not taken twice
    assert [x["path"] for x in waiting] == ["real/c.jpg"] and "retried" in waiting[0]["why"]
    monkeypatch.setattr(landing_mod.shutil, "move", real_move)
    done = _release(j, landing, tmp_path / "archive", tmp_path / "quarantine")
    assert sorted(done["archived"]) == ["real/a.jpg", "real/c.jpg"]
    assert sorted(p.name for p in (tmp_path / "archive/s1/real").iterdir()) == ["a.jpg", "c.jpg"]


def test_a_rollback_moves_prod_and_version_numbers_count_deprecated_versions(tmp_path):
    """prod is what the latest assignment put there (GTO's own `which` keeps the highest semver, so an assign of an
    older version would not roll back); a deprecated version drops out of its stage and still takes its number."""
    from gto import api

    from deepfake_detector.serving.registry import next_version, stage_version

    run(["git", "init", "-q", "-b", "main"], tmp_path)
    commits = []
    for i in range(2):
        run(["git", "commit", "-q", "--allow-empty", "-m", f"c{i}"], tmp_path)
        commits.append(run(["git", "rev-parse", "HEAD"], tmp_path).stdout.strip())
        api.register(str(tmp_path), "detector", "HEAD", version=f"v0.{i + 1}.0")
        api.assign(str(tmp_path), "detector", "prod", version=f"v0.{i + 1}.0")
    assert stage_version(tmp_path, "detector", "prod") == ("v0.2.0", commits[1])
    api.assign(str(tmp_path), "detector", "prod", version="v0.1.0", force=True)  # the rollback
    assert api.find_versions_in_stage(str(tmp_path), "detector", "prod")[0].version == "v0.2.0"  # GTO's view
    assert stage_version(tmp_path, "detector", "prod") == ("v0.1.0", commits[0])
    api.assign(str(tmp_path), "detector", "prod", version="v0.2.0", force=True)
    assert next_version(tmp_path, "detector") == "v0.3.0"
    api.deregister(str(tmp_path), "detector", version="v0.2.0")  # deprecated: GTO's latest is v0.1.0 again ...
    assert api.find_latest_version(str(tmp_path), "detector").version == "v0.1.0"
    assert stage_version(tmp_path, "detector", "prod") == ("v0.1.0", commits[0])  # prod falls back
    assert next_version(tmp_path, "detector") == "v0.3.0"  # ... but v0.2.0's tag exists: never offered again


def test_a_champion_that_cannot_be_identified_is_a_refusal_never_a_first_model(repro_project, tmp_path):
    """No dvc.lock on the base commit (a new project): the first model. A base whose train stage lacks the model
    dvc.yaml names, or an unknown commit: an error, so the gate refuses (it used to promote as a "first model")."""
    from flows.champion import find_champion

    proj = clone_project(repro_project, tmp_path / "proj")
    base = run(["git", "rev-parse", "HEAD"], proj).stdout.strip()
    run(["git", "checkout", "-q", "--orphan", "fresh"], proj)
    run(["git", "rm", "-q", "--cached", "dvc.lock"], proj)
    run(["git", "commit", "-qm", "a project that never trained"], proj)
    fresh = run(["git", "rev-parse", "HEAD"], proj).stdout.strip()
    assert find_champion(str(proj), fresh, tmp_path / "c0") == (None, None, None)  # first model
    run(["git", "checkout", "-q", "-f", "main"], proj)
    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    for out in lock["stages"]["train"]["outs"]:
        out["path"] = out["path"].replace("artifacts/model", "artifacts/old_model")
    (proj / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    run(["git", "commit", "-qam", "the base trained another model folder"], proj)
    other = run(["git", "rev-parse", "HEAD"], proj).stdout.strip()
    champion, error, _ = find_champion(str(proj), other, tmp_path / "c1")
    assert champion is None and "trains no artifacts/model" in error
    champion, error, _ = find_champion(str(proj), "0" * 40, tmp_path / "c2")
    assert champion is None and error
    champion, error, source = find_champion(str(proj), base, tmp_path / "c3")
    assert error is None and "artifacts/model" in source


def test_a_worktree_gets_the_repo_dvc_config_and_only_the_validation_caches(repro_project, tmp_path):
    from flows.worktree import close_worktree, open_worktree

    proj = clone_project(repro_project, tmp_path / "proj")
    run(["dvc", "remote", "add", "--local", "-d", "mine", str(tmp_path / "store")], proj)
    (proj / "artifacts/cache/train").mkdir(parents=True, exist_ok=True)
    (proj / "artifacts/cache/train/shard.u8").write_bytes(b"0" * 1000)  # the training shard cache
    (proj / "artifacts/cache/validate.jsonl").write_text('{"key": "x"}\n')
    wt = Path(open_worktree.fn(str(proj), "retrain/config"))
    try:
        assert run(["dvc", "remote", "default"], wt).stdout.strip() == "mine"  # config.local reached the worktree
        assert (wt / "artifacts/cache/validate.jsonl").read_text() == '{"key": "x"}\n'
        assert not (wt / "artifacts/cache/train").exists()
    finally:
        close_worktree(str(proj), str(wt), "retrain/config", keep_branch=False)


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


def test_served_traffic_is_monitored_from_the_request_log(repro_project, tmp_path):
    """Degraded faces (blur + JPEG q30) are sent to the real service app with serve.log_images on; the
    monitor-served flow compares the logged images with the training data and flags the drift."""
    from starlette.testclient import TestClient

    from deepfake_detector.serving.detector import Detector
    from deepfake_detector.serving.serve import create_app
    from flows.monitor import monitor_served

    proj = clone_project(repro_project, tmp_path / "proj")
    log = proj / "logs/requests.jsonl"
    _set_params(proj, serve={"request_log": "logs/requests.jsonl", "log_images": True})
    assert monitor_served(str(proj))["drift"] is None  # nothing served yet: said plainly
    from deepfake_detector.core.params import load_params

    s = load_params(proj / "params.yaml").serve
    app = create_app(Detector.load(proj / "artifacts/model", repo=proj), s, request_log=str(log))
    sent = sorted(_land(proj, seed=12, per_class=15, corrupt=False, degrade=True).rglob("*.jpg"))
    with TestClient(app) as client:
        for i in range(0, len(sent), 5):
            r = client.post("/predict", files=[("files", (f.name, f.read_bytes())) for f in sent[i:i + 5]])
            assert r.status_code == 200
    assert len(log.read_text().splitlines()) == len(sent) == len(list((proj / "logs/images").iterdir()))
    result = monitor_served(str(proj))
    assert result["drift"] is True and result["images"] == len(sent), result
    assert 0 <= result["served_unfamiliar_share"] <= 1  # each answer carried novelty and unfamiliar
    assert (proj / result["report"]).is_file()


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
    from flows.worktree import open_worktree

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
