"""The optimisers of the hybrid GAN and the learning-rate schedule of its discriminator.

    from deepfake_detector.model.optim import make_optimizers, warmup_cosine
    opt_d, opt_g = make_optimizers(D, G, p)
    sched = torch.optim.lr_scheduler.LambdaLR(opt_d, warmup_cosine(warmup_steps, total_steps))
"""

from __future__ import annotations

import math

import torch

from ..core.params import Params


def warmup_cosine(warmup_steps: int, total_steps: int):
    """LR factor per optimizer step: linear warmup to 1, then cosine decay to 0."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def make_optimizers(D: torch.nn.Module, G: torch.nn.Module, p: Params) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """AdamW for D (pretrained layers at lr_backbone, new layers at lr), Adam(0.5, 0.999) for G."""
    t = p.train
    backbone = {id(q) for q in D.backbone_parameters()} if p.model.pretrained else set()
    trainable = [q for q in D.parameters() if q.requires_grad]
    groups = [{"params": [q for q in trainable if id(q) in backbone], "lr": t.lr_backbone},
              {"params": [q for q in trainable if id(q) not in backbone], "lr": t.lr}]
    opt_d = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=t.weight_decay)
    return opt_d, torch.optim.Adam(G.parameters(), lr=t.lr_generator, betas=(0.5, 0.999))
