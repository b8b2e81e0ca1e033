"""Cost of head expansion: training-step time after 1, 5 and 20 expansions against a fixed head.

Training-step time (forward, backward, SGD step with momentum on a batch) is measured for the
same backbone with

- ``fixed``: an ``nn.Linear`` head with C outputs, the final width (the reference);
- ``grown-n``: an ``IncrementalClassifier`` with capacity C (the stream's classes, as a run
  allocates it) after n expansions of k classes, each applied to the optimizer with
  ``sync_optimizer`` as the trainer does; target: ``grown-20 / fixed <= 1.1``;
- ``doubling-n``: the same head built without a capacity (it doubles when a growth exceeds it,
  as a head built by hand does), after n expansions.

Every configuration is timed in turn (alternating) in one process, and the medians over repeats
are printed. The expansion step (``grow`` + ``sync_optimizer``) is timed on its own.

Then the classifiers on that head, on a real stream (``--benchmark``, default split-fmnist when its
files are installed, else split-digits) with replay (class-balanced herding memory of 200): the
cost of BiC's second stage (170 epochs on its held-out set, the model frozen) and of the NME
classifier (class means of the exemplars' features, then evaluating every experience's test
split) against the training of the experience they follow (and NME's evaluation against the
linear head's), medians over ``--class-repeats`` runs of the second experience.

    python benchmarks/heads.py                          # MLP 64-400-400, 20 expansions of 5 classes (100 classes)
    python benchmarks/heads.py --features 160           # the reduced ResNet-18's feature width
    python benchmarks/heads.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from continual.models import MLP, IncrementalClassifier, sync_optimizer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make(kind: str, expansions: int, args, device: torch.device):
    """A model (MLP backbone + head) and its optimizer, the head fixed at C or grown ``expansions`` times."""
    torch.manual_seed(0)
    k, C = args.classes_per_step, args.classes_per_step * args.steps
    model = MLP(args.in_features, (args.hidden, args.features), C)
    if kind != "fixed":
        model.head = IncrementalClassifier(args.features, 0, capacity=C if kind == "grown" else None)
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if kind != "fixed":
        for n in range(1, expansions + 1):
            model.head.grow(n * k)
            sync_optimizer(model, opt)
    return model, opt


def time_steps(model, opt, x, y, n: int, device) -> float:
    """Seconds per training step, over ``n`` steps."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return (time.perf_counter() - t0) / n


def time_expansion(args, device, repeats: int) -> list[float]:
    """Seconds per expansion step (grow by k rows + sync_optimizer), over a full sequence of steps."""
    times = []
    for _ in range(repeats):
        model, opt = make("grown", 0, args, device)
        time_steps(model, opt, torch.randn(2, args.in_features, device=device), torch.zeros(2, dtype=torch.long, device=device), 1, device)
        sync(device)
        t0 = time.perf_counter()
        for n in range(1, args.steps + 1):
            model.head.grow(n * args.classes_per_step)
            sync_optimizer(model, opt)
        sync(device)
        times.append((time.perf_counter() - t0) / args.steps)
    return times


def time_classifiers(args, device) -> dict[str, list[float]]:
    """Seconds of: training experience 1 (without BiC's stage 2), BiC's stage 2 after it, NME's
    class means, evaluation with NME and with the linear head; once per repeat."""
    from continual import BiasCorrection, NearestMeanClassifier, Trainer, make_stream
    from continual.models import HeadExpansion, build_model, grow_head
    from continual.replay import ER, make_buffer

    stream = make_stream(args.benchmark, device=device)
    out: dict[str, list[float]] = {"train": [], "bic": [], "nme_means": [], "eval_nme": [], "eval_linear": []}
    for r in range(args.class_repeats):
        torch.manual_seed(r)
        model = build_model("mlp", tuple(stream[0].x_train.shape[1:]), 0, head="incremental", capacity=stream.num_classes)
        grow_head(model, stream[0])
        buffer = make_buffer("class-balanced", 200, selection="herding", device=device, seed=r)
        bic, nme = BiasCorrection(seed=r), NearestMeanClassifier(buffer=buffer)
        spent: dict[str, float] = {}
        for name, plugin in (("bic", bic), ("nme_means", nme)):
            def timed(model, experience, _run=plugin.after_experience, _name=name):
                sync(device)
                t0 = time.perf_counter()
                _run(model, experience)
                sync(device)
                spent[_name] = time.perf_counter() - t0
            plugin.after_experience = timed  # the trainer collects hooks when it is built
        trainer = Trainer(model, lr=args.lr, epochs=1, batch_size=10, device=device, seed=r,
                          plugins=[HeadExpansion(model), ER(buffer), bic, nme], classifier="nme")
        trainer.fit(stream[0])
        trainer.fit(stream[1])
        out["train"].append(trainer.timings.train[-1] - spent["bic"] - spent["nme_means"])
        out["bic"].append(spent["bic"])
        out["nme_means"].append(spent["nme_means"])
        for key, classifier in (("eval_nme", "nme"), ("eval_linear", "linear")):
            sync(device)
            t0 = time.perf_counter()
            trainer.evaluate(stream, classifier=classifier)
            sync(device)
            out[key].append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--in-features", type=int, default=64, help="input size (64: 8x8 digits)")
    ap.add_argument("--hidden", type=int, default=400)
    ap.add_argument("--features", type=int, default=400, help="backbone output width (the head's input)")
    ap.add_argument("--classes-per-step", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="number of expansions")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--iters", type=int, default=200, help="training steps per timing")
    ap.add_argument("--repeats", type=int, default=31)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--benchmark", default=None, help="stream for the classifier timings (default: split-fmnist if installed, else split-digits)")
    ap.add_argument("--lr", type=float, default=0.03, help="learning rate of the classifier timings' training")
    ap.add_argument("--class-repeats", type=int, default=3, help="repeats of the classifier timings (0: skip them)")
    args = ap.parse_args()
    if args.benchmark is None:
        from pathlib import Path

        installed = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists()
        args.benchmark = "split-fmnist" if installed else "split-digits"
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    k, C = args.classes_per_step, args.classes_per_step * args.steps
    x = torch.randn(args.batch_size, args.in_features, device=device)
    points = sorted({n for n in (1, 5, args.steps) if n <= args.steps})
    configs = {"fixed": (*make("fixed", 0, args, device), C)}
    for kind in ("grown", "doubling"):
        for n in points:
            configs[f"{kind}-{n}"] = (*make(kind, n, args, device), n * k)
    labels = {name: torch.randint(0, width, (args.batch_size,), device=device) for name, (_, _, width) in configs.items()}
    for name, (model, opt, _) in configs.items():  # warm-up
        time_steps(model, opt, x, labels[name], 20, device)
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name, (model, opt, _) in configs.items():  # alternate
            times[name].append(time_steps(model, opt, x, labels[name], args.iters, device))
    expansion = time_expansion(args, device, args.repeats)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"MLP {args.in_features}-{args.hidden}-{args.features} + head of {C} classes, batch {args.batch_size}, "
          f"expansions of {k} classes; medians over {args.repeats} repeats of {args.iters} steps")
    for name, m in med.items():
        print(f"  {name:<12} {1e6 * m:8.1f} us/step  ({m / med['fixed']:.3f}x fixed)")
    for kind in ("grown", "doubling"):
        print(f"  {kind}/fixed after " + ", ".join(f"{n}: {med[f'{kind}-{n}'] / med['fixed']:.3f}" for n in points) + " expansions")
    print(f"  expansion step (grow {k} rows + sync_optimizer): median {1e6 * statistics.median(expansion):.1f} us")
    if args.class_repeats > 0:
        c = {k: statistics.median(v) for k, v in time_classifiers(args, device).items()}
        print(f"{args.benchmark}, replay (class-balanced herding, 200) + BiC + NME, experience 1 (1 epoch, batch 10); "
              f"medians over {args.class_repeats} runs")
        print(f"  training {c['train']:.3f} s; BiC stage 2 {c['bic']:.3f} s ({c['bic'] / c['train']:.3f}x the training); "
              f"NME class means {c['nme_means']:.4f} s ({c['nme_means'] / c['train']:.4f}x)")
        print(f"  evaluation of every experience: linear {c['eval_linear']:.4f} s, NME {c['eval_nme']:.4f} s "
              f"({c['eval_nme'] / c['eval_linear']:.2f}x linear; NME means + evaluation {(c['nme_means'] + c['eval_nme']) / c['train']:.4f}x the training)")


if __name__ == "__main__":
    main()
