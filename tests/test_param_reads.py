"""What a stage reads is what it depends on: each dvc.yaml stage's own command runs (in-process, tiny demo data)
while the typed params record every key it reads (core/param_reads.py); dvc.yaml's `params` of the stage must
cover every key read, and every key listed must be read. A setting the code reads but dvc.yaml does not list would
leave `dvc status` clean after an edit that changes the stage's outputs."""

from __future__ import annotations

import shlex
import shutil

import pytest
import yaml
from typer.testing import CliRunner

from conftest import REPO, write_params
from deepfake_detector.core.params import RUNTIME_TRAIN_KEYS

# Read by a stage but not part of what it computes: where or how fast it runs (core/params.py RUNTIME_TRAIN_KEYS)
NOT_OUTPUTS = {f"train.{k}" for k in RUNTIME_TRAIN_KEYS}
# Listed because they change the outputs when they are read, but this run's settings do not read them
ONLY_SOMETIMES = {
    "train.patience": "read when an epoch does not improve the selection metric",
    "train.self_blend": "read with train.extra_fakes: self_blend (the demo trains with dcgan)",
    "train.extra_fakes_share": "baselines: read by the gan_on baseline, trained when train.extra_fakes is none",
}
ORDER = ["validate", "split", "train", "baselines", "evaluate", "drift"]


def covered(key: str, listed: set[str]) -> bool:
    parts = key.split(".")
    return any(".".join(parts[:i]) in listed for i in range(1, len(parts) + 1))


@pytest.fixture(scope="module")
def stage_reads(tmp_path_factory, demo_dir) -> dict[str, set[str]]:
    """{stage: keys its command read}, the stages run in dvc.yaml's order on a copy of the demo data."""
    import os

    from deepfake_detector.cli import app
    from deepfake_detector.core.param_reads import recording

    proj = tmp_path_factory.mktemp("reads")
    shutil.copytree(demo_dir, proj / "data")
    write_params(proj / "params.yaml", baselines={"cnn_ablations": True})  # every baseline, so all it reads
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert sorted(stages) == sorted(ORDER), "a new stage: add it to ORDER"
    out, here = {}, os.getcwd()
    os.chdir(proj)
    try:
        for name in ORDER:
            argv = shlex.split(stages[name]["cmd"])[1:] + (["--workers", "1"] if name == "validate" else [])
            with recording() as reads:
                result = CliRunner().invoke(app, argv, catch_exceptions=False)
            assert result.exit_code == 0, (name, result.output[-2000:])
            out[name] = reads
    finally:
        os.chdir(here)
    return out


@pytest.mark.parametrize("stage", ORDER)
def test_every_key_a_stage_reads_is_one_of_its_dvc_params_and_every_listed_key_is_read(stage, stage_reads):
    listed = set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage].get("params", []))
    read = stage_reads[stage]
    missing = sorted(k for k in read if not covered(k, listed) and k not in NOT_OUTPUTS)
    assert not missing, f"{stage} reads {missing} but dvc.yaml does not list them: an edit would not re-run it"
    unread = sorted(k for k in listed - set(ONLY_SOMETIMES) if not any(r == k or r.startswith(k + ".") for r in read))
    assert not unread, f"dvc.yaml lists {unread} for {stage}, which never reads them: edits would re-run it for nothing"


def test_a_key_removed_from_dvc_yaml_is_caught(stage_reads):
    """The check above can fail: without `novelty`, train's reads are not covered."""
    listed = set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]["params"]) - {"novelty"}
    assert any(k.startswith("novelty.") and not covered(k, listed) for k in stage_reads["train"])
