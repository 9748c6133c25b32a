"""Saving and loading model artifacts safely (`torch.load(weights_only=True)` only).

    det, info = load_detector("artifacts/model")   # info: image_size, threshold, config, ...
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.params import RUNTIME_TRAIN_KEYS
from .factory import build_detector
from .models import Generator

FORMAT = "dfd-detector/1"


class CheckpointError(RuntimeError):
    """A model file is missing, not a torch checkpoint, tampered, or from another model."""


# Settings a resumed run may change: they extend or place the run, they do not change what was learned so far.
RESUME_FREE = frozenset({"train.epochs", "train.patience", *(f"train.{k}" for k in RUNTIME_TRAIN_KEYS)})


def run_fingerprint(params: dict[str, Any], data_sha256: str) -> dict[str, Any]:
    """What last.pt must match to be resumed: the flattened seed/model/train params (less RESUME_FREE)
    and the digest of the train/val split rows (splits_io.split_version)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, obj: Any) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif prefix not in RESUME_FREE:
            flat[prefix] = list(obj) if isinstance(obj, tuple) else obj

    walk("", {k: params[k] for k in ("seed", "model", "train")})
    return {"params": flat, "data_sha256": data_sha256}


def check_resume(saved: dict[str, Any] | None, now: dict[str, Any], path: Path) -> None:
    """Refuse to continue a checkpoint made with other params or data, naming what differs."""
    if saved is None:
        raise CheckpointError(f"{path} carries no params/data fingerprint (made before resume checks): cannot tell "
                              "what it was trained on; delete it or train without --resume")
    diffs = [f"{k}: {saved['params'].get(k)!r} in the checkpoint, {now['params'].get(k)!r} now"
             for k in sorted(set(saved["params"]) | set(now["params"])) if saved["params"].get(k) != now["params"].get(k)]
    if saved["data_sha256"] != now["data_sha256"]:
        diffs.append(f"data: the train/val split rows differ (checkpoint {saved['data_sha256'][:12]}, "
                     f"now {now['data_sha256'][:12]})")
    if diffs:
        raise CheckpointError(f"cannot resume {path}: it was made with other settings or data; "
                              + "; ".join(diffs) + ". Delete it or train without --resume")


def safe_load(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError,
            AttributeError, TypeError, OSError) as exc:
        raise CheckpointError(
            f"{path}: not a loadable checkpoint (corrupt, truncated, or contains non-tensor objects; "
            f"only weights_only files are accepted): {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj


def save_detector(path: Path, model: nn.Module, image_size: int, threshold: float,
                  extra: dict[str, Any] | None = None) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": FORMAT, "config": dict(model.config), "image_size": image_size,
                "threshold": float(threshold), "state_dict": state, **(extra or {})}, path)


def load_detector(model_dir_or_file: str | Path, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the detector from detector.pt; errors name the file and what is wrong."""
    path = Path(model_dir_or_file)
    if path.is_dir():
        path = path / "detector.pt"
    ckpt = safe_load(path)
    if ckpt.get("format") != FORMAT or "state_dict" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path}: not a dfd detector checkpoint (format {ckpt.get('format')!r})")
    try:
        model = build_detector(ckpt["config"])  # architecture only: weights come from the file
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (RuntimeError, TypeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: weights do not match the stored config: {str(exc)[:300]}") from None
    model.eval().to(device)
    info = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model, info


def save_generator(path: Path, G: Generator, latent_dim: int, generator_width: int, generator_size: int) -> None:
    """generator.pt: config keys = the model.* param names (what load_generator rebuilds from) + weights."""
    torch.save({"config": {"latent_dim": latent_dim, "generator_width": generator_width,
                           "generator_size": generator_size},
                "state_dict": {k: v.detach().cpu() for k, v in G.state_dict().items()}}, path)


def load_generator(path: str | Path) -> Generator:
    ckpt = safe_load(path)
    legacy = {"width": "generator_width", "image_size": "generator_size"}  # generator.pt before 2026-11-27
    try:
        gen = Generator(**{legacy.get(k, k): v for k, v in ckpt["config"].items()})
        gen.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path}: not a dfd generator checkpoint: {str(exc)[:300]}") from None
    return gen.eval()
