"""How unlike the training images is an image? A novelty score from the detector's own features.

    nov = fit_novelty(train_feats, val_feats, p.novelty)        # in `train`, stored in detector.pt
    scores = novelty_scores(feats, nov)                          # per image; > nov["threshold"]: unfamiliar

Features: the detector's multi-layer embedding (`embedding`): global-average-pooled outputs of three backbone
stages and of the head conv, each standardised, then projected on their first `novelty.dims` principal
components (fitted on the training images). The pre-logit embedding alone collapses onto the real/fake
direction (it was trained to), so it is a poor judge of novelty; the earlier stages still describe what an
image looks like. Score: `knn` = mean cosine distance to the k nearest training images in that space (the
projected training embeddings are stored, float16), or `mahalanobis` = the Mahalanobis distance to their mean.
Threshold: the `novelty.quantile` of the val images' scores, so about 1 - quantile of images like the training
data are called unfamiliar. Measured per source in docs/results.md.
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.params import NoveltyParams
from .augment import to_input

TAPS = (3, 8, 15)  # EfficientNet-Lite0: last blocks of stages 3, 5 and 7 (as the frozen probe)


def features_and_logits(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, S, S) in [0, 1] -> ((B, D) multi-layer embedding, (B,) fake logits): one forward pass (traceable,
    so the ONNX export carries both)."""
    if hasattr(model, "forward_intermediates"):
        head, tapped = model.forward_intermediates(x, TAPS)
        pooled = [t.mean((2, 3)) for t in tapped]
    else:  # se_resnet34: the pre-logit embedding only
        head, pooled = model.forward_features(x), []
    return torch.cat([*pooled, model.forward_head(head, pre_logits=True)], 1), model.forward_head(head)


@torch.no_grad()
def embedding(model: torch.nn.Module, images, size: int, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (N, D), fake logits (N,)) of uint8 images (a tensor or a DiskCache), batch by batch."""
    model.eval()
    feats, logits = [], []
    for i in range(0, len(images), batch_size):
        x = to_input(images[i:i + batch_size], size).contiguous(memory_format=torch.channels_last)
        f, z = features_and_logits(model, x)
        feats.append(f.float()), logits.append(z.float())
    if not feats:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.float32)
    return torch.cat(feats).numpy(), torch.cat(logits).numpy()


def _project(feats: np.ndarray, nov: dict) -> np.ndarray:
    z = (feats - nov["mean"].numpy()) / nov["scale"].numpy()
    return z @ nov["components"].numpy().T  # (N, dims)


def _scores(proj: np.ndarray, nov: dict) -> np.ndarray:
    if nov["method"] == "mahalanobis":
        return np.sqrt(((proj ** 2) / nov["variance"].numpy()).sum(1))
    ref = nov["reference"].numpy().astype(np.float32)  # (M, dims), unit rows
    unit = proj / np.maximum(np.linalg.norm(proj, axis=1, keepdims=True), 1e-8)
    k = min(int(nov["k"]), len(ref))
    out = np.empty(len(unit), np.float32)
    for i in range(0, len(unit), 256):  # (256, M) similarities at a time
        sims = unit[i:i + 256] @ ref.T
        out[i:i + 256] = 1 - np.sort(sims, axis=1)[:, -k:].mean(1)
    return out


def fit_novelty(train_feats: np.ndarray, val_feats: np.ndarray, p: NoveltyParams) -> dict:
    """The stored novelty model: standardisation, PCA, the reference set or the per-component variance,
    and the threshold (the p.quantile of the val scores). Tensors and plain values only (weights_only loads)."""
    mean, scale = train_feats.mean(0), train_feats.std(0) + 1e-6
    z = (train_feats - mean) / scale
    dims = int(min(p.dims, len(z) - 1, z.shape[1]))
    _, sing, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
    nov = {"method": p.method, "k": p.k, "quantile": p.quantile, "mean": torch.tensor(mean),
           "scale": torch.tensor(scale), "components": torch.tensor(vt[:dims].copy())}
    proj = z @ vt[:dims].T
    if p.method == "mahalanobis":
        nov["variance"] = torch.tensor((sing[:dims] ** 2) / max(len(z) - 1, 1) + 1e-6)
    else:
        unit = proj / np.maximum(np.linalg.norm(proj, axis=1, keepdims=True), 1e-8)
        nov["reference"] = torch.tensor(unit.astype(np.float16))
    nov["threshold"] = float(np.quantile(_scores(_project(val_feats, nov), nov), p.quantile))
    return nov


def novelty_scores(feats: np.ndarray, nov: dict) -> np.ndarray:
    """Novelty per image (higher = less like the training images)."""
    return _scores(_project(feats, nov), nov) if len(feats) else np.zeros(0, np.float32)
