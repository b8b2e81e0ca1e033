"""Cost of head expansion: the expansion step itself, and training-step time after several expansions.

Training-step time (forward, backward, SGD step with momentum on a batch) is measured for the
same backbone with

- ``fixed-C``: an ``nn.Linear`` head with C outputs (the reference for a head of that width);
- ``grown-C``: an ``IncrementalClassifier`` grown to C outputs in C/k expansions of k classes
  (the new rows joining the optimizer with ``add_param_group``, as the trainer does), one matmul
  per block (the default: old logits bit-identical);
- ``fused-C``: the same with ``fused=True`` (one matmul over the concatenated rows);

for C after 1 expansion and after all of them, so the growth beyond the new rows' FLOPs is
``grown-C / fixed-C``. Every configuration is timed in turn (alternating) in one process, and
the medians over repeats are printed. The expansion step (``grow`` + ``add_param_group``) is
timed on its own.

    python benchmarks/heads.py                           # MLP 64-400-400 backbone, 5 x 2 classes (split-digits)
    python benchmarks/heads.py --features 160 --classes-per-step 5 --steps 20   # reduced ResNet-18 width, 100 classes
    python benchmarks/heads.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from continual.models import MLP, IncrementalClassifier


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make(kind: str, width: int, args, device: torch.device):
    """A model (MLP backbone + head) and its optimizer, the head grown or fixed at ``width``."""
    torch.manual_seed(0)
    model = MLP(args.in_features, (args.hidden, args.features), width)
    opt = None
    if kind in ("grown", "fused"):
        model.head = IncrementalClassifier(args.features, 0, fused=kind == "fused")
        model.to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        for w in range(args.classes_per_step, width + 1, args.classes_per_step):
            opt.add_param_group({"params": model.head.grow(w)})
    model.to(device)
    if opt is None:
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return model, opt


def time_steps(model, opt, x, y, n: int, device) -> float:
    """Seconds per training step, over ``n`` steps."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return (time.perf_counter() - t0) / n


def time_expansion(args, device, repeats: int) -> list[float]:
    """Seconds per expansion step (grow by k rows + add_param_group), over a full sequence of steps."""
    times = []
    for _ in range(repeats):
        head = IncrementalClassifier(args.features, 0).to(device)
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1, device=device))], lr=0.01, momentum=0.9)
        sync(device)
        t0 = time.perf_counter()
        for w in range(args.classes_per_step, args.classes_per_step * args.steps + 1, args.classes_per_step):
            opt.add_param_group({"params": head.grow(w)})
        sync(device)
        times.append((time.perf_counter() - t0) / args.steps)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--in-features", type=int, default=64, help="input size (64: 8x8 digits)")
    ap.add_argument("--hidden", type=int, default=400)
    ap.add_argument("--features", type=int, default=400, help="backbone output width (the head's input)")
    ap.add_argument("--classes-per-step", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5, help="number of expansions")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--iters", type=int, default=200, help="training steps per timing")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    k, C = args.classes_per_step, args.classes_per_step * args.steps
    x = torch.randn(args.batch_size, args.in_features, device=device)
    configs = {}
    for width in (k, C):
        for kind in ("fixed", "grown", "fused"):
            y = torch.randint(0, width, (args.batch_size,), device=device)
            configs[f"{kind}-{width}"] = (*make(kind, width, args, device), y)
    for name, (model, opt, y) in configs.items():  # warm-up
        time_steps(model, opt, x, y, 20, device)
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name, (model, opt, y) in configs.items():  # alternate
            times[name].append(time_steps(model, opt, x, y, args.iters, device))
    expansion = time_expansion(args, device, args.repeats)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"MLP {args.in_features}-{args.hidden}-{args.features} + head, batch {args.batch_size}, "
          f"{args.steps} expansions of {k} classes; medians over {args.repeats} repeats of {args.iters} steps")
    for name, m in med.items():
        print(f"  {name:<10} {1e6 * m:8.1f} us/step")
    for kind in ("grown", "fused"):
        print(f"  {kind}/fixed after 1 expansion: {med[f'{kind}-{k}'] / med[f'fixed-{k}']:.3f}; "
              f"after {args.steps} expansions: {med[f'{kind}-{C}'] / med[f'fixed-{C}']:.3f}")
    print(f"  step time after {args.steps} vs after 1 expansion: grown {med[f'grown-{C}'] / med[f'grown-{k}']:.3f}, "
          f"fused {med[f'fused-{C}'] / med[f'fused-{k}']:.3f}, fixed {med[f'fixed-{C}'] / med[f'fixed-{k}']:.3f} (the new rows' FLOPs)")
    print(f"  expansion step (grow {k} rows + add_param_group): median {1e6 * statistics.median(expansion):.1f} us")


if __name__ == "__main__":
    main()
