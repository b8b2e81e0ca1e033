"""iCaRL's cost per training step against fine-tuning, with the same model and batch size.

An iCaRL step (Rebuffi et al. 2017; ``continual.replay.icarl``) adds one forward pass of the
frozen previous model (no backward) and its loss, sigmoid BCE with distillation (``bce``) or
cross-entropy + KD on the old classes (``softmax-kd``), to a fine-tuning step. Target: <= 1.6x.

Measured over experiences 2..T (where an old model exists), on the class-incremental stream of
the benchmark (split-digits by default) with a growing head, as a run builds it. The time per
step is each epoch's time / its steps (iCaRL's training set is the experience plus the
exemplars, so it has more steps than fine-tuning's; the steps are counted from the set it trains
on); the first epoch of each experience is left out when there are several, so the exemplar
selection (herding) and the copy of the old model, once per experience, are not counted as step
time. (They are printed apart: each experience's time beyond its epochs at the measured rate.)

Runs alternate configuration by configuration in one process after a warm-up; medians over
repeats of the ratio to fine-tuning in the same repeat.

    python benchmarks/methods_icarl.py                          # CPU, one thread
    python benchmarks/methods_icarl.py --model convnet --device cuda --repeats 5
    python benchmarks/methods_icarl.py --repeats 1 --epochs 2 --mem 100   # a quick check that it runs
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

import continual as cl
import continual.replay.icarl  # noqa: F401  (registers icarl)
from continual.models import HeadExpansion
from continual.strategies import Context

CONFIGS = {"finetune": ("finetune", {}), "icarl (bce)": ("icarl", {"loss": "bce"}),
           "icarl (softmax-kd)": ("icarl", {"loss": "softmax-kd"})}


def train(strategy: str, init, stream, *, epochs, lr, batch_size, device, params) -> tuple[float, float]:
    """(seconds per training step, seconds per experience outside the measured epochs), over experiences 2..T.

    On the CPU the clock is the process's CPU time (one thread: other users of a shared machine
    do not inflate it); on CUDA, wall time with a synchronisation at each epoch's end.
    """
    s = cl.get_strategy(strategy)
    model = copy.deepcopy(init)
    plugins = [HeadExpansion(model), *s.make_plugins(s.params(params), Context(stream=stream, device=device, seed=0))]
    trainer = cl.Trainer(model, lr=lr, epochs=epochs, batch_size=batch_size, device=device, seed=0, plugins=plugins)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    marks: list[float] = []

    def mark(event, info):
        if event == "epoch_end":
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            marks.append(clock())

    trainer.callbacks.append(mark)
    buffer = getattr(plugins[-1], "buffer", None)
    per_step, outside = [], []
    for i, e in enumerate(stream):
        n = e.num_train + (len(buffer) if buffer is not None else 0)  # iCaRL trains on the experience + exemplars
        steps = -(-n // batch_size)
        marks.clear()
        t0 = clock()
        trainer.fit(e)  # ends with a device synchronisation
        t1 = clock()
        if i == 0:
            continue
        bounds = [t0, *marks]
        epoch_times = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
        measured = epoch_times[1:] if len(epoch_times) > 1 else epoch_times
        per_step.append(statistics.median(measured) / steps)
        outside.append((t1 - t0) - len(epoch_times) * statistics.median(measured))  # herding, the old model's copy, set-up
    return statistics.mean(per_step), statistics.mean(outside)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", default="split-digits")
    ap.add_argument("--model", default=None, help="mlp or convnet (default: the benchmark's)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per experience (the first of each is not timed)")
    ap.add_argument("--mem", type=int, default=2000, help="iCaRL's exemplars in total (the paper's 2000)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: PyTorch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = cl.trainer.resolve_device(args.device)
    bench = cl.get_benchmark(args.benchmark)
    model_name = args.model or bench.model
    stream = cl.make_stream(args.benchmark, device=device)
    torch.manual_seed(0)
    init = cl.build_model(model_name, tuple(stream[0].x_train.shape[1:]), 0, head="incremental",
                          capacity=stream.num_classes).to(device)
    kw = dict(epochs=args.epochs, lr=bench.lr, batch_size=bench.batch_size, device=device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, {args.benchmark}, model {model_name}, "
          f"batch {bench.batch_size}, {args.epochs} epochs, iCaRL mem {args.mem}")

    def measure(label):
        strategy, params = CONFIGS[label]
        return train(strategy, init, stream, params={**params, "mem": args.mem} if strategy == "icarl" else params, **kw)

    for label in CONFIGS:  # warm-up
        measure(label)
    steps = {label: [] for label in CONFIGS}
    outside = {label: [] for label in CONFIGS}
    for r in range(args.repeats):
        for label in CONFIGS:
            step, rest = measure(label)
            steps[label].append(step)
            outside[label].append(rest)
        print(f"repeat {r}: " + "  ".join(f"{label} {1e3 * steps[label][-1]:.3f} ms/step" for label in CONFIGS))
    print(f"step time, experiences 2..T (median over {args.repeats} repeats of each repeat's ratio to finetune)")
    for label in CONFIGS:
        ratios = [t / f for t, f in zip(steps[label], steps["finetune"])]
        print(f"  {label:<20} {1e3 * statistics.median(steps[label]):.3f} ms/step   / finetune: {statistics.median(ratios):.2f}x"
              f"   outside the timed epochs: {1e3 * statistics.median(outside[label]):.1f} ms/experience"
              + ("   (target <= 1.6x)" if label != "finetune" else ""))


if __name__ == "__main__":
    main()
