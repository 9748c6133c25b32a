"""The Python API: load a detector once, score images in batches.

    from deepfake_detector import Detector
    det = Detector.load("artifacts/model")             # a model folder, or a registry ref: "detector@prod"
    det.predict(["a.jpg", pil_image, uint8_array], batch_size=32)
    # [Prediction(fake_probability=0.93, label='fake', uncertain=False, model_version='v0.2.0', ...), ...]

Inputs are paths, PIL images or (H, W, 3) uint8 arrays: photos. Each face found in a picture is cropped as the
model's training data were (the crop policy stored with the model, core/faces.py) and scored; the picture's answer
is its most suspicious face, and `faces` lists every face with its box. A picture without a face gets status
"no_face" (or, with faces.no_face: whole, its whole picture is scored). A file that cannot be read, or that the decode limits
refuse (serve.formats, validate.max_pixels: core.images.decode_image), gives a Prediction with `error` set; the
rest are still scored. `dfd predict` and `dfd serve` are built on this class. Defaults (uncertainty band, batch
size, decode limits) come from params.yaml; arguments override them.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from ..core.faces import CropPolicy, FaceCrop, FaceOptions, picture_faces
from ..core.images import DecodeLimits, ImageRefused, decode_image, to_rgb, to_tensor
from ..model.scoring import load_scorer, verdict

@dataclass(frozen=True)
class FaceScore:
    """One face of a picture: where it is and what the model says of its crop."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in picture pixels (the face detector's box; whole: the picture)
    fake_probability: float
    label: str
    uncertain: bool
    novelty: float | None = None
    unfamiliar: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if k == "box" else v) for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Prediction:
    """A picture's answer. With faces: one FaceScore per face (largest first, at most faces.max_faces), and the
    picture's verdict is its most suspicious face (`face`: its index), whose fields are repeated at the top
    level. status: ok | no_face (nothing scored: faces.no_face skip) | error."""

    fake_probability: float | None
    label: str | None  # "fake" | "real"; None with an error or no face
    uncertain: bool | None  # within the uncertainty band of the stored threshold
    threshold: float
    model_version: str
    source: str  # the path, or "<PIL image>" / "<array>"
    error: str | None = None
    novelty: float | None = None  # how unlike the training images (model/novelty.py); None: the model has no novelty
    unfamiliar: bool | None = None  # novelty above the model's stored threshold: the verdict is not to be trusted
    status: str = "ok"  # ok | no_face | error
    face: int | None = None  # index of the most suspicious face in `faces`
    faces: tuple[FaceScore, ...] = ()
    n_faces: int | None = None  # faces found (may exceed len(faces): faces.max_faces); None: whole-picture model
    scored_whole: bool = False  # the whole picture was scored (a whole-picture model, or no face and no_face: whole)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, without the empty fields (no `error` key when the image was scored)."""
        out = {k: v for k, v in asdict(self).items() if v is not None and k not in ("faces", "scored_whole")}
        out["faces"] = [f.to_dict() for f in self.faces]
        if self.scored_whole:
            out["scored_whole"] = True
        return out


def content_version(model_dir: Path) -> str:
    """A folder's model version when no registry names it: the weights' own hash."""
    h = hashlib.sha256((model_dir / "detector.pt").read_bytes()).hexdigest() if (model_dir / "detector.pt").is_file() \
        else hashlib.sha256(b"".join(p.read_bytes() for p in sorted(model_dir.glob("*.json")))).hexdigest()
    return f"sha256:{h[:12]}"


def to_image(item: Any, limits: DecodeLimits) -> Image.Image:
    """Path, bytes, PIL image or (H, W, 3) uint8 array -> RGB PIL image (alpha composited, EXIF-rotated for files),
    within the decode limits (files: the format allowlist too)."""
    if isinstance(item, (str, Path, bytes)):
        return decode_image(item, limits)
    if isinstance(item, Image.Image):
        img = item
    elif isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim != 3 or item.shape[2] != 3:
            raise ValueError(f"arrays must be (H, W, 3) uint8 RGB, got {item.dtype} {item.shape}")
        img = Image.fromarray(item, "RGB")
    else:
        raise TypeError(f"cannot score a {type(item).__name__}: give a path, a PIL image or an (H, W, 3) uint8 array")
    if img.width * img.height > limits.max_pixels:
        raise ImageRefused("pixels", f"{img.width}x{img.height} pixels exceeds the {limits.max_pixels}-pixel cap")
    return to_rgb(img)


class Detector:
    """A loaded model: its scorer (torch or ONNX Runtime), threshold, input size, version, and the face crop it was
    trained on (`crop`: core.faces.CropPolicy, stored with the model; faces: what to do with a picture's faces)."""

    def __init__(self, model_dir: str | Path, band: float, batch_size: int, limits: DecodeLimits,
                 version: str | None = None, runtime: str = "torch", device: str = "cpu",
                 faces: FaceOptions | None = None) -> None:
        self.model_dir, self.limits, self.runtime = Path(model_dir), limits, runtime
        self.scorer = load_scorer(self.model_dir, device, runtime)
        self.version = version or content_version(self.model_dir)
        self.threshold, self.image_size = float(self.scorer.threshold), int(self.scorer.image_size)
        self.band, self.batch_size = band, batch_size
        self.crop = CropPolicy.from_dict(getattr(self.scorer, "face_crop", None))
        self.faces = faces or FaceOptions()

    @classmethod
    def load(cls, path_or_ref: str | Path, runtime: str = "torch", band: float | None = None,
             batch_size: int | None = None, device: str = "cpu", repo: str | Path = ".",
             params: str | Path | None = None, limits: DecodeLimits | None = None,
             faces: FaceOptions | None = None) -> "Detector":
        """A model folder, or a registry ref (`detector@prod`, `detector@v1.2.0`, `detector@latest`)
        resolved in `repo` (see serving/registry.py). band/batch_size default to params.yaml `serve`, the decode
        limits to its serve.formats and validate.max_pixels, the face options to its `faces`."""
        from .registry import is_ref, resolve

        band, batch_size, limits, faces = _defaults(band, batch_size, limits, faces,
                                                    Path(params) if params else Path(repo) / "params.yaml")
        if is_ref(str(path_or_ref)) and not Path(path_or_ref).exists():
            model_dir, version = resolve(str(path_or_ref), repo)
            return cls(model_dir, band, batch_size, limits, version, runtime, device, faces)
        if not Path(path_or_ref).is_dir():
            raise FileNotFoundError(f"{path_or_ref}: no such model folder (or give a registry ref: detector@prod)")
        return cls(path_or_ref, band, batch_size, limits, None, runtime, device, faces)

    def score_tensor(self, images: torch.Tensor) -> list[tuple[float, float | None]]:
        """uint8 (N, 3, S, S) at image_size -> (fake probability, novelty or None) per image, batch_size at a time."""
        out: list[tuple[float, float | None]] = []
        for i in range(0, len(images), self.batch_size):
            probs, novelty = self.scorer.score(images[i:i + self.batch_size])
            out += zip(probs.tolist(), novelty.tolist() if novelty is not None else [None] * len(probs))
        return out

    def face_crops(self, img: Image.Image) -> tuple[str, list[FaceCrop], int | None, bool]:
        """The model's inputs for one RGB picture (core.faces.picture_faces with this model's crop)."""
        return picture_faces(img, self.crop, self.faces, self.image_size)

    def face_score(self, box: Sequence[int], prob: float, novelty: float | None) -> FaceScore:
        threshold = getattr(self.scorer, "novelty_threshold", None)
        return FaceScore(tuple(int(v) for v in box), round(float(prob), 6),
                         **verdict(float(prob), self.threshold, self.band),
                         novelty=None if novelty is None else round(float(novelty), 4),
                         unfamiliar=None if novelty is None or threshold is None else bool(novelty > threshold))

    def compose(self, source: str, status: str, boxes: Sequence[Sequence[int]],
                scored: Sequence[tuple[float, float | None]], n_faces: int | None, whole: bool) -> Prediction:
        """A picture's Prediction from its faces' scores: the most suspicious face is the verdict."""
        faces = tuple(self.face_score(b, *s) for b, s in zip(boxes, scored))
        if not faces:
            return Prediction(None, None, None, self.threshold, self.version, source, status=status, faces=(),
                              n_faces=n_faces)
        top = max(range(len(faces)), key=lambda i: faces[i].fake_probability)
        f = faces[top]
        return Prediction(f.fake_probability, f.label, f.uncertain, self.threshold, self.version, source,
                          novelty=f.novelty, unfamiliar=f.unfamiliar, status=status, face=top, faces=faces,
                          n_faces=n_faces, scored_whole=whole)

    def failure(self, source: str, exc: Exception) -> Prediction:
        return Prediction(None, None, None, self.threshold, self.version, source, error_text(exc), status="error")

    def predict(self, images: Sequence[Any] | Any, batch_size: int | None = None,
                crops_out: list | None = None) -> list[Prediction]:
        """One Prediction per input picture, in order, with one FaceScore per face found (the model's crop
        policy); decoding errors become `error` entries. crops_out: receives each picture's (image, crops)."""
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        size = batch_size or self.batch_size
        out: list[Prediction | None] = [None] * len(items)
        for start in range(0, len(items), size):
            tensors, plans = [], []
            for i in range(start, min(start + size, len(items))):
                try:
                    img = to_image(items[i], self.limits)
                    status, crops, n_faces, whole = self.face_crops(img)
                except Exception as exc:  # noqa: BLE001 - one bad input must not stop the rest
                    out[i] = self.failure(_name(items[i]), exc)
                    continue
                tensors += [to_tensor(c.image, self.image_size) for c in crops]
                plans.append((i, status, crops, n_faces, whole))
                if crops_out is not None:
                    crops_out.append((i, img, crops))
            scored = self.score_tensor(torch.stack(tensors)) if tensors else []
            k = 0
            for i, status, crops, n_faces, whole in plans:
                out[i] = self.compose(_name(items[i]), status, [c.box for c in crops], scored[k:k + len(crops)],
                                      n_faces, whole)
                k += len(crops)
        return out  # type: ignore[return-value]

    def fake_probabilities(self, items: Sequence[Any]) -> np.ndarray:
        """The calibrated fake probability of each input (NaN where it cannot be scored): a label judge."""
        return np.array([np.nan if p.fake_probability is None else p.fake_probability for p in self.predict(list(items))])

    def info(self) -> dict[str, Any]:
        """What /model shows: version, threshold, input size, val metrics; no paths, no remotes."""
        import json

        card_path = self.model_dir / "model_card.json"
        card = json.loads(card_path.read_text()) if card_path.is_file() else {}
        return {"model_version": self.version, "threshold": self.threshold, "image_size": self.image_size,
                "uncertainty_band": self.band, "model": card.get("model"), "best_epoch": card.get("best_epoch"),
                "val_metrics": card.get("val_metrics"), "n_train": card.get("n_train"),
                "data_version": card.get("data_version")}


def _name(item: Any) -> str:
    return str(item) if isinstance(item, (str, Path)) else f"<{type(item).__name__}>"


def error_text(exc: Exception) -> str:
    """What an answer says went wrong: the refusal's own message, or the exception type and a cleaned text."""
    from ..core.images import clean_message

    return str(exc) if isinstance(exc, ImageRefused) else f"{type(exc).__name__}: {clean_message(exc)}"


def _defaults(band: float | None, batch_size: int | None, limits: DecodeLimits | None, faces: FaceOptions | None,
              params: Path) -> tuple[float, int, DecodeLimits, FaceOptions]:
    """params.yaml values where the caller gave none; no second copy of them lives here."""
    if band is not None and batch_size is not None and limits is not None:
        return band, batch_size, limits, faces or FaceOptions()
    if not params.is_file():
        raise FileNotFoundError(f"{params} not found: pass band=, batch_size= and limits= (or params=) "
                                "to Detector.load")
    from ..core.params import load_params

    p = load_params(params)
    s = p.serve
    return (s.uncertainty_band if band is None else band, s.batch_size if batch_size is None else batch_size,
            p.decode_limits() if limits is None else limits, p.faces.options() if faces is None else faces)
