"""The paper's networks: SE-ResNet34 discriminator/detector, DCGAN generator, weighted BCE.

    from deepfake_detector.model.models import HybridDetector, Generator, WeightedBCELoss
    d = HybridDetector(stem="small"); logits = d(torch.rand(8, 3, 64, 64))   # (8,)
    emb = d.forward_head(d.forward_features(x), pre_logits=True)             # (8, 512)

Inputs are RGB in [0, 1]; ImageNet normalisation happens inside the detector, so generated
images (sigmoid output) and dataset images go through the same path.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, ResNet

Stem = Literal["imagenet", "small", "cifar"]
Input = Literal["rgb", "npr"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# NPR maps are ~6x smaller than the images they come from (normalised faces-a: std 0.090 vs 0.543; DFDC
# video crops 0.037 vs 0.415): x4 brings them near the scale the pretrained stem's BN statistics expect.
NPR_GAIN = 4.0


class SEGate(nn.Module):
    """Squeeze-excitation channel attention: x * sigmoid(W2 relu(W1 avgpool(x))).

    identity_init (for pretrained backbones): the gate is 2 * sigmoid(.) with W2 = 0, so it starts
    as the identity and fine-tuning begins from the pretrained function, not from a halved one.
    """

    def __init__(self, channels: int, reduction: int = 16, identity_init: bool = False) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.scale = 2.0 if identity_init else 1.0
        if identity_init:
            nn.init.zeros_(self.fc2.weight), nn.init.zeros_(self.fc2.bias)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C, H, W)
        w = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        return x * (self.scale * torch.sigmoid(self.fc2(torch.relu(self.fc1(w)))))


class SEBasicBlock(BasicBlock):
    """torchvision's BasicBlock with an SE gate after bn2, before the residual add.

    State-dict keys stay torchvision's (plus `se.*`), so ImageNet weights load unchanged.
    """

    reduction = 16
    identity_init = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.se = (SEGate(self.bn2.num_features, self.reduction, self.identity_init) if self.reduction > 0
                   else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


def npr(x: Tensor) -> Tensor:
    """Neighbouring pixel relations (Tan et al., CVPR 2024): x minus its 2x nearest down-up-sampled copy.

    Each 2x2 cell keeps only its pixels' differences from the cell's top-left one, the local relations that
    generators' up-sampling layers fix; image content (what the face looks like) is mostly removed.
    (B, C, H, W) -> (B, C, H, W); zero on the top-left pixel of every cell.
    """
    return x - nn.functional.interpolate(x[:, :, ::2, ::2], size=x.shape[-2:], mode="nearest")


def _block_with(reduction: int, identity_init: bool) -> type[SEBasicBlock]:
    return type(f"SEBasicBlock_r{reduction}", (SEBasicBlock,),
                {"reduction": reduction, "identity_init": identity_init})


class DetectorBase(nn.Module):
    """What both backbones share: the BN + dropout head, forward, and which parameters are pretrained.

    Subclasses set `backbone_prefixes` and build `head_norm`, `head_drop`, `fc` and `forward_features`.
    """

    backbone_prefixes: tuple[str, ...] = ()
    input: Input = "rgb"

    def _normalise(self, x: Tensor) -> Tensor:
        """[0, 1] RGB -> the backbone's normalised input, or its neighbouring-pixel residuals (input "npr")."""
        x = (x - self.mean) / self.std
        return NPR_GAIN * npr(x) if self.input == "npr" else x

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The parameters that pretrained weights initialise (SE gates, extras and head are new)."""
        return [p for n, p in self.named_parameters() if n.startswith(self.backbone_prefixes) and ".se." not in n]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.head_norm(torch.flatten(x.mean((2, 3)), 1))  # (B, num_features)
        if pre_logits:
            return x
        return self.fc(self.head_drop(x)).squeeze(1)  # (B,)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def _load_matching(self, state: dict[str, Tensor]) -> dict[str, list[str]]:
        """Load the entries whose name and shape match; report what was loaded and skipped."""
        own = self.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        self.load_state_dict(usable, strict=False)
        return {"loaded": sorted(usable), "skipped": sorted(set(state) - set(usable))}


class HybridDetector(DetectorBase):
    """SE-ResNet34 + extra convs + BN + dropout -> one real/fake logit (fake = 1)."""

    backbone_prefixes = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")

    def __init__(self, stem: Stem = "imagenet", se_reduction: int = 16, extra_convs: int = 2,
                 dropout: float = 0.3, pretrained: str | None = None, input: Input = "rgb") -> None:
        super().__init__()
        self.input = input
        self.config = dict(backbone="se_resnet34", input=input, stem=stem, se_reduction=se_reduction,
                           extra_convs=extra_convs, dropout=dropout)
        net = ResNet(_block_with(se_reduction, identity_init=pretrained is not None), [3, 4, 6, 3])
        if stem != "imagenet":  # 64x64 inputs: keep resolution for the first stage
            net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        if stem == "cifar":
            net.maxpool = nn.Identity()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.extra = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(512, 512, 3, padding=1, bias=False), nn.BatchNorm2d(512), nn.ReLU(inplace=True))
            for _ in range(extra_convs)
        ])
        self.num_features = 512
        self.head_norm = nn.BatchNorm1d(512)
        self.head_drop = nn.Dropout(dropout)
        self.fc = nn.Linear(512, 1)
        self.pretrained_info = self.load_pretrained(pretrained) if pretrained else None

    def cam_layer(self) -> nn.Module:
        """Grad-CAM target: layer3 (stride 16)."""
        return self.layer3

    def blocks(self) -> list[BasicBlock]:
        return [b for layer in (self.layer1, self.layer2, self.layer3, self.layer4) for b in layer]

    def forward_features(self, x: Tensor) -> Tensor:
        # (B, 3, 64, 64) in [0,1] -> (B, 512, 4, 4) with the small stem (2x2 imagenet, 8x8 cifar)
        x = self._normalise(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # small: (B, 64, 32, 32)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.extra(x)

    def load_pretrained(self, spec: str | Path) -> dict[str, list[str]]:
        """Load torchvision resnet34 ImageNet weights: 'imagenet' (TORCH_HOME hub cache) or a local file.

        Never downloads: `dfd weights fetch se_resnet34` does that, for users with internet.
        """
        from .pretrained import resolve_weights

        return self._load_matching(torch.load(resolve_weights("se_resnet34", spec), map_location="cpu",
                                              weights_only=True))


class Generator(nn.Module):
    """DCGAN generator: (B, latent_dim) noise -> (B, 3, size, size) in [0, 1]."""

    def __init__(self, latent_dim: int = 100, generator_width: int = 64, generator_size: int = 64) -> None:
        """Argument names = the model.* params (and the keys of generator.pt's config)."""
        super().__init__()
        width, image_size = generator_width, generator_size
        n_up = int(math.log2(image_size // 4))
        if 4 * 2**n_up != image_size:
            raise ValueError(f"generator needs generator_size = 4 * 2^k, got {image_size}")
        self.latent_dim = latent_dim
        ch = width * 2 ** (n_up - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent_dim, ch, 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(ch), nn.ReLU(True)]  # (B, ch, 4, 4)
        for _ in range(n_up - 1):  # each doubles H, W and halves channels
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, 3, 4, 2, 1), nn.Sigmoid()]  # (B, 3, size, size)
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.view(z.shape[0], self.latent_dim, 1, 1))


class WeightedBCELoss(nn.Module):
    """Binary cross-entropy on logits with a weight per class: w[target] * bce, averaged."""

    def __init__(self, class_weights: tuple[float, float] = (1.0, 1.0)) -> None:
        super().__init__()
        self.register_buffer("class_weights", torch.tensor(class_weights, dtype=torch.float32))

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        targets = targets.float()
        w = self.class_weights[targets.long()]
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
        return (w * loss).mean()


def class_weights_from_counts(n_real: int, n_fake: int) -> tuple[float, float]:
    """Balanced weights N / (2 N_c), so each class contributes equally."""
    total = n_real + n_fake
    return (total / (2 * max(n_real, 1)), total / (2 * max(n_fake, 1)))


def balanced_weights(labels: np.ndarray, sources: np.ndarray | None) -> torch.Tensor:
    """Per-row draw weights 1 / (size of its (source, label) cell), normalised: every cell weighs the same."""
    keys = labels.astype(str) if sources is None else np.char.add(np.asarray(sources, str), "/" + labels.astype(str))
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inverse]
    return torch.tensor(w / w.sum(), dtype=torch.float64)


def freeze_early(model: nn.Module, n_blocks: int) -> list[nn.Module]:
    """Freeze the stem and the first n backbone blocks: no gradients, BN in eval mode for good.

    Those layers hold generic ImageNet edges and textures and, at full resolution, most of the
    backward cost (4x faster EfficientNet-Lite0 steps at 224 px with 3 frozen blocks on 2 CPU cores).
    Returns the frozen modules; `keep_frozen_eval` re-applies eval mode after `model.train()`.
    """
    if n_blocks <= 0:
        return []
    names = ("_conv_stem", "_bn0") if hasattr(model, "_conv_stem") else ("conv1", "bn1")
    frozen = [getattr(model, n) for n in names] + list(model.blocks()[:n_blocks])
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    return frozen


def backbone_batchnorms(model: nn.Module) -> list[nn.Module]:
    """The pretrained backbone's BN layers (not those of the SE gates, extra convs or head)."""
    return [m for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and n.startswith(model.backbone_prefixes) and ".se." not in n]


def keep_frozen_eval(frozen: list[nn.Module]) -> None:
    """Call after `model.train()`: these modules stay in eval mode (BN uses and keeps its running stats)."""
    for module in frozen:
        module.eval()
