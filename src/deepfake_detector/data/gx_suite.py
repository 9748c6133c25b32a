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

REASONS = ("unreadable", "unsupported", "too_small", "duplicate", "conflicting_label", "label_issue")
SUITE_NAME = "image_metadata"


def build_suite(min_size: int, supported_modes: list[str], remove_label_issues: bool) -> Any:
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
        gxe.ExpectColumnValuesToBeInSet(column="is_symlink", value_set=[False], meta=meta("unsupported")),
        gxe.ExpectColumnValuesToBeInSet(column="mode", value_set=supported_modes, meta=meta("unsupported")),
        gxe.ExpectColumnValuesToBeBetween(column="n_frames", min_value=1, max_value=1, meta=meta("unsupported")),
        gxe.ExpectColumnValuesToBeBetween(column="width", min_value=min_size, meta=meta("too_small")),
        gxe.ExpectColumnValuesToBeBetween(column="height", min_value=min_size, meta=meta("too_small")),
        gxe.ExpectColumnValuesToBeInSet(column="is_duplicate", value_set=[False], meta=meta("duplicate")),
        gxe.ExpectColumnValuesToBeInSet(column="conflicting_label", value_set=[False], meta=meta("conflicting_label")),
    ]:
        suite.add_expectation(exp)
    if remove_label_issues:
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeInSet(column="label_issue", value_set=[False], meta=meta("label_issue"))
        )
    return suite


def run_suite(frame: pd.DataFrame, min_size: int, supported_modes: list[str], remove_label_issues: bool,
              docs_dir: Path | None) -> tuple[dict[str, str], dict]:
    """Validate frame; return ({path: reason} for failing rows, JSON-able result summary).

    With docs_dir, GX Data Docs (HTML) are built there through a Checkpoint action, then made to
    load only local files (datadocs.make_offline).
    """
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("images").add_dataframe_asset("metadata")
    batch_def = asset.add_batch_definition_whole_dataframe("all")
    suite = context.suites.add(build_suite(min_size, supported_modes, remove_label_issues))
    vdef = context.validation_definitions.add(
        gx.ValidationDefinition(name="validate_images", data=batch_def, suite=suite)
    )
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
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(name="images", validation_definitions=[vdef], actions=actions,
                      result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["path"]})
    )
    # A fixed run id (data digest + SOURCE_DATE_EPOCH) keeps the Data Docs byte-identical on a re-run.
    digest = hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()[:12]
    run_id = RunIdentifier(run_name=f"data-{digest}", run_time=source_date())
    result = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=run_id)
    if docs_dir is not None:
        make_offline(docs_dir)
    (vresult,) = result.run_results.values()

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
    return failed, json.loads(json.dumps(summary, default=str))
