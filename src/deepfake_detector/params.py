"""Typed schema for params.yaml, loaded once per command.

    from deepfake_detector.params import load_params
    p = load_params("params.yaml")   # unknown or mistyped keys -> ParamsError naming the key
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelIssueParams(_Strict):
    remove: bool = False
    folds: int = Field(5, ge=2)
    min_self_confidence: float = Field(0.1, ge=0, le=1)


class ValidateParams(_Strict):
    min_size: int = Field(32, ge=1)
    max_pixels: int = Field(40_000_000, ge=1)
    allow_grayscale: bool = False
    near_duplicate_distance: int = Field(4, ge=-1, le=32)  # -1: exact bytes only
    label_issue: LabelIssueParams = LabelIssueParams()


class SplitParams(_Strict):
    val: float = Field(0.15, ge=0, lt=1)
    test: float = Field(0.15, ge=0, lt=1)
    group_distance: int = Field(6, ge=0, le=32)


class ModelParams(_Strict):
    stem: Literal["imagenet", "small", "cifar"] = "imagenet"
    se_reduction: int = Field(16, ge=0)  # 0: no attention (plain ResNet34 baseline)
    extra_convs: int = Field(2, ge=0)
    dropout: float = Field(0.3, ge=0, lt=1)
    pretrained_weights: str | None = None
    latent_dim: int = Field(100, ge=1)
    generator_width: int = Field(64, ge=8)


class AugmentParams(_Strict):
    scale_min: float = Field(0.7, gt=0, le=1)
    rotation: float = Field(10, ge=0, le=180)
    flip: bool = True
    jpeg_prob: float = Field(0.3, ge=0, le=1)
    jpeg_quality: tuple[int, int] = (40, 95)
    blur_prob: float = Field(0.2, ge=0, le=1)
    resize_prob: float = Field(0.2, ge=0, le=1)
    noise_prob: float = Field(0.1, ge=0, le=1)


class TrainParams(_Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    image_size: int = Field(64, ge=16)
    epochs: int = Field(4, ge=1)
    batch_size: int = Field(16, ge=2)
    lr: float = Field(1e-3, gt=0)
    lr_generator: float = Field(2e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    gan_weight: float = Field(0.3, ge=0)
    class_weights: Literal["auto"] | tuple[float, float] = "auto"
    patience: int = Field(5, ge=1)
    select_metric: Literal["roc_auc", "f1", "accuracy", "average_precision"] = "roc_auc"
    threads: int = Field(0, ge=0)
    augment: AugmentParams = AugmentParams()


class DriftParams(_Strict):
    drift_share: float = Field(0.25, gt=0, le=1)
    embedding_dims: int = Field(32, ge=1, le=512)


class GateParams(_Strict):
    metric: Literal["roc_auc", "f1", "accuracy", "average_precision"] = "roc_auc"
    max_drop: float = Field(0.01, ge=0)  # new model may be at most this much worse than the accepted one
    max_f1_drop: float = Field(0.05, ge=0)


class FlowParams(_Strict):
    landing: str = "landing"          # new labelled images arrive here: landing/real, landing/fake
    quarantine: str = "quarantine"    # rejected landed files are moved here, with the reasons
    archive: str = "archive"          # merged landed files are moved here
    remote: str = "../dfd-remote"     # DVC remote when none is configured (a directory or s3://...)
    retrain_cron: str = "0 3 * * 1"
    monitor_cron: str = "0 6 * * *"
    gate: GateParams = GateParams()


class Params(_Strict):
    seed: int = 42
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    split: SplitParams = SplitParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    drift: DriftParams = DriftParams()
    flows: FlowParams = FlowParams()


class ParamsError(ValueError):
    """params.yaml is missing, unparsable, or does not match the schema."""


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file; errors name the offending key."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{path}: invalid params"]
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            lines.append(f"  {key}: {err['msg']}")
        raise ParamsError("\n".join(lines)) from None
