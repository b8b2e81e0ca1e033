"""DER's cost per training step against fine-tuning, and its parameter count, experience by experience.

DER (continual/expansion.py) adds a feature extractor per experience: in experience k (1-based)
the forward pass runs k extractors, the backward pass only the newest one and the head. This
script measures, on the same stream, backbone, class-incremental head and batch size:

1. the step time of DER in experiences 1, 2 and 5 (``--experiences``) divided by fine-tuning's
   step time in the same experience (a step of DER from experience 2 on also computes the
   auxiliary head's loss; its training data includes the exemplars, so it takes more steps, but
   each step has the same batch size);
2. the model's parameter count after each experience (DER's grows by one extractor per
   experience; fine-tuning's is fixed), which the survey of Zhou et al. (TPAMI 2024) counts
   against the exemplar budget.

A step's time is the fastest epoch of the experience divided by its steps (robust to a busy
machine; it leaves out the per-experience work: adding an extractor, herding), and also the
whole ``Trainer.fit`` divided by its steps ("fit", per-experience work included). Configurations
alternate run by run in one process after a warm-up; medians over repeats, and the median of the
per-repeat ratios. On the CPU the clock is the process's CPU time; on CUDA, wall time with a
synchronisation at each epoch's end.

    python benchmarks/methods_der.py                                   # split-digits, its MLP, CPU
    python benchmarks/methods_der.py --model convnet --repeats 5 --device cuda
    python benchmarks/methods_der.py --repeats 1 --epochs 2 --mem 50   # a quick check
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import continual as cl
import continual.expansion  # noqa: F401  (registers "der")
from continual.models import HeadExpansion, grow_head
from continual.strategies import Context


def train(strategy: str, stream, *, model_name: str, epochs: int, lr: float, batch_size: int, device, params=None) -> dict:
    """One run of ``strategy`` on ``stream``, built as ``continual.run`` builds it (class-incremental
    head, HeadExpansion, the strategy's plugins and ``prepare_model``).

    Returns:
        ``{"epoch": [seconds per step of the fastest epoch, per experience], "fit": [seconds per
        step of the whole fit, per experience], "parameters": [model parameters after each experience]}``.
    """
    torch.manual_seed(0)
    model = cl.build_model(model_name, tuple(stream[0].x_train.shape[1:]), 0, head="incremental",
                           capacity=stream.num_classes).to(device)
    grow_head(model, stream[0])
    s = cl.get_strategy(strategy)
    p = s.params(params or {})
    context = Context(stream=stream, device=device, seed=0)
    plugins = [HeadExpansion(model), *s.make_plugins(p, context)]
    if s.prepare_model is not None:
        s.prepare_model(model, p, context)
    trainer = cl.Trainer(model, lr=lr, epochs=epochs, batch_size=batch_size, device=device, seed=0, plugins=plugins)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    marks: list[float] = []

    def mark(event, info):
        if event == "epoch_end":
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            marks.append(clock())

    trainer.callbacks.append(mark)
    out = {"epoch": [], "fit": [], "parameters": []}
    for e in stream:
        exemplars = sum(len(pl.buffer) for pl in plugins if getattr(pl, "buffer", None) is not None and hasattr(pl, "experience_data"))
        steps = -(-(e.num_train + exemplars) // batch_size)  # DER trains on the experience joined by its exemplars
        marks.clear()
        t0 = clock()
        trainer.fit(e)  # ends with a device synchronisation
        out["fit"].append((clock() - t0) / (epochs * steps))
        out["epoch"].append(min(b - a for a, b in zip([t0] + marks[:-1], marks)) / steps)
        out["parameters"].append(sum(q.numel() for q in trainer.model.parameters()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", default="split-digits")
    ap.add_argument("--num-experiences", type=int, default=None, help="default: the benchmark's (at least the largest of --experiences)")
    ap.add_argument("--model", default=None, help="mlp, convnet, resnet18... (default: the benchmark's)")
    ap.add_argument("--epochs", type=int, default=None, help="default: the benchmark's (with 1, the fastest epoch includes the per-experience work)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the benchmark's")
    ap.add_argument("--mem", type=int, default=2000, help="DER's exemplars (PyCIL: 2000)")
    ap.add_argument("--experiences", default="1,2,5", help="1-based experiences whose step times are compared")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: PyTorch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = cl.trainer.resolve_device(args.device)
    bench = cl.get_benchmark(args.benchmark)
    model_name = args.model or bench.model
    wanted = [int(k) for k in args.experiences.split(",")]
    stream = cl.make_stream(args.benchmark, num_experiences=args.num_experiences, device=device)
    if max(wanted) > len(stream) or min(wanted) < 1:
        raise SystemExit(f"--experiences {args.experiences}: the stream has experiences 1..{len(stream)}")
    kw = dict(model_name=model_name, epochs=args.epochs or bench.epochs, lr=bench.lr,
              batch_size=args.batch_size or bench.batch_size, device=device)
    runs = {"finetune": {}, "der": {"mem": args.mem}}
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}; {args.benchmark} ({len(stream)} "
          f"experiences), model {model_name}, {kw['epochs']} epochs, batch {kw['batch_size']}, DER mem {args.mem}")

    for name, params in runs.items():  # warm-up
        train(name, stream, params=params, **kw)
    results = {name: [] for name in runs}
    for r in range(args.repeats):
        for name, params in runs.items():
            results[name].append(train(name, stream, params=params, **kw))
        print(f"repeat {r}: " + "  ".join(
            f"{name} " + "/".join(f"{1e3 * results[name][-1]['epoch'][k - 1]:.3f}" for k in wanted) + " ms" for name in runs))

    print(f"step time, median over {args.repeats} repeats (fastest epoch / fit per step), DER / finetune: median of the per-repeat ratios")
    for k in wanted:
        line = [f"  experience {k}:"]
        for name in runs:
            e = statistics.median(r["epoch"][k - 1] for r in results[name])
            f = statistics.median(r["fit"][k - 1] for r in results[name])
            line.append(f"{name} {1e3 * e:.3f} / {1e3 * f:.3f} ms")
        ratio = statistics.median(d["epoch"][k - 1] / f["epoch"][k - 1] for d, f in zip(results["der"], results["finetune"]))
        ratio_fit = statistics.median(d["fit"][k - 1] / f["fit"][k - 1] for d, f in zip(results["der"], results["finetune"]))
        print("   ".join(line) + f"   der/finetune {ratio:.2f}x / {ratio_fit:.2f}x")
    print("model parameters after each experience:")
    for name in runs:
        counts = results[name][0]["parameters"]
        print(f"  {name:<9} " + " ".join(f"{c:,}" for c in counts) + f"   ({counts[-1] / counts[0]:.2f}x the first)")


if __name__ == "__main__":
    main()
