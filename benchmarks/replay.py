"""Replay's cost per training step: ER and DER++ against fine-tuning, and experience 1 against 20.

1. Step time with replay / step time of fine-tuning on the same stream (split-digits by default,
   the benchmark's model, epochs and batch size), the replay batch as large as the training batch
   (so twice the samples per step). Measured over experiences 2..T, where the buffer is full;
   each run's time includes the buffer's work (sampling, insertion, balanced rebuilds).
   Target for ER: <= 2.3x, i.e. no overhead beyond the extra FLOPs.
2. ER's step time in the 20th experience / in the 1st, on a 20-experience permuted-digits stream
   (3 epochs each, the fastest epoch of each experience; for a balanced buffer, which is empty
   during the 1st experience, the 2nd). A buffer held as preallocated tensors costs the same at every experience;
   one built by concatenating datasets slows down as experiences accumulate (Avalanche issues
   #653, #1280). Target: <= 1.1. Fine-tuning's own ratio is printed as the noise floor.

Runs alternate strategy by strategy in one process after a warm-up; medians over repeats (part 2
also prints the ratio of the fastest times over repeats, the steadier figure on a busy machine).

    python benchmarks/replay.py                         # both parts, CPU
    python benchmarks/replay.py --model convnet --repeats 5 --device cuda
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

import continual as cl
from continual.strategies import Context


def train(strategy: str, init, stream, *, epochs, lr, batch_size, device, params=None, fastest_epoch=False) -> list[float]:
    """Seconds per training step in each experience (``Trainer.fit`` time, buffer work included, / steps).

    With ``fastest_epoch``, the fastest epoch's time / its steps instead (robust to a busy
    machine; it leaves out the per-experience work after the last epoch, such as a balanced
    buffer's rebuild).

    On the CPU the clock is the process's CPU time (one thread: other users of a shared machine
    do not inflate it); on CUDA, wall time with a synchronisation after each experience.
    """
    s = cl.get_strategy(strategy)
    plugins = s.make_plugins(s.params(params or {}), Context(stream=stream, device=device, seed=0))
    trainer = cl.Trainer(copy.deepcopy(init), lr=lr, epochs=epochs, batch_size=batch_size, device=device, seed=0, plugins=plugins)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    per_step, per_epoch_min = [], []
    marks = []

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
    return per_step if not fastest_epoch else per_epoch_min


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", default="split-digits", help="stream of part 1")
    ap.add_argument("--model", default=None, help="mlp or convnet (default: the benchmark's)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--mem", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=None, help="epochs per experience in part 1 (default: the benchmark's)")
    ap.add_argument("--epochs2", type=int, default=3, help="epochs per experience in part 2")
    ap.add_argument("--experiences2", type=int, default=20, help="experiences of part 2's permuted-digits stream")
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
          f"replay batch = training batch = {bench.batch_size}")

    parts = {int(p) for p in args.parts.split(",")}
    if 1 in parts:
        part1(args, model, bench, kw, device)
    if 2 in parts:
        part2(args, model, kw, device)


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def part1(args, model, bench, kw, device) -> None:
    """Replay vs fine-tune, per step."""
    stream = cl.make_stream(args.benchmark, device=device)
    torch.manual_seed(0)
    init = cl.build_model(model, tuple(stream[0].x_train.shape[1:]), stream.num_classes).to(device)
    runs = {"finetune": {}, "replay": {"mem": args.mem}, "replay (class-balanced)": {"mem": args.mem, "buffer": "class-balanced"},
            "der++": {"mem": args.mem}}

    def step_time(label):
        return statistics.mean(train(label.split(" ")[0], init, stream, params=runs[label], **kw)[1:])

    for label in runs:  # warm-up
        step_time(label)
    times = {label: [] for label in runs}
    for r in range(args.repeats):
        for label in runs:
            times[label].append(step_time(label))
        print(f"repeat {r}: " + "  ".join(f"{label} {1e3 * times[label][-1]:.3f} ms" for label in runs))
    print(f"part 1: {args.benchmark}, model {model}, {kw['epochs']} epochs, step time (median over {args.repeats} repeats)")
    for label in runs:
        ratios = [t / f for t, f in zip(times[label], times["finetune"])]
        print(f"  {label:<24} {1e3 * statistics.median(times[label]):.3f} ms/step   / finetune: {statistics.median(ratios):.2f}x"
              + ("   (target <= 2.3x)" if label == "replay" else ""))



def part2(args, model, kw, device) -> None:
    """ER's step time in experience 1 vs 20."""
    long = cl.make_stream("permuted-digits", num_experiences=args.experiences2, device=device)
    torch.manual_seed(0)
    init = cl.build_model(model, tuple(long[0].x_train.shape[1:]), long.num_classes).to(device)
    kw2 = dict(kw, epochs=args.epochs2)
    labels = {"finetune": {}, "replay": {"mem": args.mem}, "replay (class-balanced)": {"mem": args.mem, "buffer": "class-balanced"}}
    for label in labels:  # warm-up
        train(label.split(" ")[0], init, long, params=labels[label], **kw2)
    ratios = {label: [] for label in labels}
    firsts = {label: [] for label in labels}
    lasts = {label: [] for label in labels}
    for r in range(args.repeats):
        for label, params in labels.items():
            steps = train(label.split(" ")[0], init, long, params=params, fastest_epoch=True, **kw2)
            first = steps[1] if "balanced" in label else steps[0]  # a balanced buffer is empty in experience 1
            firsts[label].append(first)
            lasts[label].append(steps[-1])
            ratios[label].append(steps[-1] / first)
        print(f"repeat {r}: " + "  ".join(f"{label} {ratios[label][-1]:.3f}" for label in labels))
    print(f"part 2: permuted-digits, {len(long)} experiences, {args.epochs2} epochs each, model {model}, "
          f"step time in the {ordinal(len(long))} experience / the 1st (median over {args.repeats} repeats)")
    for label in labels:
        first = "2nd" if "balanced" in label else "1st"
        print(f"  {label:<24} {first} {1e3 * statistics.median(firsts[label]):.3f} ms/step  {ordinal(len(long))} {1e3 * statistics.median(lasts[label]):.3f} ms/step"
              f"  ratio {statistics.median(ratios[label]):.3f}  ratio of the fastest over repeats "
              f"{min(lasts[label]) / min(firsts[label]):.3f}" + ("   (target <= 1.1)" if label == "replay" else ""))


if __name__ == "__main__":
    main()
