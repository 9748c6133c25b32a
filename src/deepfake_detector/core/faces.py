"""Faces, not files: find every face, its 68 landmarks, and the crop the model sees.

    finder = FaceFinder(p.faces)                       # dlib HOG detector + 68-point shape predictor, loaded once
    faces = finder.find(rgb_pil)                       # [Face(box, landmarks, score)], largest first
    crop, affine = crop_face(rgb_pil, faces[0], p.faces.policy_for_crop(), 256)   # a 256 x 256 RGB crop

One module for every path: validation (`no_face` / `several_faces` rejections; the landmarks of each kept image
are a column of the cleaned manifest, cached by content like the rest of the per-file results), training,
evaluation and drift (each row is cropped from its stored landmarks), `dfd predict`, `Detector.predict` and
`dfd serve` (each face found in the picture is cropped and scored). The crop policy travels with the model
(`detector.pt` `face_crop`), so prediction crops exactly as training did.

Crop policies (`faces.policy`):
- `box`: the square around the 68 landmarks, raised by `centre_up` x its side (the points stop at the brows) and
  widened by `margin` x its side on each edge. When that square is between `native_min` x and 1 x the model's
  input size, the model's input-sized window around it is taken unresampled (a face already at the model's size is
  never resampled); otherwise the square is resized. The square never leaves the picture (no padding): a picture
  that is already a tight crop is used whole, and a window near an edge is shifted inside.
- `align`: a similarity warp of five landmark points (eye centres, nose tip, mouth corners) to fixed
  positions in the crop (`ALIGN_TEMPLATE`, widened by `margin`): every source gets the same geometry.
- `whole`: no face finding; the whole picture is the input (the demo data's drawn faces, or data that is
  already cropped by a detector you trust).

Licences: dlib (Boost); the 68-point model of `face-recognition-models` was trained on iBUG 300-W, whose
terms exclude commercial use (docs/model.md). The detector is dlib's HOG frontal-face detector: measured
against the CNN (MMOD) detector and OpenCV's Haar cascade in docs/results.md "Finding faces".
No torch here: validation workers import this module.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

N_LANDMARKS = 68
LANDMARK_MODEL = "shape_predictor_68_face_landmarks.dat"  # in face-recognition-models (iBUG 300-W: non-commercial)
# Five reference points in a unit crop (ArcFace's 112 px template / 112): left eye, right eye, nose tip, mouth
# corners. `align` widens them around the centre by 1 / (1 + 2 margin).
ALIGN_TEMPLATE = np.array([[0.3419, 0.4616], [0.6565, 0.4598], [0.5002, 0.6405], [0.3710, 0.8247],
                           [0.6315, 0.8232]])


@dataclass(frozen=True)
class CropPolicy:
    """How a face becomes the model's input; stored with the model (`to_dict`) and read back by predict/serve."""

    policy: str = "whole"  # box | align | whole
    margin: float = 0.25
    native_min: float = 0.5
    centre_up: float = 0.25  # box: the square's centre sits this x its side above the landmarks' centre

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "margin": self.margin, "native_min": self.native_min,
                "centre_up": self.centre_up}

    @classmethod
    def from_dict(cls, d: dict | None) -> "CropPolicy":
        """A model's stored policy; models from before faces existed scored the whole image."""
        return cls() if not d else cls(str(d["policy"]), float(d["margin"]), float(d["native_min"]),
                                       float(d.get("centre_up", 0.0)))

    @property
    def finds_faces(self) -> bool:
        return self.policy != "whole"


@dataclass(frozen=True)
class Face:
    """One face: detector box (x0, y0, x1, y1) in picture pixels, (68, 2) landmarks, detector score."""

    box: tuple[int, int, int, int]
    landmarks: np.ndarray
    score: float

    def to_json(self) -> str:
        """The compact record the cleaned manifest and the split CSVs hold (`face` column)."""
        return json.dumps({"box": list(self.box), "score": round(self.score, 3),
                           "lm": [int(v) for v in np.rint(self.landmarks).astype(int).ravel()]},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> "Face | None":
        if not isinstance(text, str) or not text.strip():
            return None
        d = json.loads(text)
        return cls(tuple(int(v) for v in d["box"]), np.asarray(d["lm"], np.float64).reshape(N_LANDMARKS, 2),
                   float(d.get("score", 0.0)))

    def landmark_box(self) -> tuple[float, float, float, float]:
        lm = self.landmarks
        return float(lm[:, 0].min()), float(lm[:, 1].min()), float(lm[:, 0].max()), float(lm[:, 1].max())

    def five_points(self) -> np.ndarray:
        """(5, 2): eye centres, nose tip, mouth corners (the 68-point iBUG layout)."""
        lm = self.landmarks
        return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


@dataclass(frozen=True)
class FinderSettings:
    """faces.* settings the finder uses (core.params.FacesParams.finder())."""

    upsample: int = 1  # dlib's image pyramid upsampling: 1 finds faces down to ~40 px, 0 down to ~80 px
    max_side: int = 1024  # pictures larger than this are downscaled for detection only (landmarks at full size)
    min_face: int = 40  # detections smaller than this (px, box side in the picture) are ignored
    min_score: float = 0.0  # dlib HOG detection score threshold
    min_score_extra: float = 0.3  # a picture's second and further faces count only from this score


@functools.lru_cache(maxsize=1)
def _dlib_models() -> tuple[Any, Any]:
    """dlib's HOG detector and the 68-point shape predictor from the installed face-recognition-models package."""
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")  # its __init__ needs pkg_resources: not imported
    try:
        import dlib
    except ImportError as exc:  # pragma: no cover - both are project dependencies
        raise RuntimeError("face finding needs the `dlib-bin` and `face-recognition-models` packages "
                           "(pip install -e .)") from exc
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face finding needs the `face-recognition-models` package (pip install -e .)")
    model = Path(list(spec.submodule_search_locations)[0]) / "models" / LANDMARK_MODEL
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(model))


class FaceFinder:
    """Finds faces and their 68 landmarks in RGB pictures; models load once per process."""

    def __init__(self, settings: FinderSettings | None = None) -> None:
        self.s = settings or FinderSettings()

    def find(self, img: Image.Image | np.ndarray) -> list[Face]:
        """Every face of at least min_face px, largest first. Small pictures are searched with upsample 0
        first (4x cheaper) and again with the configured upsampling only when that finds nothing."""
        import dlib

        detector, predictor = _dlib_models()
        rgb = np.ascontiguousarray(np.asarray(img.convert("RGB") if isinstance(img, Image.Image) else img, np.uint8))
        h, w = rgb.shape[:2]
        scale = min(1.0, self.s.max_side / max(h, w))
        small = rgb if scale == 1.0 else np.asarray(Image.fromarray(rgb).resize(
            (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR))
        rects: list = []
        for up in sorted({0, self.s.upsample}):
            rects, scores, _ = detector.run(small, up, self.s.min_score)
            if len(rects):
                break
        faces = []
        for rect, score in zip(rects, scores):
            x0, y0, x1, y1 = (v / scale for v in (rect.left(), rect.top(), rect.right(), rect.bottom()))
            if min(x1 - x0, y1 - y0) < self.s.min_face:
                continue
            full = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))
            shape = predictor(rgb, full)
            lm = np.array([[shape.part(i).x, shape.part(i).y] for i in range(N_LANDMARKS)], np.float64)
            box = (max(0, int(round(x0))), max(0, int(round(y0))), min(w, int(round(x1))), min(h, int(round(y1))))
            faces.append(Face(box, lm, float(score)))
        faces.sort(key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        best = max(faces, key=lambda f: f.score, default=None)  # the surest face always counts; others need more
        return [f for f in faces if f is best or f.score >= self.s.min_score_extra]


def _square(face: Face, margin: float, centre_up: float) -> tuple[float, float, float]:
    """(centre x, centre y, side) of the landmark box made square, its centre raised by centre_up x its side (the 68
    points stop at the brows: the forehead is above them), widened by margin x side per edge."""
    x0, y0, x1, y1 = face.landmark_box()
    s = max(x1 - x0, y1 - y0)
    return (x0 + x1) / 2, (y0 + y1) / 2 - centre_up * s, s * (1 + 2 * margin)


def crop_region(face: Face, policy: CropPolicy, size: int, width: int, height: int) -> np.ndarray:
    """The 2x3 affine map from picture pixels to crop pixels (a size x size crop) for policy box or align."""
    if policy.policy == "align":
        import cv2

        dst = (0.5 + (ALIGN_TEMPLATE - 0.5) / (1 + 2 * policy.margin)) * size
        m, _ = cv2.estimateAffinePartial2D(face.five_points().astype(np.float32), dst.astype(np.float32),
                                           method=cv2.LMEDS)
        if m is None:  # degenerate points: fall back to the box
            return crop_region(face, CropPolicy("box", policy.margin, policy.native_min), size, width, height)
        return m
    cx, cy, side = _square(face, policy.margin, policy.centre_up)
    if policy.native_min * size <= side <= size:  # the face is at the model's size: the input-sized window,
        side = float(size)                         # unresampled
    side = min(side, float(width), float(height))  # never beyond the picture (no padding: a tight crop is used whole)
    x0 = min(max(cx - side / 2, 0.0), width - side)  # shifted to stay inside the picture
    y0 = min(max(cy - side / 2, 0.0), height - side)
    if side == size:
        x0, y0 = float(round(x0)), float(round(y0))  # whole pixels: a pure copy
    s = size / side
    return np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]])


def apply_crop(img: Image.Image, affine: np.ndarray, size: int) -> Image.Image:
    """The size x size crop of img under affine (picture -> crop px). An integer translation is a plain copy;
    a downscale is antialiased (INTER_AREA), anything else bilinear; outside the picture: edge pixels."""
    import cv2

    a = np.asarray(affine, np.float64)
    rgb = np.asarray(img.convert("RGB"))
    if np.allclose(a[:, :2], np.eye(2)) and np.allclose(a[:, 2], np.round(a[:, 2])):
        x0, y0 = int(round(-a[0, 2])), int(round(-a[1, 2]))
        if x0 >= 0 and y0 >= 0 and x0 + size <= rgb.shape[1] and y0 + size <= rgb.shape[0]:
            return Image.fromarray(np.ascontiguousarray(rgb[y0:y0 + size, x0:x0 + size]))
    scale = float(np.sqrt(abs(np.linalg.det(a[:, :2]))))
    interp = cv2.INTER_AREA if scale < 1 and np.allclose(a[0, 1], 0) else cv2.INTER_LINEAR
    if interp == cv2.INTER_AREA:  # axis-aligned downscale: crop, then an area resize (antialiased)
        side = size / scale
        x0, y0 = -a[0, 2] / scale, -a[1, 2] / scale
        pad = int(np.ceil(side)) + 2
        padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        xs, ys = int(round(x0)) + pad, int(round(y0)) + pad
        region = padded[ys:ys + int(round(side)), xs:xs + int(round(side))]
        return Image.fromarray(cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA))
    out = cv2.warpAffine(rgb, a, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE)
    return Image.fromarray(out)


def crop_affine(face: Face | None, policy: CropPolicy, size: int, width: int, height: int,
                out_size: int | None = None) -> np.ndarray:
    """The 2x3 map picture px -> crop px. The crop is chosen for a size x size model input; out_size > size widens
    the window around it at the same pixel scale (room for training's random resized crop)."""
    if not policy.finds_faces or face is None:
        o = out_size or size
        return np.array([[o / width, 0.0, 0.0], [0.0, o / height, 0.0]])
    a = crop_region(face, policy, size, width, height)
    if out_size and out_size != size:
        wide = a.copy()
        wide[:, 2] += (out_size - size) / 2
        inv = np.linalg.inv(np.vstack([wide, [0, 0, 1]]))[:2]
        corners = np.array([[0, 0], [out_size, out_size]], np.float64) @ inv[:, :2].T + inv[:, 2]
        inside = corners.min() >= 0 and corners[1, 0] <= width and corners[1, 1] <= height
        a = wide if inside else a * (out_size / size)  # the picture has no room around the crop: the same crop, larger
    return a


def crop_face(img: Image.Image, face: Face | None, policy: CropPolicy, size: int,
              out_size: int | None = None) -> tuple[Image.Image, np.ndarray]:
    """(out_size x out_size crop, affine picture -> crop). policy whole (or no face): the whole picture, resized."""
    o = out_size or size
    affine = crop_affine(face, policy, size, img.width, img.height, out_size)
    if not policy.finds_faces or face is None:
        rgb = img if img.size == (o, o) else img.resize((o, o), Image.Resampling.BILINEAR, reducing_gap=None)
        return rgb, affine
    return apply_crop(img, affine, o), affine


@dataclass(frozen=True)
class FaceInput:
    """How a stored row (or a picture never looked at) becomes the model's input: the crop policy, and the finder
    for rows whose face was never recorded. `face_json` per row: a Face record, "" (none recorded: the whole
    picture) or None (not looked for: found now, the largest face)."""

    policy: CropPolicy
    finder: FinderSettings

    @classmethod
    def for_model(cls, face_crop: dict | None, finder: FinderSettings | None = None) -> "FaceInput":
        """A trained model's input rule: its stored crop policy (None: a whole-picture model), rows without a
        stored face searched with finder (default settings when None)."""
        return cls(CropPolicy.from_dict(face_crop), finder or FinderSettings())

    def crop(self, img: Image.Image, face_json: str | None, size: int, out_size: int | None = None) -> Image.Image:
        if not self.policy.finds_faces:
            return img
        face = FaceFinder(self.finder).find(img)[:1] if face_json is None else [Face.from_json(face_json)]
        return crop_face(img, face[0] if face else None, self.policy, size, out_size)[0]


@dataclass(frozen=True)
class FaceOptions:
    """What prediction does with a picture's faces (faces.* in params.yaml: FacesParams.options())."""

    finder: FinderSettings = FinderSettings()
    no_face: str = "skip"  # skip: status no_face, nothing scored | whole: the whole picture is scored instead
    max_faces: int = 8  # the largest this many faces are scored; the answer says how many were found


@dataclass(frozen=True)
class FaceCrop:
    box: tuple[int, int, int, int]  # the face detector's box (whole: the picture) in picture pixels
    image: Image.Image  # size x size model input
    affine: np.ndarray  # picture px -> crop px (explanations are drawn back through it)


def picture_faces(img: Image.Image, policy: CropPolicy, options: FaceOptions,
                  size: int) -> tuple[str, list[FaceCrop], int | None, bool]:
    """(status ok | no_face, one crop per face (largest first, at most max_faces), faces found (None: a
    whole-picture model), whether the whole picture is the input). The one path from a picture to the model's
    inputs for `Detector.predict`, `dfd predict` and the service's decode workers."""
    whole_box = (0, 0, img.width, img.height)
    if not policy.finds_faces:
        crop, affine = crop_face(img, None, policy, size)
        return "ok", [FaceCrop(whole_box, crop, affine)], None, True
    faces = FaceFinder(options.finder).find(img)
    if not faces:
        if options.no_face == "whole":
            crop, affine = crop_face(img, None, CropPolicy("whole"), size)
            return "ok", [FaceCrop(whole_box, crop, affine)], 0, True
        return "no_face", [], 0, False
    crops = []
    for face in faces[:options.max_faces]:
        crop, affine = crop_face(img, face, policy, size)
        crops.append(FaceCrop(face.box, crop, affine))
    return "ok", crops, len(faces), False


def face_column(frame: Any) -> list[str | None]:
    """The `face` records of a split/manifest frame: None for every row when the frame has no such column."""
    if "face" not in frame:
        return [None] * len(frame)
    return [v if isinstance(v, str) else "" for v in frame["face"]]


def landmarks_in_crop(face: Face, affine: np.ndarray, size: int) -> np.ndarray:
    """(68, 2) landmarks in the crop, as fractions of its side (what self-blending draws its hull from)."""
    pts = face.landmarks @ np.asarray(affine)[:, :2].T + np.asarray(affine)[:, 2]
    return pts / size


def crop_box_in_picture(affine: np.ndarray, size: int) -> list[int]:
    """The crop's square in picture pixels (x0, y0, x1, y1): where an explanation is drawn back."""
    inv = np.linalg.inv(np.vstack([affine, [0, 0, 1]]))[:2]
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64) @ inv[:, :2].T + inv[:, 2]
    return [int(round(corners[:, 0].min())), int(round(corners[:, 1].min())),
            int(round(corners[:, 0].max())), int(round(corners[:, 1].max()))]
