"""A retraining run's record: the committed JSON + Markdown (the PR body), and the outcome of runs that commit
nothing (an empty landing folder, a batch whose every file is rejected). No ML here.

The committed record says what the gate decided and on which data, with the params diff of the run's worktree
against its base commit (the params the pipeline and the gate really used). What happens after the commit
(pushes, registration) cannot be inside that commit: the record lists those steps as owed, and their outcome is
written to .dfd/retrain/records/<stamp>.json when the run ends, and into the next run's committed record
(`finished_earlier_runs`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from flows.journal import write_atomic
from flows.landing import printable


def rejections(staged: dict[str, dict], rejected: pd.DataFrame) -> None:
    """Put validation's verdicts on the staged entries (validation names files as `printable` shows them)."""
    by_name = {printable(rel): rel for rel in staged}
    for row in rejected.itertuples(index=False):
        rel = by_name.get(row.path)
        if rel is not None and staged[rel]["refused"] is None:
            staged[rel]["refused"] = {"reason": row.reason, "detail": row.detail}


def refused(staged: dict[str, dict]) -> list[dict]:
    return [{"path": printable(r), **e["refused"]} for r, e in staged.items() if e["refused"]]


def write_outcome(repo: str, stamp: str, outcome: dict) -> Path:
    """.dfd/retrain/records/<stamp>.json: what a run did after (or instead of) a commit."""
    path = Path(repo) / ".dfd" / "retrain" / "records" / f"{stamp}.json"
    write_atomic(path, json.dumps(outcome, indent=1, default=str))
    return path


def _lines(items: list, fmt) -> str:
    return "".join("\n  - " + fmt(x) for x in items)


def markdown(record: dict, quarantine: str, diff: str, pdiff: str) -> str:
    stamp = record["stamp"]
    verdict = "PROMOTED" if record["promoted"] else "NOT PROMOTED"
    left = _lines(record["landing_left"], lambda x: f"`{x['path']}`: {x['why']}")
    judged = _lines(record["label_issues"], lambda x: f"`{x['path']}` labelled {x['label']}: p(label) = "
                                                      f"{float(x['label_confidence']):.3f}")
    earlier = _lines(record["finished_earlier_runs"], lambda x: f"`{x['branch']}`: " + (
        f"registered {x['registered']['version']}" if isinstance(x.get("registered"), dict) else
        "pushed" if not x.get("owed_steps") else f"still owes {', '.join(x['owed_steps'])}"))
    taken = f"\n- a stale lock was taken over: {record['lock_taken_over']['why']}" if record["lock_taken_over"] else ""
    owed = ", ".join(record["owed_at_commit"]) or "nothing"
    return (f"# Retraining {stamp}\n\n**Gate: {verdict}** — {record['reason']}\n\n"
            f"Base: `{record['base_commit'][:10]}` ({record['base_why']}). Champion: {record['champion_source'] or 'none'}"
            f" (prod before this run: {(record['prod_before'] or {}).get('version', 'none')}). Champion and challenger "
            f"were scored on the same current test images (split md5 `{record['test_split_md5']}`), less "
            f"{record['n_excluded_seen_by_champion']} the champion trained on; machine-readable record: "
            f"`reports/retrain/{stamp}.json`.\n\n"
            f"- new images merged: {record['new_images']} — **where they are:** {record['data_location']}\n"
            f"- the data line `{record['data_line']['branch']}` is {record['data_line']['ahead_of_head'] + 1} commit(s) "
            f"ahead of main with this one: `git merge {record['data_line']['branch']}` on main to review them\n"
            f"- quarantined: {record['quarantined']} (`{quarantine}/{stamp}/rejected.csv`)\n"
            f"- judged mislabeled by the champion: {len(record['label_issues'])} "
            f"({'removed' if record['label_judge']['remove'] else 'listed, kept'} at p(label) < "
            f"{record['label_judge']['max_label_probability']:g}){judged}\n"
            f"- left in landing for the next run: {len(record['landing_left'])}{left}\n"
            f"- earlier runs finished first: {len(record['finished_earlier_runs'])}{earlier}{taken}\n"
            f"- owed after this commit: {owed} (a promoted model is registered only after both pushes succeed; the "
            f"outcome: `.dfd/retrain/records/{stamp}.json` and the next run's record)\n\n"
            f"## Metrics diff (each commit on its own test split: context, not the gate)\n\n{diff or '(no change)'}\n\n"
            f"## Params diff against the base commit (what the pipeline and the gate used)\n\n"
            f"{pdiff or '(no change)'}\n")
