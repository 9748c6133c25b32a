"""Deployments with cron schedules from params.yaml (flows.retrain_cron, flows.monitor_cron).

    python -m flows.deploy serve                  # serve pipeline, retrain, monitor from this process (`make flows`)
    python -m flows.deploy apply                  # only register them on the server in PREFECT_API_URL
    python -m flows.deploy pool --pool gpu-pool   # prefect.yaml -> a work pool; run `prefect worker start --pool gpu-pool`
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

from deepfake_detector.core.params import load_params


def deployments(repo: str = ".") -> list:
    from flows.monitor import monitor
    from flows.pipeline import pipeline
    from flows.retrain import retrain

    repo = str(Path(repo).resolve())
    f = load_params(Path(repo) / "params.yaml").flows
    return [
        pipeline.to_deployment(name="on-demand", parameters={"repo": repo}),
        retrain.to_deployment(name="weekly-retrain", cron=f.retrain_cron, parameters={"repo": repo}),
        monitor.to_deployment(name="daily-monitor", cron=f.monitor_cron, parameters={"repo": repo}),
    ]


def pool_env(repo: str, pool: str) -> dict[str, str]:
    """The values prefect.yaml's {{ $DFD_* }} placeholders take: the crons come from params.yaml."""
    repo = str(Path(repo).resolve())
    f = load_params(Path(repo) / "params.yaml").flows
    return {"DFD_REPO": repo, "DFD_WORK_POOL": pool, "DFD_RETRAIN_CRON": f.retrain_cron,
            "DFD_MONITOR_CRON": f.monitor_cron}


def deploy_to_pool(repo: str, pool: str) -> str:
    """`prefect deploy --all` from prefect.yaml into the work pool (which must exist)."""
    proc = subprocess.run(["prefect", "--no-prompt", "deploy", "--all", "--prefect-file", "prefect.yaml"],
                          cwd=repo, env={**os.environ, **pool_env(repo, pool)}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"prefect deploy failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", default="serve", choices=["serve", "apply", "pool"])
    ap.add_argument("--pool", default="gpu-pool", help="work pool name (mode pool)")
    ap.add_argument("--repo", default=".")
    args = ap.parse_args(argv)
    if args.mode == "pool":
        print(deploy_to_pool(args.repo, args.pool))
    elif args.mode == "apply":
        for d in deployments(args.repo):
            print("registered", d.apply())
    else:
        from prefect import serve

        serve(*deployments(args.repo), pause_on_shutdown=False)


if __name__ == "__main__":
    main()
