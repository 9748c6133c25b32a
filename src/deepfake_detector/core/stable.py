"""Reports that are the same bytes on a re-run, so `dvc repro --force` leaves dvc.lock unchanged.

GX and Evidently make up random element ids (uuid4/uuid7) and stamp wall-clock times into their HTML.
`stable_ids` renumbers the ids in order of appearance (links and targets stay paired); `source_date`
is the one time written into reports: $SOURCE_DATE_EPOCH (the reproducible-builds convention) or
1970-01-01. Timings of a run go to run logs instead (see the README, "Run logs").
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone

_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")


def source_date() -> datetime:
    return datetime.fromtimestamp(int(os.environ.get("SOURCE_DATE_EPOCH", "0")), tz=timezone.utc)


def stable_ids(text: str) -> str:
    """Replace each distinct UUID or 32-hex id by `n0`, `n1`, ... in order of first appearance."""
    ids: dict[str, str] = {}
    return _ID.sub(lambda m: ids.setdefault(m.group(0), f"n{len(ids)}"), text)
