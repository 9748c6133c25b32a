"""The one detector factory: a network from the config dict that every checkpoint stores.

    from deepfake_detector.model.factory import build_detector
    model = build_detector({"backbone": "efficientnet_lite0", "se_reduction": 16, "extra_convs": 2, "dropout": 0.3})
"""

from __future__ import annotations

from torch import nn

from .efficientnet import EfficientNetLiteDetector
from .models import HybridDetector


def build_detector(config: dict, pretrained: str | None = None) -> nn.Module:
    """The one factory: a detector from its config dict (as stored in every checkpoint).

    Checkpoints written before `backbone` existed are se_resnet34.
    """
    cfg = dict(config)
    backbone = cfg.pop("backbone", "se_resnet34")
    if backbone == "se_resnet34":
        return HybridDetector(**cfg, pretrained=pretrained)
    if backbone == "efficientnet_lite0":
        cfg.pop("stem", None)
        return EfficientNetLiteDetector(**cfg, pretrained=pretrained)
    raise ValueError(f"unknown backbone {backbone!r} (se_resnet34 | efficientnet_lite0)")
