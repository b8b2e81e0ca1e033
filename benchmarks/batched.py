"""Seeds trained together (:func:`continual.batched.run_batched`) against the same seeds run one after another.

For each strategy, in one process and alternating (one seed alone, N seeds one after another,
N seeds batched, then again), the script times ``run()`` of one seed, ``run()`` of each of N
seeds in turn, and ``run_batched()`` of the N seeds, and prints the medians of the training time
(``timings["total_train"]``, summed over the N separate runs) and of the whole call (build,
training, evaluation), each as a ratio to one seed. Issue 17's target on CPU: N=5 batched <= 2x
one seed (one after another: about 5x). The batched runs' accuracy matrices are checked against
the separate runs' (within one test prediction per entry) before any time is printed.

    python benchmarks/batched.py                          # split-digits, MLP 64-400-400-10, finetune and ewc
    python benchmarks/batched.py --seeds 10 --repeats 7 --device cuda
    python benchmarks/batched.py --repeats 1              # a quick check that it works
    python benchmarks/batched.py --hidden 100,100         # a smaller MLP, where per-step overhead dominates
    python benchmarks/batched.py --part roofline          # what the hardware allows: the step's FLOP rate against the peak

The ``roofline`` part measures the arithmetic limit behind the target: the floating-point rate of
a large float32 matrix product on this device (the most its cores deliver, ``--peak-size``), the
rate a one-seed training step of the MLP reaches (forward, cross-entropy, backward, SGD step:
``torch.nn.functional`` on one seed's batch), and the same step for N seeds stacked (one
``baddbmm`` per layer, as the library's batched MLP). N seeds' step needs N times one seed's
floating-point operations, so it cannot take less than ``N x FLOPs / peak``; divided by one
seed's measured step this is the lower bound of "N seeds batched / one seed" on this hardware.

Figures: benchmarks/README.md ("Seeds trained together").

Why the 400-wide MLP does not gain on one CPU thread: its step is bound by the matrix products
(forward and backward of 5 seeds, measured alone: 4.6-6.2 ms against 0.93-1.0 ms for one seed;
a batched product over 5 seeds costs what 5 separate ones cost, ``torch.bmm`` or ``einsum``
alike), and only the per-step overhead (Python, autograd, optimizer: about half of one seed's
step) is shared. EWC gains less than finetune at width 100 because its Fisher is still estimated
seed by seed at each experience's end.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
import torch

from continual.batched import run_batched
from continual.experiment import RunConfig, run


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def median_time(fn, repeats: int, sync) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls (after two warm-up calls)."""
    for _ in range(2):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def roofline(args) -> None:
    """The step's floating-point rate against the device's peak (see the module docstring)."""
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    n = args.peak_size
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    peak = 2 * n**3 / median_time(lambda: a @ b, args.repeats, sync)
    widths = [64, *(int(h) for h in args.hidden.split(",")), 10]  # split-digits' MLP
    B, S = args.batch_size, args.seeds
    macs = sum(i * o for i, o in zip(widths, widths[1:]))
    # forward 2*B*macs; weight gradients 2*B*macs; input gradients of every layer but the first
    flops = B * (4 * macs + 2 * (macs - widths[0] * widths[1]))
    x, y = torch.randn(B, widths[0], device=dev), torch.randint(0, 10, (B,), device=dev)

    def layers(stack: int | None):
        shape = (lambda i, o: (stack, o, i)) if stack else (lambda i, o: (o, i))
        ws = [(torch.randn(*shape(i, o), device=dev) * i**-0.5).requires_grad_() for i, o in zip(widths, widths[1:])]
        bs = [torch.zeros(*((stack, 1, o) if stack else (o,)), device=dev, requires_grad=True) for o in widths[1:]]
        return ws, bs

    def step(ws, bs, forward):
        loss = forward(ws, bs)
        grads = torch.autograd.grad(loss, [*ws, *bs])
        with torch.no_grad():
            for p, g in zip([*ws, *bs], grads):
                p.sub_(0.01 * g)

    def one(ws, bs):
        h = x
        for k, (w, bias) in enumerate(zip(ws, bs)):
            h = torch.nn.functional.linear(h, w, bias)
            h = h.relu() if k < len(ws) - 1 else h
        return torch.nn.functional.cross_entropy(h, y)

    xs, ys = x.expand(S, B, widths[0]).contiguous(), y.repeat(S)

    def stacked(ws, bs):
        h = xs
        for k, (w, bias) in enumerate(zip(ws, bs)):
            h = torch.baddbmm(bias, h, w.transpose(1, 2))
            h = h.relu() if k < len(ws) - 1 else h
        return torch.nn.functional.cross_entropy(h.reshape(S * B, -1), ys, reduction="sum") / B

    w1, b1 = layers(None)
    wS, bS = layers(S)
    t1 = median_time(lambda: step(w1, b1, one), args.repeats * 200, sync)
    tS = median_time(lambda: step(wS, bS, stacked), args.repeats * 200, sync)
    bound = S * flops / peak
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {dev}")
    print(f"peak: {n}x{n} float32 matmul {peak / 1e9:.1f} GFLOP/s")
    print(f"one seed's step (MLP {'-'.join(map(str, widths))}, batch {B}): {t1 * 1e3:.3f} ms, {flops / 1e6:.1f} MFLOP, "
          f"{flops / t1 / 1e9:.1f} GFLOP/s ({100 * flops / t1 / peak:.0f}% of peak)")
    print(f"{S} seeds' step batched: {tS * 1e3:.3f} ms ({tS / t1:.2f}x one seed), {S * flops / tS / 1e9:.1f} GFLOP/s "
          f"({100 * S * flops / tS / peak:.0f}% of peak)")
    print(f"lower bound at the peak rate: {S} seeds' step >= {bound * 1e3:.3f} ms = **{bound / t1:.2f}x one seed's step** "
          f"(issue 17's CPU target: <= 2x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", default="runs", choices=("runs", "roofline"))
    ap.add_argument("--peak-size", type=int, default=1024, help="roofline: the square matmul that measures the peak")
    ap.add_argument("--batch-size", type=int, default=32, help="roofline: one seed's batch")
    ap.add_argument("--benchmark", default="split-digits")
    ap.add_argument("--strategies", default="finetune,ewc", help="comma-separated batchable strategies")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=None, help="default: the benchmark's (10 on split-digits)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--hidden", default="400,400", help="the MLP's hidden widths")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the library trains MLPs on 1)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.part == "roofline":
        return roofline(args)
    seeds = list(range(args.seeds))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {args.device}, "
          f"{args.benchmark}, MLP hidden {args.hidden}, {args.seeds} seeds, {args.repeats} repeat(s)")
    for strategy in args.strategies.split(","):
        cfg = RunConfig(benchmark=args.benchmark, strategy=strategy, epochs=args.epochs, device=args.device,
                        hidden=[int(h) for h in args.hidden.split(",")])
        run(dataclasses.replace(cfg, num_experiences=1, epochs=1))  # warm-up: imports, data, kernels
        one, seq, bat = {"train": [], "wall": []}, {"train": [], "wall": []}, {"train": [], "wall": []}
        for _ in range(args.repeats):
            r, wall = timed(lambda: run(dataclasses.replace(cfg, seed=0)))
            one["train"].append(r.timings["total_train"])
            one["wall"].append(wall)
            separate, wall = timed(lambda: [run(dataclasses.replace(cfg, seed=s)) for s in seeds])
            seq["train"].append(sum(r.timings["total_train"] for r in separate))
            seq["wall"].append(wall)
            batched, wall = timed(lambda: run_batched(cfg, seeds))
            bat["train"].append(batched[0].timings["total_train"])
            bat["wall"].append(wall)
            for a, b in zip(separate, batched):
                tol = 1.5 / min(a.test_sizes)
                if not np.allclose(a.acc_matrix, b.acc_matrix, atol=tol):
                    raise SystemExit(f"{strategy} seed {a.seed}: the batched matrix differs from the separate run's")
        for key in ("train", "wall"):
            base = statistics.median(one[key])
            s, b = statistics.median(seq[key]), statistics.median(bat[key])
            print(f"{strategy:>10} {key:>5}: one seed {base:7.3f} s | {args.seeds} one after another {s:7.3f} s "
                  f"({s / base:.2f}x) | {args.seeds} batched {b:7.3f} s (**{b / base:.2f}x** one seed, {s / b:.2f}x faster than one after another)")


if __name__ == "__main__":
    main()
