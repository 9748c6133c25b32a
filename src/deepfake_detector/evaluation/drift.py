"""Stage `drift`: does incoming data still look like the training data? (Evidently 0.7)

    dfd drift --reference artifacts/splits/train.csv --current artifacts/splits/test.csv \
              --model artifacts/model reports/drift
    dfd drift --reference artifacts/splits/train.csv --current landing/ --model artifacts/model OUT

Per image: brightness, contrast, saturation, sharpness, width, height, file bytes, estimated
JPEG quality, high-frequency energy share, the detector's fake probability, and its pre-logit
embedding reduced by PCA (fitted on the reference). `DataDriftPreset` tests the statistics,
`EmbeddingsDrift` the embedding. Exit code 0 with or without drift: the flag is in the JSON.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from ..data.features import STAT_SIZE, image_stats, jpeg_quality
from ..core.faces import FaceInput, FinderSettings, face_column
from ..core.images import DecodeLimits, decode_image, image_files, open_image, to_tensor
from ..core.params import DriftParams
from ..core.stable import stable_ids

STAT_COLUMNS = ["brightness", "contrast", "saturation", "sharpness", "hf_energy", "width", "height",
                "file_bytes", "jpeg_quality"]


def list_images(source: str | Path) -> tuple[list[str], list[str | None]]:
    """(paths, face records) from a split CSV (written by `split`; its `face` column) or every non-hidden file
    under a folder (faces not looked for yet: None)."""
    source = Path(source)
    if source.is_file() and source.suffix == ".csv":
        from ..core.splits_io import read_split

        frame = read_split(source.parent, source.stem)
        return frame["path"].tolist(), face_column(frame)
    if not source.is_dir():
        raise FileNotFoundError(f"drift input not found: {source} (give a split CSV or a folder)")
    paths = [str(p) for p in image_files(source)]
    return paths, [None] * len(paths)


def file_features(paths: list[str], limits: DecodeLimits, progress: bool = False, model_size: int | None = None,
                  faces: list[str | None] | None = None, face_input: FaceInput | None = None
                  ) -> tuple[pd.DataFrame, torch.Tensor, int]:
    """(stats frame for readable files, uint8 images at model_size (N,3,S,S) for the detector, unreadable count).

    Statistics use STAT_SIZE thumbnails of the whole picture; the detector gets its own input: the face crop its
    policy makes (face_input, faces: the rows' records), decoded from the same image, never a thumbnail.
    """
    faces = faces if faces is not None else [None] * len(paths)
    size = model_size or STAT_SIZE
    rows, thumbs, bad = [], [], 0
    for path, face in tqdm(zip(paths, faces), total=len(paths), desc="drift features", unit="img",
                           disable=not progress, leave=False):
        try:
            with open_image(path, limits) as img:  # header only: the quantisation tables
                quality = jpeg_quality(img)
            rgb = decode_image(path, limits)
            nbytes = Path(path).stat().st_size
        except Exception:  # noqa: BLE001 - unreadable files are counted, never fatal
            bad += 1
            continue
        small = np.asarray(rgb.resize((STAT_SIZE, STAT_SIZE), Image.Resampling.BILINEAR), np.uint8)
        rows.append({"path": path, **image_stats(small), "width": rgb.width, "height": rgb.height,
                     "file_bytes": nbytes, "jpeg_quality": quality})
        crop = face_input.crop(rgb, face, size) if face_input is not None else rgb
        thumbs.append(to_tensor(crop, size))
    frame = pd.DataFrame(rows, columns=["path", *STAT_COLUMNS])
    return frame, (torch.stack(thumbs) if thumbs else torch.zeros(0, 3, size, size, dtype=torch.uint8)), bad


def drift(reference: str | Path, current: str | Path, out_dir: str | Path, d: DriftParams, limits: DecodeLimits,
          model_dir: str | Path | None = None, progress: bool = True, finder: FinderSettings | None = None) -> dict:
    """Compare current to reference; write OUT/report.html and OUT/metrics.json; return the metrics. The detector
    embeds the face crops its stored policy makes (pictures without a stored face record: searched with finder)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift
    from evidently.presets import DataDriftPreset
    from sklearn.decomposition import PCA

    (ref_paths, ref_faces), (cur_paths, cur_faces) = list_images(reference), list_images(current)
    if not cur_paths:
        raise ValueError(f"current set is empty: {current}")
    scorer, model_size, fi = None, None, None
    if model_dir is not None:
        from ..model.scoring import TorchScorer

        scorer = TorchScorer(model_dir)
        model_size = scorer.image_size
        fi = FaceInput.for_model(scorer.face_crop, finder)
    ref, ref_img, ref_bad = file_features(ref_paths, limits, progress, model_size, ref_faces, fi)
    cur, cur_img, cur_bad = file_features(cur_paths, limits, progress, model_size, cur_faces, fi)
    if len(cur) < 2 or len(ref) < 2:
        raise ValueError(f"need at least 2 readable images on each side (reference {len(ref)}, current {len(cur)}; "
                         f"{cur_bad} unreadable in current)")
    columns = list(STAT_COLUMNS)
    embeddings: dict[str, list[str]] = {}
    if model_dir is not None:
        e_ref, p_ref = scorer.embed(ref_img)
        e_cur, p_cur = scorer.embed(cur_img)
        pca = PCA(n_components=min(d.embedding_dims, len(ref) - 1, e_ref.shape[1]), random_state=0).fit(e_ref)
        names = [f"emb_{i}" for i in range(pca.n_components_)]
        ref[names], cur[names] = pca.transform(e_ref), pca.transform(e_cur)
        ref["fake_prob"], cur["fake_prob"] = p_ref, p_cur
        columns.append("fake_prob")
        embeddings = {"detector": names}
    definition = DataDefinition(numerical_columns=columns + sum(embeddings.values(), []), embeddings=embeddings or None)
    metrics_list = [DataDriftPreset(columns=columns, drift_share=d.drift_share)]
    if embeddings:
        metrics_list.append(EmbeddingsDrift(embeddings_name="detector"))
    used = columns + sum(embeddings.values(), [])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # constant columns (e.g. width) in correlations
        snapshot = Report(metrics_list, include_tests=True).run(
            Dataset.from_pandas(cur[used], data_definition=definition),
            Dataset.from_pandas(ref[used], data_definition=definition))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(out_dir / "report.html"))
    page = out_dir / "report.html"  # Evidently's element ids are uuid7 (time-based): renumber them
    page.write_text(stable_ids(page.read_text(encoding="utf-8")), encoding="utf-8")
    result = snapshot.dict()

    per_column, dataset_drift, emb_score = {}, False, None
    for m in result["metrics"]:
        cfg = m["config"]
        if cfg["type"].endswith("ValueDrift"):
            per_column[cfg["column"]] = {"score": float(m["value"]), "method": cfg.get("method")}
        elif cfg["type"].endswith("EmbeddingsDrift"):
            emb_score = float(m["value"])
    for t in result.get("tests", []):
        params, failed = t["metric_config"]["params"], str(t["status"]).endswith("FAIL")
        if params.get("type", "").endswith("ValueDrift") and params.get("column") in per_column:
            per_column[params["column"]]["drifted"] = failed
        elif params.get("type", "").endswith("DriftedColumnsCount"):
            dataset_drift = failed
    n_drifted = sum(bool(v.get("drifted")) for v in per_column.values())
    metrics = {
        "dataset_drift": bool(dataset_drift), "drift_share": round(n_drifted / max(len(per_column), 1), 6),
        "n_drifted_columns": n_drifted, "n_columns": len(per_column),
        "embedding_drift_score": None if emb_score is None else round(emb_score, 6),
        "embedding_drift": None if emb_score is None else emb_score > d.embedding_threshold,
        "n_reference": len(ref), "n_current": len(cur), "n_unreadable_current": cur_bad,
        "n_unreadable_reference": ref_bad, "columns": per_column,
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
