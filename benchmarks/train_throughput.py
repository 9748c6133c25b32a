"""Training throughput: our pipeline (decode once to a uint8 tensor cache, augment batches on
the device) vs a naive torchvision ImageFolder + DataLoader (Pillow decode + transforms every
epoch), same model (the hybrid detector, GAN term off), same batch size, same device.

    python benchmarks/train_throughput.py ../shared/benchmarks/faces-a --batches 20 --device auto

Prints a table and writes JSON (benchmarks/train_throughput.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torchvision import datasets, transforms

from deepfake_detector.model.augment import augment, jpeg_cpu
from deepfake_detector.core.images import iter_labelled_files
from deepfake_detector.model.models import HybridDetector, WeightedBCELoss
from deepfake_detector.core.params import load_params
from deepfake_detector.model.tensorcache import decode_all
from deepfake_detector.model.distributed import pick_device


def _step(model, opt, crit, x, y) -> None:
    opt.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
        loss = crit(model(x), y)
    loss.backward()
    opt.step()


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def ours(paths, labels, dev, size, bs, n_batches) -> dict:
    t = time.perf_counter()
    cache, ok = decode_all(paths, round(size * 1.25), progress=False)
    decode_s = time.perf_counter() - t
    y_all = torch.tensor(labels)
    model = HybridDetector().to(dev)
    opt, crit, aug = torch.optim.AdamW(model.parameters()), WeightedBCELoss().to(dev), load_params(Path(__file__).parents[1] / "params.yaml").train.augment
    gen = torch.Generator().manual_seed(0)
    n = 0
    for i in range(n_batches + 2):
        if i == 2:
            _sync(dev)
            t, n = time.perf_counter(), 0
        idx = torch.randint(0, len(cache), (bs,), generator=gen)
        x = augment(jpeg_cpu(cache[idx], aug, gen).to(dev), size, aug, gen)
        _step(model, opt, crit, x, y_all[idx].to(dev))
        n += bs
    _sync(dev)
    return {"decode_once_s": round(decode_s, 2), "img_per_s": n / (time.perf_counter() - t)}


def naive(root, dev, size, bs, n_batches, workers) -> dict:
    tf = transforms.Compose([transforms.RandomResizedCrop(size, scale=(0.7, 1.0)), transforms.RandomHorizontalFlip(),
                             transforms.RandomRotation(10), transforms.ToTensor()])
    ds = datasets.ImageFolder(str(root), transform=tf, allow_empty=True)
    dl = torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, num_workers=workers, drop_last=True,
                                     persistent_workers=workers > 0)
    model = HybridDetector().to(dev)
    opt, crit = torch.optim.AdamW(model.parameters()), WeightedBCELoss().to(dev)
    n, i = 0, 0
    while i < n_batches + 2:
        for x, y in dl:
            if i == 2:
                _sync(dev)
                t, n = time.perf_counter(), 0
            _step(model, opt, crit, x.to(dev), y.to(dev))
            n += bs
            i += 1
            if i >= n_batches + 2:
                break
    _sync(dev)
    return {"img_per_s": n / (time.perf_counter() - t)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/train_throughput.json"))
    args = ap.parse_args()
    dev = pick_device(args.device)
    pairs = list(iter_labelled_files(args.data))
    paths, labels = [str(p) for p, _ in pairs], [int(lab == "fake") for _, lab in pairs]
    torch.manual_seed(0)
    a = ours(paths, labels, dev, args.size, args.batch_size, args.batches)
    b = naive(args.data, dev, args.size, args.batch_size, args.batches, args.workers)
    n = len(paths)
    name = torch.cuda.get_device_name() if dev.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    rows = [("ours: tensor cache + device augment", a["img_per_s"], n / a["img_per_s"]),
            (f"naive: ImageFolder + DataLoader ({args.workers} workers)", b["img_per_s"], n / b["img_per_s"])]
    print(f"device: {name}; batch {args.batch_size}; {args.size}x{args.size}; {n} images; "
          f"one-time decode {a['decode_once_s']} s")
    print(f"{'pipeline':<48} {'img/s':>8} {'s/epoch':>8}")
    for r, ips, spe in rows:
        print(f"{r:<48} {ips:>8.1f} {spe:>8.1f}")
    print(f"speed-up: {a['img_per_s'] / b['img_per_s']:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": name, "batch_size": args.batch_size, "images": n,
                                    "decode_once_s": a["decode_once_s"],
                                    "rows": [{"pipeline": r, "img_per_s": round(i, 1), "s_per_epoch": round(s, 1)}
                                             for r, i, s in rows]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
