"""Run the retrain flow in this process, as a scheduler would, with the faults a test asks for.

    python tests/flow_runner.py REPO '{"kill": "after_commit", "replace": "real/x.jpg"}'

kill: before_commit (as the pipeline starts) | after_commit | after_push | after_registration: the process SIGKILLs itself there (no
`finally`, no cleanup: what an OOM kill or a pod eviction does). replace: that landing file gets new bytes (a new
inode) right after it was staged, before it is validated and merged. Prints the flow's result as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import flows.publish as pub
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
    if kill == "before_commit":  # staged and journaled, the worktree open, the pipeline about to run
        rt.pipeline = lambda *args, **kwargs: _kill()
    elif kill == "after_commit":
        rt.commit_branch = _after(rt.commit_branch)
    elif kill == "after_push":
        pub.git_push = _after(pub.git_push)
    elif kill == "after_registration":
        pub.register_promoted = _after(pub.register_promoted)
    if plan.get("replace"):
        target, real_stage = Path(repo) / "landing" / plan["replace"], rt.stage

        def stage_then_replace(*args, **kwargs):
            out = real_stage(*args, **kwargs)
            tmp = target.with_name(target.name + ".new")
            tmp.write_bytes(target.read_bytes() + b"\x00")  # other bytes, another inode: not what was staged
            tmp.replace(target)
            return out

        rt.stage = stage_then_replace
    print(json.dumps(rt.retrain(repo), default=str))


if __name__ == "__main__":
    main()
