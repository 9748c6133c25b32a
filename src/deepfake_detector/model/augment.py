"""Batched augmentation on the training device, from a uint8 image cache.

Geometry (random resized crop, rotation, flip) is one affine `grid_sample`; blur, resize and
noise run on the device too. JPEG re-encoding is the only CPU step (torchvision.io), applied
to a random subset of the uint8 batch before it moves to the device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.io import decode_jpeg, encode_jpeg
from torchvision.transforms.v2.functional import gaussian_blur

from ..core.params import AugmentParams


def _pick(n: int, prob: float, gen: torch.Generator) -> Tensor:
    return torch.nonzero(torch.rand(n, generator=gen) < prob).flatten()


def jpeg_cpu(x: Tensor, p: AugmentParams, gen: torch.Generator) -> Tensor:
    """Re-encode a random subset of a uint8 (B, 3, H, W) CPU batch as JPEG."""
    idx = _pick(x.shape[0], p.jpeg_prob, gen)
    if len(idx) == 0:
        return x
    x = x.clone()
    lo, hi = p.jpeg_quality
    qualities = torch.randint(lo, hi + 1, (len(idx),), generator=gen)
    for i, q in zip(idx.tolist(), qualities.tolist()):
        x[i] = decode_jpeg(encode_jpeg(x[i], quality=q))
    return x


def augment(x: Tensor, out_size: int, p: AugmentParams, gen: torch.Generator) -> Tensor:
    """uint8 (B, 3, L, L) on any device -> float (B, 3, out_size, out_size) in [0, 1].

    All randomness is drawn on the CPU from `gen`, so results do not depend on the device RNG.
    """
    b, dev = x.shape[0], x.device
    xf = x.float().div_(255)
    area = torch.empty(b).uniform_(p.scale_min, 1.0, generator=gen)
    side = area.sqrt()
    angle = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(p.rotation)
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0) if p.flip else torch.ones(b)
    max_shift = 1 - side
    tx = (torch.rand(b, generator=gen) * 2 - 1) * max_shift
    ty = (torch.rand(b, generator=gen) * 2 - 1) * max_shift
    cos, sin = torch.cos(angle) * side, torch.sin(angle) * side
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(dev), [b, 3, out_size, out_size], align_corners=False)
    out = F.grid_sample(xf, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    idx = _pick(b, p.blur_prob, gen).to(dev)
    if len(idx):
        lo, hi = p.blur_sigma
        sigma = float(torch.empty(1).uniform_(lo, hi, generator=gen)) * out_size / 224  # sigma at 224 px
        k = 2 * math.ceil(3 * sigma) + 1
        out[idx] = gaussian_blur(out[idx], [k, k], [sigma, sigma])
    idx = _pick(b, p.resize_prob, gen).to(dev)
    if len(idx):
        small = max(8, int(out_size * float(torch.empty(1).uniform_(0.4, 0.9, generator=gen))))
        down = F.interpolate(out[idx], size=small, mode="bilinear", antialias=True, align_corners=False)
        out[idx] = F.interpolate(down, size=out_size, mode="bilinear", align_corners=False)
    idx = _pick(b, p.noise_prob, gen)
    if len(idx):
        std = torch.empty(len(idx), 1, 1, 1).uniform_(0.005, 0.03, generator=gen)
        noise = torch.randn(len(idx), 3, out_size, out_size, generator=gen) * std
        out[idx.to(dev)] += noise.to(dev)
    return out.clamp_(0, 1)


def to_input(x: Tensor, out_size: int) -> Tensor:
    """Evaluation path: uint8 (B, 3, H, W) -> float in [0, 1] at out_size (no randomness)."""
    xf = x.float().div_(255)
    if xf.shape[-1] != out_size or xf.shape[-2] != out_size:
        xf = F.interpolate(xf, size=out_size, mode="bilinear", antialias=True, align_corners=False)
    return xf
