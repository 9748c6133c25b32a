"""Flow `monitor`: drift check of the landing folder; on drift, start the retraining flow.

    python -m flows.monitor
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from deepfake_detector.core.params import load_params
from flows.common import FlowError, metrics_markdown, settled_landing, sh, stage_files, stage_option
from flows.retrain import retrain


@task
def drift_check(repo: str, landing: Path, out: Path) -> dict:
    reference, model = stage_option(repo, "drift", "--reference"), stage_option(repo, "drift", "--model")
    for need in (reference, f"{model}/detector.pt"):  # the drift stage's own inputs, from dvc.yaml
        if not (Path(repo) / need).is_file():
            raise FlowError(f"{need} is missing: run the pipeline (dvc repro) before monitoring")
    sh(["dfd", "drift", str(out), "--reference", reference, "--current", str(landing),
        "--model", model, "--params", "params.yaml", "--no-progress"], repo)
    metrics = json.loads((out / "metrics.json").read_text())
    create_markdown_artifact(key="drift", markdown=metrics_markdown("drift of the landing folder", metrics))
    return metrics


@flow(name="dfd-monitor")
def monitor(repo: str = ".", retrain_on_drift: bool = True) -> dict:
    repo = str(Path(repo).resolve())
    f = load_params(Path(repo) / "params.yaml").flows
    landing = Path(repo) / f.landing
    ready, left = settled_landing(landing, f.landing_settle_s)
    if not ready:
        return {"drift": False, "retrained": None, "left_in_landing": left,
                "reason": f"no settled file in landing folder {landing}"}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    staged = Path(repo) / ".dvc" / "tmp" / f"monitor-{stamp}"
    try:  # only settled files: hidden, partial and still-arriving ones wait for the next run
        m = drift_check(repo, stage_files(landing, ready, staged), Path(repo) / "monitoring" / stamp)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    drifted = bool(m["dataset_drift"] or m.get("embedding_drift"))
    result = {"drift": drifted, "drift_share": m["drift_share"], "embedding_drift_score": m["embedding_drift_score"],
              "report": f"monitoring/{stamp}/report.html", "retrained": None, "left_in_landing": left}
    if drifted and retrain_on_drift:
        result["retrained"] = retrain(repo)
    return result


if __name__ == "__main__":
    print(json.dumps(monitor(), indent=2, default=str))
