"""The class-incremental methods' cost per training step, against the step they add to.

Every configuration is built as ``continual run`` builds it (``continual.experiment.build``: the
benchmark's stream, model, growing head, the strategy's plugins) and trained on the whole stream.
A step's time is an epoch's time divided by its steps: the median over the epochs after the first
of each experience (the per-experience work, such as herding, copying the old model or adding an
extractor, happens outside them), on the CPU in process CPU time (one thread: another process on
a shared machine does not inflate it), on CUDA in wall time with a synchronisation per epoch.
Configurations alternate in one process after a warm-up; every figure is a median over
``--repeats``, a ratio the median of the per-repeat ratios.

1. Experiences 2..T of ``--benchmark`` (split-digits by default: its MLP, batch 32, lr 0.05,
   ``--epochs 3``), each method against the step it adds to, with its target (issue 14):
   - ER-ACE / ER (the same replay batch; ER-ACE masks the incoming logits): <= 1.05;
   - A-GEM / fine-tune (a forward and backward pass on a memory batch of 256, the paper's, and a
     projection): <= 2.2; also with a memory batch as large as the training batch;
   - iCaRL (BCE, softmax KD) and LUCIR / the same batches without the method (each experience
     joined by the same herding exemplars, ``ExemplarReplay``; for LUCIR with its cosine head):
     <= 1.6 (a forward of the frozen old model and the loss terms);
   - DER / fine-tune in experiences 1, 2 and 5 (k extractors forward, one backward), with the
     model's parameter count after each experience.
2. ER-ACE's and A-GEM's step time in the 20th experience / the 1st (A-GEM: the 2nd, its memory is
   empty in the 1st) on permuted-digits with 20 experiences: <= 1.1; fine-tuning's own ratio is
   the noise floor.

    python benchmarks/methods.py                       # both parts, CPU
    python benchmarks/methods.py --device cuda --repeats 5
    python benchmarks/methods.py --repeats 1 --epochs 2 --parts 1   # a quick check that it runs
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import continual as cl
from continual.experiment import RunConfig, build
from continual.models import HeadExpansion
from continual.regularizers.lucir import ExemplarReplay, use_cosine_head
from continual.replay import ClassBalancedBuffer


def step_times(trainer: cl.Trainer, stream: cl.Stream) -> list[float]:
    """Train on ``stream``; seconds per step in each experience (see the module docstring)."""
    device = trainer.device
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    marks: list[tuple[float, int]] = []  # (time at an epoch's end, its steps)

    def mark(event, info):
        if event == "epoch_end":
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            marks.append((clock(), info["steps"]))

    trainer.callbacks.append(mark)
    out = []
    for e in stream:
        marks.clear()
        trainer.fit(e)
        per_step = [(b - a) / steps for (a, _), (b, steps) in zip(marks[:-1], marks[1:])]  # epochs 2..E
        out.append(statistics.median(per_step) if per_step else float("nan"))
    trainer.callbacks.remove(mark)
    return out


def trainer_for(label: str, cfg: RunConfig, mem: int) -> tuple[cl.Trainer, cl.Stream]:
    """The trainer a run of ``cfg`` builds; for the "exemplars" references, fine-tuning on each
    experience joined by ``mem`` herding exemplars (with LUCIR's cosine head for "exemplars-cosine")."""
    built = build(cfg)
    if not label.startswith("exemplars"):
        return built.trainer, built.stream
    if label == "exemplars-cosine":
        use_cosine_head(built.model)
    buffer = ClassBalancedBuffer(mem, selection="herding", device=built.trainer.device)
    c = built.config
    trainer = cl.Trainer(built.model, lr=c.lr, epochs=c.epochs, batch_size=c.batch_size, momentum=c.momentum, device=c.device,
                         seed=c.seed, plugins=[HeadExpansion(built.model), ExemplarReplay(buffer)])
    return trainer, built.stream


def measure(configs: dict[str, RunConfig], repeats: int, mem: int) -> tuple[dict[str, list[list[float]]], dict[str, list[int]]]:
    """Per configuration: the step times per experience of each repeat; and the parameter count after each experience."""
    times: dict[str, list[list[float]]] = {k: [] for k in configs}
    params: dict[str, list[int]] = {}
    for r in range(repeats + 1):  # the first round warms up
        for label, cfg in configs.items():
            trainer, stream = trainer_for(label, cfg, mem)
            counts: list[int] = []

            def count(event, info, model=trainer.model):
                if event == "epoch_end":
                    counts.append(sum(p.numel() for p in model.parameters()))

            trainer.callbacks.append(count)
            per_experience = step_times(trainer, stream)
            if r:
                times[label].append(per_experience)
                params[label] = counts[trainer.epochs - 1 :: trainer.epochs]
    return times, params


def ratio(times, a: str, b: str, experiences: slice | int) -> float:
    """Median over repeats of (mean step time of ``a`` / of ``b`` over ``experiences``)."""
    pick = (lambda v: v[experiences]) if isinstance(experiences, int) else (lambda v: statistics.mean(v[experiences]))
    return statistics.median(pick(x) / pick(y) for x, y in zip(times[a], times[b]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", default="split-digits")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per experience (at least 2: the first is left out)")
    ap.add_argument("--mem", type=int, default=200, help="every method's memory (exemplars in total)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--experiences", type=int, default=None, help="part 1 on the first N experiences (default: all; at least 2)")
    ap.add_argument("--parts", default="1,2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    parts = {int(p) for p in args.parts.split(",")}
    base = dict(benchmark=args.benchmark, epochs=args.epochs, device=args.device, seed=0)
    part1 = dict(base, num_experiences=args.experiences)
    mem = {"mem": args.mem}
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} thread(s); medians over {args.repeats} repeats")
    if 1 in parts:
        configs = {
            "finetune": RunConfig(strategy="finetune", **part1),
            "replay": RunConfig(strategy="replay", params=mem, **part1),
            "er-ace": RunConfig(strategy="er-ace", params=mem, **part1),
            "a-gem": RunConfig(strategy="a-gem", params=mem, **part1),
            "a-gem (memory batch 32)": RunConfig(strategy="a-gem", params={**mem, "sample_size": 32}, **part1),
            "exemplars": RunConfig(strategy="finetune", **part1),
            "icarl (bce)": RunConfig(strategy="icarl", params={**mem, "loss": "bce"}, classifier="linear", **part1),
            "icarl (softmax-kd)": RunConfig(strategy="icarl", params={**mem, "loss": "softmax-kd"}, classifier="linear", **part1),
            "exemplars-cosine": RunConfig(strategy="finetune", **part1),
            "lucir": RunConfig(strategy="lucir", params={"mem": args.mem, "mem_per_class": 0}, **part1),
            "der": RunConfig(strategy="der", params=mem, **part1),
        }
        times, params = measure(configs, args.repeats, args.mem)
        later = slice(1, None)
        print(f"part 1: {args.benchmark}, {args.epochs} epochs, memory {args.mem}; ms per step over experiences 2..T")
        for label, runs in times.items():
            print(f"  {label:<24} {1e3 * statistics.median(statistics.mean(v[later]) for v in runs):8.3f} ms")
        print(f"  ER-ACE / ER                {ratio(times, 'er-ace', 'replay', later):.3f}   (target <= 1.05)")
        print(f"  A-GEM / fine-tune          {ratio(times, 'a-gem', 'finetune', later):.3f}   (target <= 2.2; memory batch 256)")
        print(f"  A-GEM (batch 32) / fine-tune {ratio(times, 'a-gem (memory batch 32)', 'finetune', later):.3f}")
        for label in ("icarl (bce)", "icarl (softmax-kd)"):
            print(f"  {label} / exemplars {ratio(times, label, 'exemplars', later):.3f}   (target <= 1.6)")
        print(f"  lucir / exemplars-cosine   {ratio(times, 'lucir', 'exemplars-cosine', later):.3f}   (target <= 1.6)")
        T = len(times["der"][0])
        print("  DER / fine-tune in experience " + ", ".join(f"{k + 1}: {ratio(times, 'der', 'finetune', k):.2f}"
                                                          for k in (0, 1, 4) if k < T))
        print(f"  parameters after each experience: DER {params['der']}, fine-tune {params['finetune'][-1]}")
    if 2 in parts:
        stream20 = dict(base, benchmark="permuted-digits", num_experiences=20, epochs=max(2, args.epochs))
        configs = {name: RunConfig(strategy=name, params=(mem if name != "finetune" else {}), **stream20)
                   for name in ("finetune", "er-ace", "a-gem")}
        times, _ = measure(configs, args.repeats, args.mem)
        print("part 2: permuted-digits, 20 experiences; step time in the 20th experience / the 1st (A-GEM: the 2nd)")
        for name in configs:
            first = 1 if name == "a-gem" else 0
            print(f"  {name:<10} {statistics.median(v[19] / v[first] for v in times[name]):.3f}   (target <= 1.1)")


if __name__ == "__main__":
    main()
