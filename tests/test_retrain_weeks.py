"""Weeks that add up: two retraining weeks on one project, nobody merging in between, the first one killed at
every step and run again. The scenario runs once (module fixture: flow runs in subprocesses, as a scheduler
starts them); each test reads one invariant off it.

Week 1 lands 8 good images and the files that used to stop the schedule (a name that is not UTF-8, a file over
validate.max_file_mb, an unreadable one, a symlink) and a fake that copies an image already in the data. Its run
is killed before the commit, after the commit, after the push and after the registration, and each time run
again. The working copy's gate is wide open (max_drop 1.0), so week 1 is promoted. Week 2 lands 4 more images
with the committed gate; one of them is replaced while its run's pipeline runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import REPO, clone_project, run
from deepfake_detector.data.demo import make_demo

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]
NOT_UTF8 = os.fsdecode(b"real/caf\xe9.jpg")


def _flow(proj: Path, api: str, plan: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_API_URL": api, "PYTHONPATH": str(REPO / "tests")}
    return subprocess.run([sys.executable, str(REPO / "tests/flow_runner.py"), str(proj), json.dumps(plan)], cwd=proj,
                          env=env, capture_output=True, text=True, timeout=600)


def _land(proj: Path, seed: int, per_class: int) -> list[str]:
    """Demo faces under landing/, settled long ago; returns their paths relative to landing/."""
    landing = proj / "landing"
    make_demo(landing / f".tmp{seed}", per_class=per_class, seed=seed)
    names = []
    for f in sorted((landing / f".tmp{seed}").rglob("*.jpg")):
        rel = f"{f.parent.name}/w{seed}_{f.name}"
        (landing / rel).parent.mkdir(parents=True, exist_ok=True)
        f.replace(landing / rel)
        names.append(rel)
    shutil.rmtree(landing / f".tmp{seed}")
    return names


def _settle(landing: Path) -> None:
    old = time.time() - 7200
    for f in landing.rglob("*"):
        os.utime(f, (old, old), follow_symlinks=False)


def _data_files(proj: Path, rev: str) -> dict[str, str]:
    """{path: md5} of data/ at a commit: its data.dvc's directory listing, read from the DVC cache."""
    md5 = yaml.safe_load(run(["git", "show", f"{rev}:data.dvc"], proj).stdout)["outs"][0]["md5"]
    cache = Path(run(["dvc", "cache", "dir"], proj).stdout.strip())
    listing = json.loads((cache / "files/md5" / md5[:2] / md5[2:]).read_text())
    return {e["relpath"]: e["md5"] for e in listing}


@pytest.fixture(scope="module")
def weeks(lean_project, prefect_harness, tmp_path_factory):
    root = tmp_path_factory.mktemp("weeks")
    proj = clone_project(lean_project, root / "proj")
    run(["git", "init", "-q", "--bare", str(root / "origin.git")], root)
    run(["git", "remote", "add", "origin", str(root / "origin.git")], proj)
    run(["git", "push", "-q", "origin", "main"], proj)
    run(["dvc", "remote", "add", "--local", "-d", "store", str(root / "dvc-store")], proj)  # config.local only
    main_files = _data_files(proj, "HEAD")

    # week 1, with the gate wide open in the working copy (not committed)
    landing = proj / "landing"
    week1 = _land(proj, seed=21, per_class=4)
    a_real = next(n for n in week1 if n.startswith("real/"))
    (landing / "real").joinpath(NOT_UTF8.split("/")[1]).write_bytes((landing / a_real).read_bytes() + b"\x00")
    (landing / "fake/huge.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(2**20))  # over max_file_mb (0.5 MB here)
    (landing / "fake/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    os.symlink(proj / "data/real" / sorted(os.listdir(proj / "data/real"))[0], landing / "real/link.jpg")
    existing = sorted((proj / "data/real").rglob("*.jpg"))[3]
    shutil.copyfile(existing, landing / "fake/copy_of_a_real.jpg")  # the same bytes, the other label
    _settle(landing)
    params = yaml.safe_load((proj / "params.yaml").read_text())
    committed_params = (proj / "params.yaml").read_text()  # the committed gate: max_drop 0.01
    params["flows"]["gate"].update(max_drop=1.0, max_f1_drop=1.0)
    params["validate"]["max_file_mb"] = 0.5
    params["validate"]["label_issue"]["max_label_probability"] = 0.5  # the champion's doubts are listed
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    runs = {}
    for point in ("before_commit", "after_commit", "after_push", "after_registration", None):
        runs[point or "finish"] = _flow(proj, prefect_harness, {"kill": point} if point else {})
    week1_left = sorted(p.relative_to(landing).as_posix() for p in landing.rglob("*") if p.is_file() or p.is_symlink())

    # week 2, with the committed gate (the champion's doubts still listed at 0.5)
    params = yaml.safe_load(committed_params)
    params["validate"]["label_issue"]["max_label_probability"] = 0.5
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    week2 = _land(proj, seed=22, per_class=2)
    replaced = week2[0]
    _settle(landing)
    runs["week2"] = _flow(proj, prefect_harness, {"replace": replaced})
    return {"proj": proj, "root": root, "runs": runs, "main_files": main_files, "week1": week1, "week2": week2,
            "replaced": replaced, "existing": existing.relative_to(proj / "data").as_posix(), "week1_left": week1_left}


def _result(run_: subprocess.CompletedProcess) -> dict:
    assert run_.returncode == 0, run_.stderr[-3000:]
    return json.loads(run_.stdout.strip().splitlines()[-1])


def _records(proj: Path) -> list[dict]:
    out = []
    for branch in run(["git", "branch", "--list", "retrain/*", "--format=%(refname:short)"], proj).stdout.split():
        stamp = branch.split("/", 1)[1]
        text = run(["git", "show", f"{branch}:reports/retrain/{stamp}.json"], proj, check=False).stdout
        if text:
            out.append(json.loads(text))
    return sorted(out, key=lambda r: r["stamp"])


def test_each_kill_leaves_a_run_that_the_next_one_finishes(weeks):
    runs = weeks["runs"]
    assert [runs[k].returncode for k in ("before_commit", "after_commit", "after_push", "after_registration")] == \
        [-9] * 4  # SIGKILLed where asked
    assert _result(runs["finish"])["new_images"] == 0  # the last week-1 run only finished what was owed
    week1, week2 = _records(weeks["proj"])
    assert week1["lock_taken_over"]["why"] == "its process is gone"  # the run after the first kill took the lock
    assert week1["promoted"] and week2["base_commit"] != week1["base_commit"]
    at_week1 = run(["git", "tag", "--points-at", week1["branch"], "--list", "detector@*"], weeks["proj"]).stdout.split()
    assert at_week1 == ["detector@v0.1.0"]  # registered once, although the run was killed right after registering
    assert run(["git", "worktree", "list"], weeks["proj"]).stdout.count("\n") == 1  # no leftover worktree
    assert not list((weeks["proj"] / ".dfd/retrain").glob("*.json"))  # nothing owed any more
    origin = run(["git", "ls-remote", "--heads", str(weeks["root"] / "origin.git")], weeks["root"]).stdout
    assert week1["branch"] in origin  # pushed by a later run


def test_every_landed_file_is_in_the_data_exactly_once(weeks):
    proj = weeks["proj"]
    week1, week2 = _records(proj)
    files = _data_files(proj, week2["branch"])
    batch = [p for p in files if "/batch-" in p]
    names = sorted(p.split("/")[-1] for p in batch)
    expected = sorted(n.split("/")[-1] for n in weeks["week1"] + weeks["week2"])  # the replaced one as staged
    assert names == expected  # each once: no batch merged twice, nothing dropped
    assert {p for p in files if "/batch-" not in p} == set(weeks["main_files"])  # main's images all kept
    assert len(files) == len(weeks["main_files"]) + len(expected)


def test_week_two_was_gated_against_week_ones_prod_model_and_holds_both_batches(weeks):
    proj = weeks["proj"]
    week1, week2 = _records(proj)
    model_md5 = next(o["md5"] for o in yaml.safe_load(run(["git", "show", f"{week1['branch']}:dvc.lock"],
                                                          proj).stdout)["stages"]["train"]["outs"]
                     if o["path"] == "artifacts/model")
    assert model_md5 in week2["champion_source"] and "prod v0.1.0" in week2["champion_source"]
    assert week2["prod_before"]["version"] == "v0.1.0" and week2["base_commit"] == week1_commit(proj, week1)
    assert "not merged into HEAD" in week2["base_why"]
    nfiles = yaml.safe_load(run(["git", "show", f"{week2['branch']}:data.dvc"], proj).stdout)["outs"][0]["nfiles"]
    assert nfiles == len(weeks["main_files"]) + week1["new_images"] + week2["new_images"]


def week1_commit(proj: Path, week1: dict) -> str:
    return run(["git", "rev-parse", week1["branch"]], proj).stdout.strip()


def test_bad_files_are_quarantined_with_their_reason_and_never_stop_a_run(weeks):
    proj = weeks["proj"]
    week1, _ = _records(proj)
    why = {r["path"]: (r["reason"], r["detail"]) for r in week1["rejected"]}
    assert why["real/caf\\xe9.jpg"] == ("unsupported", "file name is not UTF-8")
    assert why["fake/huge.jpg"][0] == "unreadable" and "max_file_mb" in why["fake/huge.jpg"][1]
    assert why["fake/broken.jpg"][0] == "unreadable"
    assert why["real/link.jpg"][0] == "unsupported" and "symlink" in why["real/link.jpg"][1]
    quarantined = list((proj / "quarantine").rglob("*"))
    assert any(p.name == "link.jpg" and p.is_symlink() for p in quarantined)  # moved as it was, never followed
    assert any(os.fsencode(p.name) == b"caf\xe9.jpg" for p in quarantined)
    assert weeks["week1_left"] == []  # landing/ emptied by week 1


def test_a_landed_copy_of_an_existing_image_is_quarantined_and_the_existing_one_stays(weeks):
    proj = weeks["proj"]
    week1, week2 = _records(proj)
    reason, detail = {r["path"]: (r["reason"], r["detail"]) for r in week1["rejected"]}["fake/copy_of_a_real.jpg"]
    assert reason == "conflicting_label" and weeks["existing"] in detail
    assert weeks["existing"] in _data_files(proj, week2["branch"])  # still in the data
    quarantined = pd.read_csv(proj / "quarantine" / week1["stamp"] / "rejected.csv")
    assert "conflicting_label" in set(quarantined.loc[quarantined["path"] == "fake/copy_of_a_real.jpg", "reason"])


def test_a_file_replaced_after_staging_stays_in_landing_for_the_next_run(weeks):
    proj = weeks["proj"]
    _, week2 = _records(proj)
    result = _result(weeks["runs"]["week2"])
    assert result["released"]["changed_since_staging"] == [weeks["replaced"]]
    assert (proj / "landing" / weeks["replaced"]).is_file()  # the new bytes wait for the next run
    merged = {p.split("/")[-1]: md5 for p, md5 in _data_files(proj, week2["branch"]).items() if "/batch-" in p}
    import hashlib

    staged_name = weeks["replaced"].split("/")[-1]
    assert merged[staged_name] != hashlib.md5((proj / "landing" / weeks["replaced"]).read_bytes()).hexdigest()


def test_the_record_names_a_remote_that_a_clone_can_pull_from(weeks):
    proj, root = weeks["proj"], weeks["root"]
    _, week2 = _records(proj)
    assert "DVC remote `store`" in week2["data_location"] and str(root / "dvc-store") in week2["data_location"]
    fresh = root / "fresh"
    run(["git", "clone", "-q", "--branch", week2["branch"], str(root / "origin.git"), str(fresh)], root)
    instruction = week2["data_location"].split("(`", 1)[1].rsplit("`)", 1)[0].split("&& ", 1)[1]
    subprocess.run(instruction, shell=True, cwd=fresh, check=True, capture_output=True,
                   env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    assert len(list((fresh / "data").rglob("*.jpg"))) == len(_data_files(proj, week2["branch"]))


def test_old_images_keep_their_split_as_the_data_grows(weeks):
    proj = weeks["proj"]
    week1, week2 = _records(proj)
    splits = {}
    for name, rec in (("w1", week1), ("w2", week2)):
        lock = yaml.safe_load(run(["git", "show", f"{rec['branch']}:dvc.lock"], proj).stdout)
        out = next(o for o in lock["stages"]["split"]["outs"] if o["path"] == "artifacts/splits")
        cache = Path(run(["dvc", "cache", "dir"], proj).stdout.strip())
        listing = json.loads((cache / "files/md5" / out["md5"][:2] / out["md5"][2:]).read_text())
        where = {}
        for e in listing:
            if e["relpath"] in ("train.csv", "val.csv", "test.csv"):
                blob = cache / "files/md5" / e["md5"][:2] / e["md5"][2:]
                for sha in pd.read_csv(blob, dtype=str)["sha256"]:
                    where[sha] = e["relpath"][:-4]
        splits[name] = where
    assert splits["w1"] and all(splits["w2"][sha] == s for sha, s in splits["w1"].items())


def test_the_record_lists_what_the_champion_judged_mislabeled(weeks):
    from deepfake_detector.serving.detector import Detector

    proj = weeks["proj"]
    _, week2 = _records(proj)
    listed = week2["label_issues"]
    for entry in listed:
        assert entry["label"] in ("real", "fake") and float(entry["label_confidence"]) < 0.5 + 1e-9
    champion = run(["dvc", "get", str(proj), "artifacts/model", "--rev", week2["base_commit"], "-o",
                    str(weeks["root"] / "champion")], proj)
    det = Detector.load(weeks["root"] / "champion", band=0.1, batch_size=8, params=proj / "params.yaml")
    archive = proj / "archive" / week2["stamp"]
    for path in sorted(archive.rglob("*.jpg")):
        rel = path.relative_to(archive).as_posix()
        p = det.fake_probabilities([path])[0]
        doubt = p if rel.startswith("real/") else 1 - p  # the probability of the other label
        assert (rel in {e["path"] for e in listed}) == (doubt > 0.5), (rel, p)
    assert champion.returncode == 0
