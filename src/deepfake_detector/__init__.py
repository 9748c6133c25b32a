"""Deepfake face-image detector: the paper's hybrid GAN (an ImageNet CNN with SE attention as the discriminator;
EfficientNet-Lite0 by default, SE-ResNet34 in profiles/paper.yaml), run as an MLOps pipeline."""

__version__ = "0.1.0"
