"""The detector: networks, pretrained weights, augmentation, the GAN step, training (single process or DDP)."""
