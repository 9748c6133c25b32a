"""Stage `train`: the hybrid GAN. The discriminator is the detector.

    dfd train artifacts/splits artifacts/model reports/train [--resume] [--dry-run]
    torchrun --standalone --nproc_per_node 2 .venv/bin/dfd train artifacts/splits artifacts/model reports/train

Each step the discriminator D learns real (0) vs dataset fakes (1) with a weighted BCE, plus `gan_weight` x
BCE(D(extra fakes), fake). The extra fakes (`train.extra_fakes`) are the paper's DCGAN generator G's, which
learns through gradient reversal to make D say real (model/gan.py), or real training faces blended with a
jittered copy of themselves (model/selfblend.py); `none` turns the term off. Checkpoints every epoch
(artifacts/checkpoints/last.pt), so `--resume` continues a killed run to the same end; the best epoch by
`train.select_metric` on val becomes detector.pt. Under torchrun (model/distributed.py) every rank trains its
shard of each epoch and rank 0 alone validates, logs and writes.

Reading order: `train` (decode, build, fit, write the card) -> `fit` (the loop) -> `train_step` (one step).
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..core.metrics import binary_metrics, calibrated, choose_threshold, fit_platt
from ..core.faces import face_column
from ..core.param_reads import snapshot
from ..core.params import Params
from ..core.splits_io import read_split, split_version, write_seen
from .augment import augment, jpeg_cpu
from .checkpoint import check_resume, run_fingerprint, safe_load, save_detector, save_generator
from .distributed import Dist, barrier, rank0_decides, setup, shard, teardown
from .nets import MEMORY_FORMAT, Nets, autocast_dtype, build_nets, param_digest
from .scoring import predict_logits
from .selfblend import self_blend
from .tensorcache import decode_all

__all__ = ["TrainData", "TrainState", "fit", "train", "train_step"]


@dataclass
class TrainData:
    """The decoded training rows and val set. x may be a memory-mapped DiskCache (tensorcache.py)."""

    x: Any  # (N, 3, L, L) uint8, L = the decode size
    y: torch.Tensor  # (N,) 0 real / 1 fake
    rows: torch.Tensor  # the usable rows of x (decoded fine)
    val_x: torch.Tensor  # (M, 3, S, S) uint8 at the input size
    val_y: np.ndarray
    row_weights: torch.Tensor | None = None  # train.balance_sources: each row's draw weight
    sources: np.ndarray | None = None  # each row's source
    unreadable: int = 0  # train + val files that did not decode (skipped)
    hulls: torch.Tensor | None = None  # (N, 68, 2) landmarks in each row's crop (fractions): landmark-hull blends

    @property
    def real_rows(self) -> torch.Tensor:
        """The training reals: what self-blending blends."""
        return self.rows[self.y[self.rows] == 0]


@dataclass
class TrainState:
    epoch: int = -1  # last completed epoch
    best_score: float = -float("inf")
    best_epoch: int = -1
    bad_epochs: int = 0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


def train_step(nets: Nets, p: Params, xb: torch.Tensor, yb: torch.Tensor, data: TrainData,
               gen: torch.Generator) -> tuple[float, float]:
    """One step of D (and G) with a single backward; DDP all-reduces the gradients. (d_loss, g_loss)."""
    t, dev = p.train, nets.device
    n_extra = max(2, int(t.extra_fakes_share * len(xb))) if t.extra_fakes != "none" else 0
    if t.extra_fakes == "self_blend":  # blends join the batch: the same augmentation, the same forward
        reals = data.real_rows[torch.randint(len(data.real_rows), (n_extra,), generator=gen)]
        hulls = data.hulls[reals] if data.hulls is not None else None
        xb = torch.cat([xb, self_blend(data.x[reals], t.self_blend, gen, hulls)[0]])
    x = augment(jpeg_cpu(xb, t.augment, gen).to(dev, non_blocking=True), t.image_size, t.augment, gen)
    x = x.contiguous(memory_format=MEMORY_FORMAT)
    z = torch.randn(n_extra, p.model.latent_dim, generator=gen).to(dev) if t.extra_fakes == "dcgan" else None
    nets.opt_d.zero_grad(set_to_none=True)
    nets.opt_g.zero_grad(set_to_none=True)
    dtype = autocast_dtype(t.precision, dev)
    with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        logit, logit_gen = nets.step(x, z)  # (B [+ n_extra],), (n_extra,) for the DCGAN's faces
        if t.extra_fakes == "self_blend":
            logit, logit_gen = logit[:len(yb)], logit[len(yb):]
        loss = nets.crit(logit, yb.to(dev))
        if n_extra:
            loss = loss + t.gan_weight * F.binary_cross_entropy_with_logits(logit_gen, torch.ones_like(logit_gen))
    loss.backward()
    nets.opt_d.step()
    nets.sched.step()
    if z is not None:
        nets.opt_g.step()
    # g_loss: the non-saturating generator loss on this batch, -log D_real(G(z))
    g_loss = float(F.softplus(logit_gen.detach()).mean()) if z is not None else float("nan")
    return float(loss.detach()), g_loss


def epoch_order(data: TrainData, gen: torch.Generator) -> torch.Tensor:
    """The epoch's rows: a permutation, or (balance_sources) as many weighted draws as rows."""
    if data.row_weights is None:
        return data.rows[torch.randperm(len(data.rows), generator=gen)]
    return data.rows[torch.multinomial(data.row_weights, len(data.rows), replacement=True, generator=gen)]


def batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Consecutive batches; a last batch of one image is dropped (BatchNorm needs two)."""
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size) if len(order[i:i + batch_size]) > 1]


def validate_epoch(D: torch.nn.Module, data: TrainData, size: int, device: torch.device,
                   objective: str = "youden", max_fpr: float = 0.05) -> tuple[dict[str, float], float, dict[str, float]]:
    """Val metrics of calibrated probabilities (Platt scaling fitted on these val logits), the threshold chosen
    on them (evaluate.threshold), and the calibration itself."""
    logits = predict_logits(D, data.val_x, size, device)
    cal = fit_platt(logits, data.val_y)
    prob = calibrated(logits, cal)
    thr = choose_threshold(data.val_y, prob, objective, max_fpr)
    return binary_metrics(data.val_y, prob, thr), thr, cal


def fit(p: Params, data: TrainData, nets: Nets, model_dir: Path, ckpt_dir: Path, report_dir: Path, d: Dist,
        resume: bool = False, stop_after: int | None = None, progress: bool = True, fingerprint: dict | None = None,
        seen: list[list[int]] | None = None) -> tuple[TrainState, list[dict[str, float]]]:
    """The loop: epochs of train steps; rank 0 validates, keeps the best model, checkpoints and logs.
    Returns the state and this process's timings (img/s per epoch, which stay out of every tracked file)."""
    t, main = p.train, d.main
    state, timings, last = TrainState(), [], ckpt_dir / "last.pt"
    if resume and last.is_file():  # every rank loads it: the same weights everywhere
        state = load_checkpoint(last, nets, fingerprint)
    end = t.epochs if stop_after is None else min(t.epochs, stop_after)
    live = _live(report_dir, resume) if main else nullcontext()
    with live:
        for epoch in range(state.epoch + 1, end):
            if state.stopped_early:
                break
            seed = p.seed * 1000 + epoch  # per-epoch RNG: a resumed run replays the same epochs
            torch.manual_seed(seed + d.rank)
            gen = torch.Generator().manual_seed(seed)
            order = epoch_order(data, gen)  # the same on every rank ...
            if d.rank > 0:  # ... then each rank its own augmentation and latent draws
                gen.manual_seed(seed + 7919 * d.rank)
            steps = batches(shard(order, d), t.batch_size)[: nets.steps_per_epoch]
            if seen is not None:
                seen.append([int(i) for b in steps for i in b])
            nets.train_mode()
            d_losses, g_losses, t0 = [], [], time.perf_counter()
            for idx in tqdm(steps, desc=f"epoch {epoch + 1}/{t.epochs}", unit="batch", disable=not (progress and main),
                            leave=False):
                d_loss, g_loss = train_step(nets, p, data.x[idx], data.y[idx], data, gen)
                d_losses.append(d_loss), g_losses.append(g_loss)
            secs = time.perf_counter() - t0
            timings.append({"epoch": epoch, "images_per_s": sum(map(len, steps)) / max(secs, 1e-9), "epoch_s": secs})
            state.epoch = epoch
            if main:  # validate, keep the best, checkpoint, log
                op = p.evaluate.threshold
                metrics, thr, cal = validate_epoch(nets.D, data, t.image_size, nets.device, op.objective, op.max_fpr)
                score = metrics[t.select_metric]
                if score > state.best_score:
                    state.best_score, state.best_epoch, state.bad_epochs = score, epoch, 0
                    save_best(model_dir, nets, p, state.epoch, thr, metrics, cal)
                else:
                    state.bad_epochs += 1
                    state.stopped_early = state.bad_epochs >= t.patience
                stats = {"d_loss": float(np.mean(d_losses)),
                         "g_loss": float(np.nanmean(g_losses)) if t.extra_fakes == "dcgan" else float("nan")}
                state.history.append({"epoch": epoch, **stats, **{f"val_{k}": v for k, v in metrics.items()}})
                save_checkpoint(last, nets, state, fingerprint)
                _log_epoch(live, epoch, stats, metrics, timings[-1])
            state.stopped_early = rank0_decides(state.stopped_early, d)
        if main and state.best_epoch >= 0:
            best = next(h for h in state.history if h["epoch"] == state.best_epoch)
            live.summary["best"] = {"epoch": state.best_epoch,
                                    **{k[4:]: v for k, v in best.items() if k.startswith("val_")}}
    return state, timings


def _live(report_dir: Path, resume: bool):
    from dvclive import Live

    return Live(str(report_dir), dvcyaml=False, save_dvc_exp=False, resume=resume, report=None)


def _log_epoch(live, epoch: int, stats: dict[str, float], metrics: dict[str, float], timing: dict) -> None:
    live.step = epoch  # explicit: a resumed run continues the same step axis
    for k in ("d_loss", "g_loss"):
        if not np.isnan(stats[k]):
            live.log_metric(f"train/{k}", stats[k])
    for k in ("roc_auc", "accuracy", "f1", "precision", "recall", "average_precision"):
        live.log_metric(f"val/{k}", metrics[k])
    live.next_step()
    tqdm.write(f"epoch {epoch + 1}: d_loss {stats['d_loss']:.4f} g_loss {stats['g_loss']:.4f} "
               f"val_auc {metrics['roc_auc']:.4f} val_acc {metrics['accuracy']:.4f} ({timing['images_per_s']:.0f} img/s)")


def save_checkpoint(path: Path, nets: Nets, state: TrainState, fingerprint: dict | None) -> None:
    """last.pt: everything --resume needs; written to a temporary name and renamed (a kill never leaves half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"D": nets.D.state_dict(), "G": nets.G.state_dict(), "opt_d": nets.opt_d.state_dict(),
                "opt_g": nets.opt_g.state_dict(), "sched": nets.sched.state_dict(), "state": asdict(state),
                "fingerprint": fingerprint}, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, nets: Nets, fingerprint: dict | None) -> TrainState:
    ckpt = safe_load(path)
    if fingerprint is not None:
        check_resume(ckpt.get("fingerprint"), fingerprint, path)
    nets.D.load_state_dict(ckpt["D"]), nets.G.load_state_dict(ckpt["G"])
    nets.opt_d.load_state_dict(ckpt["opt_d"]), nets.opt_g.load_state_dict(ckpt["opt_g"])
    nets.sched.load_state_dict(ckpt["sched"])
    return TrainState(**ckpt["state"])


def save_best(model_dir: Path, nets: Nets, p: Params, epoch: int, threshold: float, metrics: dict[str, float],
              cal: dict[str, float]) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    save_detector(model_dir / "detector.pt", nets.D, p.train.image_size, threshold,
                  {"val_metrics": metrics, "epoch": epoch, "calibration": cal,
                   "face_crop": p.faces.crop_policy().to_dict()})  # predict/serve crop faces as training did
    m = p.model
    save_generator(model_dir / "generator.pt", nets.G, m.latent_dim, m.generator_width, m.generator_size)


def add_novelty(detector_pt: Path, data: TrainData, p: Params, device: torch.device) -> dict:
    """Fit the novelty score (model/novelty.py) on the saved best model's embeddings of the training images and
    store it in detector.pt; returns what the model card says of it."""
    from .checkpoint import load_detector
    from .novelty import embedding, fit_novelty

    model, info = load_detector(detector_pt, str(device))
    model = model.to(memory_format=torch.channels_last)
    size = p.train.image_size
    train_feats = np.concatenate([embedding(model, data.x[data.rows[i:i + 256]], size)[0]
                                  for i in range(0, len(data.rows), 256)])
    val_feats = embedding(model, data.val_x, size)[0]
    nov = fit_novelty(train_feats, val_feats, p.novelty)
    ckpt = safe_load(detector_pt)
    ckpt["novelty"] = nov
    tmp = detector_pt.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(detector_pt)
    return {"method": nov["method"], "dims": int(nov["components"].shape[0]), "quantile": nov["quantile"],
            "threshold": round(nov["threshold"], 6), "n_reference": int(len(train_feats))}


def load_data(p: Params, splits_dir: Path, cache_dir: Path, progress: bool, d: Dist) -> TrainData:
    """Decoded train/val images. Rank 0 decodes first (it may build the shared memory-mapped cache); the other
    ranks then reuse that cache or decode into their own RAM."""
    size, a = p.train.image_size, p.train.augment
    # With no scale/rotation augmentation, train images are cached at the input size itself: the model then sees
    # exactly the pixels evaluation sees (one antialiased resize, none at native size). Otherwise: room for the
    # resized crop.
    load_size = size if a.scale_min == 1 and a.rotation == 0 else round(size * 1.25)
    tr, va = read_split(splits_dir, "train"), read_split(splits_dir, "val")
    blends = p.train.extra_fakes == "self_blend"  # reals alone are enough: their blends are the fakes
    if va.empty or not (tr["y"].nunique() == 2 or (blends and set(tr["y"]) == {0})):
        raise ValueError("training needs both classes in the train split (or reals and train.extra_fakes: "
                         "self_blend) and a non-empty val split")
    if not d.main:
        barrier(d)
    limits, faces = p.decode_limits(), p.faces.face_input()
    train_x, ok_tr = decode_all(tr["path"].tolist(), load_size, limits, progress and d.main, "decode train",
                                disk_dir=cache_dir, ram_limit_bytes=int(p.train.cache_ram_gb * 2**30),
                                hashes=tr["sha256"].tolist() if "sha256" in tr else None,
                                faces=face_column(tr), face_input=faces, crop_size=size)
    val_x, ok_va = decode_all(va["path"].tolist(), size, limits, progress and d.main, "decode val",
                              faces=face_column(va), face_input=faces)
    if d.main:
        barrier(d)
    val_x, val_y = val_x[ok_va], va["y"].to_numpy()[ok_va]
    if blends and set(val_y) == {0}:  # a real-only val split: its own blends (a fixed draw) are the val fakes
        val_x = torch.cat([val_x, self_blend(val_x, p.train.self_blend, torch.Generator().manual_seed(p.seed))[0]])
        val_y = np.concatenate([val_y, np.ones_like(val_y)])
    data = TrainData(train_x, torch.tensor(tr["y"].to_numpy()), torch.as_tensor(np.flatnonzero(ok_tr)),
                     val_x, val_y, sources=tr["source"].to_numpy(), unreadable=int((~ok_tr).sum() + (~ok_va).sum()),
                     hulls=hull_points(tr, p, load_size) if blends else None)
    return with_balance(data, p.train.balance_sources)


def hull_points(frame, p: Params, load_size: int) -> torch.Tensor | None:
    """(N, 68, 2) landmarks of each training row in its decoded crop, as fractions of the side (NaN where a row
    has no stored face), for self-blends on the landmark hull; None when the rows carry no landmarks."""
    from ..core.faces import Face, N_LANDMARKS, crop_affine, landmarks_in_crop

    records = face_column(frame)
    if not any(records) or not {"width", "height"} <= set(frame):
        return None
    policy, size = p.faces.crop_policy(), p.train.image_size
    out = np.full((len(frame), N_LANDMARKS, 2), np.nan, np.float32)
    for i, (rec, w, h) in enumerate(zip(records, frame["width"], frame["height"])):
        face = Face.from_json(rec)
        if face is not None:
            out[i] = landmarks_in_crop(face, crop_affine(face, policy, size, int(w), int(h), load_size), load_size)
    return torch.from_numpy(out)


def with_balance(data: TrainData, balance_sources: bool) -> TrainData:
    """train.balance_sources: each row's draw weight, so that every (source, label) cell weighs the same."""
    if balance_sources:
        from .models import balanced_weights

        cells = None if data.sources is None else np.asarray(data.sources)[data.rows.numpy()]
        data.row_weights = balanced_weights(data.y[data.rows].numpy(), cells)
    return data


def train(splits_dir: str | Path, model_dir: str | Path, report_dir: str | Path, p: Params, *,
          ckpt_dir: str | Path = "artifacts/checkpoints", resume: bool = False, dry_run: bool = False,
          progress: bool = True, stop_after: int | None = None, run_log: str | Path | None = None,
          log_seen: bool = False, cache_dir: str | Path = "artifacts/cache/train") -> dict[str, Any]:
    """Train, write artifacts and reports; return the model card (best-epoch val metrics, run info).

    Timings (decode, fit, img/s per epoch) change on every run, so they stay out of the DVC-tracked model card
    and checkpoint: they go to `run_log` (a JSON file no stage tracks) and card["run"]. Above
    train.cache_ram_gb the decoded images live in shard files under cache_dir (outside every DVC output: they
    survive `dvc repro` and are reused). Under torchrun only rank 0 writes the model, card and reports; ranks > 0
    write `<run_log>.rank<R>.json` and return {"rank": R, "run": ...}.
    """
    import torchvision
    from torchvision.utils import save_image

    if p.train.threads:
        torch.set_num_threads(p.train.threads)
    model_dir, report_dir, ckpt_dir = Path(model_dir), Path(report_dir), Path(ckpt_dir)
    d = setup(p.train.device, p.train.ddp_backend)
    if d.device.type == "cpu":  # same inputs, same machine -> same bits (CUDA keeps its fast kernels)
        torch.use_deterministic_algorithms(True, warn_only=True)
    seen: list[list[int]] | None = [] if log_seen else None
    try:
        t0 = time.perf_counter()
        data = load_data(p, Path(splits_dir), Path(cache_dir), progress, d)
        decode_s = time.perf_counter() - t0
        data_version = split_version(splits_dir)  # the train/val rows: resume check and model card
        nets = build_nets(p, data.y[data.rows], d, max_batches=2 if dry_run else None,
                          balanced=data.row_weights is not None)
        t1 = time.perf_counter()
        state, timings = fit(p, data, nets, model_dir, ckpt_dir, report_dir, d, resume, stop_after, progress,
                             run_fingerprint(snapshot(p), data_version), seen)
        fit_s = time.perf_counter() - t1
    finally:
        teardown(d)
    run = {"model_dir": str(model_dir), "rank": d.rank, "world_size": d.world, "device": str(d.device),
           "decode_s": round(decode_s, 2), "fit_s": round(fit_s, 2), "epochs": timings,
           "params_sha256": param_digest(nets.D, nets.G),  # equal on every rank: gradients were all-reduced
           **({"seen": seen} if log_seen else {})}
    if run_log is not None:
        log = Path(run_log) if d.main else Path(run_log).with_suffix(f".rank{d.rank}.json")
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(json.dumps(run, indent=2, default=float) + "\n")
    if not d.main:
        return {"rank": d.rank, "run": run}
    if state.best_epoch < 0:
        raise RuntimeError("no epoch finished: nothing to save")
    novelty = add_novelty(model_dir / "detector.pt", data, p, d.device)
    best = state.history[[h["epoch"] for h in state.history].index(state.best_epoch)]
    with torch.no_grad():
        nets.G.eval()
        save_image(nets.G(nets.z_fixed.to(d.device)).float().cpu(), report_dir / "samples.png", nrow=8)
    name = f" ({torch.cuda.get_device_name()})" if d.device.type == "cuda" else ""
    card = {
        "model": f"hybrid {p.model.backbone} GAN discriminator", "positive_class": "fake",
        "data_version": {"train_val_sha256": data_version},  # what this model was trained on
        "params": snapshot(p),  # a record of the settings, not a read (core/param_reads.py)
        "class_weights": nets.class_weights, "best_epoch": state.best_epoch,
        "calibration": {"method": "platt (fitted on val logits)",  # the best epoch's, as saved (also on resume)
                        **safe_load(model_dir / "detector.pt")["calibration"]},
        "epochs_run": state.epoch + 1, "stopped_early": state.stopped_early,
        "val_metrics": {k[4:]: v for k, v in best.items() if k.startswith("val_")},
        "pretrained": None if nets.pretrained is None else {"skipped": nets.pretrained["skipped"]},
        "novelty": novelty,
        "device": (f"{d.world} x " if d.enabled else "") + d.device.type + name,
        "n_train": int(len(data.rows)), "n_val": int(len(data.val_x)),
        "unreadable_skipped": data.unreadable,
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__},
    }
    (model_dir / "model_card.json").write_text(json.dumps(card, indent=2, default=float) + "\n")
    write_seen(model_dir, splits_dir)  # the gate never scores this model on its own training images
    return card | {"run": run}
