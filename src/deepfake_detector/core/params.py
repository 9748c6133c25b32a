"""Typed schema for params.yaml, loaded once per command.

    from deepfake_detector.params import load_params
    p = load_params("params.yaml")   # unknown or mistyped keys -> ParamsError naming the key
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Strict(BaseModel):
    """Every field is required: values live only in params.yaml (a missing key is an error naming it);
    the schema holds types, bounds and what each setting means."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelIssueParams(_Strict):
    remove: bool
    features: Literal["embeddings", "cheap"]  # frozen pretrained embeddings | colour/spectrum stats
    c: float = Field(gt=0)  # inverse L2 strength of the out-of-fold logistic regression on embeddings
    folds: int = Field(ge=2)
    min_self_confidence: float = Field(ge=0, le=1)


class ValidateParams(_Strict):
    min_size: int = Field(ge=1)
    max_pixels: int = Field(ge=1)
    allow_grayscale: bool
    near_duplicate_distance: int = Field(ge=-1, le=32)  # -1: exact bytes only
    label_issue: LabelIssueParams


class SplitParams(_Strict):
    val: float = Field(ge=0, lt=1)
    test: float = Field(ge=0, lt=1)
    group_distance: int = Field(ge=0, le=32)


class ModelParams(_Strict):
    backbone: Literal["se_resnet34", "efficientnet_lite0"]
    input: Literal["rgb", "npr"]  # npr: neighbouring-pixel residuals x - up(down(x)) (Tan et al., CVPR 2024)
    pretrained: str | None  # imagenet | a local state-dict path | null (from scratch)
    stem: Literal["imagenet", "small", "cifar"]  # se_resnet34 only
    se_reduction: int = Field(ge=0)  # 0: no attention (plain backbone baseline)
    extra_convs: int = Field(ge=0)
    dropout: float = Field(ge=0, lt=1)
    latent_dim: int = Field(ge=1)
    generator_width: int = Field(ge=8)
    generator_size: int = Field(ge=8)  # G makes faces at this size; upsampled to train.image_size

    def detector_config(self) -> dict:
        """The architecture part, as stored in every checkpoint and rebuilt by model.factory.build_detector."""
        cfg = dict(backbone=self.backbone, input=self.input, se_reduction=self.se_reduction,
                   extra_convs=self.extra_convs, dropout=self.dropout)
        return {**cfg, "stem": self.stem} if self.backbone == "se_resnet34" else cfg


class AugmentParams(_Strict):
    scale_min: float = Field(gt=0, le=1)
    rotation: float = Field(ge=0, le=180)
    flip: bool
    jpeg_prob: float = Field(ge=0, le=1)
    jpeg_quality: tuple[int, int]
    blur_prob: float = Field(ge=0, le=1)
    blur_sigma: tuple[float, float]  # Gaussian sigma range, in px at 224 px (scaled to image_size)
    resize_prob: float = Field(ge=0, le=1)
    noise_prob: float = Field(ge=0, le=1)


class TrainParams(_Strict):
    device: Literal["auto", "cpu", "cuda"]
    image_size: int = Field(ge=16)
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=2)
    lr: float = Field(gt=0)  # new layers (SE gates, extra convs, head), and all layers from scratch
    lr_backbone: float = Field(gt=0)  # pretrained layers
    warmup_epochs: float = Field(ge=0)  # linear warmup, then cosine decay (per step)
    freeze_blocks: int = Field(ge=0)  # stem + first N backbone blocks frozen (weights and BN stats)
    freeze_bn: bool  # pretrained backbone's BN keeps its ImageNet running stats (train == eval behaviour)
    lr_generator: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    gan_weight: float = Field(ge=0)
    class_weights: Literal["auto"] | tuple[float, float]
    balance_sources: bool  # draw each epoch's rows so every (source, label) cell weighs the same
    patience: int = Field(ge=1)
    select_metric: Literal["roc_auc", "f1", "accuracy", "average_precision"]
    threads: int = Field(ge=0)
    cache_ram_gb: float = Field(gt=0)  # decoded training images above this go to shard files on disk
    ddp_backend: Literal["auto", "nccl", "gloo"]  # under torchrun: auto = nccl on CUDA, gloo on CPU
    sync_bn: bool  # under torchrun on CUDA: SyncBatchNorm instead of per-rank batch statistics
    augment: AugmentParams


class DriftParams(_Strict):
    drift_share: float = Field(gt=0, le=1)
    embedding_dims: int = Field(ge=1, le=512)
    embedding_threshold: float = Field(gt=0.5, le=1)  # ROC AUC of a reference-vs-current classifier


class BaselineParams(_Strict):
    cnn_ablations: bool  # fine-tune `plain` and the GAN toggle too (two more trainings)
    gan_on_weight: float = Field(gt=0)  # the GAN ablation's weight when the main model trains without it


class ServeParams(_Strict):
    uncertainty_band: float = Field(ge=0, le=0.5)  # "uncertain" when |p - threshold| < band
    batch_size: int = Field(ge=1)
    max_upload_mb: float = Field(gt=0)  # whole request body, refused before parsing
    max_files: int = Field(ge=1)
    decode_workers: int = Field(ge=1)
    request_log: str  # JSONL of served predictions; "" = off
    log_images: bool


class GateParams(_Strict):
    metric: Literal["roc_auc", "f1", "accuracy", "average_precision"]
    max_drop: float = Field(ge=0)  # new model may be at most this much worse than the accepted one
    max_f1_drop: float = Field(ge=0)


class FlowParams(_Strict):
    landing: str  # new labelled images arrive here: landing/real, landing/fake
    landing_settle_s: float = Field(ge=0)  # files modified more recently are still arriving: left for the next run
    quarantine: str  # rejected landed files are moved here, with the reasons
    archive: str  # merged landed files are moved here
    remote: str  # DVC remote when none is configured (a directory or s3://...)
    retrain_cron: str
    monitor_cron: str
    gate: GateParams


class Params(_Strict):
    seed: int
    validate_: ValidateParams = Field(alias="validate")
    split: SplitParams
    model: ModelParams
    train: TrainParams
    drift: DriftParams
    baselines: BaselineParams
    serve: ServeParams
    flows: FlowParams

    @model_validator(mode="after")
    def _sizes_fit_the_networks(self) -> "Params":
        if self.model.backbone == "efficientnet_lite0" and self.train.image_size % 32:
            raise ValueError(f"train.image_size must be a multiple of 32 for efficientnet_lite0, "
                             f"got {self.train.image_size}")
        if self.model.pretrained is None and self.train.freeze_blocks:
            raise ValueError("train.freeze_blocks needs model.pretrained (frozen random weights learn nothing)")
        return self


class ParamsError(ValueError):
    """params.yaml is missing, unparsable, or does not match the schema."""


def _read(path: Path) -> dict:
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
    return raw


def merge(base: dict, override: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else in override replaces the base value."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_params(path: str | Path = "params.yaml", *overrides: str | Path | dict) -> Params:
    """Read a params file, deep-merge override files/dicts on top, validate; errors name the key."""
    path = Path(path)
    raw = _read(path)
    for o in overrides:
        raw = merge(raw, o if isinstance(o, dict) else _read(Path(o)))
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{path}{' + overrides' if overrides else ''}: invalid params"]
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            lines.append(f"  {key}: {err['msg']}")
        raise ParamsError("\n".join(lines)) from None


def _leaves(d: dict, prefix: tuple = ()) -> dict[tuple, object]:
    out = {}
    for k, v in d.items():
        out.update(_leaves(v, prefix + (k,)) if isinstance(v, dict) else {prefix + (k,): v})
    return out


def apply_profile(params_path: str | Path, profile: str | Path) -> list[str]:
    """Write a profile's values into params.yaml in place, keeping its layout and comments.

    A profile holds only what differs (e.g. profiles/paper.yaml). The result is validated before it
    is written; returns the changed keys. DVC then sees an ordinary params change (`dvc params diff`).
    ruamel.yaml round-trips the file (comments, key order, flow-style lists such as `[40, 95]` kept);
    chosen over a hand-written line editor because it is the YAML library DVC itself uses.
    """
    import io

    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    params_path, profile = Path(params_path), Path(profile)
    wanted = _leaves(_read(profile))
    load_params(params_path, profile)  # validate the merged result first: nothing is written on error
    rt = YAML()  # round-trip mode
    rt.width, rt.preserve_quotes = 4096, True  # never fold a long line; "0 3 * * 1" stays quoted
    rt.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    doc = rt.load(params_path.read_text())
    missing, changed = [], []
    for path, value in wanted.items():
        node = doc
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, CommentedMap) else None
        if not isinstance(node, CommentedMap) or path[-1] not in node:
            missing.append(".".join(path))
            continue
        old = node[path[-1]]
        if isinstance(value, list) and isinstance(old, CommentedSeq) and old.fa.flow_style():
            value = CommentedSeq(value)
            value.fa.set_flow_style()
        node[path[-1]] = value
        changed.append(".".join(path))
    if missing:
        raise ParamsError(f"{profile}: keys not found in {params_path}: {', '.join(missing)}")
    out = io.StringIO()
    rt.dump(doc, out)
    params_path.write_text(out.getvalue())
    return changed
