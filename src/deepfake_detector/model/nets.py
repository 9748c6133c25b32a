"""What one training run holds: the discriminator (the detector), the generator, their optimisers, the
learning-rate schedule and the weighted loss, built from params (model/train.py runs them).

    nets = build_nets(p, train_labels, dist)
    nets.D, nets.G, nets.step, nets.opt_d, nets.opt_g, nets.sched, nets.crit
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from ..core.params import Params
from .distributed import Dist, sync_batchnorm, wrap
from .factory import build_detector
from .gan import GanStep
from .models import (Generator, WeightedBCELoss, backbone_batchnorms, class_weights_from_counts, freeze_early,
                     keep_frozen_eval)
from .optim import make_optimizers, warmup_cosine


MEMORY_FORMAT = torch.channels_last  # NHWC: oneDNN's fast convolutions on CPU, as on CUDA (benchmarks/train_precision.py)


@dataclass
class Nets:
    D: torch.nn.Module  # the detector (channels-last)
    G: Generator  # the DCGAN generator (trained only with train.extra_fakes: dcgan)
    step: torch.nn.Module  # GanStep, DDP-wrapped under torchrun
    frozen: list[torch.nn.Module]  # modules that stay in eval mode (frozen blocks, backbone BN)
    opt_d: torch.optim.Optimizer
    opt_g: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    crit: WeightedBCELoss
    class_weights: tuple[float, float]
    steps_per_epoch: int
    device: torch.device
    pretrained: dict | None  # what the pretrained weights loaded and skipped
    z_fixed: torch.Tensor  # latent codes of the samples.png grid

    def train_mode(self) -> None:
        self.D.train(), self.G.train()
        keep_frozen_eval(self.frozen)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """train.precision -> the autocast dtype (None: plain fp32). auto: bf16 on CUDA; fp32 on CPU, where bf16
    autocast measured no faster on AVX512-BF16 and costs accuracy (docs/model.md, benchmarks/train_precision.json)."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def build_trainable_detector(p: Params, device: torch.device, sync_bn: bool = False
                             ) -> tuple[torch.nn.Module, list, dict | None]:
    """(detector on device, its frozen modules, pretrained-weights info). SyncBatchNorm (sync_bn: train.sync_bn
    under torchrun on CUDA) replaces BN modules, so it comes before the frozen list: frozen BN stays frozen."""
    m, t = p.model, p.train
    D = build_detector(m.detector_config(), pretrained=m.pretrained)
    info = D.pretrained_info
    D = sync_batchnorm(D, sync_bn)
    frozen = freeze_early(D, t.freeze_blocks)
    if m.pretrained and t.freeze_bn:  # small-data fine-tuning: BN stats lagging fast-moving weights
        frozen += backbone_batchnorms(D)  # made eval-mode scores differ from train-mode ones
    return D.to(device, memory_format=MEMORY_FORMAT), frozen, info


def build_nets(p: Params, train_labels: torch.Tensor, d: Dist, max_batches: int | None = None,
               balanced: bool = False) -> Nets:
    """D (pretrained, partly frozen), G, the step that runs both (DDP-wrapped under torchrun), AdamW/Adam,
    the per-step warmup + cosine schedule of D, and the weighted BCE (class weights from the train labels,
    1:1 when balanced draws make both classes equally frequent)."""
    torch.manual_seed(p.seed)
    m, t, device = p.model, p.train, d.device
    D, frozen, info = build_trainable_detector(p, device, sync_bn=t.sync_bn and d.enabled and device.type == "cuda")
    G = Generator(m.latent_dim, m.generator_width, m.generator_size).to(device)
    # the generator joins the DDP-wrapped step only when it is used: DDP needs every parameter in the loss
    step = wrap(GanStep(D, G if t.extra_fakes == "dcgan" else None, t.image_size), d)
    z_fixed = torch.randn(32, m.latent_dim, generator=torch.Generator().manual_seed(p.seed))
    opt_d, opt_g = make_optimizers(D, G, p)
    per_rank = len(train_labels) // d.world  # each rank's shard of an epoch (distributed.shard)
    steps = max(1, sum(1 for i in range(0, per_rank, t.batch_size) if min(t.batch_size, per_rank - i) > 1))
    if max_batches:
        steps = min(steps, max_batches)
    sched = torch.optim.lr_scheduler.LambdaLR(opt_d, warmup_cosine(round(t.warmup_epochs * steps), t.epochs * steps))
    counts = [1, 1] if balanced else torch.bincount(train_labels, minlength=2).tolist()
    w = class_weights_from_counts(*counts) if t.class_weights == "auto" else t.class_weights
    class_weights = tuple(float(v) for v in w)
    return Nets(D, G, step, frozen, opt_d, opt_g, sched, WeightedBCELoss(class_weights).to(device), class_weights,
                steps, device, info, z_fixed)


def param_digest(*modules: torch.nn.Module) -> str:
    """A short hash of the modules' parameters (equal on every DDP rank after an all-reduced step)."""
    h = hashlib.sha256()
    for module in modules:
        for name, q in module.named_parameters():
            h.update(name.encode() + q.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
