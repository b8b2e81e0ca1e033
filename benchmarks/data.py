"""Data loading and on-device augmentation speed.

1. Load time of Fashion-MNIST (70,000 images) from its IDX files (by default Debian's
   ``/usr/share/datasets/fashion-mnist``; any folder with ``--data-root``).
2. Build time of the split, permuted and rotated Fashion-MNIST streams (permutations and
   rotations are applied once, here).
3. Batches per second of the CIFAR crop (padding 4) + flip augmentation on a batch of 32x32
   colour images, batched (:class:`continual.data.RandomCropFlip`) against a per-sample Python
   loop written here (what a torchvision-style per-image transform does); both are timed on the
   same batches, alternating.

Median of ``--repeats`` runs after a warm-up.

    python benchmarks/data.py
    python benchmarks/data.py --device cuda --batch-size 128
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import continual as cl
from continual import data


def timed(fn, repeats: int, sync) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def per_sample_crop_flip(x: torch.Tensor, g: torch.Generator, padding: int = 4) -> torch.Tensor:
    """The reference: one image at a time, as a per-image transform pipeline does it."""
    _, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    out = []
    for i in range(len(x)):
        oy, ox = torch.randint(0, 2 * padding + 1, (2,), generator=g, device=x.device).tolist()
        img = padded[i, :, oy : oy + h, ox : ox + w]
        if torch.rand((), generator=g, device=x.device).item() < 0.5:
            img = img.flip(-1)
        out.append(img)
    return torch.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--aug-batches", type=int, default=200, help="batches per augmentation timing")
    ap.add_argument("--only", choices=("load", "augment"), default=None, help="run one part (default: both)")
    ap.add_argument("--streams", default="split-fmnist,permuted-fmnist,rotated-fmnist", help="streams whose build is timed")
    args = ap.parse_args()
    device = cl.trainer.resolve_device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")

    if args.only != "augment":
        t, ds = timed(lambda: data.fashion_mnist(root=args.data_root), args.repeats, sync)
        print(f"load Fashion-MNIST ({len(ds.x_train) + len(ds.x_test)} images, IDX gz): {t:.3f} s")
        for name in args.streams.split(","):
            t, stream = timed(lambda: cl.make_stream(name, root=args.data_root, device=device), args.repeats, sync)
            print(f"build {name} ({len(stream)} experiences, load included): {t:.3f} s")
    if args.only == "load":
        return

    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(args.batch_size, 3, 32, 32, device=device)
    aug = data.RandomCropFlip(padding=4, flip=True)
    n = args.aug_batches
    batched, loop = [], []
    for _ in range(args.repeats):
        for fn, store, count in ((lambda: aug(x, g), batched, n), (lambda: per_sample_crop_flip(x, g), loop, max(n // 10, 1))):
            fn()
            sync()
            t0 = time.perf_counter()
            for _ in range(count):
                fn()
            sync()
            store.append(count / (time.perf_counter() - t0))
    b, p = statistics.median(batched), statistics.median(loop)
    print(f"crop+flip, batch {args.batch_size}x3x32x32: batched {b:,.0f} batches/s, per-sample loop {p:,.0f} batches/s "
          f"({b / p:.1f}x)")


if __name__ == "__main__":
    main()
