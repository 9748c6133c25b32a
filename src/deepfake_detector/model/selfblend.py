"""Self-blended images: pseudo-fakes made from real faces alone (Shiohara & Yamasaki, CVPR 2022).

    blends, mask = self_blend(real_uint8, p.train.self_blend, gen)   # (B, 3, H, W) uint8, (B, 1, H, W) in [0, 1]

Each real face is blended with a copy of itself whose colour, sharpness, scale and position are jittered,
through a soft face mask: the convex hull of the face's 68 landmarks (`mask: hull`, as in the paper, following
Face X-ray) or an ellipse fitted to the aligned crop (`mask: ellipse`; rows without landmarks), its outline
elastically deformed, eroded or dilated, and its edge blurred at a random scale; the blend ratio is random
too. A detector trained on these learns blending boundaries and colour/sharpness mismatches, which every
face swap leaves, instead of one generator's traces. Landmarks come from core/faces.py (dlib's 68-point
model: iBUG 300-W, non-commercial terms).

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


def _hull_inside(du: Tensor, dv: Tensor, hulls: Tensor, radius: Tensor) -> Tensor:
    """(B, H, W) bool: (du, dv) inside each face's landmark hull scaled by radius about its centroid.
    hulls: (B, 68, 2) fractions of the side; a convex polygon contains a point when the point lies on the inner
    side of every edge (counter-clockwise hull, padded with repeats of its last vertex: zero-length edges)."""
    from scipy.spatial import ConvexHull

    b, n = hulls.shape[0], hulls.shape[1]
    poly = torch.zeros(b, n, 2)
    for i in range(b):
        pts = hulls[i].double().numpy()
        idx = ConvexHull(pts).vertices  # counter-clockwise in (x, y)
        v = torch.from_numpy(pts[idx]).float()
        poly[i, :len(v)], poly[i, len(v):] = v, v[-1]
    centre = poly.mean(1, keepdim=True)
    poly = centre + (poly - centre) * radius.view(b, 1, 1)  # < 1 erodes, > 1 dilates
    a, e = poly, torch.roll(poly, -1, dims=1) - poly  # edge i: a_i -> a_i + e_i
    px, py = du.unsqueeze(1), dv.unsqueeze(1)  # (B, 1, H, W)
    cross = e[..., 0, None, None] * (py - a[..., 1, None, None]) - e[..., 1, None, None] * (px - a[..., 0, None, None])
    return (cross >= 0).all(1)


def face_mask(b: int, h: int, w: int, p: SelfBlendParams, gen: torch.Generator,
              hulls: Tensor | None = None) -> Tensor:
    """(B, 1, H, W) soft masks in [0, 1]: deformed, eroded/dilated, blurred ellipses or landmark hulls (hulls:
    (B, 68, 2) fractions of the side, NaN rows: ellipse), times the blend ratio. Drawn at <= MASK_SIDE px, then
    bilinearly upsampled (zero stays zero: the support does not grow)."""
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
    if hulls is not None and p.mask == "hull":
        has = ~torch.isnan(hulls).flatten(1).any(1)
        if has.any():
            inside[has] = _hull_inside(du[has], dv[has], hulls[has], radius[has])
    mask = inside.float().unsqueeze(1)
    sigma = float(_uniform(1, *p.mask_blur, gen)) * h
    if sigma > 0.3:
        k = 2 * math.ceil(3 * sigma) + 1  # finite kernel: the soft edge stays within 3 sigma of the ellipse
        mask = gaussian_blur(mask, [k, k], [sigma, sigma])
    if (h, w) != full:
        mask = F.interpolate(mask, size=full, mode="bilinear", align_corners=False)
    ratio = _uniform(b, *p.ratio, gen).view(b, 1, 1, 1)
    return (mask * ratio).clamp(0, 1)


def self_blend(x: Tensor, p: SelfBlendParams, gen: torch.Generator,
               hulls: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """uint8 (B, 3, H, W) real faces -> (uint8 blends, (B, 1, H, W) masks). out = x + mask * (src - x): a pixel
    where the mask is 0 keeps its exact value. hulls: (B, 68, 2) landmarks in x as fractions of its side."""
    b, _, h, w = x.shape
    xf = x.float() / 255
    src = _jittered_copy(xf, p, gen)
    mask = face_mask(b, h, w, p, gen, hulls)
    out = xf + mask * (src - xf)
    return (out * 255).round().clamp(0, 255).to(torch.uint8), mask
