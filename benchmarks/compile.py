"""Does ``--compile`` pay? Training-step time with and without ``torch.compile``, and the compile time.

For each model, a trainer trains one experience of a synthetic stream of the model's input shape
(fixed batches: the batch size divides the experience, so every step has one shape), with and
without ``compile=True``: the first epoch (which holds the compilation) is timed on its own, then
``--epochs`` more, whose steps per second are compared. Configurations alternate over
``--repeats``; medians are printed.

- ``mlp``: MLP 64-400-400-10 on 8x8 inputs, batch 32 (split-digits' model);
- ``resnet18``: the reduced ResNet-18 (nf=20) on 3x32x32 inputs, batch 32 (a split-CIFAR-sized stream).

    python benchmarks/compile.py                          # CPU
    python benchmarks/compile.py --device cuda --models mlp,resnet18
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from continual import Trainer
from continual.data import Transform
from continual.models import build_model
from continual.streams import Experience


def experience(shape: tuple[int, ...], n: int, classes: int, device: str) -> Experience:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    y = torch.randint(0, classes, (n,), generator=g)
    z = torch.zeros(n, dtype=torch.int64)
    e = Experience(index=0, classes=tuple(range(classes)), task_id=0, x_train=x, y_train=y, t_train=z, x_test=x[:64],
                   y_test=y[:64], t_test=z[:64], transform=Transform(mean=(0.5,), std=(0.25,), scale=1 / 255))
    return e.to(device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(model_name: str, compile: bool, args) -> tuple[float, float]:
    """(seconds of the first epoch, steps per second of the next ``args.epochs``)."""
    shape = (1, 8, 8) if model_name == "mlp" else (3, 32, 32)
    n = args.steps * args.batch_size
    e = experience(shape, n, 10, args.device)
    torch.manual_seed(0)
    trainer = Trainer(build_model(model_name, shape, 10), lr=0.01, epochs=1, batch_size=args.batch_size, device=args.device,
                      compile=compile)
    sync(args.device)
    t0 = time.perf_counter()
    trainer.fit(e)
    sync(args.device)
    first = time.perf_counter() - t0
    trainer.epochs = args.epochs
    t0 = time.perf_counter()
    trainer.fit(e)
    sync(args.device)
    return first, args.epochs * args.steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mlp,resnet18")
    ap.add_argument("--steps", type=int, default=50, help="steps per epoch")
    ap.add_argument("--epochs", type=int, default=4, help="epochs timed after the first")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"{args.steps} steps per epoch, medians of {args.repeats}")
    for name in args.models.split(","):
        runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(args.repeats):
            for compile in (False, True):
                torch._dynamo.reset()
                runs[compile].append(measure(name, compile, args))
        plain = statistics.median(r[1] for r in runs[False])
        fast = statistics.median(r[1] for r in runs[True])
        first_plain = statistics.median(r[0] for r in runs[False])
        first_comp = statistics.median(r[0] for r in runs[True])
        print(f"{name:<9} steps/s plain {plain:8.1f}  compiled {fast:8.1f}  ratio {fast / plain:5.2f}x   "
              f"first epoch {first_plain:6.2f} s plain, {first_comp:6.2f} s compiled (compilation included)")


if __name__ == "__main__":
    main()
