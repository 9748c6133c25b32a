"""Faces, not files: every face found (dlib, 68 landmarks), cropped as training cropped it, answered one by one.

Real components on real faces: the two public-domain portraits of tests/assets, pasted into larger pictures.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import BIN, write_params
from faces import background, face_set, pasted, portrait, two_faces


@pytest.fixture(scope="module")
def finder():
    from deepfake_detector.core.faces import FaceFinder

    return FaceFinder()


def test_each_face_is_found_with_68_landmarks_and_a_faceless_picture_has_none(finder):
    for name in ("astronaut", "grace_hopper"):
        (face,) = finder.find(portrait(name))
        x0, y0, x1, y1 = face.box
        assert face.landmarks.shape == (68, 2)
        inside = (face.landmarks[:, 0] > x0 - 20) & (face.landmarks[:, 0] < x1 + 20) & \
                 (face.landmarks[:, 1] > y0 - 20) & (face.landmarks[:, 1] < y1 + 40)
        assert inside.mean() > 0.9
    found = finder.find(two_faces())
    assert len(found) == 2 and found[0].box[0] > 500  # largest first: Grace Hopper's face, on the right
    assert finder.find(background(640, 480, seed=3)) == []
    from deepfake_detector.core.faces import Face

    assert Face.from_json(found[1].to_json()).box == found[1].box  # the record the manifest stores round-trips


def test_a_face_at_the_models_size_is_cut_unresampled_and_lands_at_the_same_place(finder):
    from deepfake_detector.core.faces import CropPolicy, crop_face, landmarks_in_crop

    policy, size = CropPolicy("box", 0.25, 0.5), 256
    spots = []
    for x, y in ((40, 120), (700, 300)):
        pic = pasted(portrait("astronaut"), 1280, 900, x, y, seed=x)
        (face,) = finder.find(pic)
        crop, affine = crop_face(pic, face, policy, size)
        x0, y0 = int(-affine[0, 2]), int(-affine[1, 2])
        assert np.allclose(affine[:, :2], np.eye(2))  # a window at scale 1: no resampling
        assert np.array_equal(np.asarray(crop), np.asarray(pic)[y0:y0 + size, x0:x0 + size])
        spots.append(landmarks_in_crop(face, affine, size))
    assert np.abs(spots[0] - spots[1]).max() * size <= 2  # the face sits at the same place in both crops


def test_align_puts_the_eyes_where_the_template_says(finder):
    from deepfake_detector.core.faces import ALIGN_TEMPLATE, CropPolicy, crop_face

    size, margin = 256, 0.25
    expected = (0.5 + (ALIGN_TEMPLATE[:2] - 0.5) / (1 + 2 * margin)) * size
    for name in ("astronaut", "grace_hopper"):
        pic = portrait(name).rotate(8, resample=Image.Resampling.BILINEAR, expand=True)
        (face,) = finder.find(pic)
        crop, _ = crop_face(pic, face, CropPolicy("align", margin, 0.5), size)
        (again,) = finder.find(crop)
        eyes = again.five_points()[:2]
        assert np.abs(eyes - expected).max() < 0.04 * size, (name, eyes, expected)


def test_the_operating_point_keeps_the_real_fpr_the_user_chose():
    from deepfake_detector.core.metrics import choose_threshold

    for seed in range(3):
        rng = np.random.default_rng(seed)
        y = np.r_[np.zeros(400, int), np.ones(200, int)]
        p = np.r_[rng.beta(2, 5, 400), rng.beta(5, 2, 200)]
        for max_fpr in (0.01, 0.05, 0.2):
            t = choose_threshold(y, p, "max_fpr", max_fpr)
            fpr = (p[y == 0] >= t).mean()
            assert fpr <= max_fpr
            best = max((p[y == 1] >= c).mean() for c in p if (p[y == 0] >= c).mean() <= max_fpr)
            assert (p[y == 1] >= t).mean() == best  # the most recall any threshold gets at that FPR
        assert choose_threshold(y, p, "max_fpr", 0.01) > choose_threshold(y, p, "youden")


@pytest.fixture(scope="module")
def face_model(tmp_path_factory):
    """validate (faces found, one per picture) -> split -> train (policy box) on the portraits' face set, plus a
    faceless and a two-face picture among the reals."""
    from deepfake_detector.core.params import load_params
    from deepfake_detector.data.split import split
    from deepfake_detector.data.validate import validate
    from deepfake_detector.model.train import train

    work = tmp_path_factory.mktemp("faces")
    data = face_set(work / "data", per_label=12)
    background(300, 300, seed=1).save(data / "real" / "no_face.png")
    two_faces().save(data / "real" / "two_faces.jpg")
    p = load_params(write_params(work / "params.yaml", faces={"policy": "box"},
                                 validate={"label_issue": {"features": "cheap"}, "near_duplicate_distance": -1},
                                 train={"image_size": 64, "epochs": 1, "batch_size": 8}))
    metrics = validate(data, work / "clean", work / "reports", p.validate_, p.decode_limits(), p.seed,
                       progress=False, faces=p.faces)
    split(work / "clean", work / "splits", work / "reports/split", p.split, p.seed)
    train(work / "splits", work / "model", work / "reports/train", p, ckpt_dir=work / "ckpt", progress=False,
          cache_dir=work / "cache")
    return work, metrics


def test_validate_rejects_pictures_with_no_face_or_several_with_that_reason_in_data_docs(face_model):
    work, metrics = face_model
    assert metrics["rejected_by_reason"]["no_face"] == 1 and metrics["rejected_by_reason"]["several_faces"] == 1
    rejected = {r["path"]: r for r in csv.DictReader(open(work / "reports/rejected.csv"))}
    assert rejected["real/no_face.png"]["reason"] == "no_face"
    assert rejected["real/two_faces.jpg"]["reason"] == "several_faces"
    assert "2 faces found" in rejected["real/two_faces.jpg"]["detail"]
    manifest = list(csv.DictReader(open(work / "clean/manifest.csv")))
    assert len(manifest) == 24 and all(json.loads(r["face"])["box"] for r in manifest)  # the landmarks travel on
    docs = "".join(p.read_text(errors="ignore") for p in (work / "reports/data_docs").rglob("*.html"))
    assert "n_faces" in docs and "no_face" in json.dumps(json.loads((work / "reports/gx_result.json").read_text()))


def test_each_face_of_a_photo_gets_its_answer_and_the_most_suspicious_is_the_verdict(face_model):
    from deepfake_detector.core.faces import FaceOptions
    from deepfake_detector.serving.detector import Detector

    work, _ = face_model
    det = Detector.load(work / "model", params=work / "params.yaml")
    assert det.crop.policy == "box"
    photo, empty = det.predict([two_faces(), background(500, 400, seed=5)])
    assert photo.status == "ok" and photo.n_faces == 2 and len(photo.faces) == 2
    probs = [f.fake_probability for f in photo.faces]
    assert photo.face == int(np.argmax(probs)) and photo.fake_probability == max(probs)
    left, right = sorted(photo.faces, key=lambda f: f.box[0])
    assert left.box[2] < 560 < right.box[0]  # one box on each portrait
    assert empty.status == "no_face" and empty.fake_probability is None and empty.faces == ()
    whole = Detector.load(work / "model", params=work / "params.yaml", faces=FaceOptions(no_face="whole"))
    (scored,) = whole.predict([background(500, 400, seed=5)])
    assert scored.scored_whole and scored.fake_probability is not None and scored.n_faces == 0


def test_a_face_pasted_into_a_photo_is_seen_as_its_crop(face_model):
    """The model's input from a face inside a larger photo matches its input from the face's own crop file (the
    detector's box moves by a pixel or two between the two: the crop policy, not the picture, sets the frame)."""
    from deepfake_detector.serving.detector import Detector

    work, _ = face_model
    det = Detector.load(work / "model", params=work / "params.yaml")
    files = sorted((work / "data/real").glob("r00*.png"))[:3] + sorted((work / "data/fake").glob("f00*.png"))[:3]
    for k, path in enumerate(files):
        face = Image.open(path).convert("RGB")
        photo = pasted(face, 900 + 40 * k, 700, 60 + 90 * k, 50 + 40 * k, seed=k)
        _, (alone,), _, _ = det.face_crops(face)
        _, (inside,), n, _ = det.face_crops(photo)
        whole = np.asarray(photo.resize((det.image_size, det.image_size)), np.float32)
        gap = np.abs(np.asarray(alone.image, np.float32) - np.asarray(inside.image, np.float32)).mean()
        assert n == 1 and gap < 0.4 * np.abs(np.asarray(alone.image, np.float32) - whole).mean(), gap
    alone = det.predict([str(p) for p in files])
    in_photos = det.predict([pasted(Image.open(p).convert("RGB"), 1000, 800, 300, 200, seed=9) for p in files])
    assert np.abs(np.array([a.fake_probability - b.fake_probability for a, b in zip(alone, in_photos)])).max() < 0.15


def test_dfd_predict_writes_one_csv_row_per_face_with_its_box(face_model, tmp_path):
    work, _ = face_model
    two_faces().save(tmp_path / "group.jpg")
    background(300, 200, seed=2).save(tmp_path / "wall.png")
    proc = subprocess.run([str(BIN / "dfd"), "predict", str(tmp_path / "group.jpg"), str(tmp_path / "wall.png"),
                           "--model", str(work / "model"), "--params", str(work / "params.yaml"), "--format", "csv",
                           "--explain", str(tmp_path / "cam"), "--no-progress"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    group = [r for r in rows if r["path"].endswith("group.jpg")]
    assert len(group) == 2 and {r["face"] for r in group} == {"0", "1"}
    assert [r["verdict"] for r in group].count("True") == 1
    assert all(len(r["box"].split()) == 4 for r in group)
    (wall,) = [r for r in rows if r["path"].endswith("wall.png")]
    assert wall["status"] == "no_face" and wall["fake_probability"] == ""
    overlay = Image.open(group[0]["explanation"])
    assert overlay.size == (1100, 640)  # the heat is drawn on the photo, not on the crop


def test_the_service_answers_per_face(face_model):
    from deepfake_detector.core.params import load_params
    from deepfake_detector.serving.detector import Detector
    from deepfake_detector.serving.serve import create_app
    from test_serve import Server, httpx

    work, _ = face_model
    p = load_params(work / "params.yaml")
    det = Detector.load(work / "model", params=work / "params.yaml")
    buf = io.BytesIO()
    two_faces().save(buf, "JPEG")
    with Server(create_app(det, p.serve.model_copy(update={"request_log": str(work / "requests.jsonl")}))) as srv:
        r = httpx.post(f"{srv.url}/predict", files=[("files", ("group.jpg", buf.getvalue(), "image/jpeg"))], timeout=60)
    assert r.status_code == 200
    (res,) = r.json()["results"]
    assert res["face_status"] == "ok" and len(res["faces"]) == 2 and res["n_faces"] == 2
    assert res["fake_probability"] == max(f["fake_probability"] for f in res["faces"])
    expected = det.predict([Image.open(buf)])[0]
    assert [f["box"] for f in res["faces"]] == [list(f.box) for f in expected.faces]
    logged = json.loads((work / "requests.jsonl").read_text().splitlines()[-1])
    assert logged["face_status"] == "ok" and len(logged["faces"]) == 2
