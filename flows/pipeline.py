"""Flow `pipeline`: the DVC stages in order, each through `dvc repro <stage>`.

    python -m flows.pipeline            # runs in the current repo (a local Prefect server starts itself)

DVC records everything in dvc.lock and skips stages whose inputs did not change. Each
stage's metrics (from dvc.yaml) become a Prefect markdown artifact. No retries on stages: a
failing stage is a bug or bad data, not a transient fault.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.common import metrics_markdown, read_metrics, sh, stage_metric_files

STAGES = ("validate", "split", "train", "baselines", "evaluate", "drift")


@task(task_run_name="dvc repro {stage}")
def repro_stage(repo: str, stage: str) -> dict:
    out = sh(["dvc", "repro", "--single-item", stage], repo)
    metrics = {rel: read_metrics(repo, rel) for rel in stage_metric_files(repo).get(stage, [])}
    body = "\n".join(metrics_markdown(rel, m) for rel, m in metrics.items()) or "(no metrics)"
    skipped = "didn't change, skipping" in out or "up to date" in out
    create_markdown_artifact(key=f"{stage}-metrics", markdown=f"## {stage}{' (up to date)' if skipped else ''}\n\n{body}",
                             description=f"metrics of DVC stage {stage}")
    return {"stage": stage, "skipped": skipped, "metrics": metrics}


@flow(name="dfd-pipeline")
def pipeline(repo: str = ".", stages: list[str] | None = None) -> list[dict]:
    """Run the stages in order; stop at the first failure."""
    repo = str(Path(repo).resolve())
    return [repro_stage(repo, s) for s in (stages or STAGES)]


if __name__ == "__main__":
    pipeline()
