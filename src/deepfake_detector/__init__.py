"""Deepfake face-image detector: hybrid ResNet34 + SE attention GAN, as an MLOps pipeline."""

__version__ = "0.1.0"
