"""The Great Expectations suite for image metadata, and running it.

One row per file (see validate.file_metadata). Each expectation carries `meta.reason`: a row
it flags is rejected with that reason. Priority of reasons when several apply: REASONS order.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from .datadocs import make_offline
from ..core.stable import source_date

REASONS = ("unreadable", "unsupported", "too_small", "no_face", "several_faces", "duplicate", "conflicting_label",
           "label_issue")
SUITE_NAME = "image_metadata"


def build_suite(min_size: int, supported_modes: list[str], remove_label_issues: bool, one_face: bool = False) -> Any:
    """The expectation suite as code; `meta.reason` maps a failure to a rejection reason."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    def meta(reason: str) -> dict[str, str]:
        return {"reason": reason}

    suite = gx.ExpectationSuite(name=SUITE_NAME)
    for exp in [
        gxe.ExpectTableRowCountToBeBetween(min_value=1, meta={"reason": "table"}),
        gxe.ExpectColumnValuesToBeUnique(column="path", meta={"reason": "table"}),
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=["real", "fake"], meta={"reason": "table"}),
        gxe.ExpectColumnValuesToBeBetween(column="bytes", min_value=1, meta=meta("unreadable")),
        gxe.ExpectColumnValuesToBeInSet(column="decodes", value_set=[True], meta=meta("unreadable")),
        gxe.ExpectColumnValuesToBeInSet(column="name_ok", value_set=[True], meta=meta("unsupported")),
        gxe.ExpectColumnValuesToBeInSet(column="format_allowed", value_set=[True], meta=meta("unsupported")),
        gxe.ExpectColumnValuesToBeInSet(column="is_symlink", value_set=[False], meta=meta("unsupported")),
        gxe.ExpectColumnValuesToBeInSet(column="mode", value_set=supported_modes, meta=meta("unsupported")),
        gxe.ExpectColumnValuesToBeBetween(column="n_frames", min_value=1, max_value=1, meta=meta("unsupported")),
        gxe.ExpectColumnValuesToBeBetween(column="width", min_value=min_size, meta=meta("too_small")),
        gxe.ExpectColumnValuesToBeBetween(column="height", min_value=min_size, meta=meta("too_small")),
        gxe.ExpectColumnValuesToBeInSet(column="is_duplicate", value_set=[False], meta=meta("duplicate")),
        gxe.ExpectColumnValuesToBeInSet(column="conflicting_label", value_set=[False], meta=meta("conflicting_label")),
    ]:
        suite.add_expectation(exp)
    if one_face:  # faces.require_one with a face policy: n_faces is the face finder's count (core/faces.py)
        suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="n_faces", min_value=1, meta=meta("no_face")))
        suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="n_faces", max_value=1,
                                                                meta=meta("several_faces")))
    if remove_label_issues:
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeInSet(column="label_issue", value_set=[False], meta=meta("label_issue"))
        )
    return suite


def _summary(vresult: Any) -> tuple[dict, dict[str, str]]:
    """(JSON-able summary of one validation result, {path: reason} for its failing rows)."""
    failed: dict[str, str] = {}
    summary = {"success": bool(vresult.success), "expectations": []}
    order = {r: k for k, r in enumerate(REASONS)}
    for er in vresult.results:
        cfg = er.expectation_config
        reason = (cfg.meta or {}).get("reason", "table")
        rows = er.result.get("unexpected_index_list") or []
        summary["expectations"].append({
            "type": cfg.type, "column": cfg.kwargs.get("column"), "reason": reason,
            "success": bool(er.success), "unexpected_count": int(er.result.get("unexpected_count") or 0),
        })
        if reason == "table" and not er.success:
            raise ValueError(f"metadata table failed {cfg.type} on {cfg.kwargs.get('column')}: {er.result}")
        for row in rows:
            path = row["path"]
            if path not in failed or order[reason] < order[failed[path]]:
                failed[path] = reason
    return summary, failed


def run_suite(frame: pd.DataFrame, min_size: int, supported_modes: list[str], remove_label_issues: bool,
              docs_dir: Path | None, one_face: bool = False) -> tuple[dict[str, str], dict]:
    """Validate frame; return ({path: reason} for failing rows, JSON-able result summary).

    With docs_dir, GX Data Docs (HTML) are built there through a Checkpoint action, then made to
    load only local files (datadocs.make_offline). With several sources (column `source`) each source
    is validated again as its own data asset `source_<name>`, so the Data Docs index lists one result per
    source beside the whole dataset's; the summary's `by_source` has their success and failure counts.
    """
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    images = context.data_sources.add_pandas("images")
    suite = context.suites.add(build_suite(min_size, supported_modes, remove_label_issues, one_face))
    actions = []
    if docs_dir is not None:
        site = "dfd_validation"
        context.add_data_docs_site(site_name=site, site_config={
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(Path(docs_dir).resolve())},
        })
        actions.append(UpdateDataDocsAction(name="docs", site_names=[site]))

    def run(asset_name: str, name: str, rows: pd.DataFrame) -> Any:
        batch_def = images.add_dataframe_asset(asset_name).add_batch_definition_whole_dataframe("all")
        vdef = context.validation_definitions.add(gx.ValidationDefinition(name=f"validate_{name}", data=batch_def,
                                                                          suite=suite))
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name=name, validation_definitions=[vdef], actions=actions,
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["path"]}))
        # A fixed run id (data digest + SOURCE_DATE_EPOCH) keeps the Data Docs byte-identical on a re-run.
        digest = hashlib.sha256(rows.to_csv(index=False).encode()).hexdigest()[:12]
        result = checkpoint.run(batch_parameters={"dataframe": rows},
                                run_id=RunIdentifier(run_name=f"data-{digest}", run_time=source_date()))
        (vresult,) = result.run_results.values()
        return vresult

    summary, failed = _summary(run("metadata", "images", frame))
    sources = sorted(frame["source"].unique()) if "source" in frame else []
    if len(sources) > 1:
        summary["by_source"] = {}
        for src in sources:
            key = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(src))
            rows = frame[frame["source"] == src].reset_index(drop=True)
            part, part_failed = _summary(run(f"source_{key}", f"images_{key}", rows))
            summary["by_source"][str(src)] = {
                "success": part["success"], "rows": len(rows),
                "failed_rows": len(part_failed),
                "unexpected_by_reason": {r: sum(e["unexpected_count"] for e in part["expectations"] if e["reason"] == r)
                                         for r in REASONS}}
    if docs_dir is not None:
        make_offline(docs_dir)
    return failed, json.loads(json.dumps(summary, default=str))
