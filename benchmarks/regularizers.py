"""Speed of the regularizers: Fisher estimators against a per-sample Python loop, and the EWC
training step against a fine-tune step, after 1 and after many consolidations.

Model: MLP 784-400-400-10 (the EWC/SI papers' MNIST network) on random data of MNIST shape
(float inputs ``(N, 784)``, random labels), CPU by default. Timings alternate between the
variants in one process; the script prints medians over ``--repeats``.

- Fisher for ``--samples`` samples with each estimator. The per-sample Python loop (one backward
  per sample; per class for ``exact``) is timed on ``--loop-samples`` samples and scaled linearly
  to ``--samples`` (it is linear in N; timing it on all 10k would take minutes).
  Targets: per-sample estimators >= 10x faster than the loop; ``empirical`` within 2x of ``batched``.
- Step time (forward, cross-entropy, penalty, backward, SGD step) for fine-tune, EWC after 1
  consolidation and EWC after ``--consolidations``, for each of ``--step-batch-sizes``; targets: EWC(20)/EWC(1) <= 1.1,
  EWC / fine-tune <= 1.3.

    OMP_NUM_THREADS=1 python benchmarks/regularizers.py
    python benchmarks/regularizers.py --device cuda --threads 0
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import continual as cl
from continual.regularizers import EWC, fisher_diagonal


class Batch:
    """The few attributes of an Experience that EWC.consolidate reads (float inputs, no mask)."""

    def __init__(self, x, y):
        self.x_train, self.y_train = x, y
        self.t_train = torch.zeros(len(y), dtype=torch.long, device=y.device)
        self.scenario = "class"

    def transform(self, x, **kw):
        return x

    def mask_logits(self, out, t=None):
        return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loop_fisher(model, x, y, estimator):
    """The straightforward reference: one backward per sample (per sample and class for exact)."""
    model.eval()
    params = list(model.parameters())
    total = [torch.zeros_like(p) for p in params]
    for i in range(len(x)):
        out = model(x[i : i + 1])
        logp = F.log_softmax(out, 1)[0]
        if estimator == "exact":
            p = logp.detach().exp()
            for c in range(len(p)):
                grads = torch.autograd.grad(logp[c], params, retain_graph=True)
                for t, g in zip(total, grads):
                    t.add_(p[c] * g.square())
        else:
            c = int(y[i]) if estimator == "empirical" else int(torch.multinomial(logp.detach().exp(), 1))
            grads = torch.autograd.grad(logp[c], params)
            for t, g in zip(total, grads):
                t.add_(g.square())
    return [t / len(x) for t in total]


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--loop-samples", type=int, default=500, help="samples the per-sample loop is timed on (scaled)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32, help="the batched estimator's mini-batch")
    ap.add_argument("--step-batch-sizes", default="32,128", help="training-step batch sizes to time")
    ap.add_argument("--steps", type=int, default=100, help="training steps per timing")
    ap.add_argument("--step-repeats", type=int, default=21, help="alternating timings per variant")
    ap.add_argument("--consolidations", type=int, default=20)
    ap.add_argument("--convnet-samples", type=int, default=1000, help="ConvNet (vmap path) Fisher samples; 0 skips")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = cl.MLP(784, (400, 400), 10).to(device)
    x = torch.randn(args.samples, 784, device=device)
    y = torch.randint(0, 10, (args.samples,), device=device)
    print(f"MLP 784-400-400-10, {args.samples} samples, device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")

    # ------------------------------------------------------------- Fisher
    estimators = ["empirical", "exact", "sampled", "batched"]
    times = {e: [] for e in estimators}
    loops = {e: [] for e in ("empirical", "exact")}
    n_loop = args.loop_samples
    fisher_diagonal(model, x[:8], y[:8], estimator="exact")  # warm-up
    for _ in range(args.repeats):
        for e in estimators:
            times[e].append(timed(lambda: fisher_diagonal(model, x, y, estimator=e, batch_size=args.batch_size), device))
        for e in loops:
            k = n_loop if e == "empirical" else max(n_loop // 10, 1)
            loops[e].append(timed(lambda: loop_fisher(model, x[:k], y[:k], e), device) * args.samples / k)
    med = {e: statistics.median(v) for e, v in times.items()}
    loop_med = {e: statistics.median(v) for e, v in loops.items()}
    loop_med["sampled"] = loop_med["empirical"]  # one backward per sample, like empirical
    print(f"\nFisher over {args.samples} samples (median of {args.repeats}); per-sample loop timed on "
          f"{n_loop} samples ({max(n_loop // 10, 1)} for exact) and scaled:")
    print(f"  {'estimator':<10} {'seconds':>9} {'loop (s)':>10} {'speed-up':>9}")
    for e in estimators:
        loop = loop_med.get(e)
        extra = f"{loop:10.2f} {loop / med[e]:8.1f}x" if loop is not None else f"{'-':>10} {'-':>9}"
        print(f"  {e:<10} {med[e]:9.3f} {extra}")
    print(f"  empirical / batched: {med['empirical'] / med['batched']:.2f}x (target <= 2)")

    if args.convnet_samples:
        convnet_fisher(args, device)

    # --------------------------------------------------------------- steps
    small = Batch(x[:256], y[:256])

    def make_ewc(k):
        torch.manual_seed(0)
        m = cl.MLP(784, (400, 400), 10).to(device)
        ewc = EWC(lam=100.0)
        for _ in range(k):
            ewc.consolidate(m, small)
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(1e-3 * torch.randn_like(p))
        return m, ewc

    for bs in [int(b) for b in args.step_batch_sizes.split(",")]:
        step_benchmark(bs, args, x, y, make_ewc, device)


def convnet_fisher(args, device) -> None:
    """The vmap path: ConvNet (conv-BN-ReLU-pool x3, 32/64/128 channels) on 1x28x28 inputs."""
    torch.manual_seed(0)
    model = cl.ConvNet(1, 10).to(device)
    n = args.convnet_samples
    x = torch.randn(n, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (n,), device=device)
    k = max(n // 10, 1)
    fisher_diagonal(model, x[:8], y[:8])  # warm-up: torch.func's first call is slow
    fast, loop = [], []
    for _ in range(args.repeats):
        fast.append(timed(lambda: fisher_diagonal(model, x, y, estimator="empirical"), device))
        loop.append(timed(lambda: loop_fisher(model, x[:k], y[:k], "empirical"), device) * n / k)
    f, lp = statistics.median(fast), statistics.median(loop)
    print(f"\nConvNet 1x28x28 (convs and BatchNorm by vmap, head by the identity), empirical Fisher over {n} samples: "
          f"{f:.3f} s; per-sample loop (timed on {k}, scaled) {lp:.3f} s: {lp / f:.1f}x")


def step_benchmark(batch_size, args, x, y, make_ewc, device) -> None:
    """Fine-tune vs EWC(1) vs EWC(many) training steps, alternating, medians."""
    torch.manual_seed(0)
    variants = {"fine-tune": (cl.MLP(784, (400, 400), 10).to(device), None),
                "ewc after 1": make_ewc(1), f"ewc after {args.consolidations}": make_ewc(args.consolidations)}
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, args.samples, (batch_size,), generator=g).to(device) for _ in range(args.steps)]

    def steps(m, reg):
        opt = torch.optim.SGD(m.parameters(), lr=1e-3)

        def go():
            for idx in batches:
                xb = x[idx]
                out = m(xb)
                loss = F.cross_entropy(out, y[idx])
                if reg is not None:
                    loss = loss + reg.penalty(m, x=xb, out=out)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return go

    runs = {name: steps(m, reg) for name, (m, reg) in variants.items()}
    for go in runs.values():
        go()  # warm-up
    step_times = {name: [] for name in runs}
    for _ in range(args.step_repeats):
        for name, go in runs.items():
            step_times[name].append(timed(go, device) / args.steps)
    step_med = {name: statistics.median(v) for name, v in step_times.items()}
    print(f"\nTraining step, batch {batch_size} (median of {len(step_times['fine-tune'])} x {args.steps} steps):")
    for name, t in step_med.items():
        print(f"  {name:<16} {1e3 * t:8.3f} ms")
    names = list(step_med)
    print(f"  {names[2]} / {names[1]}: {step_med[names[2]] / step_med[names[1]]:.3f} (target <= 1.1)")
    print(f"  {names[1]} / fine-tune: {step_med[names[1]] / step_med['fine-tune']:.3f} (target <= 1.3)")

if __name__ == "__main__":
    main()
