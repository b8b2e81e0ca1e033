"""LUCIR's cost per training step: the less-forget constraint and the margin ranking loss against a
fine-tuning step with the same model and the same batches.

Both runs train the same model (the benchmark's backbone with LUCIR's cosine head) on the same
batches: each experience joined with the same herding exemplars (``ExemplarReplay``), in the same
order. "finetune" adds nothing else; "lucir" adds the ``LUCIR`` plugin: one forward of the frozen
previous model per step, the (B, capacity) cosine scores, the two terms, and the old rows written
back after each step. Measured per step over experiences 2..T (where the frozen model exists),
over the epochs after the first (each experience's other work, herding and imprinting, left out;
with ``--epochs 1`` it is included). Target: LUCIR <= 1.6x fine-tuning (the frozen forward is about a third of a
training step, the rest should be small).

Runs alternate after a warm-up; medians over repeats, ratios per repeat.

    python benchmarks/methods_lucir.py                      # split-digits, CPU, one thread
    python benchmarks/methods_lucir.py --benchmark split-cifar100 --model resnet18 --device cuda --repeats 3
    python benchmarks/methods_lucir.py --repeats 1 --epochs 1   # a quick check that it runs
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

import continual as cl
from continual.models import HeadExpansion, grow_head
from continual.regularizers.lucir import LUCIR, ExemplarReplay, use_cosine_head
from continual.replay.buffers import ClassBalancedBuffer


def train(method: str, init, stream, *, epochs, lr, batch_size, device, mem_per_class) -> list[float]:
    """Seconds per training step in each experience.

    With two epochs or more, the median over epochs 2..E of each epoch's time / its steps (the
    training steps alone: the first epoch follows imprinting, the last is followed by herding);
    with one epoch, the whole ``Trainer.fit`` time / steps. On the CPU the clock is the process's
    CPU time (one thread: other users of a shared machine do not inflate it); on CUDA, wall time
    with a synchronisation at each epoch's end.
    """
    model = copy.deepcopy(init)
    grow_head(model, stream[0])
    use_cosine_head(model)
    buffer = ClassBalancedBuffer(mem_per_class * stream.num_classes, selection="herding", per_class=mem_per_class,
                                 device=device, seed=0)
    plugins = [HeadExpansion(model), ExemplarReplay(buffer)]
    if method == "lucir":
        plugins.append(LUCIR())
    trainer = cl.Trainer(model, lr=lr, epochs=epochs, batch_size=batch_size, device=device, seed=0, momentum=0.9, plugins=plugins)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    marks: list[float] = []

    def mark(event, info):
        if event == "epoch_end":
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            marks.append(clock())

    trainer.callbacks.append(mark)
    per_step = []
    for e in stream:
        steps = -(-(e.num_train + len(buffer)) // batch_size)  # the exemplars join the experience
        marks.clear()
        t0 = clock()
        trainer.fit(e)
        if epochs >= 2:
            per_step.append(statistics.median(b - a for a, b in zip(marks[:-1], marks[1:])) / steps)
        else:
            per_step.append((clock() - t0) / steps)
    return per_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", default="split-digits")
    ap.add_argument("--model", default=None, help="default: the benchmark's")
    ap.add_argument("--epochs", type=int, default=None, help="default: the benchmark's (at least 2 to time steps alone)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--mem-per-class", type=int, default=20)
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
    kw = dict(epochs=args.epochs or bench.epochs, lr=bench.lr, batch_size=bench.batch_size, device=device,
              mem_per_class=args.mem_per_class)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, {args.benchmark}, model {model_name}, "
          f"{kw['epochs']} epochs, batch {bench.batch_size}, {args.mem_per_class} exemplars per class")

    methods = ("finetune", "lucir")

    def step_time(method: str) -> float:
        return statistics.mean(train(method, init, stream, **kw)[1:])

    for method in methods:  # warm-up
        step_time(method)
    times: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(args.repeats):
        for method in methods:
            times[method].append(step_time(method))
        print(f"repeat {r}: " + "  ".join(f"{m} {1e3 * times[m][-1]:.3f} ms" for m in methods))
    ratios = [t / f for t, f in zip(times["lucir"], times["finetune"])]
    print(f"step time, experiences 2..T (median over {args.repeats} repeats)")
    print(f"  finetune (same model, same batches) {1e3 * statistics.median(times['finetune']):.3f} ms/step")
    print(f"  lucir                               {1e3 * statistics.median(times['lucir']):.3f} ms/step"
          f"   / finetune: {statistics.median(ratios):.2f}x   (target <= 1.6x)")


if __name__ == "__main__":
    main()
