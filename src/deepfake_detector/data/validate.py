"""Stage `validate`: one metadata row per file, a Great Expectations suite, a cleaned dataset.

    dfd validate data artifacts/clean reports/validation --cache artifacts/cache/validate.jsonl

Rejection reasons (first that applies, in this order):
- unreadable: zero bytes, truncated, not an image, decompression bomb (> validate.max_pixels), a file
  over validate.max_file_mb (hashed in chunks, never read whole)
- unsupported: a file name that is not UTF-8, a format outside serve.formats (never handed to a
  decoder), symlink (its bytes are not versioned), animated (n_frames > 1), 16-bit/float modes (I;16, I, F),
  grayscale (L, LA, 1) unless validate.allow_grayscale. RGBA, P, CMYK and YCbCr are kept and converted to
  RGB on load (alpha composited on white).
- too_small: width or height < validate.min_size
- no_face / several_faces: with faces.policy box|align and faces.require_one, the face finder (core/faces.py)
  found no face, or more than one, in the picture
- duplicate: same bytes as an earlier file of the same class (the first by path is kept)
- conflicting_label: same bytes or near-same pHash under both labels: every copy removed
- label_issue: flagged by confident learning (only removed when validate.label_issue.remove)

`data/` is only read. Per-file results are cached by sha256 + decode version (code and decode limits) in the cache
file, so a re-run after adding a few files decodes only those files. No file name, size or format stops a run:
each bad file is one rejected row with its reason.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from tqdm import tqdm

from .filemeta import CACHED_KEYS, read_files
from .gx_suite import REASONS, run_suite
from ..core.hashing import components, near_pairs
from ..core.images import (CONVERTIBLE_MODES, GRAYSCALE_MODES, DecodeLimits, iter_labelled_files, read_metadata,
                           source_of)
from .label_issues import flag_label_issues, thumbnails_html
from ..core.params import FacesParams, ValidateParams

MANIFEST_COLUMNS = ["path", "label", "sha256", "format", "mode", "width", "height", "bytes", "phash", "phash_mirror",
                    "source", "group", "n_faces", "face"]  # face: the largest face's box + 68 landmarks (core/faces.py)
def decode_version(p: ValidateParams, limits: DecodeLimits, faces: "FacesParams | None" = None) -> str:
    """What a cached per-file result depends on besides the bytes: the decode code and its params.

    Editing filemeta.py/features.py/images.py or changing validate.max_pixels, max_file_mb or serve.formats
    gives a new version, so every file is decoded again instead of reusing stale results.
    """
    h = hashlib.sha256(f"max_pixels={limits.max_pixels} formats={limits.formats} mb={p.max_file_mb}".encode())
    if finder_of(faces) is not None:  # landmarks: the finder's settings and code (not the crop code beside it)
        import inspect

        from ..core import faces as face_module

        h.update(repr(finder_of(faces)).encode())
        for part in (face_module.FaceFinder, face_module.Face, face_module._dlib_models):
            h.update(inspect.getsource(part).encode())
    for name in ("data/filemeta.py", "data/features.py", "core/images.py"):
        h.update((Path(__file__).parents[1] / name).read_bytes())
    return h.hexdigest()[:12]


def finder_of(faces: "FacesParams | None"):
    """The face finder's settings when the policy finds faces (core.faces.FinderSettings), else None."""
    return faces.finder() if faces is not None and faces.policy != "whole" else None


def _load_cache(path: Path | None) -> dict[str, dict]:
    if path is None or not path.is_file():
        return {}
    cache = {}
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
            cache[rec.pop("key")] = rec
        except (json.JSONDecodeError, KeyError):
            continue  # a damaged (or old-format) line costs one re-decode, nothing else
    return cache


def _save_cache(path: Path | None, cache: dict[str, dict]) -> None:
    """Writes the entries of this run only, sorted: same files -> same bytes (a quiet dvc.lock)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as fh:
        for key in sorted(cache):
            fh.write(json.dumps({"key": key, **cache[key]}) + "\n")
    os.replace(tmp, path)


def printable(rel: str) -> tuple[str, bool]:
    """(a path as it can be written to CSV/JSON/HTML, whether it is the file's real UTF-8 name). Names that are
    not UTF-8 (bytes like caf\xe9.jpg, held as surrogates by Python) are shown with backslash escapes."""
    raw = os.fsencode(rel)
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace"), False


def collect_metadata(data_dir: Path, p: ValidateParams, limits: DecodeLimits, cache_path: Path | None = None,
                     progress: bool = True, workers: int = 0,
                     faces: "FacesParams | None" = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per file under data_dir/<label>/; returns (frame, {"decoded": n, "cached": n}).

    workers: processes for the per-file pass (0 = every core); the result does not depend on it. faces: with a
    face policy, each picture's faces are found too (n_faces, face), cached with the rest.
    """
    cache, used = _load_cache(cache_path), {}
    version = decode_version(p, limits, faces)
    rows, stats = [], {"decoded": 0, "cached": 0}
    files = list(iter_labelled_files(data_dir))
    records = read_files([path for path, _ in files], limits, int(p.max_file_mb * 2**20), frozenset(cache), version,
                         workers, finder_of(faces))
    for (path, label), rec in tqdm(zip(files, records), total=len(files), desc="validate", unit="img",
                                   disable=not progress):
        rel, name_ok = printable(path.relative_to(data_dir).as_posix())
        row: dict[str, Any] = {"path": rel, "label": label, "name_ok": name_ok, "is_symlink": path.is_symlink()}
        key = rec.pop("key")
        if key is None:  # unreadable (OSError)
            rows.append({**row, **rec})
            continue
        meta = rec.pop("meta", None)
        if meta is None:
            meta = cache[key]
            stats["cached"] += 1
        else:
            stats["decoded"] += 1
        used[key] = meta
        rows.append({**row, **rec, **meta})
    _save_cache(cache_path, used)
    frame = pd.DataFrame(rows, columns=["path", "label", "name_ok", "is_symlink", "bytes", "sha256", *CACHED_KEYS])
    meta = read_metadata(data_dir)  # `dfd data import --source/--groups`; else the file-name convention
    source = frame["path"].map(meta["source"]).fillna("")
    frame["source"] = source.where(source != "", frame["path"].map(source_of))
    frame["group"] = frame["path"].map(meta["group"]).fillna("")
    return frame, stats


def flag_groups(frame: pd.DataFrame, p: ValidateParams, seed: int, embeddings: np.ndarray | None = None,
                reference: pd.DataFrame | None = None, judged: np.ndarray | None = None) -> pd.DataFrame:
    """Add is_duplicate, conflicting_label, label_issue (+ label_confidence, detail) columns.

    reference: images already in the dataset (path, label, sha256, phash): a file with the same bytes, or the
    same bytes or a near-same pHash under the other label, is flagged and names that image; reference images
    themselves are never flagged. embeddings: the out-of-fold judge's features (None: cheap features).
    judged: a trained model's fake probability per row (the model judge; NaN where it could not score).
    """
    ref = reference if reference is not None else frame.iloc[:0]
    # only files that can stay take part: one refused for its name, format or a symlink conflicts with nobody
    eligible = frame["decodes"].fillna(False).astype(bool) & frame["name_ok"] & ~frame["is_symlink"]
    mine_rows = frame[["path", "label", "sha256", "phash"]].assign(decodes=eligible)
    mine_rows.loc[~eligible, "sha256"] = None
    both = pd.concat([ref[["path", "label", "sha256", "phash"]].assign(decodes=True,
                                                                      path=ref["path"] + " (already in the dataset)"),
                      mine_rows], ignore_index=True)
    mine = np.arange(len(ref), len(both))  # the rows of `frame` in `both`; reference rows come first
    frame = frame.copy()
    frame["detail"] = ""
    dup = both.duplicated(subset=["label", "sha256"], keep="first") & both["sha256"].notna()
    firsts = both[~dup].drop_duplicates(["label", "sha256"]).set_index(["label", "sha256"])["path"]
    frame["is_duplicate"] = dup.to_numpy()[mine]
    for i in frame.index[frame["is_duplicate"]]:
        frame.at[i, "detail"] = "same bytes as " + firsts[(frame.at[i, "label"], frame.at[i, "sha256"])]

    hashes = both["phash"].where(both["decodes"].fillna(False).astype(bool), None).tolist()
    pairs = near_pairs(hashes, p.near_duplicate_distance) if p.near_duplicate_distance >= 0 else set()
    comp = pd.Series(components(len(both), pairs))
    labels_in = both.groupby(comp)["label"].nunique()
    conflict = comp.map(labels_in).gt(1) | both["sha256"].map(both.groupby("sha256")["label"].nunique()).gt(1)
    frame["conflicting_label"] = conflict.to_numpy()[mine]
    for i, row in zip(frame.index[frame["conflicting_label"]], mine[frame["conflicting_label"].to_numpy()]):
        same = (comp == comp[row]) | (both["sha256"] == both.at[row, "sha256"])
        others = both.loc[same & (both["label"] != both.at[row, "label"]), "path"]
        frame.at[i, "detail"] = "near-same image labelled otherwise: " + ", ".join(others.head(3))
    return flag_label_issues(frame, p.label_issue, seed, embeddings, judged)


def _unsupported_why(r: pd.Series) -> str:
    if not r["name_ok"]:
        return "file name is not UTF-8"
    if r["format_allowed"] is False:
        return r["error"]
    if r["is_symlink"]:
        return "symlink"
    return f"animated ({r['n_frames']} frames)" if (r["n_frames"] or 1) > 1 else f"mode {r['mode']}"


def supported_modes(p: ValidateParams) -> list[str]:
    return sorted(CONVERTIBLE_MODES | (GRAYSCALE_MODES if p.allow_grayscale else set()))


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# (paths, sha256s, limits, cache file, progress) -> a feature row per file, or None (no weights): model.embeddings.embed_files
Embedder = Callable[[list[Path], list[str], DecodeLimits, "Path | None", bool], "np.ndarray | None"]
def load_reference(source: str | Path, p: ValidateParams, limits: DecodeLimits,
                   cache_path: str | Path | None = None) -> pd.DataFrame:
    """The images already in a dataset, for `validate(reference=...)`: a cleaned dataset's manifest.csv, or a
    data folder (its files read through the validation cache)."""
    source = Path(source)
    if source.is_file():
        frame = pd.read_csv(source, dtype={"phash": str, "sha256": str})
    else:
        frame, _ = collect_metadata(source, p, limits, Path(cache_path) if cache_path else None, progress=False)
        frame = frame[frame["decodes"].fillna(False).astype(bool)]
    return frame[["path", "label", "sha256", "phash"]].reset_index(drop=True)


# (paths) -> a trained model's fake probability per file (NaN where it cannot score): the model judge
Judge = Callable[[list[Path]], np.ndarray]


def validate(data_dir: str | Path, clean_dir: str | Path, report_dir: str | Path, p: ValidateParams,
             limits: DecodeLimits, seed: int = 42, cache_path: str | Path | None = None, progress: bool = True,
             workers: int = 0, embed: Embedder | None = None, reference: pd.DataFrame | None = None,
             judge: Judge | None = None, judge_name: str = "", faces: FacesParams | None = None) -> dict[str, Any]:
    """Validate every file, write the cleaned dataset and the reports; return the metrics.

    embed: the out-of-fold judge's features when validate.label_issue.features is `embeddings` (the CLI passes
    `model.embeddings.embed_files`); without it, or without weights, the cheap features are used.
    judge: a trained model as the label judge instead (`--label-judge`). reference: the images already in the
    dataset (a manifest: path, label, sha256, phash; `--reference`): a file repeating or contradicting one of them
    is rejected and names it, and they are never rejected themselves. faces: params.yaml `faces` (a face policy
    finds each picture's faces; faces.require_one rejects no_face / several_faces)."""
    data_dir, clean_dir, report_dir = Path(data_dir), Path(clean_dir), Path(report_dir)
    frame, cache_stats = collect_metadata(data_dir, p, limits, Path(cache_path) if cache_path else None, progress,
                                          workers, faces)
    embeddings = judged = None
    if judge is not None:
        decodes = frame["decodes"].fillna(False).astype(bool)
        judged = np.full(len(frame), np.nan)
        judged[decodes.to_numpy()] = judge([data_dir / r for r in frame.loc[decodes, "path"]])
    elif p.label_issue.features == "embeddings" and embed is not None:
        decodes = frame["decodes"].fillna(False).astype(bool)
        emb_cache = Path(cache_path).with_name("embeddings.npy") if cache_path else None
        sub = embed([data_dir / r for r in frame.loc[decodes, "path"]], frame.loc[decodes, "sha256"].tolist(),
                    limits, emb_cache, progress)
        if sub is not None:
            embeddings = np.full((len(frame), sub.shape[1]), np.nan, np.float32)
            embeddings[decodes.to_numpy()] = sub
    frame = flag_groups(frame, p, seed, embeddings, reference, judged)
    gx_frame = frame.drop(columns=["features", "detail", "label_confidence"])
    docs_dir = report_dir / "data_docs"
    shutil.rmtree(docs_dir, ignore_errors=True)
    one_face = finder_of(faces) is not None and faces.require_one
    failed, gx_summary = run_suite(gx_frame.drop(columns=["face"]), p.min_size, supported_modes(p),
                                   p.label_issue.remove, docs_dir, one_face)

    frame["reason"] = frame["path"].map(failed).fillna("")
    for i in frame.index[frame["reason"] == "unreadable"]:  # the detail of the reason that won
        frame.at[i, "detail"] = frame.at[i, "error"] or "zero bytes"
    unsupported = frame["reason"] == "unsupported"
    frame.loc[unsupported, "detail"] = frame.loc[unsupported].apply(_unsupported_why, axis=1)
    small = frame["reason"] == "too_small"
    frame.loc[small, "detail"] = frame.loc[small].apply(lambda r: f"{r['width']}x{r['height']}", axis=1)
    for reason in ("no_face", "several_faces"):
        rows = frame["reason"] == reason
        frame.loc[rows, "detail"] = frame.loc[rows, "n_faces"].map(lambda n: f"{int(n)} faces found (faces.min_face "
                                                                            f"{faces.min_face} px)")

    shutil.rmtree(clean_dir, ignore_errors=True)
    kept = frame[frame["reason"] == ""]
    for rel in kept["path"]:
        _link_or_copy(data_dir / rel, clean_dir / rel)
    clean_dir.mkdir(parents=True, exist_ok=True)
    kept[MANIFEST_COLUMNS].to_csv(clean_dir / "manifest.csv", index=False)

    report_dir.mkdir(parents=True, exist_ok=True)
    rejected = frame[frame["reason"] != ""]
    rejected[["path", "label", "reason", "detail"]].to_csv(report_dir / "rejected.csv", index=False,
                                                           quoting=csv.QUOTE_MINIMAL)
    candidates = frame[frame["label_issue"]].sort_values(["label_confidence", "path"])
    candidates = candidates.assign(rank=np.arange(1, len(candidates) + 1))
    candidates[["rank", "path", "label", "label_confidence"]].to_csv(report_dir / "label_issues.csv", index=False)
    metrics = {
        "total": int(len(frame)),
        "kept": int(len(kept)),
        "rejected": int(len(rejected)),
        "rejected_by_reason": {r: int((frame["reason"] == r).sum()) for r in REASONS},
        "kept_by_label": {lab: int((kept["label"] == lab).sum()) for lab in ("real", "fake")},
        "by_source": {src: {"total": int((frame["source"] == src).sum()), "kept": int((kept["source"] == src).sum()),
                            **{lab: int(((kept["source"] == src) & (kept["label"] == lab)).sum())
                               for lab in ("real", "fake")}}
                      for src in sorted(frame["source"].unique())},
        "label_issue_candidates": int(len(candidates)),
        "label_issue_judge": (f"model {judge_name}" if judge is not None else
                              "out-of-fold logistic regression on " + (
                                  "pretrained embeddings" if embeddings is not None else "cheap colour/spectrum features"
                                  + (" (fallback: no pretrained weights)" if p.label_issue.features == "embeddings"
                                     else ""))),
    }
    thumbnails_html(candidates.to_dict("records"), data_dir, report_dir / "label_issues.html",
                    f"{metrics['label_issue_judge']}: p(given label) < {p.label_issue.max_label_probability}",
                    p.label_issue.remove, limits)
    (report_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (report_dir / "gx_result.json").write_text(json.dumps(gx_summary, indent=2) + "\n")
    return {**metrics, "cache": cache_stats}  # cache hits vary run to run: not a tracked metric
