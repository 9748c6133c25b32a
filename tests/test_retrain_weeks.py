"""Weeks that add up, as a team lives them: scheduled retraining runs on one project and on a second clone, nobody
merging in between. The scenario runs once (module fixture: flow runs in subprocesses, as a scheduler starts
them); each test reads one invariant off it.

Each gate decision is purpose-made, so that it cannot go the other way on another CPU (the demo's TINY models are
near chance on 27 test images): every promotion is against a champion that ranks the demo faces backwards (a
frozen-feature probe with its weights negated, main's model, registered as v0.1.0), the refusal against the same
probe unnegated (AUC 1.0 on the demo).
- week 1: 8 good images and the files that used to stop the schedule (a name that is not UTF-8, a file over
  validate.max_file_mb, an unreadable one, a symlink, a fake that copies an image already in the data). The run is
  killed as its pipeline starts, after the commit, after the push and after the registration, and run again each
  time: promoted, v0.2.0.
- a person promotes the strong probe from a side branch: prod v0.3.0, on a commit that is not on the data line.
- week 2: a challenger that cannot learn (learning rate 1e-12) against it: REFUSED. It lands 4 images, a fake
  that is a real face (the champion removes it), a near-duplicate of an image already in the data (old images keep
  their split), a file replaced right after staging, and files that are not ready (hidden, partial, arriving).
- week 3: a batch whose every file is bad: a clean no-op.
- a person rolls `prod` back to v0.1.0.
- week 4: promoted, but the DVC remote is down: committed, nothing registered, the run fails saying what is owed.
- week 5: the remote is back and the landing folder empty: week 4 is pushed and registered (v0.4.0), nothing else.
- a person deprecates v0.4.0 on the first clone: `prod` falls back to the assignment before it, v0.1.0;
- week 6 runs on a second clone made before any of it (no tags, no data in its cache): it fetches, pulls, trains
  on every accepted image of weeks 1-6, the refused week's included, is gated against v0.1.0 and registers v0.5.0.
"""

from __future__ import annotations

import hashlib
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

from conftest import LIMITS, REPO, clone_project, run
from deepfake_detector.data.demo import make_demo

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.slow]
NOT_UTF8 = os.fsdecode(b"real/caf\xe9.jpg")


def _flow(proj: Path, api: str, plan: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_API_URL": api, "PYTHONPATH": str(REPO / "tests")}
    return subprocess.run([sys.executable, str(REPO / "tests/flow_runner.py"), str(proj), json.dumps(plan or {})],
                          cwd=proj, env=env, capture_output=True, text=True, timeout=900)


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
    _settle(landing)
    return names


def _settle(landing: Path) -> None:
    old = time.time() - 7200
    for f in landing.rglob("*"):
        os.utime(f, (old, old), follow_symlinks=False)


def _params(proj: Path, committed: str, **patch: dict) -> None:
    """The working copy's params.yaml: the committed one with these sections patched (not committed)."""
    params = yaml.safe_load(committed)
    for section, values in patch.items():
        node = params
        for key in section.split("."):
            node = node[key]
        node.update(values)
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _data_files(proj: Path, rev: str) -> dict[str, str]:
    """{path: md5} of data/ at a commit: its data.dvc's directory listing, read from the DVC cache."""
    md5 = yaml.safe_load(run(["git", "show", f"{rev}:data.dvc"], proj).stdout)["outs"][0]["md5"]
    cache = Path(run(["dvc", "cache", "dir"], proj).stdout.strip())
    listing = json.loads((cache / "files/md5" / md5[:2] / md5[2:]).read_text())
    return {e["relpath"]: e["md5"] for e in listing}


def _near_duplicate(proj: Path, seed: int) -> tuple[str, bytes]:
    """(an existing real image, a re-encoding of it) such that, were the old splits forgotten, the new image would
    pull the old one into another split: its key is the group's smallest and hashes to another split."""
    from deepfake_detector.core.hashing import hamming, phash
    from deepfake_detector.core.params import load_params
    from deepfake_detector.data.filemeta import FEATURE_SIZE
    from deepfake_detector.data.split import split_of, unit_interval

    p = load_params(proj / "params.yaml")
    train = pd.read_csv(proj / "artifacts/splits/train.csv", dtype=str)
    for row in train[train["label"] == "real"].itertuples(index=False):
        old_key = row.split_group  # the smallest member key of its group: what the split hashes
        im = Image.open(proj / "data" / row.path).convert("RGB")
        for quality in range(80, 100):
            import io

            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=quality)
            data = buf.getvalue()
            key = f"sha256:{hashlib.sha256(data).hexdigest()}"
            near = hamming(int(phash(Image.open(io.BytesIO(data)).resize((FEATURE_SIZE,) * 2,
                                                                           Image.Resampling.BILINEAR)), 16),
                           int(row.phash, 16)) <= p.split.group_distance - 2
            if near and key < old_key and split_of(unit_interval(p.seed, key), p.split) != "train":
                return row.path, data
    raise AssertionError("no re-encoding found that would move an old image without the old splits")


def _probe(proj: Path, branch: str, negate: bool) -> dict:
    """A frozen-feature probe as the model of a new commit on `branch` (from main), registered as prod."""
    from deepfake_detector.evaluation.baselines import train_lr
    from deepfake_detector.serving.registry import register

    if branch != "main":
        run(["git", "checkout", "-q", "-b", branch, "main"], proj)
    shutil.rmtree(proj / "artifacts/model")
    train_lr(proj / "artifacts/splits", proj / "artifacts/model", 64, 0, "probe_lr", LIMITS, 0.5, 3000)
    if negate:
        probe = json.loads((proj / "artifacts/model/probe.json").read_text())
        probe.update(coef=[-c for c in probe["coef"]], intercept=-probe["intercept"])
        (proj / "artifacts/model/probe.json").write_text(json.dumps(probe))
    run(["dvc", "commit", "-q", "-f", "train"], proj)
    run(["git", "add", "dvc.lock"], proj)
    run(["git", "commit", "-qm", f"purpose-made: a probe{' that ranks backwards' if negate else ''}"], proj)
    version = register(proj, "detector", branch, stage="prod", message="a person promotes a model")
    if branch != "main":
        run(["git", "checkout", "-q", "main"], proj)
        run(["dvc", "checkout", "-q"], proj)
    return version


def _rollback(proj: Path, version: str) -> None:
    from gto import api

    api.assign(str(proj), "detector", "prod", version=version, force=True, message=f"rollback to {version}")


@pytest.fixture(scope="module")
def weeks(lean_project, prefect_harness, tmp_path_factory):
    root = tmp_path_factory.mktemp("weeks")
    proj = clone_project(lean_project, root / "proj")
    run(["git", "init", "-q", "--bare", str(root / "origin.git")], root)
    run(["git", "remote", "add", "origin", str(root / "origin.git")], proj)
    run(["dvc", "remote", "add", "--local", "-d", "store", str(root / "dvc-store")], proj)  # config.local only
    committed = (proj / "params.yaml").read_text()
    facts = {"root": root, "proj": proj, "backwards": _probe(proj, "main", negate=True)}  # prod v0.1.0
    run(["git", "push", "-q", "origin", "main", "--tags"], proj)
    run(["dvc", "push", "-q"], proj)  # main's data and model: what another clone pulls
    other = root / "other"  # a second clone, made now: it never sees this clone's later tags or cache
    run(["git", "clone", "-q", "--branch", "main", str(root / "origin.git"), str(other)], root)
    run(["dvc", "remote", "add", "--local", "store", str(root / "dvc-store")], other)  # not the default: found anyway
    landing, runs = proj / "landing", {}
    facts["main_files"] = _data_files(proj, "HEAD")

    # week 1, with the gate wide open in the working copy (not committed)
    facts["week1"] = _land(proj, seed=21, per_class=4)
    a_real = next(n for n in facts["week1"] if n.startswith("real/"))
    (landing / "real").joinpath(NOT_UTF8.split("/")[1]).write_bytes((landing / a_real).read_bytes() + b"\x00")
    (landing / "fake/huge.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(2**20))  # over max_file_mb (0.5 MB here)
    (landing / "fake/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    os.symlink(proj / "data/real" / sorted(os.listdir(proj / "data/real"))[0], landing / "real/link.jpg")
    existing = sorted((proj / "data/real").rglob("*.jpg"))[3]
    shutil.copyfile(existing, landing / "fake/copy_of_a_real.jpg")  # the same bytes, the other label
    facts["existing"] = existing.relative_to(proj / "data").as_posix()
    _settle(landing)
    open_gate = {"flows.gate": {"max_drop": 1.0, "max_f1_drop": 1.0},  # promoted against the backwards champion,
                 "flows.label_judge": {"max_label_probability": 0.1, "remove": False}}  # whose doubts are all wrong
    _params(proj, committed, **open_gate, validate={"max_file_mb": 0.5})
    for point in ("before_commit", "after_commit", "after_push", "after_registration"):
        runs[point] = _flow(proj, prefect_harness, {"kill": point})
    runs["week1"] = _flow(proj, prefect_harness)
    facts["week1_left"] = sorted(p.relative_to(landing).as_posix() for p in landing.rglob("*")
                                 if p.is_file() or p.is_symlink())

    # a person promotes the strong probe from a side branch (v0.3.0)
    from deepfake_detector.serving.registry import push_tags

    facts["probe"] = _probe(proj, "probe", negate=False)
    run(["git", "push", "-q", "origin", "probe"], proj)
    run(["dvc", "push", "-q", "-r", "store", "artifacts/model"], proj)
    push_tags(proj, "detector", facts["probe"]["commit"])

    # week 2: refused (a challenger that cannot learn), the champion removing what it judges mislabeled
    facts["week2"] = _land(proj, seed=22, per_class=2)
    facts["moved_if_forgotten"], near = _near_duplicate(proj, seed=22)
    (landing / "real/near_duplicate.jpg").write_bytes(near)
    facts["mislabeled"] = "fake/a_real_face.jpg"
    make_demo(root / "unseen", per_class=1, seed=99)  # a real face nobody has seen, landed as a fake
    shutil.copyfile(next((root / "unseen/real").glob("*.jpg")), landing / facts["mislabeled"])
    facts["replaced"] = facts["week2"][0]
    _settle(landing)
    (landing / "fake/.DS_Store").write_bytes(b"finder")
    (landing / "real/upload.jpg.part").write_bytes(b"half")
    a_real = next(n for n in facts["week2"] if n.startswith("real/"))
    (landing / "real/arriving.jpg").write_bytes((landing / a_real).read_bytes())  # modified just now
    _params(proj, committed, train={"lr": 1e-12, "lr_backbone": 1e-12}, flows={"landing_settle_s": 3600},
            **{"flows.label_judge": {"max_label_probability": 0.5, "remove": True}})
    runs["week2"] = _flow(proj, prefect_harness, {"replace": facts["replaced"]})
    for name in ("fake/.DS_Store", "real/upload.jpg.part", "real/arriving.jpg", facts["replaced"]):
        (landing / name).unlink()  # a person tidies up

    # week 3: every file bad
    (landing / "fake/zero.jpg").write_bytes(b"")
    (landing / "fake/text.jpg").write_bytes(b"not an image at all")
    _settle(landing)
    _params(proj, committed, **open_gate)
    runs["week3"] = _flow(proj, prefect_harness)

    # week 4: prod rolled back to v0.1.0; promoted, but the DVC remote down (its folder under a regular file)
    _rollback(proj, "v0.1.0")
    (root / "blocker").write_text("not a folder")
    run(["dvc", "remote", "modify", "--local", "store", "url", str(root / "blocker" / "store")], proj)
    facts["week4"] = _land(proj, seed=24, per_class=2)
    runs["week4"] = _flow(proj, prefect_harness)
    facts["tags_after_week4"] = run(["git", "tag", "--list", "detector@*"], proj).stdout.split()

    # week 5: the remote back, nothing landed
    run(["dvc", "remote", "modify", "--local", "store", "url", str(root / "dvc-store")], proj)
    runs["week5"] = _flow(proj, prefect_harness)

    # a person deprecates v0.4.0 (week 4's), on the first clone: prod is the assignment before it, v0.1.0
    from gto import api

    api.deregister(str(proj), "detector", version="v0.4.0", message="deprecated")  # prod falls back to v0.1.0
    run(["git", "push", "-q", "origin", "--tags"], proj)

    # week 6, on the other clone
    facts["week6"] = _land(other, seed=26, per_class=2)
    _params(other, (other / "params.yaml").read_text(), **open_gate)
    runs["week6"] = _flow(other, prefect_harness)
    return {**facts, "other": other, "runs": runs}


def _result(run_: subprocess.CompletedProcess) -> dict:
    assert run_.returncode == 0, run_.stderr[-3000:]
    return json.loads(run_.stdout.strip().splitlines()[-1])


def _records(proj: Path) -> dict[str, dict]:
    """{stamp: committed record} of every retrain branch in a clone, oldest first."""
    out = {}
    for branch in run(["git", "branch", "--list", "retrain/*", "--format=%(refname:short)"], proj).stdout.split():
        stamp = branch.split("/", 1)[1]
        text = run(["git", "show", f"{branch}:reports/retrain/{stamp}.json"], proj, check=False).stdout
        if text:
            out[stamp] = json.loads(text)
    return dict(sorted(out.items()))


def _week(weeks, name: str, proj: Path | None = None) -> dict:
    stamp = _result(weeks["runs"][name])["branch"].split("/", 1)[1] if name != "week4" else None
    records = _records(proj or weeks["proj"])
    if stamp is None:  # week 4's run failed after its commit: its record is the one after week 2's
        stamp = [s for s in records if s > _week(weeks, "week2")["stamp"]][0]
    return records[stamp]


def _batch_names(files: dict[str, str]) -> list[str]:
    return sorted(p.split("/")[-1] for p in files if "/batch-" in p)


def test_each_kill_leaves_a_run_that_the_next_one_finishes(weeks):
    runs, proj = weeks["runs"], weeks["proj"]
    assert [runs[k].returncode for k in ("before_commit", "after_commit", "after_push", "after_registration")] == \
        [-9] * 4  # SIGKILLed where asked
    assert _result(runs["week1"])["noop"].startswith("no settled file")  # the last run only finished what was owed
    week1 = list(_records(proj).values())[0]
    assert week1["lock_taken_over"]["why"] == "its process is gone"  # the run after the first kill took the lock
    assert week1["promoted"]
    at_week1 = run(["git", "tag", "--points-at", week1["branch"], "--list", "detector@*"], proj).stdout.split()
    assert at_week1 == ["detector@v0.2.0"]  # registered once, although the run was killed right after registering
    assert run(["git", "worktree", "list"], proj).stdout.count("\n") == 1  # no leftover worktree
    origin = run(["git", "ls-remote", "--heads", "--tags", str(weeks["root"] / "origin.git")], weeks["root"]).stdout
    assert week1["branch"] in origin and "detector@v0.2.0" in origin  # pushed by a later run, tags too


def test_week_six_trains_on_every_accepted_image_of_every_week_refused_or_rolled_back(weeks):
    other = weeks["other"]
    week6 = _week(weeks, "week6", other)
    files = _data_files(other, week6["branch"])
    records = [_week(weeks, w) for w in ("week2", "week4")]
    week1 = list(_records(weeks["proj"]).values())[0]
    landed = weeks["week1"] + weeks["week2"] + weeks["week4"] + weeks["week6"]
    expected = sorted([n.split("/")[-1] for n in landed] + ["near_duplicate.jpg", "a_real_face.jpg"])
    removed = {x["path"].split("/")[-1] for r in (*records, week6) for x in r["rejected"]}
    assert _batch_names(files) == sorted(n for n in expected if n not in removed)  # each once, refused week's too
    assert {p for p in files if "/batch-" not in p} == set(weeks["main_files"])  # main's images all kept
    assert not records[0]["promoted"] and records[1]["promoted"] and week1["promoted"]
    nfiles = yaml.safe_load(run(["git", "show", f"{week6['branch']}:data.dvc"], other).stdout)["outs"][0]["nfiles"]
    assert nfiles == len(weeks["main_files"]) + sum(r["new_images"] for r in [week1, *records, week6])


def test_week_six_is_gated_against_the_rolled_back_prod_fetched_from_origin(weeks):
    other, proj = weeks["other"], weeks["proj"]
    week6 = _week(weeks, "week6", other)
    week1 = list(_records(proj).values())[0]
    model_md5 = next(o["md5"] for o in yaml.safe_load(run(["git", "show", "main:dvc.lock"],
                                                          proj).stdout)["stages"]["train"]["outs"]
                     if o["path"] == "artifacts/model")
    assert week6["prod_before"]["version"] == "v0.1.0" and "prod v0.1.0" in week6["champion_source"]
    assert model_md5 in week6["champion_source"]  # pulled from the DVC remote: this clone never had it
    assert week6["synced"]["fetched"] is True
    result = _result(weeks["runs"]["week6"])
    assert result["registered"]["version"] == "v0.5.0"  # after v0.4.0, deprecated: every tag counts


def test_a_refused_week_is_on_the_data_line_and_a_fresh_clone_can_pull_it(weeks):
    proj, root = weeks["proj"], weeks["root"]
    week2 = _week(weeks, "week2")
    assert "prod v0.3.0" in week2["champion_source"] and week2["champion"]["value"] > 0.9, week2  # the probe ...
    assert week2["challenger"]["value"] < week2["champion"]["value"] - 0.05, week2  # ... the refusal earned
    assert week2["promoted"] is False and "NOT PROMOTED" in run(
        ["git", "show", f"{week2['branch']}:reports/retrain/{week2['stamp']}.md"], proj).stdout
    data_tip = run(["git", "rev-parse", "data"], proj).stdout.strip()
    assert run(["git", "merge-base", "--is-ancestor", week2["branch"], data_tip], proj, check=False).returncode == 0
    assert "DVC remote `store`" in week2["data_location"] and str(root / "dvc-store") in week2["data_location"]
    fresh = root / "fresh"
    run(["git", "clone", "-q", "--branch", week2["branch"], str(root / "origin.git"), str(fresh)], root)
    instruction = week2["data_location"].split("(`", 1)[1].rsplit("`)", 1)[0].split("&& ", 1)[1]
    subprocess.run(instruction, shell=True, cwd=fresh, check=True, capture_output=True,
                   env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    assert len(list((fresh / "data").rglob("*.jpg"))) == len(_data_files(proj, week2["branch"]))
    left = {x["path"]: x["why"].split(" ")[0] for x in week2["landing_left"]}
    assert left == {"fake/.DS_Store": "hidden", "real/upload.jpg.part": "partial", "real/arriving.jpg": "modified"}


def test_nothing_is_registered_before_its_data_is_pushed_and_the_next_run_registers_it(weeks):
    proj = weeks["proj"]
    failed = weeks["runs"]["week4"]
    assert failed.returncode != 0 and "dvc_pushed" in failed.stderr and "owed" in failed.stderr
    assert weeks["tags_after_week4"] == ["detector@v0.1.0", "detector@v0.2.0", "detector@v0.3.0"]  # not registered
    week4, week5 = _week(weeks, "week4"), _result(weeks["runs"]["week5"])
    assert week4["promoted"] and "registration" in week4["owed_at_commit"]
    earlier = {r["branch"]: r for r in week5["finished_earlier_runs"]}
    assert earlier[week4["branch"]]["registered"]["version"] == "v0.4.0"  # the next run, remote back
    outcome = json.loads((proj / ".dfd/retrain/records" / f"{week4['stamp']}.json").read_text())
    assert outcome["registered"]["version"] == "v0.4.0" and not outcome.get("owed")
    assert outcome["registered"]["commit"] == run(["git", "rev-parse", week4["branch"]], proj).stdout.strip()
    origin = run(["git", "ls-remote", "--tags", str(weeks["root"] / "origin.git")], proj).stdout
    assert "detector@v0.4.0" in origin


def test_an_all_bad_batch_and_an_empty_week_are_clean_noops_with_a_record(weeks):
    proj = weeks["proj"]
    bad, empty = _result(weeks["runs"]["week3"]), _result(weeks["runs"]["week5"])
    assert bad["noop"] == "every landed file was rejected" and bad["registered"] is None
    assert {x["path"] for x in bad["rejected"]} == {"fake/zero.jpg", "fake/text.jpg"}
    assert sorted(bad["released"]["quarantined"]) == ["fake/text.jpg", "fake/zero.jpg"]
    assert empty["noop"].startswith("no settled file")
    for result in (bad, empty):
        assert json.loads((proj / result["record"]).read_text())["noop"] == result["noop"]
    branches = run(["git", "branch", "--list", "retrain/*"], proj).stdout.split()
    assert not any(b.endswith(bad["stamp"]) or b.endswith(empty["stamp"]) for b in branches)  # nothing committed


def test_bad_files_are_quarantined_with_their_reason_and_never_stop_a_run(weeks):
    proj = weeks["proj"]
    week1 = list(_records(proj).values())[0]
    why = {r["path"]: (r["reason"], r["detail"]) for r in week1["rejected"]}
    assert why["real/caf\\xe9.jpg"] == ("unsupported", "file name is not UTF-8")
    assert why["fake/huge.jpg"][0] == "unreadable" and "max_file_mb" in why["fake/huge.jpg"][1]
    assert why["fake/broken.jpg"][0] == "unreadable"
    assert why["real/link.jpg"][0] == "unsupported" and "symlink" in why["real/link.jpg"][1]
    quarantined = list((proj / "quarantine").rglob("*"))
    assert any(p.name == "link.jpg" and p.is_symlink() for p in quarantined)  # moved as it was, never followed
    assert any(os.fsencode(p.name) == b"caf\xe9.jpg" for p in quarantined)
    assert weeks["week1_left"] == []  # landing/ emptied by week 1
    reason, detail = why["fake/copy_of_a_real.jpg"]
    assert reason == "conflicting_label" and weeks["existing"] in detail
    assert weeks["existing"] in _data_files(proj, week1["branch"])  # the existing one stays


def test_a_file_replaced_after_staging_is_merged_as_staged_and_its_new_bytes_wait(weeks):
    proj = weeks["proj"]
    week2 = _week(weeks, "week2")
    result = _result(weeks["runs"]["week2"])
    assert result["released"]["changed_since_staging"] == [weeks["replaced"]]
    archived = proj / "archive" / week2["stamp"] / weeks["replaced"]
    assert not archived.exists()  # the landing file was not the staged one any more: not moved
    merged = {p.split("/")[-1]: md5 for p, md5 in _data_files(proj, week2["branch"]).items() if "/batch-" in p}
    name = weeks["replaced"].split("/")[-1]
    staged = hashlib.md5(_demo_bytes(22, weeks["replaced"])).hexdigest()
    assert merged[name] == staged  # the validated (staged) bytes, not the ones that replaced them


def _demo_bytes(seed: int, rel: str) -> bytes:
    """The bytes `_land` wrote for rel (make_demo is deterministic)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        make_demo(Path(tmp), per_class=2, seed=seed)
        label, name = rel.split("/")
        return (Path(tmp) / label / name.split("_", 1)[1]).read_bytes()


def test_old_images_keep_their_split_as_the_data_grows(weeks):
    """Week 2 lands a near-duplicate of an old train image whose key, were the old splits forgotten, would take
    the pair to another split (_near_duplicate checks that): the old image stays in train, the new one joins it."""
    proj = weeks["proj"]
    week2 = _week(weeks, "week2")
    lock = yaml.safe_load(run(["git", "show", f"{week2['branch']}:dvc.lock"], proj).stdout)
    out = next(o for o in lock["stages"]["split"]["outs"] if o["path"] == "artifacts/splits")
    cache = Path(run(["dvc", "cache", "dir"], proj).stdout.strip())
    listing = json.loads((cache / "files/md5" / out["md5"][:2] / out["md5"][2:]).read_text())
    where = {}
    for e in listing:
        if e["relpath"] in ("train.csv", "val.csv", "test.csv"):
            frame = pd.read_csv(cache / "files/md5" / e["md5"][:2] / e["md5"][2:], dtype=str)
            where.update({path: e["relpath"][:-4] for path in frame["path"]})
    near = next(p for p in where if p.endswith("near_duplicate.jpg"))
    assert where[weeks["moved_if_forgotten"]] == "train" == where[near]


def test_the_champion_removes_what_it_judges_mislabeled_and_the_record_lists_it(weeks):
    """Week 2's champion (the strong probe) judges each landed file at flows.label_judge (p(label) < 0.5, remove):
    the real face landed as a fake is quarantined as label_issue, and what is removed is exactly what the champion,
    scored again here, gives its own label less than 0.5."""
    from deepfake_detector.serving.detector import Detector

    proj, root = weeks["proj"], weeks["root"]
    record = _week(weeks, "week2")
    assert record["label_judge"] == {"max_label_probability": 0.5, "remove": True}
    listed = {e["path"] for e in record["label_issues"]}
    removed = {x["path"] for x in record["rejected"] if x["reason"] == "label_issue"}
    assert weeks["mislabeled"] in removed and removed == listed
    dest = root / "champion-week2"
    run(["dvc", "get", str(proj), "artifacts/model", "--rev", weeks["probe"]["commit"], "-o", str(dest)], proj)
    det = Detector.load(dest, band=0.1, batch_size=8, params=proj / "params.yaml")
    judged = {}
    for folder in (proj / "archive" / record["stamp"], proj / "quarantine" / record["stamp"]):
        for path in sorted(folder.rglob("*.jpg")):
            p = det.fake_probabilities([path])[0]
            rel = path.relative_to(folder).as_posix()
            judged[rel] = p if rel.startswith("fake/") else 1 - p  # the probability of its own label
    assert {rel for rel, own in judged.items() if own < 0.5} == removed, judged
    assert all((proj / "quarantine" / record["stamp"] / rel).is_file() for rel in removed)
