"""Flow `pipeline`: the stages of dvc.yaml in DVC's order, each through `dvc repro --single-item`.

    python -m flows.pipeline            # runs in the current repo (a local Prefect server starts itself)

The stage list and order come from DVC's own graph of dvc.yaml (`dvc.repo.Repo`), and "skipped"
from `dvc status --json`: a stage whose deps, params and outs are unchanged is not run. Each stage's
metrics (from dvc.yaml) become a Prefect markdown artifact. No retries on stages: a failing stage
is a bug or bad data, not a transient fault.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.common import metrics_markdown, read_metrics, sh, stage_metric_files


def stage_order(repo: str | Path) -> list[str]:
    """dvc.yaml's stages, dependencies first (DVC's graph; file order breaks ties)."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(repo)) as r:
        stages = [s for s in r.index.stages if getattr(s, "name", None)]  # pipeline stages (not data.dvc)
        rank = {s.name: i for i, s in enumerate(stages)}
        graph = nx.DiGraph()
        graph.add_nodes_from(rank)
        for dependent, dependency in r.index.graph.edges:  # DVC's edges point to what a stage depends on
            a, b = getattr(dependency, "name", None), getattr(dependent, "name", None)
            if a in rank and b in rank:
                graph.add_edge(a, b)
    return list(nx.lexicographical_topological_sort(graph, key=rank.get))


def is_up_to_date(repo: str | Path, stage: str) -> bool:
    """DVC's status of this one stage (deps, params, outs; `dvc status --json STAGE`): {} = nothing to do.

    The CLI, run in the repo like `dvc repro`, also serves git worktrees (the retrain flow's)."""
    return not json.loads(sh(["dvc", "status", "--json", stage], repo) or "{}")


@task(task_run_name="dvc repro {stage}")
def repro_stage(repo: str, stage: str) -> dict:
    skipped = is_up_to_date(repo, stage)
    if not skipped:
        sh(["dvc", "repro", "--single-item", stage], repo)
    metrics = {rel: read_metrics(repo, rel) for rel in stage_metric_files(repo).get(stage, [])}
    body = "\n".join(metrics_markdown(rel, m) for rel, m in metrics.items()) or "(no metrics)"
    create_markdown_artifact(key=f"{stage}-metrics", markdown=f"## {stage}{' (up to date)' if skipped else ''}\n\n{body}",
                             description=f"metrics of DVC stage {stage}")
    return {"stage": stage, "skipped": skipped, "metrics": metrics}


@flow(name="dfd-pipeline")
def pipeline(repo: str = ".", stages: list[str] | None = None) -> list[dict]:
    """Run the stages (all of dvc.yaml by default) in DVC's order; stop at the first failure."""
    repo = str(Path(repo).resolve())
    order = stage_order(repo)
    unknown = sorted(set(stages or []) - set(order))
    if unknown:
        raise ValueError(f"not stages of {repo}/dvc.yaml: {unknown} (stages: {order})")
    return [repro_stage(repo, s) for s in order if stages is None or s in stages]
