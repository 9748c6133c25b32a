"""Deepfake face-image detector: the paper's hybrid GAN (an ImageNet CNN with SE attention as the discriminator;
EfficientNet-Lite0 by default, SE-ResNet34 in profiles/paper.yaml), run as an MLOps pipeline.

    from deepfake_detector import Detector
    Detector.load("artifacts/model").predict(["face.jpg"])
"""

from .core.version import __version__

__all__ = ["Detector", "Prediction"]


def __getattr__(name: str):
    """`Detector` and `Prediction` are imported on first use: `import deepfake_detector` stays free of torch."""
    if name in __all__:
        from .serving import detector

        return getattr(detector, name)
    raise AttributeError(f"module 'deepfake_detector' has no attribute {name!r}")
