"""Typed schema for params.yaml, loaded once per command.

    from deepfake_detector.params import load_params
    p = load_params("params.yaml")   # unknown or mistyped keys -> ParamsError naming the key
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from . import param_reads


@dataclass(frozen=True)
class DecodeLimits:
    """What any image may be before a pixel of it is decoded (core.images.decode_image): one of `formats`
    (serve.formats; Pillow is never asked to try its other plugins) with at most `max_pixels`
    (validate.max_pixels) in its header. `Params.decode_limits()` builds it."""

    max_pixels: int
    formats: tuple[str, ...]


class _Strict(param_reads.Recorded, BaseModel):  # reads recorded: what a stage depends on
    """Every field is required: values live only in params.yaml (a missing key is an error naming it);
    the schema holds types, bounds and what each setting means."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelIssueParams(_Strict):
    remove: bool
    features: Literal["embeddings", "cheap"]  # frozen pretrained embeddings | colour/spectrum stats
    c: float = Field(gt=0)  # inverse L2 strength of the out-of-fold logistic regression on embeddings
    folds: int = Field(ge=2)
    max_label_probability: float = Field(ge=0, le=1)  # a judge giving a file's label less than this flags it


class ValidateParams(_Strict):
    min_size: int = Field(ge=1)
    max_pixels: int = Field(ge=1)
    max_file_mb: float = Field(gt=0)  # larger files are never read whole or decoded: unreadable
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


class SelfBlendParams(_Strict):
    """Self-blended images (Shiohara & Yamasaki, CVPR 2022): a real face blended with a jittered copy of
    itself through a soft, deformed face mask (model/selfblend.py)."""

    colour: float = Field(ge=0, le=1)  # per-channel gain/offset jitter of the source copy
    blur_prob: float = Field(ge=0, le=1)  # the source copy blurred (else sharpened) with this probability
    scale: float = Field(ge=0, lt=0.5)  # source copy resized by 1 +- scale
    shift: float = Field(ge=0, lt=0.5)  # and shifted by +- shift of the image side
    mask: Literal["ellipse", "hull"]  # hull: the convex hull of the row's 68 landmarks (rows without: the ellipse)
    mask_axes: tuple[float, float]  # ellipse semi-axes (x, y) as fractions of the image side
    mask_jitter: float = Field(ge=0, lt=1)  # relative jitter of the ellipse's centre, axes and the erosion/dilation
    mask_deform: float = Field(ge=0, lt=0.5)  # elastic deformation of the mask, fraction of the side
    mask_blur: tuple[float, float]  # mask edge blur sigma range, fraction of the side
    ratio: tuple[float, float]  # blend ratio range: how much of the source enters inside the mask


RUNTIME_TRAIN_KEYS = frozenset({"threads", "device", "cache_ram_gb", "ddp_backend"})
"""train.* settings that place or speed a run but never change what it learns: no DVC dependency (dvc.yaml
names every other train key), and free to change on --resume."""


class TrainParams(_Strict):
    device: Literal["auto", "cpu", "cuda"]
    precision: Literal["fp32", "bf16", "auto"]  # autocast dtype; auto: bf16 on CUDA, fp32 on CPU (docs/model.md)
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
    extra_fakes: Literal["dcgan", "self_blend", "none"]  # the hybrid's source of extra fakes for D
    extra_fakes_share: float = Field(gt=0, le=2)  # extra fakes per step, as a share of batch_size
    gan_weight: float = Field(ge=0)  # weight of the extra-fakes term in D's loss
    self_blend: SelfBlendParams
    class_weights: Literal["auto"] | tuple[float, float]
    balance_sources: bool  # draw each epoch's rows so every (source, label) cell weighs the same
    patience: int = Field(ge=1)
    select_metric: Literal["roc_auc", "f1", "accuracy", "average_precision"]
    threads: int = Field(ge=0)
    cache_ram_gb: float = Field(gt=0)  # decoded training images above this go to shard files on disk
    ddp_backend: Literal["auto", "nccl", "gloo"]  # under torchrun: auto = nccl on CUDA, gloo on CPU
    sync_bn: bool  # under torchrun on CUDA: SyncBatchNorm instead of per-rank batch statistics
    augment: AugmentParams


class NoveltyParams(_Strict):
    """The "unfamiliar input" score fitted by `train` (model/novelty.py)."""

    method: Literal["knn", "mahalanobis"]
    k: int = Field(ge=1)  # knn: neighbours averaged
    dims: int = Field(ge=2)  # principal components of the standardised multi-layer embedding
    quantile: float = Field(gt=0.5, lt=1)  # threshold: this quantile of the val images' novelty


class ThresholdParams(_Strict):
    """The operating point `train` stores with the model, chosen on val (core.metrics.choose_threshold)."""

    objective: Literal["youden", "max_fpr"]  # youden: max TPR - FPR on val | max_fpr: most recall, real FPR <= max_fpr
    max_fpr: float = Field(gt=0, lt=1)  # the share of real val faces that may be called fake (max_fpr)


class EvaluateParams(_Strict):
    bootstrap: int = Field(ge=100)  # resamples of every 95 % interval (evaluate, per source, the gate)
    workers: int = Field(ge=1)  # decode threads
    threshold: ThresholdParams


class FacesParams(_Strict):
    """Faces, not files (core/faces.py): every path finds the faces of a picture and crops them the same way."""

    policy: Literal["whole", "box", "align"]  # whole: no face finding | box | align (core/faces.py)
    margin: float = Field(ge=0, le=1)  # the landmark square widened by this x its side on each edge
    native_min: float = Field(gt=0, le=1)  # box: a face square of >= this x input size (and <= it) is not resampled
    centre_up: float = Field(ge=-0.5, le=0.5)  # box: the square's centre this x its side above the landmarks' centre
    upsample: int = Field(ge=0, le=2)  # dlib HOG pyramid upsampling (1: faces down to ~40 px)
    max_side: int = Field(ge=64)  # pictures are downscaled to this for detection (landmarks at full size)
    min_face: int = Field(ge=8)  # px; smaller detections are ignored
    min_score: float  # dlib HOG detection score threshold
    min_score_extra: float  # a picture's second and further faces count only from this detection score
    require_one: bool  # validate: with a face policy, a picture with no face or several faces is rejected
    no_face: Literal["skip", "whole"]  # predict/serve: a picture with no face gets status no_face | is scored whole
    max_faces: int = Field(ge=1)  # predict/serve: the largest this many faces of a picture are scored

    def crop_policy(self):
        from .faces import CropPolicy

        return CropPolicy(self.policy, self.margin, self.native_min, self.centre_up)

    def finder(self):
        from .faces import FinderSettings

        return FinderSettings(self.upsample, self.max_side, self.min_face, self.min_score, self.min_score_extra)

    def options(self):
        from .faces import FaceOptions

        return FaceOptions(self.finder(), self.no_face, self.max_faces)

    def face_input(self):
        """core.faces.FaceInput: this policy with these finder settings (what training crops with)."""
        from .faces import FaceInput

        return FaceInput(self.crop_policy(), self.finder())


class DriftParams(_Strict):
    drift_share: float = Field(gt=0, le=1)
    embedding_dims: int = Field(ge=1, le=512)
    embedding_threshold: float = Field(gt=0.5, le=1)  # ROC AUC of a reference-vs-current classifier


class BaselineParams(_Strict):
    cnn_ablations: bool  # fine-tune `plain` and the GAN toggle too (two more trainings)
    gan_on_weight: float = Field(gt=0)  # the GAN ablation's weight when the main model trains without it
    probe_c: float = Field(gt=0)  # inverse L2 strength of probe_lr's logistic regression
    spectrum_c: float = Field(gt=0)  # and of spectrum_lr's
    max_iter: int = Field(ge=100)  # solver iterations for both


ImageFormat = Literal["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"]  # Pillow's names; never EPS/PDF (Ghostscript)


class ServeParams(_Strict):
    uncertainty_band: float = Field(ge=0, le=0.5)  # "uncertain" when |p - threshold| < band
    batch_size: int = Field(ge=1)  # images per forward pass (the dynamic batch's upper bound)
    batching: bool  # the service batches images of concurrent requests; false: one forward per request
    max_wait_ms: float = Field(ge=0)  # how long a dynamic batch waits for more images
    backend: Literal["torch", "onnx"]  # the service's runtime (onnx: the exported detector.onnx)
    api_keys_file: str  # "" = no keys; else NAME sha256:HEX lines (`dfd serve keys add NAME`)
    allowed_origins: tuple[str, ...]  # browser Origins allowed to call the API; others get 403
    max_upload_mb: float = Field(gt=0)  # whole request body, refused before parsing
    max_concurrency: int = Field(ge=1)  # /predict requests in flight; more: 503 before the body is read
    body_timeout_s: float = Field(gt=0)  # the whole body must arrive within this (408)
    spool_kb: int = Field(ge=1)  # an uploaded file is held in memory up to this, then spooled to disk
    request_timeout_s: float = Field(gt=0)  # a /predict request's deadline once its body is in (504, work cancelled)
    max_queue: int = Field(ge=1)  # images waiting for a decoder, and for the model (503 past it)
    rate_per_key: float = Field(ge=0)  # requests/s per API key (keys on); 0 = no limit
    rate_burst: int = Field(ge=1)  # token-bucket burst of rate_per_key (429 past it)
    model_timeout_s: float = Field(gt=0)  # a model call running longer turns /ready red
    drain_s: float = Field(ge=0)  # SIGTERM: requests in flight get this long to finish
    max_files: int = Field(ge=1)
    max_request_pixels: int = Field(ge=1)  # header pixels of all files of one request, before any decode
    decode_workers: int = Field(ge=1)  # decode processes
    decode_timeout_s: float = Field(gt=0)  # a decode past this is abandoned (503 for that file)
    request_log: str  # JSONL of served predictions; "" = off
    request_log_max_mb: float = Field(gt=0)  # rotated past this size ...
    request_log_keep: int = Field(ge=1)  # ... keeping this many old files
    log_images: bool
    formats: tuple[ImageFormat, ...] = Field(min_length=1)  # the one allowlist: service, validation, API, monitor


class GateParams(_Strict):
    metric: Literal["roc_auc", "f1", "accuracy", "average_precision"]
    max_drop: float = Field(ge=0)  # new model may be at most this much worse than the accepted one
    max_f1_drop: float = Field(ge=0)


class LabelJudgeParams(_Strict):
    max_label_probability: float = Field(ge=0, le=1)  # the champion giving a landed file's label less: flagged
    remove: bool  # flagged landed files are quarantined (reason label_issue), else listed in the record only


class FlowParams(_Strict):
    landing: str  # new labelled images arrive here: landing/real, landing/fake
    landing_settle_s: float = Field(ge=0)  # files modified more recently are still arriving: left for the next run
    lock_stale_s: float = Field(gt=0)  # a retrain lock whose heartbeat is older than this is taken over
    lock_heartbeat_s: float = Field(gt=0)  # how often a running retrain renews its lock
    data_branch: str = Field(min_length=1)  # the data line: every run's accepted batch, promoted or not
    label_judge: LabelJudgeParams  # the champion as the judge of each landed file's label
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
    faces: FacesParams
    model: ModelParams
    train: TrainParams
    novelty: NoveltyParams
    evaluate: EvaluateParams
    drift: DriftParams
    baselines: BaselineParams
    serve: ServeParams
    flows: FlowParams

    def decode_limits(self) -> DecodeLimits:
        """What every decode in every stage allows (core.images.decode_image): serve.formats, validate.max_pixels."""
        return DecodeLimits(self.validate_.max_pixels, tuple(self.serve.formats))

    @model_validator(mode="after")
    def _sizes_fit_the_networks(self) -> "Params":
        with param_reads.paused():  # the schema's cross-checks are not a stage's reads
            return self._check_sizes()

    def _check_sizes(self) -> "Params":
        if self.model.backbone == "efficientnet_lite0" and self.train.image_size % 32:
            raise ValueError(f"train.image_size must be a multiple of 32 for efficientnet_lite0, "
                             f"got {self.train.image_size}")
        if self.train.extra_fakes != "none" and self.train.gan_weight == 0:
            raise ValueError("train.gan_weight is 0 with train.extra_fakes "
                             f"{self.train.extra_fakes!r}: set extra_fakes: none to turn the term off")
        if self.model.pretrained is None and self.train.freeze_blocks:
            raise ValueError("train.freeze_blocks needs model.pretrained (frozen random weights learn nothing)")
        return self


param_reads.register(Params)


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
