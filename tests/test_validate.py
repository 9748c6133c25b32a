"""Validation buckets every kind of bad file, never touches data/, and caches by sha256."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import LIMITS, REPO
from deepfake_detector.core.images import DataLayoutError, DecodeLimits
from deepfake_detector.core.params import load_params
from deepfake_detector.data.validate import printable, validate

P = load_params(REPO / "params.yaml").validate_.model_copy(update={"min_size": 32, "max_pixels": 4_000_000,
                                                                   "max_file_mb": 0.05})
LIM = DecodeLimits(P.max_pixels, LIMITS.formats)  # JPEG, PNG, WebP as in params.yaml; a 4 MP cap


def _photo(seed: int, size: int = 64, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)  # distinct low-frequency content per seed
    img = Image.fromarray(base).resize((size, size), Image.Resampling.BICUBIC)
    return img.convert(mode) if mode != "RGB" else img


def _jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def build_corpus(root: Path) -> dict[str, str]:
    """Write one file per case; return {relative path: expected reason ('' = kept)}."""
    expect: dict[str, str] = {}

    def put(rel: str, data: bytes, reason: str) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expect[rel] = reason

    def save(rel: str, img: Image.Image, reason: str, fmt: str, **kw) -> None:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        put(rel, buf.getvalue(), reason)

    for i in range(6):  # plain good files
        put(f"real/good_{i}.jpg", _jpeg_bytes(_photo(i)), "")
        put(f"fake/good_{i}.jpg", _jpeg_bytes(_photo(100 + i)), "")
    put("real/zero_bytes.jpg", b"", "unreadable")
    put("real/truncated.jpg", _jpeg_bytes(_photo(7))[:300], "unreadable")
    put("fake/not_an_image.jpg", b"hello, I am text pretending to be a JPEG\n" * 20, "unreadable")
    save("fake/bomb.png", Image.new("1", (3000, 3000)), "unreadable", "PNG")  # 9 MP > max_pixels
    save("real/tiny.png", _photo(8, 16), "too_small", "PNG")
    save("real/gray.png", _photo(9, mode="L"), "unsupported", "PNG")
    save("real/sixteen_bit.png", Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)),
         "unsupported", "PNG")
    frames = [_photo(10 + k) for k in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    put("fake/animated.gif", buf.getvalue(), "unsupported")  # GIF: not in serve.formats (and animated)
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:])
    put("fake/animated.png", buf.getvalue(), "unsupported")  # an allowed format, animated
    save("fake/alpha.png", _photo(13, mode="RGBA"), "", "PNG")
    save("fake/palette.png", _photo(14).convert("P"), "", "PNG")
    save("real/palette.gif", _photo(21).convert("P"), "unsupported", "GIF")  # format outside the allowlist
    put("real/page.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n", "unsupported")  # never decoded
    put(os.fsdecode(b"real/caf\xe9.jpg"), _jpeg_bytes(_photo(22)), "unsupported")  # a file name that is not UTF-8
    put("fake/huge.jpg", _jpeg_bytes(_photo(23)) + os.urandom(60_000), "unreadable")  # over max_file_mb: not read
    save("real/cmyk.jpg", _photo(15, mode="CMYK"), "", "JPEG")
    rotated = _photo(16, 64).crop((0, 0, 64, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 on display
    save("real/exif_rotated.jpg", rotated, "", "JPEG", exif=exif)
    put("real/ünïcødé_名字.jpg", _jpeg_bytes(_photo(17)), "")
    dup = _jpeg_bytes(_photo(18))
    put("fake/dup_a.jpg", dup, "")
    put("fake/dup_b.jpg", dup, "duplicate")
    same = _jpeg_bytes(_photo(19))
    put("real/both_labels.jpg", same, "conflicting_label")
    put("fake/both_labels.jpg", same, "conflicting_label")
    put("fake/near_same_as_real.jpg", _jpeg_bytes(_photo(20), subsampling=0), "conflicting_label")
    put("real/near_same_as_fake.jpg", _jpeg_bytes(_photo(20).resize((70, 70)).resize((64, 64))), "conflicting_label")
    os.symlink(root / "real/good_0.jpg", root / "real/link.jpg")
    expect["real/link.jpg"] = "unsupported"
    return expect


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture()
def corpus(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "data"
    return root, build_corpus(root)


def test_every_file_lands_in_its_bucket_and_raw_data_is_untouched(corpus, tmp_path):
    root, expect = corpus
    before = _hashes(root)
    metrics = validate(root, tmp_path / "clean", tmp_path / "reports", P, LIM, progress=False)
    assert _hashes(root) == before, "validation must never modify data/"

    rejected = pd.read_csv(tmp_path / "reports/rejected.csv")
    got = dict(zip(rejected["path"], rejected["reason"]))
    expect = {printable(rel)[0]: why for rel, why in expect.items()}  # as written to CSV: caf\xe9.jpg
    for rel, reason in expect.items():
        assert got.get(rel, "") == reason, f"{rel}: expected {reason or 'kept'}, got {got.get(rel, 'kept')}"
    manifest = pd.read_csv(tmp_path / "clean/manifest.csv")
    assert set(manifest["path"]) == {r for r, why in expect.items() if not why}
    for rel in manifest["path"]:
        assert (tmp_path / "clean" / rel).read_bytes() == (root / rel).read_bytes()
    rotated = manifest.set_index("path").loc["real/exif_rotated.jpg"]
    assert (rotated["width"], rotated["height"]) == (40, 64)  # EXIF orientation applied

    assert set(metrics) >= {"total", "kept", "rejected", "rejected_by_reason"}
    assert metrics["total"] == len(expect)
    assert metrics["kept"] + metrics["rejected"] == metrics["total"]
    assert metrics["rejected_by_reason"]["unreadable"] == 5
    assert metrics["rejected_by_reason"]["duplicate"] == 1
    assert metrics["rejected_by_reason"]["conflicting_label"] == 4
    assert json.loads((tmp_path / "reports/metrics.json").read_text())["kept"] == metrics["kept"]
    assert (tmp_path / "reports/data_docs/index.html").is_file()
    detail = rejected.set_index("path")["detail"]
    assert "decompression bomb" in detail["fake/bomb.png"]
    assert detail["real/caf\\xe9.jpg"] == "file name is not UTF-8"
    assert "EPS images are not accepted" in detail["real/page.eps"] and "GIF" in detail["real/palette.gif"]
    assert "max_file_mb" in detail["fake/huge.jpg"] and "animated" in detail["fake/animated.png"]
    assert "same bytes as fake/dup_a.jpg" == detail["fake/dup_b.jpg"]


def test_grayscale_can_be_allowed(corpus, tmp_path):
    root, _ = corpus
    p = P.model_copy(update={"allow_grayscale": True})
    validate(root, tmp_path / "clean", tmp_path / "reports", p, LIM, progress=False)
    assert "real/gray.png" in set(pd.read_csv(tmp_path / "clean/manifest.csv")["path"])


def test_cache_makes_incremental_runs_decode_only_new_files(demo_dir, tmp_path):
    data = tmp_path / "data"
    import shutil
    shutil.copytree(demo_dir, data)
    cache = tmp_path / "cache.jsonl"
    first = validate(data, tmp_path / "c", tmp_path / "r", P, LIM, cache_path=cache, progress=False)
    assert first["cache"] == {"decoded": 80, "cached": 0}
    (data / "real/new.jpg").write_bytes(_jpeg_bytes(_photo(99)))
    second = validate(data, tmp_path / "c", tmp_path / "r", P, LIM, cache_path=cache, progress=False)
    assert second["cache"] == {"decoded": 1, "cached": 80}
    assert second["total"] == 81
    # a bigger image and a lower pixel cap: the cached "decodes fine" must not survive the param change
    (data / "fake/big.jpg").write_bytes(_jpeg_bytes(_photo(7).resize((300, 300))))
    validate(data, tmp_path / "c", tmp_path / "r", P, LIM, cache_path=cache, progress=False)
    third = validate(data, tmp_path / "c", tmp_path / "r", P, DecodeLimits(200 * 200, LIM.formats), cache_path=cache,
                     progress=False)
    assert third["cache"] == {"decoded": 82, "cached": 0}  # new decode version: everything re-decoded
    rejected = pd.read_csv(tmp_path / "r/rejected.csv")
    assert "fake/big.jpg" in set(rejected.loc[rejected["reason"] == "unreadable", "path"])


def test_unknown_label_folder_is_a_clear_error(tmp_path):
    (tmp_path / "data/real").mkdir(parents=True)
    (tmp_path / "data/synthetic").mkdir()
    with pytest.raises(DataLayoutError, match="synthetic"):
        validate(tmp_path / "data", tmp_path / "c", tmp_path / "r", P, LIM, progress=False)


@pytest.mark.parametrize("seed", [0, 1])
def test_flipped_labels_are_found_by_the_out_of_fold_judge_on_pretrained_embeddings(tmp_path, seed):
    """Seeded: 6 of 120 demo labels flipped (3 each way). Bounds with a wide margin on any CPU."""
    from deepfake_detector.data.demo import flip_labels, make_demo

    src = tmp_path / "src"
    make_demo(src, per_class=60, seed=seed)
    data = tmp_path / "data"
    flipped = flip_labels(src, data, share=0.05, seed=seed)  # 3 of 60 per class
    assert len(flipped) == 6
    from deepfake_detector.model.embeddings import embed_files

    m = validate(data, tmp_path / "clean", tmp_path / "reports", P, LIM, seed, cache_path=tmp_path / "cache/v.jsonl",
                 progress=False, embed=embed_files)
    assert m["label_issue_judge"] == "out-of-fold logistic regression on pretrained embeddings"
    flags = pd.read_csv(tmp_path / "reports/label_issues.csv")
    found = set(flags["path"])
    recall, precision = len(found & flipped) / len(flipped), len(found & flipped) / max(len(found), 1)
    assert recall >= 0.5 and precision >= 0.5, (recall, precision, sorted(found), sorted(flipped))
    assert list(flags["rank"]) == list(range(1, len(flags) + 1))
    assert flags["label_confidence"].is_monotonic_increasing
    assert "data:image/png;base64," in (tmp_path / "reports/label_issues.html").read_text()
    again = validate(data, tmp_path / "clean", tmp_path / "reports", P, LIM, seed, cache_path=tmp_path / "cache/v.jsonl",
                     progress=False, embed=embed_files)
    assert again["label_issue_candidates"] == m["label_issue_candidates"]  # from the embedding cache


def test_data_docs_rewrite_names_an_unknown_cdn_asset_instead_of_shipping_it():
    from deepfake_detector.data.datadocs import _localise, remote_refs

    page = ('<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>'
            '<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>')
    local = _localise(page, "../")
    assert remote_refs(page) and not remote_refs(local)
    assert 'href="../static/vendor/bootstrap.min.css"' in local and 'src="../static/vendor/jquery.min.js"' in local
    with pytest.raises(ValueError, match="cdn.example.org/new-widget.js"):
        _localise('<script src="https://cdn.example.org/new-widget.js"></script>', "")


def test_worker_processes_give_the_same_table_as_one_process(corpus, tmp_path):
    from deepfake_detector.data.validate import collect_metadata

    root, _ = corpus
    one, s1 = collect_metadata(root, P, LIM, tmp_path / "c1.jsonl", progress=False, workers=1)
    two, s2 = collect_metadata(root, P, LIM, tmp_path / "c2.jsonl", progress=False, workers=2)
    assert s1 == s2 == {"decoded": len(one) - 1, "cached": 0}  # all but fake/huge.jpg (over max_file_mb: not read)
    pd.testing.assert_frame_equal(one, two)
    assert (tmp_path / "c1.jsonl").read_bytes() == (tmp_path / "c2.jsonl").read_bytes()
    again, s3 = collect_metadata(root, P, LIM, tmp_path / "c2.jsonl", progress=False, workers=2)
    assert s3["decoded"] == 0 and again.equals(two)


def test_phash_has_the_same_bits_as_imagehash(tmp_path):
    """hashing.phash is a rewrite of imagehash.phash for speed: same 64 bits on faces, noise, smooth and
    odd-sized images (imagehash is a dev dependency, the reference only). Flat images and pure linear
    ramps are left out: most of their low-frequency coefficients are ~0 and tie at the median, so
    either implementation's bits there are float noise (measured: they differ)."""
    import imagehash
    from PIL import Image

    from deepfake_detector.data.demo import make_demo
    from deepfake_detector.core.hashing import phash

    make_demo(tmp_path / "d", per_class=10, seed=3)
    images = [Image.open(p) for p in sorted((tmp_path / "d").rglob("*.*"))]
    rng = np.random.default_rng(0)
    images += [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in
               ((32, 32), (17, 91), (300, 200), (1024, 768))]
    from PIL import ImageFilter

    images += [im.filter(ImageFilter.GaussianBlur(r)) for im, r in zip(images[-4:], (1, 3, 8, 20))]  # smooth
    for img in images:
        assert phash(img) == str(imagehash.phash(img)), img


def test_the_label_issue_page_says_what_happened_and_says_zero_plainly(tmp_path):
    from deepfake_detector.data.demo import make_demo

    make_demo(tmp_path / "data", per_class=12, seed=3)
    none = P.model_copy(update={"label_issue": P.label_issue.model_copy(update={"max_label_probability": 0.0})})
    m = validate(tmp_path / "data", tmp_path / "c", tmp_path / "r", none, LIM, progress=False)
    page = (tmp_path / "r/label_issues.html").read_text()
    assert m["label_issue_candidates"] == 0 and "<b>0 flagged.</b>" in page
    assert "cheap colour/spectrum features" in page and "were kept" in page  # the method, and no removal
    removing = P.model_copy(update={"label_issue": P.label_issue.model_copy(update={"remove": True,
                                                                                   "max_label_probability": 1.0})})
    m = validate(tmp_path / "data", tmp_path / "c2", tmp_path / "r2", removing, LIM, progress=False)
    page = (tmp_path / "r2/label_issues.html").read_text()
    n = m["label_issue_candidates"]
    assert n > 0 and m["rejected_by_reason"]["label_issue"] == n and page.count("from the cleaned dataset</figcaption>") == min(n, 60)
    assert m["kept"] == 24 - n and len(list((tmp_path / "data").rglob("*.jpg"))) == 24  # data/ untouched


def _separable(root: Path, n: int, seed: int) -> None:
    """n per class, trivially separable: fakes have a saturated blue channel (lossless PNG)."""
    rng = np.random.default_rng(seed)
    for label in ("real", "fake"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = rng.integers(60, 140, (48, 48, 3), dtype=np.uint8)
            if label == "fake":
                arr[..., 2] = 235
            Image.fromarray(arr).save(root / label / f"{label}{seed}_{i:03d}.png")  # unique across labels


def test_a_trained_model_as_the_label_judge_removes_the_flipped_labels(tmp_path):
    """`dfd validate --label-judge MODEL`: a model trained on clean images judges a new set with 10 % of its
    labels flipped; with removal on it removes >= 90 % of the flips at >= 90 % precision (separable classes:
    the margins hold on any CPU)."""
    from typer.testing import CliRunner

    from conftest import write_params
    from deepfake_detector.cli import app
    from deepfake_detector.data.demo import flip_labels
    from deepfake_detector.data.split import split
    from deepfake_detector.evaluation.baselines import train_lr

    _separable(tmp_path / "clean_set", 30, seed=0)
    params = write_params(tmp_path / "p.yaml", validate={"label_issue": {"remove": True, "max_label_probability": 0.2}})
    p = load_params(params)
    validate(tmp_path / "clean_set", tmp_path / "c0", tmp_path / "r0", p.validate_, LIMITS, progress=False)
    split(tmp_path / "c0", tmp_path / "splits", tmp_path / "rs", p.split, 0)
    train_lr(tmp_path / "splits", tmp_path / "judge", 64, 0, "probe_lr", LIMITS, 0.5, 3000)
    _separable(tmp_path / "new", 50, seed=1)
    flipped = flip_labels(tmp_path / "new", tmp_path / "landed", share=0.1, seed=1)
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "landed"), str(tmp_path / "c1"), str(tmp_path / "r1"),
                                      "--params", str(params), "--label-judge", str(tmp_path / "judge"),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    rejected = pd.read_csv(tmp_path / "r1/rejected.csv")
    removed = set(rejected.loc[rejected["reason"] == "label_issue", "path"])
    hits = len(removed & flipped)
    assert len(flipped) == 10 and hits >= 9 and hits >= 0.9 * len(removed), (sorted(removed), sorted(flipped))
    listed = pd.read_csv(tmp_path / "r1/label_issues.csv")
    assert set(listed["path"]) == removed and (listed["label_confidence"] < 0.2).all()
    assert "model " in json.loads((tmp_path / "r1/metrics.json").read_text())["label_issue_judge"]


def test_landed_files_are_checked_against_the_images_already_in_the_dataset(corpus, tmp_path):
    """--reference: a landed copy of an existing image under the same label is a duplicate, under the other
    label a conflicting label, each naming the existing file; the existing images are never touched."""
    from deepfake_detector.data.validate import load_reference

    root, _ = corpus
    validate(root, tmp_path / "clean", tmp_path / "reports", P, LIM, progress=False)
    landed = tmp_path / "landed"
    (landed / "real").mkdir(parents=True)
    (landed / "fake").mkdir()
    (landed / "real/again.jpg").write_bytes((root / "real/good_2.jpg").read_bytes())
    (landed / "fake/swapped.jpg").write_bytes((root / "real/good_3.jpg").read_bytes())
    (landed / "fake/new.jpg").write_bytes(_jpeg_bytes(_photo(77)))
    reference = load_reference(tmp_path / "clean/manifest.csv", P, LIM)
    m = validate(landed, tmp_path / "c2", tmp_path / "r2", P, LIM, progress=False, reference=reference)
    rejected = pd.read_csv(tmp_path / "r2/rejected.csv").set_index("path")
    assert rejected.loc["real/again.jpg", "reason"] == "duplicate"
    assert "real/good_2.jpg (already in the dataset)" in rejected.loc["real/again.jpg", "detail"]
    assert rejected.loc["fake/swapped.jpg", "reason"] == "conflicting_label"
    assert "real/good_3.jpg (already in the dataset)" in rejected.loc["fake/swapped.jpg", "detail"]
    assert m["kept"] == 1 and set(pd.read_csv(tmp_path / "c2/manifest.csv")["path"]) == {"fake/new.jpg"}
    folder = load_reference(root, P, LIM)  # a data folder works as the reference too
    assert set(folder["path"]) >= {"real/good_2.jpg", "real/good_3.jpg"}
