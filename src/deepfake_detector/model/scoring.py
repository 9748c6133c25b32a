"""The one way to score images: fake probabilities, embeddings and the verdict, torch or ONNX Runtime.

    scorer = load_scorer("artifacts/model")                    # detector.pt -> TorchScorer
    scorer = load_scorer("artifacts/model", runtime="onnx")    # detector.onnx -> OnnxScorer
    scorer = load_scorer("artifacts/baselines/spectrum_lr")    # spectrum.json -> SpectrumScorer
    probs = scorer.predict(images_uint8)                       # (N,) in [0, 1]
    probs, novelty = scorer.score(images_uint8)                # novelty None when the model stores none
    emb, probs = scorer.embed(images_uint8)                    # (N, D) pre-logit embeddings (torch)
    verdict(prob, scorer.threshold, band=0.1)                  # {"label": "fake", "uncertain": False}

Used by evaluate, predict, serve, drift, the gate and the training loop's validation
(`predict_logits` on a model in training). Nothing here imports the training code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .augment import to_input
from ..core.metrics import calibrated
from ..data.features import radial_spectrum

SPECTRUM_LR_BINS = 32  # the spectrum baseline's bands (features.SPECTRUM_BINS = 12 is the label-issue vector's)


class Scorer(Protocol):
    name: str
    image_size: int
    threshold: float
    face_crop: dict | None  # core.faces.CropPolicy.to_dict() of the data it was trained on

    def predict(self, images: torch.Tensor) -> np.ndarray: ...

    def score(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]: ...


class _NoNovelty:
    """Scorers whose model stores no novelty score (baselines, models trained before it existed)."""

    novelty_threshold: float | None = None

    def score(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        return self.predict(images), None


def verdict(prob: float, threshold: float, band: float) -> dict:
    """Label from the model's stored threshold; "uncertain" within `band` of it."""
    return {"label": "fake" if prob >= threshold else "real", "uncertain": abs(prob - threshold) < band}


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, size: int, device: torch.device,
                   batch_size: int = 128, channels_last: bool = False) -> np.ndarray:
    """Raw "fake" logits for a uint8 (N, 3, H, W) tensor (the model is put in eval mode). channels_last:
    the input in the model's NHWC layout (TorchScorer: 1.7x faster CPU inference, benchmarks/onnx_vs_torch.py)."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = to_input(images[i:i + batch_size], size).to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out.append(model(x).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


@torch.no_grad()
def embed_logits(model: torch.nn.Module, images: torch.Tensor, size: int,
                 batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(pre-logit embeddings (N, D), fake logits (N,)); D: 512 (ResNet34) or 1280 (Lite0)."""
    model.eval()
    embs, probs = [], []
    for i in range(0, len(images), batch_size):
        feats = model.forward_features(to_input(images[i:i + batch_size], size))
        embs.append(model.forward_head(feats, pre_logits=True))
        probs.append(model.forward_head(feats))
    return (torch.cat(embs).numpy(), torch.cat(probs).numpy()) if embs else (np.zeros((0, 0)), np.zeros(0))


class TorchScorer:
    """detector.pt (architecture from its stored config); `.model` is there for Grad-CAM. Probabilities go
    through the Platt scaling stored with the model (`calibration`, fitted on val by `train`); `score` adds the
    novelty of each image when the model stores a novelty model (model/novelty.py)."""

    def __init__(self, model_dir: str | Path, device: str = "cpu") -> None:
        from .checkpoint import load_detector

        self.model, self.info = load_detector(model_dir, device)
        self.model = self.model.to(memory_format=torch.channels_last)  # NHWC: oneDNN's fast CPU convolutions
        self.device = torch.device(device)
        self.name = Path(model_dir).name
        self.image_size = int(self.info["image_size"])
        self.threshold = float(self.info["threshold"])
        self.calibration = self.info.get("calibration")  # models trained before calibration: plain sigmoid
        self.novelty = self.info.get("novelty")
        self.novelty_threshold = None if self.novelty is None else float(self.novelty["threshold"])
        self.face_crop = self.info.get("face_crop")  # core.faces.CropPolicy; None: models scored whole pictures

    def predict(self, images: torch.Tensor) -> np.ndarray:
        return calibrated(self.logits(images), self.calibration)

    def score(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """(calibrated fake probabilities, novelty or None), from one forward pass."""
        logits, novelty = self.logits_novelty(images)
        return calibrated(logits, self.calibration), novelty

    def logits_novelty(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """(raw logits, novelty or None), from one forward pass (evaluate needs the logits uncalibrated too)."""
        if self.novelty is None:
            return self.logits(images), None
        from .novelty import embedding, novelty_scores

        feats, logits = embedding(self.model, images, self.image_size)
        return logits, novelty_scores(feats, self.novelty)

    def logits(self, images: torch.Tensor) -> np.ndarray:
        return predict_logits(self.model, images, self.image_size, self.device, channels_last=True)

    def embed(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        emb, logits = embed_logits(self.model, images, self.image_size)
        return emb, calibrated(logits, self.calibration)


class OnnxScorer:
    """The exported detector (`dfd export --onnx`) through ONNX Runtime on CPU: logits, and the embedding the
    novelty score needs (output `features`)."""

    def __init__(self, model_dir: str | Path, onnx_path: str | Path | None = None) -> None:
        import onnxruntime as ort

        from .checkpoint import safe_load

        info = safe_load(Path(model_dir) / "detector.pt")  # threshold and input size travel with the weights
        self.name = Path(model_dir).name
        self.image_size, self.threshold = int(info["image_size"]), float(info["threshold"])
        self.calibration = info.get("calibration")
        self.novelty = info.get("novelty")
        self.novelty_threshold = None if self.novelty is None else float(self.novelty["threshold"])
        self.face_crop = info.get("face_crop")
        path = Path(onnx_path) if onnx_path else Path(model_dir) / "detector.onnx"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run `dfd export {model_dir} --onnx` first")
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def predict(self, images: torch.Tensor) -> np.ndarray:
        return self.score(images)[0]

    def score(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = self.session.run(None, {"image": to_input(images, self.image_size).numpy()})
        probs = calibrated(outputs[0], self.calibration)
        if self.novelty is None or len(outputs) < 2:  # no novelty model, or an export from before it
            return probs, None
        from .novelty import novelty_scores

        return probs, novelty_scores(outputs[1], self.novelty)

    def embed(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError("the ONNX export holds logits only: use the torch runtime for embeddings")


def spectrum_features(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) uint8 -> (N, SPECTRUM_LR_BINS) radial log-power spectrum of the luminance."""
    gray = images.float().numpy().transpose(0, 2, 3, 1) @ np.array([0.299, 0.587, 0.114], np.float32)
    if not len(gray):
        return np.zeros((0, SPECTRUM_LR_BINS))
    return np.stack([radial_spectrum(g, SPECTRUM_LR_BINS) for g in gray])


class JsonLogisticScorer(_NoNovelty):
    """Features + standardisation + logistic regression, stored as JSON (no pickle). Subclasses say
    which file and which features (and what the file says about them: DESCRIBE)."""

    FILE = ""
    DESCRIBE: dict = {}

    @classmethod
    def save(cls, out_dir: Path, size: int, threshold: float, scaler, lr, face_crop: dict | None = None) -> None:
        """The one writer of these files: input size, threshold, face crop, scaler and coefficients."""
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / cls.FILE).write_text(json.dumps({
            "image_size": size, "threshold": threshold, **cls.DESCRIBE, "face_crop": face_crop,
            "mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(),
            "coef": lr.coef_[0].tolist(), "intercept": float(lr.intercept_[0])}, indent=1))

    def __init__(self, model_dir: str | Path) -> None:
        cfg = json.loads((Path(model_dir) / self.FILE).read_text())
        self.name = Path(model_dir).name
        self.image_size, self.threshold = int(cfg["image_size"]), float(cfg["threshold"])
        self.face_crop = cfg.get("face_crop")
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
    DESCRIBE = {"bins": SPECTRUM_LR_BINS}

    def features(self, images: torch.Tensor) -> np.ndarray:
        return spectrum_features(images)


class ProbeScorer(JsonLogisticScorer):
    """Scores uint8 images with the stored probe (probe.json: size, threshold, scaler, coefficients)."""

    FILE = "probe.json"
    DESCRIBE = {"features": "efficientnet_lite0 imagenet, pooled taps"}

    def features(self, images: torch.Tensor) -> np.ndarray:
        from .probe import frozen_features

        return frozen_features(images, self.image_size)


def load_scorer(model_dir: str | Path, device: str = "cpu", runtime: str = "torch") -> Scorer:
    """The scorer a model folder holds: spectrum/probe baselines, or the detector (torch or onnx)."""
    model_dir = Path(model_dir)
    if (model_dir / SpectrumScorer.FILE).is_file():
        return SpectrumScorer(model_dir)
    if (model_dir / ProbeScorer.FILE).is_file():
        return ProbeScorer(model_dir)
    if runtime == "onnx":
        return OnnxScorer(model_dir)
    return TorchScorer(model_dir, device)
