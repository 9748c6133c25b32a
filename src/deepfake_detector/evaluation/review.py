"""Metric diffs with their uncertainty: is a change outside the base's 95 % bootstrap interval?

    dfd metrics-diff --base main          # markdown table; `make diff` and the CML PR comment print it

Reads `reports/eval/metrics.json` in the workspace and at the git revision BASE. For the model and
each baseline, each metric with a stored `ci95` (ROC-AUC, accuracy, F1) is marked **outside** when the
new value falls outside the base's interval (likely a real change) and *inside* otherwise (within
the test set's sampling noise; not evidence of a change).
"""

from __future__ import annotations

from ..core.metrics import ci_bounds

import json
from pathlib import Path

METRICS_FILE = "reports/eval/metrics.json"


def read_at_revision(rev: str, path: str = METRICS_FILE, cwd: str | Path = ".") -> dict | None:
    """The file's JSON at a git revision, or None if it is not there (or no revision of that name exists)."""
    from ..core.gitrev import GitError, file_at

    try:
        text = file_at(rev, path, cwd)
        return None if text is None else json.loads(text)
    except (GitError, json.JSONDecodeError):
        return None


def _rows(metrics: dict) -> dict[str, dict]:
    """{model name: {metric: value, 'ci95': {...}}} for the model and its baselines."""
    rows = {"model": {k: metrics.get(k) for k in ("roc_auc", "accuracy", "f1")} | {"ci95": metrics.get("ci95")}}
    for name, m in (metrics.get("baselines") or {}).items():
        rows[f"baseline {name}"] = m
    return rows


def compare(base: dict | None, new: dict) -> list[dict]:
    """One row per (model, metric): base, new, change, base interval, and the mark."""
    out = []
    base_rows = _rows(base) if base else {}
    for name, m in _rows(new).items():
        b = base_rows.get(name, {})
        for metric in ("roc_auc", "accuracy", "f1"):
            new_v, base_v = m.get(metric), b.get(metric)
            lo, hi = ci_bounds(b, metric)
            ci = None if lo is None or hi is None else [lo, hi]
            if new_v is None:
                continue
            if base_v is None:
                mark = "new"
            elif not ci or any(v != v for v in ci):  # no interval stored in the base (or undefined)
                mark = "no CI in base"
            else:
                mark = "**outside**" if not ci[0] <= new_v <= ci[1] else "inside (noise)"
            out.append({"model": name, "metric": metric, "base": base_v, "new": new_v,
                        "change": None if base_v is None else new_v - base_v, "base_ci95": ci, "mark": mark})
    return out


def markdown(rows: list[dict], base_rev: str) -> str:
    def f(v: float | None) -> str:
        return "—" if v is None else f"{v:.4f}"

    lines = [f"Metric changes vs `{base_rev}` (test split). *inside* = within the base's 95 % bootstrap "
             "interval: sampling noise of the test set, not evidence of a change.", "",
             "| model | metric | base | new | change | base 95 % CI | vs base CI |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = "—" if not r["base_ci95"] else f"[{r['base_ci95'][0]:.4f}, {r['base_ci95'][1]:.4f}]"
        change = "—" if r["change"] is None else f"{r['change']:+.4f}"
        lines.append(f"| {r['model']} | {r['metric']} | {f(r['base'])} | {f(r['new'])} | {change} | {ci} | {r['mark']} |")
    return "\n".join(lines) + "\n"


def metrics_diff(base_rev: str, workspace: str | Path = ".") -> str:
    new_path = Path(workspace) / METRICS_FILE
    if not new_path.is_file():
        raise FileNotFoundError(f"{new_path} not found: run `dvc repro` first")
    return markdown(compare(read_at_revision(base_rev, cwd=workspace), json.loads(new_path.read_text())), base_rev)


def offline_plots_template(out: str | Path) -> Path:
    """An HTML template for `dvc plots show/diff` with Vega, Vega-Lite and Vega-Embed inlined.

    DVC's default page loads them from a CDN and renders blank offline; this template has no
    `{scripts}` placeholder, so DVC adds no CDN tags. The JS bundle comes from vl-convert-python.
    """
    import vl_convert

    bundle = vl_convert.javascript_bundle()
    if "</script" in bundle:  # would end the inline <script> early
        bundle = bundle.replace("</script", "<\\/script")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>DVC Plot</title>\n"
                   f"<script>{bundle}</script>\n<style>table {{border-spacing: 15px;}}</style>\n</head>\n"
                   "<body>\n{plot_divs}\n</body>\n</html>\n")
    return out
