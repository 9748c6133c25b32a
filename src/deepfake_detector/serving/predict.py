"""Ask "is this face image fake?" of files, folders or globs; optional Grad-CAM overlays.

    dfd predict img.jpg faces/ 'more/*.png' --format table|json|csv [--explain heatmaps/] [--runtime onnx]
    dfd predict img.jpg --model detector@prod            # a registry ref (serving/registry.py)
    dfd predict photo.jpg --crop-faces      # not an aligned face crop: find the largest face first

Per image: fake probability, label from the threshold stored with the model, "uncertain" when
the probability is within the band (params.yaml serve.uncertainty_band, or `--band`) of that
threshold, and the model version. Images go through the model in batches (serve.batch_size).
Unreadable files get an error entry; the rest are still scored (the CLI exits 1 if any failed).
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..core.images import decode_image, image_files, to_tensor


def expand(inputs: list[str]) -> list[str]:
    """Files as given, folders recursively (core.images.image_files), globs expanded; order kept, no repeats."""
    out: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            out += [str(p) for p in image_files(path)]
        elif any(ch in item for ch in "*?["):
            out += sorted(glob.glob(item, recursive=True))
        else:
            out.append(item)
    return list(dict.fromkeys(out))


@functools.lru_cache(maxsize=1)
def _face_cascade():
    import cv2  # OpenCV's bundled Haar cascade: works offline, no model download

    return cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))


def detect_face(img: Image.Image, margin: float) -> tuple[int, int, int, int] | None:
    """Box (x0, y0, x1, y1) around the largest frontal face, widened by margin x its side on every edge
    (serve.face_crop_margin); None if no face."""
    faces = _face_cascade().detectMultiScale(np.array(img.convert("L")), scaleFactor=1.1, minNeighbors=4,
                                             minSize=(24, 24))
    if len(faces) == 0:
        return None
    x, y, w, h = (int(v) for v in max(faces, key=lambda f: f[2] * f[3]))
    m = int(margin * max(w, h))
    return max(0, x - m), max(0, y - m), min(img.width, x + w + m), min(img.height, y + h + m)


def grad_cam(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Grad-CAM for the predicted class: (B, 3, H, W) in [0,1] -> (B, H, W) heatmaps in [0,1].

    Uses the detector's `cam_layer()` (stride 16: 14x14 at 224 px, 4x4 at 64 px): the final map is too
    coarse. The target is the logit for "fake" images and its negation for "real" ones.
    """
    model.eval()
    store: dict[str, torch.Tensor] = {}

    def hook(_module, _inp, out):
        out.retain_grad()
        store["act"] = out

    handle = model.cam_layer().register_forward_hook(hook)
    try:
        logits = model(x.clone().requires_grad_(True))
    finally:
        handle.remove()
    torch.where(logits >= 0, logits, -logits).sum().backward()
    act = store["act"]  # (B, C, h, w)
    weights = act.grad.mean((2, 3), keepdim=True)
    cam = torch.relu((weights * act).sum(1, keepdim=True))  # (B, 1, h, w)
    cam = torch.nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    cam = cam - cam.amin((1, 2), keepdim=True)
    return (cam / cam.amax((1, 2), keepdim=True).clamp_min(1e-8)).detach()


def overlay(img: Image.Image, heat: np.ndarray) -> Image.Image:
    """Red-yellow heatmap blended over the image (heat in [0,1], any size)."""
    h = Image.fromarray((heat * 255).astype(np.uint8)).resize(img.size, Image.Resampling.BILINEAR)
    h = np.asarray(h, np.float32) / 255
    color = np.stack([np.ones_like(h), h, np.zeros_like(h)], -1) * 255
    base = np.asarray(img.convert("RGB"), np.float32)
    alpha = 0.5 * h[..., None]
    return Image.fromarray((base * (1 - alpha) + color * alpha).astype(np.uint8))


def predict(inputs: list[str], model: str | Path, band: float | None = None, explain_dir: str | Path | None = None,
            runtime: str = "torch", crop_faces: bool = False, progress: bool = True, batch_size: int | None = None,
            repo: str | Path = ".", params: str | Path | None = None,
            face_margin: float | None = None) -> list[dict[str, Any]]:
    """One row per expanded input (path, fake_probability, label, uncertain, threshold, model_version, or
    error); `model` is a folder or a registry ref. Images are scored batch_size at a time. face_margin:
    serve.face_crop_margin unless given."""
    from ..model.augment import to_input
    from ..model.scoring import TorchScorer
    from .detector import Detector, error_text

    det = Detector.load(model, runtime, band, batch_size, repo=repo, params=params)
    if crop_faces and face_margin is None:
        from ..core.params import load_params

        face_margin = load_params(Path(params) if params else Path(repo) / "params.yaml").serve.face_crop_margin
    cam_model = (det.scorer if isinstance(det.scorer, TorchScorer) else TorchScorer(det.model_dir)).model \
        if explain_dir is not None else None
    if explain_dir is not None:
        Path(explain_dir).mkdir(parents=True, exist_ok=True)
    paths = expand(inputs)
    rows: list[dict[str, Any]] = []
    batch: list[tuple[dict, Image.Image]] = []

    def flush() -> None:
        for (row, img), pred in zip(batch, det.predict([img for _, img in batch])):
            row.update({k: v for k, v in pred.to_dict().items() if k != "source"})
            if cam_model is not None:
                heat = grad_cam(cam_model, to_input(to_tensor(img, det.image_size)[None], det.image_size))[0].numpy()
                tag = hashlib.sha1(str(Path(row["path"]).resolve()).encode()).hexdigest()[:8]  # a/x.jpg != b/x.jpg
                out = Path(explain_dir) / f"{Path(row['path']).stem}_{tag}_gradcam.png"
                overlay(img, heat).save(out)
                row["explanation"] = str(out)
        batch.clear()

    for path in tqdm(paths, desc="predict", unit="img", disable=not progress or len(paths) < 2):
        row: dict[str, Any] = {"path": path}
        rows.append(row)
        try:
            img = decode_image(path, det.limits)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the rest
            row["error"] = error_text(exc)
            continue
        box = detect_face(img, face_margin) if crop_faces else None
        if box is not None:
            img = img.crop(box)
        if crop_faces:  # no face found: the whole image was scored, and the row says so
            row["crop_box"] = list(box) if box is not None else None
        batch.append((row, img))
        if len(batch) == det.batch_size:
            flush()
    if batch:
        flush()
    return rows
