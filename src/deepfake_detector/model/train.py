"""Stage `train`: the hybrid GAN. The discriminator is the detector.

    dfd train artifacts/splits artifacts/model reports/train [--resume] [--dry-run]

Each step the discriminator D learns real (0) vs dataset fakes (1) with a weighted BCE, plus
`gan_weight` x BCE(D(G(z)), fake) on generated faces; the generator G learns to make D say
real. Checkpoints every epoch (artifacts/checkpoints/last.pt) so `--resume` continues a killed
run to the same end; the best epoch by `train.select_metric` on val becomes detector.pt.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .augment import augment, jpeg_cpu
from .checkpoint import check_resume, run_fingerprint, safe_load, save_detector
from .factory import build_detector
from .gan import GanStep
from .optim import make_optimizers, warmup_cosine
from .distributed import Dist, barrier, rank0_decides, setup, shard, sync_batchnorm, teardown, wrap
from ..core.metrics import binary_metrics, calibrated, choose_threshold, fit_platt
from .models import (Generator, WeightedBCELoss, backbone_batchnorms, balanced_weights, class_weights_from_counts,
                     freeze_early, keep_frozen_eval)
from ..core.params import Params
from .scoring import predict_logits
from ..core.splits_io import read_split, split_version, write_seen
from .tensorcache import decode_all

__all__ = ["Trainer", "train"]


def build_trainable_detector(p: Params, device: torch.device, sync_bn: bool = False
                             ) -> tuple[torch.nn.Module, list, dict | None]:
    """(detector on device, its frozen modules, pretrained-weights info). SyncBatchNorm (sync_bn: train.sync_bn
    under torchrun on CUDA) replaces BN modules, so it comes before the frozen list: frozen BN stays frozen."""
    m, t = p.model, p.train
    D = build_detector(m.detector_config(), pretrained=m.pretrained)
    info = D.pretrained_info
    D = sync_batchnorm(D, sync_bn)
    frozen = freeze_early(D, t.freeze_blocks)
    if m.pretrained and t.freeze_bn:  # small-data fine-tuning: BN stats lagging fast-moving weights
        frozen += backbone_batchnorms(D)  # made eval-mode scores differ from train-mode ones
    # channels-last: 2x faster depthwise/3x3 convs on CPU (oneDNN) as on CUDA
    return D.to(device, memory_format=torch.channels_last), frozen, info


@dataclass
class TrainState:
    epoch: int = -1  # last completed epoch
    best_score: float = -float("inf")
    best_epoch: int = -1
    bad_epochs: int = 0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


class Trainer:
    """The GAN training loop. __init__ reads as a list of setups (data, networks, optimisation, loss,
    bookkeeping), each a small method; `fit` is the loop."""

    def __init__(self, p: Params, train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor,
                 val_y: np.ndarray, model_dir: Path, ckpt_dir: Path, report_dir: Path, device: torch.device,
                 progress: bool = True, max_batches: int | None = None, rows: np.ndarray | None = None,
                 dist: Dist | None = None, log_seen: bool = False, fingerprint: dict | None = None,
                 sources: np.ndarray | None = None) -> None:
        """rows: the usable rows of train_x/train_y (all by default); train_x may be a memory-mapped cache.
        sources: each train row's source, for train.balance_sources (one source when None).
        dist: this process's rank when launched by torchrun (see distributed.py).
        fingerprint: params + data digest stored in last.pt; --resume refuses a checkpoint with another."""
        self.p, self.t, self.device = p, p.train, device
        self.dist = dist or Dist(device=device)
        self.model_dir, self.ckpt_dir, self.report_dir = model_dir, ckpt_dir, report_dir
        self.progress = progress and self.dist.main
        self.fingerprint = fingerprint
        self._setup_data(train_x, train_y, val_x, val_y, rows, sources)
        self._setup_networks()
        self._setup_optimisation(max_batches)
        self._setup_loss()
        self.state = TrainState()
        self.timings: list[dict[str, float]] = []  # per epoch of this process: img/s, seconds
        self.seen: list[list[int]] | None = [] if log_seen else None  # dataset rows per epoch (tests)

    def _setup_data(self, train_x, train_y, val_x, val_y, rows, sources) -> None:
        self.train_x, self.train_y, self.val_x, self.val_y = train_x, train_y, val_x, val_y
        self.rows = torch.arange(len(train_x)) if rows is None else torch.as_tensor(rows)
        self.row_weights = None  # train.balance_sources: per-row draw weights
        if self.t.balance_sources:
            cells = None if sources is None else np.asarray(sources)[self.rows.numpy()]
            self.row_weights = balanced_weights(self.train_y[self.rows].numpy(), cells)

    def _setup_networks(self) -> None:
        """D (pretrained, partly frozen), G, and the step that runs both (DDP-wrapped under torchrun)."""
        torch.manual_seed(self.p.seed)
        m, d = self.p.model, self.dist
        self.D, self.frozen, self.pretrained = build_trainable_detector(
            self.p, self.device, sync_bn=self.t.sync_bn and d.enabled and self.device.type == "cuda")
        self.G = Generator(m.latent_dim, m.generator_width, m.generator_size).to(self.device)
        # the generator joins the DDP-wrapped step only when it is used: DDP needs every parameter in the loss
        self.step = wrap(GanStep(self.D, self.G if self.t.gan_weight > 0 else None, self.t.image_size), d)
        self.z_fixed = torch.randn(32, m.latent_dim, generator=torch.Generator().manual_seed(self.p.seed))

    def _setup_optimisation(self, max_batches: int | None) -> None:
        """AdamW/Adam and the per-step warmup + cosine schedule of D's learning rate."""
        self.opt_d, self.opt_g = make_optimizers(self.D, self.G, self.p)
        self.steps_per_epoch = max(1, len(self._batches(shard(self.rows, self.dist))))
        if max_batches:
            self.steps_per_epoch = min(self.steps_per_epoch, max_batches)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt_d, warmup_cosine(round(self.t.warmup_epochs * self.steps_per_epoch),
                                      self.t.epochs * self.steps_per_epoch))

    def _setup_loss(self) -> None:
        """The weighted BCE: class weights from the train rows' label counts unless given."""
        counts = ([1, 1] if self.row_weights is not None  # balanced draws: both classes come equally often
                  else torch.bincount(self.train_y[self.rows], minlength=2).tolist())
        w = class_weights_from_counts(*counts) if self.t.class_weights == "auto" else self.t.class_weights
        self.class_weights = tuple(float(v) for v in w)
        self.crit = WeightedBCELoss(self.class_weights).to(self.device)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    def _run_batch(self, xb: torch.Tensor, yb: torch.Tensor, gen: torch.Generator) -> tuple[float, float]:
        """One D+G step with a single backward (see GanStep); DDP all-reduces the gradients."""
        a, dev = self.t.augment, self.device
        x = augment(jpeg_cpu(xb, a, gen).to(dev, non_blocking=True), self.t.image_size, a, gen)
        x = x.contiguous(memory_format=torch.channels_last)
        y = yb.to(dev)
        n_gen = max(2, len(xb) // 2) if self.t.gan_weight > 0 else 0
        self.opt_d.zero_grad(set_to_none=True)
        self.opt_g.zero_grad(set_to_none=True)
        with self._autocast():
            z = torch.randn(n_gen, self.p.model.latent_dim, generator=gen).to(dev) if n_gen else None
            logit, logit_gen = self.step(x, z)
            loss = self.crit(logit, y)
            if n_gen:
                loss = loss + self.t.gan_weight * F.binary_cross_entropy_with_logits(
                    logit_gen, torch.ones(n_gen, device=dev))
        loss.backward()
        self.opt_d.step()
        self.sched.step()
        if n_gen:
            self.opt_g.step()
        # g_loss reported as the non-saturating generator loss on this batch: -log D_real(G(z))
        g_loss = float(F.softplus(logit_gen.detach()).mean()) if n_gen else float("nan")
        return float(loss.detach()), g_loss

    def _batches(self, order: torch.Tensor) -> list[torch.Tensor]:
        """Consecutive batches of `order`; a last batch of one image is dropped (BatchNorm needs two)."""
        bs = self.t.batch_size
        return [order[i:i + bs] for i in range(0, len(order), bs) if len(order[i:i + bs]) > 1]

    def _run_epoch(self, epoch: int) -> dict[str, float]:
        seed = self.p.seed * 1000 + epoch  # per-epoch RNG: a resumed run replays the same epochs
        torch.manual_seed(seed + self.dist.rank)
        gen = torch.Generator().manual_seed(seed)
        self.D.train(), self.G.train()
        keep_frozen_eval(self.frozen)
        if self.row_weights is None:  # the same order on every rank
            order = self.rows[torch.randperm(len(self.rows), generator=gen)]
        else:  # as many draws as rows, each (source, label) cell equally likely
            order = self.rows[torch.multinomial(self.row_weights, len(self.rows), replacement=True, generator=gen)]
        if self.dist.rank > 0:  # own augmentation and latent draws per rank (rank 0 = single process)
            gen.manual_seed(seed + 7919 * self.dist.rank)
        batches = self._batches(shard(order, self.dist))[: self.steps_per_epoch]
        if self.seen is not None:
            self.seen.append([int(i) for b in batches for i in b])
        d_losses, g_losses, n_img, t0 = [], [], 0, time.perf_counter()
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{self.t.epochs}", unit="batch", disable=not self.progress,
                   leave=False)
        for idx in bar:
            d, g = self._run_batch(self.train_x[idx], self.train_y[idx], gen)
            d_losses.append(d), g_losses.append(g)
            n_img += len(idx)
            bar.set_postfix(d=f"{d:.3f}", g=f"{g:.3f}")
        secs = time.perf_counter() - t0
        # timings go to the run log, not to the checkpoint: same inputs -> same last.pt bytes
        self.timings.append({"epoch": epoch, "images_per_s": n_img / max(secs, 1e-9), "epoch_s": secs})
        return {"d_loss": float(np.mean(d_losses)),
                "g_loss": float(np.nanmean(g_losses)) if self.t.gan_weight > 0 else float("nan")}

    def _evaluate(self) -> tuple[dict[str, float], float, dict[str, float]]:
        """Val metrics of calibrated probabilities (Platt scaling fitted on these val logits), the
        threshold chosen on them, and the calibration itself."""
        logits = predict_logits(self.D, self.val_x, self.t.image_size, self.device)
        cal = fit_platt(logits, self.val_y)
        prob = calibrated(logits, cal)
        thr = choose_threshold(self.val_y, prob)
        return binary_metrics(self.val_y, prob, thr), thr, cal

    def _save_checkpoint(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"D": self.D.state_dict(), "G": self.G.state_dict(), "opt_d": self.opt_d.state_dict(),
                    "opt_g": self.opt_g.state_dict(), "sched": self.sched.state_dict(),
                    "state": asdict(self.state), "fingerprint": self.fingerprint}, tmp)
        os.replace(tmp, path)  # a kill mid-save never leaves a half-written checkpoint

    def _load_checkpoint(self, path: Path) -> None:
        ckpt = safe_load(path)
        if self.fingerprint is not None:
            check_resume(ckpt.get("fingerprint"), self.fingerprint, path)
        self.D.load_state_dict(ckpt["D"]), self.G.load_state_dict(ckpt["G"])
        self.opt_d.load_state_dict(ckpt["opt_d"]), self.opt_g.load_state_dict(ckpt["opt_g"])
        self.sched.load_state_dict(ckpt["sched"])
        self.state = TrainState(**ckpt["state"])

    def _save_best(self, threshold: float, metrics: dict[str, float], cal: dict[str, float]) -> None:
        self.model_dir.mkdir(parents=True, exist_ok=True)
        save_detector(self.model_dir / "detector.pt", self.D, self.t.image_size, threshold,
                      {"val_metrics": metrics, "epoch": self.state.epoch, "calibration": cal})
        m = self.p.model
        torch.save({"config": {"latent_dim": m.latent_dim, "generator_width": m.generator_width,
                               "generator_size": m.generator_size},
                    "state_dict": {k: v.cpu() for k, v in self.G.state_dict().items()}},
                   self.model_dir / "generator.pt")

    def fit(self, resume: bool = False, stop_after: int | None = None) -> TrainState:
        last = self.ckpt_dir / "last.pt"
        if resume and last.is_file():  # every rank loads it: the same weights everywhere
            self._load_checkpoint(last)
        end = self.t.epochs if stop_after is None else min(self.t.epochs, stop_after)
        with self._live(resume) as live:
            for epoch in range(self.state.epoch + 1, end):
                if self.state.stopped_early:
                    break
                stats = self._run_epoch(epoch)
                self.state.epoch = epoch
                if self.dist.main:
                    self._end_epoch(epoch, stats, live)  # validate, keep the best, log
                    self._save_checkpoint(last)
                self.state.stopped_early = rank0_decides(self.state.stopped_early, self.dist)
            self._log_best(live)
        return self.state

    def _log_best(self, live) -> None:
        if live is not None and self.state.best_epoch >= 0:
            best = next(h for h in self.state.history if h["epoch"] == self.state.best_epoch)
            live.summary["best"] = {"epoch": self.state.best_epoch,
                                    **{k[4:]: v for k, v in best.items() if k.startswith("val_")}}

    def _live(self, resume: bool):
        """DVCLive on rank 0; nothing elsewhere."""
        from contextlib import nullcontext

        from dvclive import Live

        if not self.dist.main:
            return nullcontext()
        return Live(str(self.report_dir), dvcyaml=False, save_dvc_exp=False, resume=resume, report=None)

    def _end_epoch(self, epoch: int, stats: dict[str, float], live) -> None:
        """Rank 0: evaluate, keep the best model, early-stopping state, log."""
        metrics, thr, cal = self._evaluate()
        score = metrics[self.t.select_metric]
        if score > self.state.best_score:
            self.state.best_score, self.state.best_epoch, self.state.bad_epochs = score, epoch, 0
            self._save_best(thr, metrics, cal)
        else:
            self.state.bad_epochs += 1
            self.state.stopped_early = self.state.bad_epochs >= self.t.patience
        self.state.history.append({"epoch": epoch, **stats, **{f"val_{k}": v for k, v in metrics.items()}})
        live.step = epoch  # explicit: a resumed run continues the same step axis
        for k in ("d_loss", "g_loss"):
            if not np.isnan(stats[k]):
                live.log_metric(f"train/{k}", stats[k])
        for k in ("roc_auc", "accuracy", "f1", "precision", "recall", "average_precision"):
            live.log_metric(f"val/{k}", metrics[k])
        live.next_step()
        tqdm.write(f"epoch {epoch + 1}: d_loss {stats['d_loss']:.4f} g_loss {stats['g_loss']:.4f} "
                   f"val_auc {metrics['roc_auc']:.4f} val_acc {metrics['accuracy']:.4f} "
                   f"({self.timings[-1]['images_per_s']:.0f} img/s)")


def _digest(*modules: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for module in modules:
        for name, q in module.named_parameters():
            h.update(name.encode() + q.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _decode(p: Params, splits_dir: Path, cache_dir: Path, progress: bool, d: Dist):
    """Decoded train/val tensors, masks, labels and train sources. Rank 0 decodes first (it may build the shared
    memory-mapped cache); the other ranks then reuse that cache or decode into their own RAM."""
    size, a = p.train.image_size, p.train.augment
    # With no scale/rotation augmentation, train images are cached at the input size itself: the model
    # then sees exactly the pixels evaluation sees (one antialiased resize, none at native size), so
    # resampling traces cannot differ between train and test. Otherwise: room for the resized crop.
    load_size = size if a.scale_min == 1 and a.rotation == 0 else round(size * 1.25)
    tr, va = read_split(splits_dir, "train"), read_split(splits_dir, "val")
    if tr["y"].nunique() < 2 or va.empty:
        raise ValueError("training needs both classes in the train split and a non-empty val split")
    if not d.main:
        barrier(d)
    train_x, ok_tr = decode_all(tr["path"].tolist(), load_size, progress and d.main, "decode train",
                                disk_dir=cache_dir, ram_limit_bytes=int(p.train.cache_ram_gb * 2**30),
                                hashes=tr["sha256"].tolist() if "sha256" in tr else None)
    val_x, ok_va = decode_all(va["path"].tolist(), size, progress and d.main, "decode val")
    if d.main:
        barrier(d)
    train_y = torch.tensor(tr["y"].to_numpy())  # full length: rows index both (no copy of a disk cache)
    return train_x, ok_tr, train_y, val_x[ok_va], va["y"].to_numpy()[ok_va], ok_va, tr["source"].to_numpy()


def train(splits_dir: str | Path, model_dir: str | Path, report_dir: str | Path, p: Params, *,
          ckpt_dir: str | Path = "artifacts/checkpoints", resume: bool = False, dry_run: bool = False,
          progress: bool = True, stop_after: int | None = None, run_log: str | Path | None = None,
          log_seen: bool = False, cache_dir: str | Path = "artifacts/cache/train") -> dict[str, Any]:
    """Train, write artifacts and reports; return the model card (best-epoch val metrics, run info).

    Timings (decode, fit, img/s per epoch) change on every run, so they stay out of the DVC-tracked
    model card and checkpoint; they go to `run_log` (a JSON file no stage tracks) and card["run"].
    Above train.cache_ram_gb the decoded images live in shard files under cache_dir (outside every
    DVC output, so they survive `dvc repro` and are reused). Under torchrun every rank trains its shard; only rank 0 writes the model, card and reports,
    ranks > 0 write `<run_log>.rank<R>.json` and return {"rank": R, "run": ...}.
    """
    import torchvision
    from torchvision.utils import save_image

    if p.train.threads:
        torch.set_num_threads(p.train.threads)
    model_dir, report_dir, ckpt_dir = Path(model_dir), Path(report_dir), Path(ckpt_dir)
    d = setup(p.train.device, p.train.ddp_backend)
    device = d.device
    if device.type == "cpu":  # same inputs, same machine -> same bits (CUDA keeps its fast kernels)
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        t0 = time.perf_counter()
        train_x, ok_tr, train_y, val_x, val_y, ok_va, sources = _decode(p, Path(splits_dir), Path(cache_dir),
                                                                          progress, d)
        decode_s = time.perf_counter() - t0
        data_version = split_version(splits_dir)  # the train/val rows: resume check and model card
        trainer = Trainer(p, train_x, train_y, val_x, val_y, model_dir, ckpt_dir, report_dir, device, progress,
                          max_batches=2 if dry_run else None, rows=np.flatnonzero(ok_tr), dist=d,
                          log_seen=log_seen, sources=sources,
                          fingerprint=run_fingerprint(p.model_dump(by_alias=True), data_version))
        t1 = time.perf_counter()
        state = trainer.fit(resume=resume, stop_after=stop_after)
        fit_s = time.perf_counter() - t1
    finally:
        teardown(d)
    run = {"model_dir": str(model_dir), "rank": d.rank, "world_size": d.world, "device": str(device),
           "decode_s": round(decode_s, 2), "fit_s": round(fit_s, 2), "epochs": trainer.timings,
           "params_sha256": _digest(trainer.D, trainer.G),  # equal on every rank: gradients were all-reduced
           **({"seen": trainer.seen} if log_seen else {})}
    if run_log is not None:
        log = Path(run_log) if d.main else Path(run_log).with_suffix(f".rank{d.rank}.json")
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(json.dumps(run, indent=2, default=float) + "\n")
    if not d.main:
        return {"rank": d.rank, "run": run}
    if state.best_epoch < 0:
        raise RuntimeError("no epoch finished: nothing to save")
    best = state.history[[h["epoch"] for h in state.history].index(state.best_epoch)]
    with torch.no_grad():
        trainer.G.eval()
        save_image(trainer.G(trainer.z_fixed.to(device)).float().cpu(), report_dir / "samples.png", nrow=8)
    name = f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""
    card = {
        "model": f"hybrid {p.model.backbone} GAN discriminator", "positive_class": "fake",
        "data_version": {"train_val_sha256": data_version},  # what this model was trained on
        "params": p.model_dump(by_alias=True),
        "class_weights": trainer.class_weights, "best_epoch": state.best_epoch,
        "calibration": {"method": "platt (fitted on val logits)",  # the best epoch's, as saved (also on resume)
                        **safe_load(model_dir / "detector.pt")["calibration"]},
        "epochs_run": state.epoch + 1, "stopped_early": state.stopped_early,
        "val_metrics": {k[4:]: v for k, v in best.items() if k.startswith("val_")},
        "pretrained": None if trainer.pretrained is None else {"skipped": trainer.pretrained["skipped"]},
        "device": (f"{d.world} x " if d.enabled else "") + device.type + name,
        "n_train": int(ok_tr.sum()), "n_val": int(len(val_x)),
        "unreadable_skipped": int((~ok_tr).sum() + (~ok_va).sum()),
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__},
    }
    (model_dir / "model_card.json").write_text(json.dumps(card, indent=2, default=float) + "\n")
    write_seen(model_dir, splits_dir)  # the gate never scores this model on its own training images
    return card | {"run": run}
