"""The GAN step: the generated batch reaches the detector through gradient reversal.

    step = GanStep(detector, generator, image_size)   # DDP can wrap it: one forward per backward
    logit_real, logit_gen = step(x, z)
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F


class GradReverse(torch.autograd.Function):
    """Identity forward; negated gradient backward (G ascends the loss D descends)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return -grad


@contextmanager
def frozen_bn_stats(model: torch.nn.Module):
    """BatchNorm uses batch statistics but leaves running statistics unchanged (momentum 0)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom


class GanStep(torch.nn.Module):
    """One forward of the GAN step, as a module so that DDP can wrap it (one forward per backward).

    D scores the dataset batch, then the generated batch in its own pass (its own BN batch
    statistics, and BN running statistics frozen: the detector never meets generated faces at
    inference, so they must not shift its normalisation). The generated batch reaches D through a
    gradient-reversal layer, so one backward trains D to call generated faces fake and G to make D
    call them real (minimax GAN).
    """

    def __init__(self, detector: torch.nn.Module, generator: torch.nn.Module | None, size: int) -> None:
        """generator None: the GAN term is off (then no generator parameter sits unused under DDP)."""
        super().__init__()
        self.D, self.G, self.size = detector, generator, size

    def forward(self, x: torch.Tensor, z: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        logit = self.D(x).float()  # (B,)
        if z is None or self.G is None:
            return logit, None
        fake = self.G(z)  # (n_gen, 3, generator_size, generator_size)
        if fake.shape[-1] != self.size:  # a 64 px generator feeds any input size
            fake = F.interpolate(fake, size=self.size, mode="bilinear", align_corners=False)
        with frozen_bn_stats(self.D):
            logit_gen = self.D(GradReverse.apply(fake.contiguous(memory_format=torch.channels_last))).float()
        return logit, logit_gen
