"""Self-blended extra fakes: made from reals only, changing pixels only inside the mask, and learnable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_params
from deepfake_detector.core.params import load_params
from deepfake_detector.model.distributed import Dist
from deepfake_detector.model.nets import build_nets
from deepfake_detector.model.selfblend import self_blend
from deepfake_detector.model.train import TrainData, fit, train_step


def _faces(folder: Path, size: int = 64) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB").resize((size, size)))).permute(2, 0, 1)
                        for f in sorted(folder.glob("*.jpg"))])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_blend_changes_pixels_only_inside_its_mask(demo_dir, tmp_path, seed):
    p = load_params(write_params(tmp_path / "p.yaml")).train.self_blend
    x = _faces(demo_dir / "real")[:16]
    out, mask = self_blend(x, p, torch.Generator().manual_seed(seed))
    assert out.shape == x.shape and out.dtype == torch.uint8 and mask.shape == (16, 1, 64, 64)
    changed = (out != x).any(1, keepdim=True)
    assert not (changed & (mask == 0)).any()  # outside the mask's support every pixel keeps its exact value
    assert changed.float().mean() > 0.1  # inside it the face changed ...
    assert (mask[:, :, 28:36, 28:36] > 0).all() and (mask[:, :, :3, :3] == 0).all()  # ... the face, not the corners


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_hull_mask_covers_the_landmark_hull_and_nothing_else(tmp_path, seed):
    """mask: hull, with no deformation, jitter or blur: the mask is the convex hull of the 68 points (rasterised
    by OpenCV for the check); rows without landmarks (NaN) get the ellipse."""
    import cv2
    from scipy.spatial import ConvexHull

    from deepfake_detector.model.selfblend import MASK_SIDE, face_mask

    q = load_params(write_params(tmp_path / "p.yaml")).train.self_blend.model_copy(
        update={"mask": "hull", "mask_jitter": 0.0, "mask_deform": 0.0, "mask_blur": (0.0, 0.0), "ratio": (1.0, 1.0)})
    rng = np.random.default_rng(seed)
    pts = rng.uniform(0.2, 0.8, (3, 68, 2))
    hulls = torch.from_numpy(pts).float()
    hulls[2] = float("nan")
    mask = face_mask(3, MASK_SIDE, MASK_SIDE, q, torch.Generator().manual_seed(seed), hulls)[:, 0]
    for i in range(2):
        poly = pts[i][ConvexHull(pts[i]).vertices] * MASK_SIDE - 0.5  # pixel centres at (k + 0.5) / side
        ref = np.zeros((MASK_SIDE, MASK_SIDE), np.uint8)
        cv2.fillConvexPoly(ref, np.round(poly * 16).astype(np.int32), 1, shift=4)
        got = mask[i].numpy() > 0.5
        iou = (got & (ref > 0)).sum() / (got | (ref > 0)).sum()
        assert iou > 0.9, iou  # the ellipse scores ~0.7 here
    ellipse = face_mask(1, MASK_SIDE, MASK_SIDE, q, torch.Generator().manual_seed(seed))[0, 0]
    assert torch.equal(mask[2], ellipse)  # the same draw: no landmarks, the ellipse


def test_blends_come_from_the_training_reals_only(demo_dir, tmp_path, monkeypatch):
    import deepfake_detector.model.train as tr

    p = load_params(write_params(tmp_path / "p.yaml", train={"extra_fakes": "self_blend"}))
    x = torch.cat([_faces(demo_dir / "real", 32), _faces(demo_dir / "fake", 32)])
    y = torch.tensor([0] * 40 + [1] * 40)
    rows = torch.arange(0, 80, 2)  # every other image is usable (the rest: say, unreadable)
    data = TrainData(x, y, rows, x[:4], y[:4].numpy())
    given = []
    real_blend = tr.self_blend
    monkeypatch.setattr(tr, "self_blend",
                        lambda imgs, q, g, h=None: given.append(imgs.clone()) or real_blend(imgs, q, g, h))
    nets = build_nets(p, y[rows], Dist())
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        train_step(nets, p, x[rows[:8]], y[rows[:8]], data, gen)
    usable_reals = {tuple(img.flatten()[:64].tolist()) for img in x[rows][y[rows] == 0]}
    assert len(given) == 3 and all(len(b) == 4 for b in given)  # extra_fakes_share 0.5 of the batch of 8
    assert all(tuple(img.flatten()[:64].tolist()) in usable_reals for b in given for img in b)


@pytest.fixture(scope="module")
def many_reals(tmp_path_factory) -> torch.Tensor:
    from deepfake_detector.data.demo import make_demo

    root = tmp_path_factory.mktemp("reals")
    make_demo(root, per_class=150, seed=3)
    return _faces(root / "real")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_detector_trained_on_reals_and_their_blends_tells_new_blends_from_reals(many_reals, tmp_path, seed):
    """Reals only (no dataset fakes): the blends are the only fakes. 120 training reals at 64 px, 10 epochs;
    then 30 held-out reals against fresh blends of them (measured: ROC-AUC 0.89-0.93 over these seeds)."""
    from sklearn.metrics import roc_auc_score

    from deepfake_detector.model.scoring import predict_logits

    p = load_params(write_params(tmp_path / "p.yaml", seed=seed, train={
        "image_size": 64, "batch_size": 16, "epochs": 10, "patience": 20, "extra_fakes": "self_blend",
        "gan_weight": 1.0, "extra_fakes_share": 1.0,
        "self_blend": {"colour": 0.5, "ratio": [1.0, 1.0], "blur_prob": 0.0},  # plain to see: a test of learning
        "augment": {"jpeg_prob": 0.0, "blur_prob": 0.0, "resize_prob": 0.0, "noise_prob": 0.0}}))
    train_x, held = many_reals[:120], many_reals[120:]
    blends, _ = self_blend(held, p.train.self_blend, torch.Generator().manual_seed(100 + seed))
    val_x = torch.cat([held, blends])
    val_y = np.array([0] * len(held) + [1] * len(blends))
    data = TrainData(train_x, torch.zeros(len(train_x), dtype=torch.long), torch.arange(len(train_x)), val_x, val_y)
    nets = build_nets(p, torch.tensor([0, 1]), Dist())  # class weights 1:1
    fit(p, data, nets, tmp_path / "m", tmp_path / "c", tmp_path / "r", Dist(), progress=False)
    auc = roc_auc_score(val_y, predict_logits(nets.D, val_x, 64, nets.device))
    print(f"seed {seed}: held-out reals vs their blends, ROC-AUC {auc:.3f}")
    assert auc > 0.75
