"""Anything that turns uint8 image batches into fake probabilities, with its own threshold.

    scorer = load_scorer("artifacts/model")            # detector.pt -> TorchScorer
    scorer = load_scorer("artifacts/baselines/spectrum_lr")  # spectrum.json -> SpectrumScorer
    probs = scorer.predict(images_uint8)                # (N,) in [0, 1]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .features import radial_spectrum

SPECTRUM_BINS = 32


class Scorer(Protocol):
    name: str
    image_size: int
    threshold: float

    def predict(self, images: torch.Tensor) -> np.ndarray: ...


class TorchScorer:
    def __init__(self, model_dir: str | Path, device: str = "cpu") -> None:
        from .checkpoint import load_detector

        self.model, self.info = load_detector(model_dir, device)
        self.device = torch.device(device)
        self.name = Path(model_dir).name
        self.image_size = int(self.info["image_size"])
        self.threshold = float(self.info["threshold"])

    def predict(self, images: torch.Tensor) -> np.ndarray:
        from .train import predict_proba

        return predict_proba(self.model, images, self.image_size, self.device)


def spectrum_features(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) uint8 -> (N, SPECTRUM_BINS) radial log-power spectrum of the luminance."""
    gray = images.float().numpy().transpose(0, 2, 3, 1) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.stack([radial_spectrum(g, SPECTRUM_BINS) for g in gray]) if len(gray) else np.zeros((0, SPECTRUM_BINS))


class JsonLogisticScorer:
    """Features + standardisation + logistic regression, stored as JSON (no pickle). Subclasses say
    which file and which features."""

    FILE = ""

    def __init__(self, model_dir: str | Path) -> None:
        cfg = json.loads((Path(model_dir) / self.FILE).read_text())
        self.name = Path(model_dir).name
        self.image_size, self.threshold = int(cfg["image_size"]), float(cfg["threshold"])
        self.mean, self.scale = np.array(cfg["mean"]), np.array(cfg["scale"])
        self.coef, self.intercept = np.array(cfg["coef"]), float(cfg["intercept"])

    def features(self, images: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    def predict(self, images: torch.Tensor) -> np.ndarray:
        z = (self.features(images) - self.mean) / self.scale @ self.coef + self.intercept
        return 1 / (1 + np.exp(-z))


class SpectrumScorer(JsonLogisticScorer):
    """FFT radial spectrum + standardisation + logistic regression."""

    FILE = "spectrum.json"

    def features(self, images: torch.Tensor) -> np.ndarray:
        return spectrum_features(images)


def load_scorer(model_dir: str | Path, device: str = "cpu") -> Scorer:
    from .probe import ProbeScorer

    model_dir = Path(model_dir)
    if (model_dir / SpectrumScorer.FILE).is_file():
        return SpectrumScorer(model_dir)
    if (model_dir / ProbeScorer.FILE).is_file():
        return ProbeScorer(model_dir)
    return TorchScorer(model_dir, device)
