"""Flows `monitor` (the landing folder; on drift, start the retraining flow) and `monitor-served`
(what the service was asked to score: the images its request log kept, against the training data).

    python -m flows.monitor            # landing/
    python -m flows.monitor served     # serve.request_log's images (serve.log_images: true)
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from deepfake_detector.core.params import load_params
from deepfake_detector.serving.serve import request_log_files
from flows.common import FlowError, metrics_markdown, sh, stage_option
from flows.landing import settled_landing, stage
from flows.retrain import retrain


@task
def drift_check(repo: str, landing: Path, out: Path, what: str = "the landing folder") -> dict:
    reference, model = stage_option(repo, "drift", "--reference"), stage_option(repo, "drift", "--model")
    for need in (reference, f"{model}/detector.pt"):  # the drift stage's own inputs, from dvc.yaml
        if not (Path(repo) / need).is_file():
            raise FlowError(f"{need} is missing: run the pipeline (dvc repro) before monitoring")
    sh(["dfd", "drift", str(out), "--reference", reference, "--current", str(landing),
        "--model", model, "--params", "params.yaml", "--no-progress"], repo)
    metrics = json.loads((out / "metrics.json").read_text())
    create_markdown_artifact(key="drift", markdown=metrics_markdown(f"drift of {what}", metrics))
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
        stage(landing, ready, staged, int(load_params(Path(repo) / "params.yaml").validate_.max_file_mb * 2**20))
        m = drift_check(repo, staged, Path(repo) / "monitoring" / stamp)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    drifted = bool(m["dataset_drift"] or m.get("embedding_drift"))
    result = {"drift": drifted, "drift_share": m["drift_share"], "embedding_drift_score": m["embedding_drift_score"],
              "report": f"monitoring/{stamp}/report.html", "retrained": None, "left_in_landing": left}
    if drifted and retrain_on_drift:
        result["retrained"] = retrain(repo)
    return result


@flow(name="dfd-monitor-served")
def monitor_served(repo: str = ".") -> dict:
    """Drift of served traffic: the images the request log kept (serve.log_images) vs the training data.
    Served images carry no labels, so a drift here is reported (Prefect artifact + report), never retrained on."""
    repo = str(Path(repo).resolve())
    s = load_params(Path(repo) / "params.yaml").serve
    if not s.request_log:
        return {"drift": None, "reason": "serve.request_log is off"}
    log = Path(repo) / s.request_log
    entries = [json.loads(line) for f in request_log_files(log) for line in f.read_text().splitlines() if line]
    images = log.parent / "images"
    kept = [e for e in entries if e.get("image") and (log.parent / e["image"]).is_file()]
    if not kept:
        return {"drift": None, "served": len(entries),
                "reason": f"no served images kept in {images}: set serve.log_images: true to monitor served traffic"}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    m = drift_check(repo, images, Path(repo) / "monitoring" / f"served-{stamp}", "served traffic")
    fake_share = sum(e.get("label") == "fake" for e in entries) / len(entries)
    judged = [e for e in entries if e.get("unfamiliar") is not None]  # models with a novelty score
    unfamiliar = round(sum(bool(e["unfamiliar"]) for e in judged) / len(judged), 4) if judged else None
    with_faces = [e for e in entries if "face_status" in e]  # served by a release that finds faces
    no_face = round(sum(e["face_status"] == "no_face" for e in with_faces) / len(with_faces), 4) if with_faces else None
    return {"served_no_face_share": no_face,
            "served_faces_per_image": round(sum(len(e.get("faces", [])) for e in with_faces) / len(with_faces), 3)
            if with_faces else None,"drift": bool(m["dataset_drift"] or m.get("embedding_drift")), "drift_share": m["drift_share"],
            "embedding_drift_score": m["embedding_drift_score"], "served": len(entries), "images": len(kept),
            "served_fake_share": round(fake_share, 4), "served_unfamiliar_share": unfamiliar,
            "report": f"monitoring/served-{stamp}/report.html"}


if __name__ == "__main__":
    import sys

    print(json.dumps(monitor_served() if sys.argv[1:] == ["served"] else monitor(), indent=2, default=str))
