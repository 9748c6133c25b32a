"""Self-blended images: pseudo-fakes made from real faces alone (Shiohara & Yamasaki, CVPR 2022).

    blends, mask = self_blend(real_uint8, p.train.self_blend, gen)   # (B, 3, H, W) uint8, (B, 1, H, W) in [0, 1]

Each real face is blended with a copy of itself whose colour, sharpness, scale and position are jittered,
through a soft face mask: an ellipse fitted to the aligned crop (centre and axes jittered), its outline
elastically deformed, eroded or dilated, and its edge blurred at a random scale; the blend ratio is random
too. A detector trained on these learns blending boundaries and colour/sharpness mismatches, which every
face swap leaves, instead of one generator's traces. No landmark model ships its weights in a package
that installs here (shared notes: dlib's needs a slow source build and a non-commercial licence), so the
mask is the ellipse of an aligned crop, not a landmark hull.

Only pixels where the mask is non-zero change; the blends are made on the fly in the training loop from
the training split's reals (never written to the dataset, never in val or test). All randomness comes
from the caller's torch.Generator (CPU), so a resumed run replays the same blends.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2.functional import gaussian_blur

from ..core.params import SelfBlendParams


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> Tensor:
    return torch.empty(n).uniform_(lo, hi, generator=gen)


def _jittered_copy(x: Tensor, p: SelfBlendParams, gen: torch.Generator) -> Tensor:
    """The source face: x (B, 3, H, W) in [0, 1] with colour, sharpness, scale and shift jitter."""
    b, _, h, w = x.shape
    gain = 1 + _uniform(b * 3, -p.colour, p.colour, gen).view(b, 3, 1, 1)
    offset = _uniform(b * 3, -p.colour / 2, p.colour / 2, gen).view(b, 3, 1, 1)
    src = x * gain + offset
    sigma = float(_uniform(1, 0.5, 1.5, gen)) * h / 256 + 0.3  # blur radius ~1 px at 256 px
    k = 2 * math.ceil(3 * sigma) + 1
    soft = gaussian_blur(src, [k, k], [sigma, sigma])
    blur = (torch.rand(b, generator=gen) < p.blur_prob).view(b, 1, 1, 1)
    amount = _uniform(b, 0.5, 1.5, gen).view(b, 1, 1, 1)
    src = torch.where(blur, soft, src + amount * (src - soft))  # blurred, or unsharp-masked
    scale = 1 + _uniform(b, -p.scale, p.scale, gen)
    tx, ty = _uniform(b, -p.shift, p.shift, gen) * 2, _uniform(b, -p.shift, p.shift, gen) * 2
    zero = torch.zeros(b)
    theta = torch.stack([torch.stack([1 / scale, zero, tx], 1), torch.stack([zero, 1 / scale, ty], 1)], 1)
    grid = F.affine_grid(theta, [b, 3, h, w], align_corners=False)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="reflection", align_corners=False).clamp(0, 1)


MASK_SIDE = 64  # masks are drawn at most this large and upsampled: a smooth outline needs no more pixels


def face_mask(b: int, h: int, w: int, p: SelfBlendParams, gen: torch.Generator) -> Tensor:
    """(B, 1, H, W) soft masks in [0, 1]: deformed, eroded/dilated, blurred ellipses, times the blend ratio.
    Drawn at <= MASK_SIDE px, then bilinearly upsampled (zero stays zero: the support does not grow)."""
    full = (h, w)
    h, w = min(h, MASK_SIDE), min(w, MASK_SIDE)
    j = p.mask_jitter
    cx = 0.5 + _uniform(b, -j, j, gen) * 0.1
    cy = 0.52 + _uniform(b, -j, j, gen) * 0.1
    ax = p.mask_axes[0] * (1 + _uniform(b, -j, j, gen))
    ay = p.mask_axes[1] * (1 + _uniform(b, -j, j, gen))
    radius = 1 + _uniform(b, -j, j, gen)  # < 1 erodes, > 1 dilates
    v, u = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    # elastic deformation: a smooth random displacement (4x4 control grid, bicubic) of the coordinates
    field = F.interpolate(torch.randn(b, 2, 4, 4, generator=gen) * p.mask_deform, size=(h, w), mode="bicubic",
                          align_corners=True)
    du, dv = u + field[:, 0], v + field[:, 1]  # (B, H, W)
    inside = (((du - cx.view(b, 1, 1)) / ax.view(b, 1, 1)) ** 2
              + ((dv - cy.view(b, 1, 1)) / ay.view(b, 1, 1)) ** 2) <= radius.view(b, 1, 1) ** 2
    mask = inside.float().unsqueeze(1)
    sigma = float(_uniform(1, *p.mask_blur, gen)) * h
    if sigma > 0.3:
        k = 2 * math.ceil(3 * sigma) + 1  # finite kernel: the soft edge stays within 3 sigma of the ellipse
        mask = gaussian_blur(mask, [k, k], [sigma, sigma])
    if (h, w) != full:
        mask = F.interpolate(mask, size=full, mode="bilinear", align_corners=False)
    ratio = _uniform(b, *p.ratio, gen).view(b, 1, 1, 1)
    return (mask * ratio).clamp(0, 1)


def self_blend(x: Tensor, p: SelfBlendParams, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """uint8 (B, 3, H, W) real faces -> (uint8 blends, (B, 1, H, W) masks). out = x + mask * (src - x): a pixel
    where the mask is 0 keeps its exact value."""
    b, _, h, w = x.shape
    xf = x.float() / 255
    src = _jittered_copy(xf, p, gen)
    mask = face_mask(b, h, w, p, gen)
    out = xf + mask * (src - xf)
    return (out * 255).round().clamp(0, 255).to(torch.uint8), mask
