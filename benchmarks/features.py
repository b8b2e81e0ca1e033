"""Frozen backbones: cached features against features recomputed every batch; closed-form heads against an SGD head.

Part 1. ``transfer`` (a frozen pretrained backbone, a growing linear head trained by SGD) on
split-fmnist (5 experiences of 2 classes, batch 10, ``--epochs`` per experience), run as
``continual run`` runs it, twice: with the feature cache (``feature_cache="auto"``: the
backbone's features computed once per experience, the head trained on them) and without
(``"off"``: the backbone runs on every training batch and every evaluation). Printed: the
training time (the trainer's, summed over experiences), the one-off feature computation, the
evaluation time and the whole run's wall time, their ratios, and whether the two accuracy matrices
are identical. Target: >= 10x less training time at the identical matrix.

Part 2. On the same cached features: the closed-form heads ``ncm``, ``slda``, ``ranpac`` (exact
running statistics, no SGD) against the SGD head of part 1 trained for the same epochs: final
average accuracy over the 5 experiences, and wall time.

The backbone is pretrained on the first experience's classes (T-shirt and trouser, training
split) for ``--pretrain-epochs``, before anything is timed. The runs alternate (cached, recomputed,
cached, ...) for ``--repeats`` rounds in one process; medians are printed.

    python benchmarks/features.py                        # ConvNet, 5 epochs per experience
    python benchmarks/features.py --model resnet18       # reduced ResNet-18 (slower)
    python benchmarks/features.py --benchmark split-digits --repeats 3   # seconds, when Fashion-MNIST is not installed
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from continual.experiment import RunConfig, run
from continual.transfer import pretrain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="split-fmnist")
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--pretrain-epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "backbone.pt"
        t0 = time.perf_counter()
        source = pretrain(args.benchmark, ckpt, classes=[0, 1], model=args.model, epochs=args.pretrain_epochs, device=args.device)
        print(f"backbone: {args.model} pretrained on {args.benchmark} classes 0-1, {args.pretrain_epochs} epoch(s): "
              f"test accuracy {source['test_accuracy']:.3f}, {time.perf_counter() - t0:.1f} s (not timed below)")
        base = dict(benchmark=args.benchmark, model=args.model, pretrained=str(ckpt), epochs=args.epochs, device=args.device)

        # Part 1: cached against recomputed, alternating.
        times: dict[str, dict[str, list[float]]] = {m: {"train": [], "features": [], "eval": [], "wall": []} for m in ("auto", "off")}
        matrices: dict[str, list] = {}
        for _ in range(args.repeats):
            for mode in ("auto", "off"):
                r = run(RunConfig(strategy="transfer", feature_cache=mode, **base))
                t = r.timings
                times[mode]["train"].append(t["total_train"])
                times[mode]["features"].append(t.get("features", 0.0))
                times[mode]["eval"].append(t["total_eval"])
                times[mode]["wall"].append(t["wall"])
                if mode in matrices and matrices[mode] != r.acc_matrix:
                    print(f"warning: {mode} runs differ between repeats")
                matrices[mode] = r.acc_matrix
                transfer_acc = r.metrics["final_average_accuracy"]
        med = {m: {k: statistics.median(v) for k, v in d.items()} for m, d in times.items()}
        print(f"\npart 1: transfer on {args.benchmark}, {args.model} frozen, {args.epochs} epochs per experience, "
              f"medians of {args.repeats}")
        print(f"{'':<24}{'train s':>10}{'features s':>12}{'eval s':>10}{'wall s':>10}")
        for mode, name in (("off", "recomputed every batch"), ("auto", "cached")):
            m = med[mode]
            print(f"{name:<24}{m['train']:>10.2f}{m['features']:>12.2f}{m['eval']:>10.2f}{m['wall']:>10.2f}")
        off, on = med["off"], med["auto"]
        print(f"training time, recomputed / cached: {off['train'] / on['train']:.1f}x "
              f"(counting the one-off features in the cached run's training: {off['train'] / (on['train'] + on['features']):.1f}x); "
              f"evaluation {off['eval'] / on['eval']:.1f}x; whole run {off['wall'] / on['wall']:.1f}x")
        print(f"identical accuracy matrices: {matrices['auto'] == matrices['off']}")

        # Part 2: closed-form heads on the same cached features.
        print(f"\npart 2: heads on the frozen features (cached), final average accuracy and wall time")
        rows = [("transfer (SGD linear head)", transfer_acc, on["wall"])]
        for strategy in ("ncm", "slda", "ranpac"):
            walls, acc = [], None
            for _ in range(args.repeats):
                r = run(RunConfig(strategy=strategy, **base))
                walls.append(r.timings["wall"])
                acc = r.metrics["final_average_accuracy"]
            rows.append((strategy, acc, statistics.median(walls)))
        for name, acc, wall in rows:
            print(f"  {name:<28} final avg acc {acc:.3f}   wall {wall:6.2f} s")


if __name__ == "__main__":
    main()
