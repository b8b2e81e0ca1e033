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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
