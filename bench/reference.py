"""The reference accuracy: single-process training of the CIFAR VGG19 (batch norm) on the whole
training split, on a GPU where there is one: the ceiling the distributed modes are compared with.

    python -m bench.reference [--epochs 30] [--batch-size 128] [--lr 0.05] [--device cuda]
                              [--samples K] [--width 1.0] [--data PATH]

The recipe is the system's own: the same prepared dataset and validation split (lambdatrain.training.data,
10 % of the training tarball held out, stratified, fixed by the seed), the same model
(``vgg19_cifar`` from lambdatrain.training.model), the same augmentation (4-pixel zero-padded random crop
and horizontal flip) and SGD with momentum and weight decay; one process, one optimizer step per
batch, cosine learning-rate decay over the epochs. The whole split lives on the device as uint8
and is augmented there, so the GPU is not starved by a CPU loader. Accuracy is on the full held-
out split after every epoch. It needs torch, numpy and pillow only (no AWS packages), so it runs
on a bare accelerator machine with ``PYTHONPATH=.``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench._common import add_dataset_args, emit, log, machine, prepared_dataset

PAD = 4  # as lambdatrain.training.data._random_crop


def _augment(x, generator):
    """Random crop (zero-padded by PAD) and horizontal flip of a uint8 NCHW batch, on its device."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    padded = F.pad(x, (PAD, PAD, PAD, PAD))
    dy = torch.randint(0, 2 * PAD + 1, (n,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * PAD + 1, (n,), device=x.device, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    images = torch.arange(n, device=x.device)[:, None, None, None]
    channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    out = padded[images, channels, rows, cols]
    flip = torch.rand(n, device=x.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def _normalize(x, mean, std):
    return (x.float().div_(255.0) - mean) / std


def train(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from lambdatrain.training.data import open_prepared
    from lambdatrain.training.model import ModelSpec, build_model

    device = torch.device(args.device)
    data = open_prepared(prepared_dataset(args))
    n_train = len(data.train_y) if args.samples is None else min(args.samples, len(data.train_y))

    def to_device(array):
        return torch.from_numpy(np.ascontiguousarray(array)).to(device)

    train_x, train_y = to_device(data.train_x[:n_train]).permute(0, 3, 1, 2), to_device(data.train_y[:n_train])
    val_x, val_y = to_device(data.val_x).permute(0, 3, 1, 2), to_device(data.val_y)
    mean = torch.tensor(data.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(data.std, device=device).view(1, 3, 1, 1)

    torch.manual_seed(args.seed)
    model = build_model(ModelSpec("vgg19_cifar", args.width, num_classes=len(data.classes))).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    steps_per_epoch = n_train // args.batch_size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * steps_per_epoch)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    epochs, started = [], time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(n_train, device=device, generator=generator)
        loss_sum = torch.zeros((), device=device)
        for step in range(steps_per_epoch):
            idx = order[step * args.batch_size:(step + 1) * args.batch_size]
            x = _normalize(_augment(train_x[idx], generator), mean, std)
            loss = F.cross_entropy(model(x), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach()
        accuracy = _accuracy(model, val_x, val_y, mean, std)
        elapsed = time.perf_counter() - started  # the accuracy read synchronises the device
        epochs.append({"epoch": epoch + 1, "train_loss": float(loss_sum) / steps_per_epoch,
                       "val_accuracy": accuracy, "elapsed_s": round(elapsed, 2)})
        log(f"epoch {epoch + 1}: loss {epochs[-1]['train_loss']:.3f}, val {accuracy:.2%}, {elapsed:.0f} s")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"epochs": epochs, "final_val_accuracy": epochs[-1]["val_accuracy"],
            "best_val_accuracy": max(e["val_accuracy"] for e in epochs), "train_s": epochs[-1]["elapsed_s"],
            "train_samples": n_train, "val_samples": len(data.val_y), "device": device_name,
            "torch": torch.__version__, "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}


def _accuracy(model, x, y, mean, std, batch: int = 1000) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            correct += int((model(_normalize(x[i:i + batch], mean, std)).argmax(1) == y[i:i + batch]).sum())
    return correct / len(y)


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=None, help="first K training samples (default: all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_dataset_args(parser)
    args = parser.parse_args(argv)
    if args.samples is not None and args.samples < args.batch_size:
        parser.error(f"--samples ({args.samples}) must be at least --batch-size ({args.batch_size})")
    emit({**train(args), "machine": machine()})


if __name__ == "__main__":
    main()
