"""Overhead of the library's training loop against a bare PyTorch loop written here.

Both train the same model (same initial weights) on the same stream with the same batch order,
epochs and optimizer, evaluate every experience's test split after each experience, and must
reach the same accuracy matrix. Runs alternate (library, bare, library, ...) in one process; the
script prints each repeat's times and the median ratio library / bare.

    python benchmarks/overhead.py                       # split-digits, MLP 64-400-400-10, 10 epochs
    python benchmarks/overhead.py --benchmark permuted-digits --repeats 7 --device cuda
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

import continual as cl


def bare_loop(model, stream, *, epochs, batch_size, lr, seed, device):
    """What a researcher would write by hand: the reference the library is measured against."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    t = stream[0].transform
    scale, mean, std = t.scale, t.mean[0], t.std[0]
    rows = []
    for exp in stream:
        x_all, y_all, n = exp.x_train, exp.y_train, exp.num_train
        model.train()
        for _ in range(epochs):
            order = torch.randperm(n, generator=g).to(device)
            for s in range(0, n, batch_size):
                idx = order[s : s + batch_size]
                x = (x_all[idx].float() * scale - mean) / std
                loss = F.cross_entropy(model(x), y_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            hits = [(model((e.x_test.float() * scale - mean) / std).argmax(1) == e.y_test).sum() for e in stream]
        rows.append([h.item() / e.num_test for h, e in zip(hits, stream)])
    return rows


def library(model, stream, *, epochs, batch_size, lr, seed, device):
    trainer = cl.Trainer(model, lr=lr, epochs=epochs, batch_size=batch_size, device=device, seed=seed)
    return trainer.run(stream).tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", default="split-digits")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = cl.trainer.resolve_device(args.device)
    bench = cl.get_benchmark(args.benchmark)
    stream = cl.make_stream(args.benchmark, device=device)
    if len(stream[0].transform.mean) > 1:
        raise SystemExit("the bare loop here handles single-channel normalisation only")
    epochs = args.epochs or bench.epochs
    torch.manual_seed(0)
    init = cl.build_model(bench.model, tuple(stream[0].x_train.shape[1:]), stream.num_classes).to(device)
    kw = dict(epochs=epochs, batch_size=bench.batch_size, lr=bench.lr, seed=0, device=device)
    steps = sum(-(-e.num_train // bench.batch_size) for e in stream) * epochs
    print(f"{args.benchmark}: {len(stream)} experiences, {steps} SGD steps of batch {bench.batch_size}, "
          f"model {bench.model}, device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")

    def timed(fn):
        model = copy.deepcopy(init)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        rows = fn(model, stream, **kw)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, rows

    timed(library), timed(bare_loop)  # warm-up: first-call costs of either are not measured
    ratios = []
    for r in range(args.repeats):
        t_lib, rows_lib = timed(library)
        t_bare, rows_bare = timed(bare_loop)
        same = rows_lib == rows_bare
        ratios.append(t_lib / t_bare)
        print(f"repeat {r}: library {t_lib:.3f} s  bare {t_bare:.3f} s  ratio {t_lib / t_bare:.3f}  same accuracy matrix: {same}")
        if not same:
            raise SystemExit("the accuracy matrices differ: the comparison is not like for like")
    print(f"median ratio library / bare loop: {statistics.median(ratios):.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
