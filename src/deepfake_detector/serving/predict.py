"""Ask "is this face fake?" of the photos in files, folders or globs: one row per face; optional Grad-CAM.

    dfd predict photo.jpg faces/ 'more/*.png' --format table|json|csv [--explain heatmaps/] [--runtime onnx]
    dfd predict img.jpg --model detector@prod            # a registry ref (serving/registry.py)

Each face found in a picture (core/faces.py: dlib's detector and 68 landmarks) is cropped as the model's training
data were (the crop policy stored with the model) and scored: one row per face with its box (x0, y0, x1, y1 in
picture pixels), fake probability, label from the model's stored threshold, "uncertain" within the band
(serve.uncertainty_band or `--band`), novelty/unfamiliar, and `verdict` true on the picture's most suspicious face
(the picture's answer). A picture with no face gets one row with status no_face (faces.no_face: whole scores the
whole picture instead); a model trained on whole pictures (faces.policy: whole) scores the whole picture. Pictures
go through the model in batches (serve.batch_size). Unreadable files get an error row; the rest are still scored
(the CLI exits 1 if any failed). `--explain`: one overlay per picture, each face's Grad-CAM drawn back onto it.
"""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..core.images import image_files, to_tensor


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


def explain_picture(cam_model: torch.nn.Module, img: Image.Image, crops: list, size: int) -> Image.Image:
    """The picture with each face's Grad-CAM (of its crop) warped back onto the face (core.faces affine)."""
    import cv2

    from ..model.augment import to_input

    heat = np.zeros((img.height, img.width), np.float32)
    for c in crops:
        cam = grad_cam(cam_model, to_input(to_tensor(c.image, size)[None], size))[0].numpy()
        back = cv2.warpAffine(cam.astype(np.float32), np.asarray(c.affine, np.float64), (img.width, img.height),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=0)
        heat = np.maximum(heat, back)
    return overlay(img, heat)


FACE_FIELDS = ("fake_probability", "label", "uncertain", "novelty", "unfamiliar")


def picture_rows(path: str, pred) -> list[dict[str, Any]]:
    """A Prediction as rows: one per face (face index, box, its scores, verdict on the most suspicious one), or one
    row with the status (no_face) or the error."""
    base = {"path": path, "status": pred.status, "n_faces": pred.n_faces, "model_version": pred.model_version,
            "threshold": pred.threshold}
    if pred.error is not None or not pred.faces:
        return [{**base, **({"error": pred.error} if pred.error else {})}]
    rows = []
    for k, f in enumerate(pred.faces):
        d = f.to_dict()
        rows.append({**base, "face": k, "box": " ".join(map(str, d["box"])), "verdict": k == pred.face,
                     "scored_whole": pred.scored_whole, **{c: d.get(c) for c in FACE_FIELDS}})
    return rows


def predict(inputs: list[str], model: str | Path, band: float | None = None, explain_dir: str | Path | None = None,
            runtime: str = "torch", progress: bool = True, batch_size: int | None = None,
            repo: str | Path = ".", params: str | Path | None = None) -> list[dict[str, Any]]:
    """Rows for the expanded inputs: one per face (picture_rows); `model` is a folder or a registry ref. Pictures
    are scored batch_size at a time."""
    from ..model.scoring import TorchScorer
    from .detector import Detector

    det = Detector.load(model, runtime, band, batch_size, repo=repo, params=params)
    cam_model = (det.scorer if isinstance(det.scorer, TorchScorer) else TorchScorer(det.model_dir)).model \
        if explain_dir is not None else None
    if explain_dir is not None:
        Path(explain_dir).mkdir(parents=True, exist_ok=True)
    paths = expand(inputs)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(paths), desc="predict", unit="img", disable=not progress or len(paths) < 2)
    for start in range(0, len(paths), det.batch_size):
        chunk = paths[start:start + det.batch_size]
        crops: list = [] if cam_model is not None else None
        preds = det.predict(chunk, crops_out=crops)
        explained = {}
        for i, img, face_crops in crops or []:
            if face_crops:
                tag = hashlib.sha1(str(Path(chunk[i]).resolve()).encode()).hexdigest()[:8]  # a/x.jpg != b/x.jpg
                out = Path(explain_dir) / f"{Path(chunk[i]).stem}_{tag}_gradcam.png"
                explain_picture(cam_model, img, face_crops, det.image_size).save(out)
                explained[i] = str(out)
        for i, (path, pred) in enumerate(zip(chunk, preds)):
            for row in picture_rows(path, pred):
                if i in explained:
                    row["explanation"] = explained[i]
                rows.append(row)
        bar.update(len(chunk))
    bar.close()
    return rows
