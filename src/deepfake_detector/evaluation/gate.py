"""Champion/challenger gate: both models scored on the same test images, a paired bootstrap decides.

    dfd gate --champion old/model --challenger artifacts/model --splits artifacts/splits --out gate.json

The accepted model (champion) and the new one (challenger) are scored on the *current* test split
(the same images, so the comparison is paired), less every image either model saw in training:
each model folder lists them (`seen_sha256.txt`, written by train and baselines), or the caller
passes the champion's train/val hashes; a champion with neither is refused, never scored on what
it may have learned. The record counts the excluded images (`n_excluded_seen_by_champion`). The difference challenger - champion of
`flows.gate.metric` gets a 95 % paired bootstrap interval (evaluate.bootstrap resamples, fixed seed). The
challenger is refused when
- its metric is NaN or missing (e.g. a one-class test split), or it could not be scored;
- the point difference is below -max_drop;
- the whole interval lies below 0 (significantly worse, even within max_drop);
- its F1 at its own stored threshold drops by more than max_f1_drop.
With no champion (first model) it is promoted, and the record says so. A champion that exists but
cannot be loaded is a refusal with the error as the reason, never a silent pass.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from ..core.images import DecodeLimits
from ..core.metrics import binary_metrics, bootstrap_indices, metric_value, paired_difference
from ..core.params import GateParams

def decide(g: GateParams, challenger: dict, champion: dict | None, paired: dict | None,
           champion_error: str | None = None) -> tuple[bool, str]:
    """The rule above, as (promoted, reason). Pure: no files, no models."""
    value = challenger.get("value")
    if value is None or not math.isfinite(value):
        return False, f"challenger {g.metric} is {value!r} (not a number): refused"
    if champion_error:
        return False, f"champion could not be scored ({champion_error}): refused, nothing to compare with"
    if champion is None:
        return True, f"no champion on the base commit: first model accepted ({g.metric} {value:.4f})"
    if not math.isfinite(champion.get("value", float("nan"))) or paired is None:
        return False, f"champion {g.metric} is {champion.get('value')!r} on this split: refused, cannot compare"
    d, lo, hi = paired["difference"], paired["ci_low"], paired["ci_high"]
    text = (f"{g.metric} {value:.4f} vs champion {champion['value']:.4f} on the same {challenger['n_test']} "
            f"images: difference {d:+.4f}, 95 % CI [{lo:+.4f}, {hi:+.4f}]")
    if d < -g.max_drop:
        return False, f"{text}; drop larger than max_drop {g.max_drop}"
    if math.isfinite(hi) and hi < 0:
        return False, f"{text}; significantly worse (whole interval below 0)"
    f1_drop = champion["f1"] - challenger["f1"]
    if f1_drop > g.max_f1_drop:
        return False, f"{text}; but f1 {challenger['f1']:.4f} < champion {champion['f1']:.4f} - {g.max_f1_drop}"
    return True, f"{text}; within max_drop {g.max_drop}"


def compare(challenger_dir: str | Path, champion_dir: str | Path | None, splits_dir: str | Path, g: GateParams,
            limits: DecodeLimits, n_boot: int, seed: int = 0, champion_error: str | None = None,
            champion_seen: set[str] | None = None) -> dict:
    """Score both models on splits_dir/test.csv less the images either saw; return the JSON-ready record.

    champion_seen: sha256 of the champion's train/val images when its folder carries no list."""
    from .evaluate import score_frame
    from ..model.scoring import load_scorer
    from ..core.splits_io import read_seen, read_split

    test_csv = Path(splits_dir) / "test.csv"
    frame = read_split(splits_dir, "test")
    if "sha256" not in frame:
        raise ValueError(f"{test_csv} has no sha256 column: re-run `dfd split` so seen images can be excluded")
    n_seen = {"challenger": 0, "champion": 0}
    seen_new = read_seen(challenger_dir) or set()
    n_seen["challenger"] = int(frame["sha256"].isin(seen_new).sum())  # 0 by construction (content-keyed split)
    drop = frame["sha256"].isin(seen_new)
    if champion_dir is not None and champion_error is None:
        seen_old = read_seen(champion_dir)
        seen_old = champion_seen if seen_old is None else seen_old
        if seen_old is None:
            champion_error = (f"{champion_dir} lists no training images (seen_sha256.txt) and none were given: "
                              "cannot exclude them from the test set")
        else:
            n_seen["champion"] = int(frame["sha256"].isin(seen_old).sum())
            drop |= frame["sha256"].isin(seen_old)
    frame = frame[~drop].reset_index(drop=True)
    y_all = frame["y"].to_numpy()

    def score(model_dir: str | Path) -> tuple[dict, np.ndarray, np.ndarray, float]:
        scorer = load_scorer(model_dir)
        prob, ok = score_frame(scorer, frame, limits)
        y = y_all[ok]
        m = binary_metrics(y, prob, scorer.threshold)
        entry = {"value": metric_value(g.metric, y, prob, scorer.threshold), "f1": m["f1"], "n_test": int(len(y)),
                 "threshold": scorer.threshold, "model": str(model_dir)}
        full = np.full(len(y_all), np.nan)
        full[ok] = prob
        return entry, full, ok, scorer.threshold

    challenger, p_new, ok_new, t_new = score(challenger_dir)
    champion = paired = None
    if champion_dir is not None and champion_error is None:
        try:
            champion, p_old, ok_old, t_old = score(champion_dir)
        except Exception as exc:  # noqa: BLE001 - any failure to load/score is a refusal with its reason
            champion_error = f"{type(exc).__name__}: {str(exc)[:300]}"
        else:
            both = ok_new & ok_old
            paired = paired_difference(g.metric, y_all[both], p_new[both], t_new, p_old[both], t_old,
                                       bootstrap_indices(int(both.sum()), n_boot, seed))
    promoted, reason = decide(g, challenger, champion, paired, champion_error)
    return {"promoted": promoted, "reason": reason, "metric": g.metric, "challenger": challenger,
            "champion": champion, "champion_error": champion_error,
            "test_split_md5": hashlib.md5(test_csv.read_bytes()).hexdigest(), "ci95": paired,
            "n_test_split": int(len(frame) + drop.sum()), "n_excluded_seen_by_champion": n_seen["champion"],
            "n_excluded_seen_by_challenger": n_seen["challenger"],
            "thresholds": {"max_drop": g.max_drop, "max_f1_drop": g.max_f1_drop}}
