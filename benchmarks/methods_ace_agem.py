"""ER-ACE's and A-GEM's cost per training step: against ER and fine-tuning, and experience 1 against 20.

1. Step time (forward, backward, step, the plugins' work included) of fine-tuning, ER, ER-ACE and
   A-GEM with the same model and batch on one stream (``--benchmark``, split-digits by default,
   the benchmark's model, epochs and batch size), measured over experiences 2..T (the memories
   are in use there), as ``Trainer.fit`` time / steps. Printed ratios:
   - ER-ACE / ER: the same replay batch (as large as the training batch) and one extra masking
     of the incoming logits; target <= 1.05.
   - A-GEM / fine-tune: A-GEM adds a forward and backward pass on a memory batch and the
     projection; target <= 2.2 at the paper's memory batch (256). The ratio with a memory batch
     as large as the training batch is printed beside it (the same samples per step as ER).
2. ER-ACE's and A-GEM's step time in the 20th experience / in the 1st (A-GEM: the 2nd, its memory
   is empty during the 1st), on a 20-experience permuted-digits stream (the fastest epoch of each
   experience). ER-ACE's reservoir has a fixed size; A-GEM's memory grows by a fixed number per
   experience (as in the paper), and only the draw of its memory batch depends on the memory's
   size. Target <= 1.1. Fine-tuning's own ratio is printed as the noise floor.

Runs alternate configuration by configuration in one process after a warm-up; medians over
repeats. On the CPU the clock is the process's CPU time (one thread); on CUDA, wall time with a
synchronisation after each experience.

    python benchmarks/methods_ace_agem.py                          # both parts, CPU
    python benchmarks/methods_ace_agem.py --device cuda --repeats 5
    python benchmarks/methods_ace_agem.py --iters 5 --repeats 1    # a smoke run: 5 steps per experience
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time

import torch

import continual as cl
import continual.replay.agem  # noqa: F401  (registers a-gem)
import continual.replay.er  # noqa: F401  (registers er-ace)
from continual.strategies import Context


def truncate(stream: cl.Stream, samples: int) -> cl.Stream:
    """The stream with each experience's training set cut to its first ``samples`` (0: unchanged)."""
    if not samples:
        return stream
    cut = [dataclasses.replace(e, x_train=e.x_train[:samples], y_train=e.y_train[:samples], t_train=e.t_train[:samples])
           for e in stream]
    return cl.Stream(cut, name=stream.name, scenario=stream.scenario, num_classes=stream.num_classes, class_order=stream.class_order)


def train(strategy: str, init, stream, *, epochs, lr, batch_size, device, params=None, fastest_epoch=False) -> list[float]:
    """Seconds per training step in each experience (``Trainer.fit`` time / steps; with
    ``fastest_epoch``, the fastest epoch's time / its steps, which leaves out the per-experience
    work after the last epoch, such as A-GEM's memory update)."""
    s = cl.get_strategy(strategy)
    plugins = s.make_plugins(s.params(params or {}), Context(stream=stream, device=device, seed=0))
    trainer = cl.Trainer(copy.deepcopy(init), lr=lr, epochs=epochs, batch_size=batch_size, device=device, seed=0, plugins=plugins)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    per_step, per_epoch_min, marks = [], [], []

    def mark(event, info):
        if event == "epoch_end":
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            marks.append(clock())

    trainer.callbacks.append(mark)
    for e in stream:
        steps = -(-e.num_train // batch_size)
        marks.clear()
        t0 = clock()
        trainer.fit(e)  # ends with a device synchronisation
        per_step.append((clock() - t0) / (epochs * steps))
        epoch_times = [b - a for a, b in zip([t0] + marks[:-1], marks)]
        per_epoch_min.append(min(epoch_times) / steps)
    return per_epoch_min if fastest_epoch else per_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", default="split-digits", help="stream of part 1")
    ap.add_argument("--model", default=None, help="mlp or convnet (default: the benchmark's)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--mem", type=int, default=500, help="ER's and ER-ACE's reservoir")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per experience in part 1 (default: the benchmark's)")
    ap.add_argument("--epochs2", type=int, default=3, help="epochs per experience in part 2")
    ap.add_argument("--iters", type=int, default=0, help="training steps per experience at most (0: whole experiences)")
    ap.add_argument("--parts", default="1,2", help="which parts to run (1, 2 or 1,2)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: PyTorch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = cl.trainer.resolve_device(args.device)
    bench = cl.get_benchmark(args.benchmark)
    model = args.model or bench.model
    kw = dict(epochs=args.epochs or bench.epochs, lr=bench.lr, batch_size=bench.batch_size, device=device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, mem {args.mem}, "
          f"replay batch = training batch = {bench.batch_size}" + (f", at most {args.iters} steps per experience" if args.iters else ""))
    parts = {int(p) for p in args.parts.split(",")}
    if 1 in parts:
        part1(args, model, kw, device)
    if 2 in parts:
        part2(args, model, kw, device)


def part1(args, model, kw, device) -> None:
    """ER-ACE vs ER, A-GEM vs fine-tune, per step."""
    stream = truncate(cl.make_stream(args.benchmark, device=device), args.iters * kw["batch_size"])
    torch.manual_seed(0)
    init = cl.build_model(model, tuple(stream[0].x_train.shape[1:]), stream.num_classes).to(device)
    small = f"a-gem (sample {kw['batch_size']})"  # a memory batch as large as the training batch
    runs = {"finetune": ("finetune", {}), "replay": ("replay", {"mem": args.mem}), "er-ace": ("er-ace", {"mem": args.mem}),
            "a-gem": ("a-gem", {}), small: ("a-gem", {"sample_size": kw["batch_size"]})}

    def step_time(label):
        strategy, params = runs[label]
        return statistics.mean(train(strategy, init, stream, params=params, **kw)[1:])

    for label in runs:  # warm-up
        step_time(label)
    times = {label: [] for label in runs}
    for r in range(args.repeats):
        for label in runs:
            times[label].append(step_time(label))
        print(f"repeat {r}: " + "  ".join(f"{label} {1e3 * times[label][-1]:.3f} ms" for label in runs))

    def ratio(a, b):
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    print(f"part 1: {args.benchmark}, model {model}, {kw['epochs']} epochs, step time over experiences 2..T "
          f"(median over {args.repeats} repeats)")
    for label in runs:
        print(f"  {label:<22} {1e3 * statistics.median(times[label]):.3f} ms/step   / finetune: {ratio(label, 'finetune'):.2f}x")
    print(f"  er-ace / replay: {ratio('er-ace', 'replay'):.3f}   (target <= 1.05)")
    print(f"  a-gem / finetune: {ratio('a-gem', 'finetune'):.3f}   (target <= 2.2; memory batch 256, the paper's)")
    print(f"  {small} / finetune: {ratio(small, 'finetune'):.3f}")


def part2(args, model, kw, device) -> None:
    """ER-ACE's and A-GEM's step time in experience 1 (A-GEM: 2) vs 20."""
    long = truncate(cl.make_stream("permuted-digits", num_experiences=20, device=device), args.iters * kw["batch_size"])
    torch.manual_seed(0)
    init = cl.build_model(model, tuple(long[0].x_train.shape[1:]), long.num_classes).to(device)
    kw2 = dict(kw, epochs=args.epochs2)
    labels = {"finetune": {}, "er-ace": {"mem": args.mem}, "a-gem": {}}
    for label, params in labels.items():  # warm-up
        train(label, init, long, params=params, **kw2)
    ratios = {label: [] for label in labels}
    firsts = {label: [] for label in labels}
    lasts = {label: [] for label in labels}
    for r in range(args.repeats):
        for label, params in labels.items():
            steps = train(label, init, long, params=params, fastest_epoch=True, **kw2)
            first = steps[1] if label == "a-gem" else steps[0]  # A-GEM's memory is empty in experience 1
            firsts[label].append(first)
            lasts[label].append(steps[-1])
            ratios[label].append(steps[-1] / first)
        print(f"repeat {r}: " + "  ".join(f"{label} {ratios[label][-1]:.3f}" for label in labels))
    print(f"part 2: permuted-digits, 20 experiences, {args.epochs2} epochs each, model {model}, step time in the 20th "
          f"experience / the 1st (median over {args.repeats} repeats)")
    for label in labels:
        first = "2nd" if label == "a-gem" else "1st"
        print(f"  {label:<10} {first} {1e3 * statistics.median(firsts[label]):.3f} ms/step  20th "
              f"{1e3 * statistics.median(lasts[label]):.3f} ms/step  ratio {statistics.median(ratios[label]):.3f}  "
              f"ratio of the fastest over repeats {min(lasts[label]) / min(firsts[label]):.3f}"
              + ("   (target <= 1.1)" if label != "finetune" else "   (noise floor)"))


if __name__ == "__main__":
    main()
