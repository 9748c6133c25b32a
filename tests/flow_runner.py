"""Run the retrain flow in this process, as a scheduler would, with the faults a test asks for.

    python tests/flow_runner.py REPO '{"kill": "after_commit", "replace": "real/x.jpg"}'

kill: before_commit | after_commit | after_push | after_registration: the process SIGKILLs itself there (no
`finally`, no cleanup: what an OOM kill or a pod eviction does). replace: that landing file gets new bytes (a new
inode) while the pipeline runs, after it was staged. Prints the flow's result as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import flows.retrain as rt


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _after(fn):
    def wrapped(*args, **kwargs):
        out = fn(*args, **kwargs)
        _kill()
        return out
    return wrapped


def main() -> None:
    repo, plan = sys.argv[1], json.loads(sys.argv[2])
    kill = plan.get("kill")
    if kill == "before_commit":
        rt.commit_branch = lambda *args, **kwargs: _kill()
    elif kill == "after_commit":
        rt.commit_branch = _after(rt.commit_branch)
    elif kill == "after_push":
        rt.git_push = _after(rt.git_push)
    elif kill == "after_registration":
        rt.register_promoted = _after(rt.register_promoted)
    if plan.get("replace"):
        target, real_pipeline = Path(repo) / "landing" / plan["replace"], rt.pipeline

        def pipeline_then_replace(*args, **kwargs):
            tmp = target.with_name(target.name + ".new")
            tmp.write_bytes(target.read_bytes() + b"\x00")  # other bytes, another inode: not what was staged
            tmp.replace(target)
            return real_pipeline(*args, **kwargs)

        rt.pipeline = pipeline_then_replace
    print(json.dumps(rt.retrain(repo), default=str))


if __name__ == "__main__":
    main()
