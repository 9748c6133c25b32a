"""Deployments with cron schedules from params.yaml; `make flows` serves them.

    python -m flows.deploy serve      # serve pipeline, weekly retrain, daily monitor (blocks)
    python -m flows.deploy apply      # only register them on the server in PREFECT_API_URL
"""

from __future__ import annotations

import sys
from pathlib import Path

from deepfake_detector.params import load_params
from flows.monitor import monitor
from flows.pipeline import pipeline
from flows.retrain import retrain


def deployments(repo: str = ".") -> list:
    repo = str(Path(repo).resolve())
    f = load_params(Path(repo) / "params.yaml").flows
    return [
        pipeline.to_deployment(name="on-demand", parameters={"repo": repo}),
        retrain.to_deployment(name="weekly-retrain", cron=f.retrain_cron, parameters={"repo": repo}),
        monitor.to_deployment(name="daily-monitor", cron=f.monitor_cron, parameters={"repo": repo}),
    ]


def main(argv: list[str]) -> None:
    from prefect import serve

    mode = argv[1] if len(argv) > 1 else "serve"
    if mode == "apply":
        for d in deployments():
            print("registered", d.apply())
    else:
        serve(*deployments(), pause_on_shutdown=False)


if __name__ == "__main__":
    main(sys.argv)
