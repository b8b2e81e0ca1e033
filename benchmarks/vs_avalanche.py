"""Side by side with Avalanche: the same protocol in both libraries, accuracy and wall time.

Protocol (the same in both): Split Fashion-MNIST, 5 experiences of 2 classes (class order
0/1, 2/3, ...), class-incremental; MLP 784-400-400-10 with a fixed 10-way head (Avalanche's
``SimpleMLP(hidden_size=400, hidden_layers=2, drop_rate=0)``; ours ``build_model("mlp",
head="fixed")``: our class-incremental default is a growing head, not used here for a like-for-like
comparison); SGD lr 0.01 momentum 0.9, batch 128, 2 epochs per experience; inputs normalised with
mean 0.2860, std 0.3530; evaluation on every experience's test split after each experience. The
model is initialised after ``torch.manual_seed(seed)``. Strategies:

- ``finetune``: Avalanche's ``Naive``; ours with no plugin;
- ``ewc``: Avalanche's ``EWC(ewc_lambda=lam, mode="separate")``; ours ``EWC(lam,
  estimator="batched", convention="avalanche", batch_size=128)`` (the same importances and penalty;
  ``tests/test_avalanche.py`` checks they are equal);
- ``replay``: Avalanche's ``Replay(mem_size=500)`` (experience-balanced buffer, a memory batch of
  128 with each batch of 128); ours ``ER(make_buffer("experience-balanced", 500))``;
- ``joint``: Avalanche's ``JointTraining``; ours ``schedule="joint"``.

Avalanche runs its own pipeline as a user would: ``SplitFMNIST`` (torchvision's FashionMNIST read
from the local IDX files, prepared once in ``--avalanche-root``), a ``DataLoader`` per epoch,
``EvaluationPlugin(accuracy_metrics(experience=True, stream=True), forgetting_metrics(stream=True),
loggers=[])`` (no progress printing). Ours: ``fashion_mnist()`` + ``split`` + ``Trainer``.

Each (library, strategy, seed) runs in a fresh Python process, the libraries alternating, so the
whole-process wall time (interpreter start, imports, data loading, training, evaluation) is
measured for each; the process also reports its in-process time (after imports). The table gives
final average accuracy and average forgetting (first-minus-last, Avalanche's definition; both
from the accuracy matrix, with Avalanche's own StreamForgetting alongside), means over seeds, and
median times.

    python benchmarks/vs_avalanche.py                                  # 3 seeds, 4 strategies, CPU
    python benchmarks/vs_avalanche.py --seeds 0 --strategies finetune  # a quick check
    python benchmarks/vs_avalanche.py --device cuda
    python benchmarks/vs_avalanche.py --seeds 0 --strategies finetune --epochs 1 --experiences 2  # a quicker check
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START = time.perf_counter()
STRATEGIES = ("finetune", "ewc", "replay", "joint")
LIBRARIES = ("continual", "avalanche")
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
EPOCHS, LR, MOMENTUM, BATCH, EVAL_BATCH, MEM, NUM_EXPERIENCES = 2, 0.01, 0.9, 128, 1024, 500, 5


def prepare_torchvision_root(root: Path) -> Path:
    """``root/FashionMNIST/raw/`` with the four IDX files gunzipped (what torchvision looks for),
    made from the files ``continual.data`` finds; no download."""
    from continual.data import search_dirs

    raw = root / "FashionMNIST" / "raw"
    if all((raw / f).exists() for f in FILES):
        return root
    raw.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        for d in search_dirs("fashion-mnist"):
            if (d / f).exists():
                shutil.copyfile(d / f, raw / f)
                break
            if (d / f"{f}.gz").exists():
                with gzip.open(d / f"{f}.gz", "rb") as src, open(raw / f, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                break
        else:
            sys.exit(f"Fashion-MNIST file {f} not found (apt-get install dataset-fashion-mnist, or continual's --download)")
    return root


# ---------------------------------------------------------------------------------- workers
def run_continual(strategy: str, seed: int, device: str, lam: float, epochs: int = EPOCHS,
                  experiences: int = NUM_EXPERIENCES) -> dict:
    import torch

    import continual as cl

    t0 = time.perf_counter()
    stream = cl.split(cl.fashion_mnist(), NUM_EXPERIENCES, scenario="class", device=device)[:experiences]
    torch.manual_seed(seed)
    model = cl.build_model("mlp", (1, 28, 28), 10, head="fixed")  # 784-400-400-10
    plugins = {
        "finetune": [], "joint": [],
        "ewc": [cl.EWC(lam, estimator="batched", convention="avalanche", batch_size=BATCH)],
        "replay": [cl.ER(cl.make_buffer("experience-balanced", MEM, device=device, seed=seed))],
    }[strategy]
    trainer = cl.Trainer(model, lr=LR, momentum=MOMENTUM, epochs=epochs, batch_size=BATCH, eval_batch_size=EVAL_BATCH,
                         device=device, seed=seed, plugins=plugins)
    acc = trainer.run(stream, schedule="joint" if strategy == "joint" else "sequential")
    return {"acc_matrix": acc.tolist(), "in_process": time.perf_counter() - t0, "threads": torch.get_num_threads()}


def run_avalanche(strategy: str, seed: int, device: str, lam: float, root: str, epochs: int = EPOCHS,
                  experiences: int = NUM_EXPERIENCES) -> dict:
    import warnings

    import torch
    from avalanche.benchmarks.classic import SplitFMNIST
    from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
    from avalanche.models import SimpleMLP
    from avalanche.training import EWC, JointTraining, Naive, Replay
    from avalanche.training.plugins import EvaluationPlugin

    from continual.interop import accuracy_matrix_from_avalanche

    warnings.filterwarnings("ignore", message="No loggers specified")
    t0 = time.perf_counter()
    bench = SplitFMNIST(n_experiences=NUM_EXPERIENCES, fixed_class_order=list(range(10)), dataset_root=root)
    torch.manual_seed(seed)
    model = SimpleMLP(num_classes=10, input_size=784, hidden_size=400, hidden_layers=2, drop_rate=0.0)
    common = dict(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM),
        criterion=torch.nn.CrossEntropyLoss(), train_mb_size=BATCH, train_epochs=epochs, eval_mb_size=EVAL_BATCH,
        device=torch.device(device),
        evaluator=EvaluationPlugin(accuracy_metrics(experience=True, stream=True), forgetting_metrics(stream=True), loggers=[]),
    )
    if strategy == "joint":
        s = JointTraining(**common)
        s.train(bench.train_stream[:experiences])
        results = [s.eval(bench.test_stream[:experiences])] * experiences
    else:
        s = {"finetune": lambda: Naive(**common), "ewc": lambda: EWC(ewc_lambda=lam, mode="separate", **common),
             "replay": lambda: Replay(mem_size=MEM, **common)}[strategy]()
        results = []
        for exp in bench.train_stream[:experiences]:
            s.train(exp)
            results.append(s.eval(bench.test_stream[:experiences]))
    acc = accuracy_matrix_from_avalanche(results)
    own = results[-1].get("StreamForgetting/eval_phase/test_stream")
    return {"acc_matrix": acc.tolist(), "in_process": time.perf_counter() - t0, "threads": torch.get_num_threads(),
            "avalanche_forgetting": None if own is None else float(own)}


def worker(args: argparse.Namespace) -> None:
    lib, strategy, seed = args.worker[0], args.worker[1], int(args.worker[2])
    if lib == "continual":
        out = run_continual(strategy, seed, args.device, args.lam, args.epochs, args.experiences)
    else:
        out = run_avalanche(strategy, seed, args.device, args.lam, str(args.avalanche_root), args.epochs, args.experiences)
    out["since_start"] = time.perf_counter() - START
    Path(args.out).write_text(json.dumps(out))


# ---------------------------------------------------------------------------------- parent
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--lam", type=float, default=1e4,
                    help="EWC lambda, the same in both (Avalanche's convention); 1e5 is at the edge of stability here")
    ap.add_argument("--avalanche-root", type=Path, default=Path(tempfile.gettempdir()) / "continual-vs-avalanche",
                    help="dataset_root given to Avalanche's SplitFMNIST (prepared from the local IDX files)")
    ap.add_argument("--json", type=Path, help="also write every run's figures here")
    ap.add_argument("--epochs", type=int, default=EPOCHS, help="epochs per experience, the same in both")
    ap.add_argument("--experiences", type=int, default=NUM_EXPERIENCES,
                    help=f"train and evaluate on the first N of the {NUM_EXPERIENCES} experiences (at least 2)")
    ap.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES,
                    help="which libraries run (one alone: its figures, no comparison)")
    ap.add_argument("--worker", nargs=3, metavar=("LIBRARY", "STRATEGY", "SEED"), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    import torch

    from continual.metrics import average_forgetting, final_average_accuracy

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"--device {args.device}: CUDA is not available here")
    if "avalanche" in args.libraries:
        prepare_torchvision_root(args.avalanche_root)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for k, strategy in enumerate(args.strategies):
                order = [lib for lib in LIBRARIES if lib in args.libraries]
                order = order if (seed + k) % 2 == 0 else order[::-1]  # alternate which goes first
                for lib in order:
                    out = Path(tmp) / f"{lib}-{strategy}-{seed}.json"
                    cmd = [sys.executable, __file__, "--worker", lib, strategy, str(seed), "--out", str(out),
                           "--device", args.device, "--lam", str(args.lam), "--avalanche-root", str(args.avalanche_root),
                           "--epochs", str(args.epochs), "--experiences", str(args.experiences)]
                    t0 = time.perf_counter()
                    if subprocess.run(cmd).returncode != 0:  # e.g. a diverged run (our trainer stops on a NaN loss)
                        print(f"seed {seed} {strategy:9s} {lib:10s} FAILED (left out of the table)", flush=True)
                        continue
                    wall = time.perf_counter() - t0
                    r = json.loads(out.read_text())
                    r.update(library=lib, strategy=strategy, seed=seed, process=wall,
                             acc=final_average_accuracy(r["acc_matrix"]),
                             forgetting=average_forgetting(r["acc_matrix"], mode="first"))
                    runs.append(r)
                    own = r.get("avalanche_forgetting")
                    print(f"seed {seed} {strategy:9s} {lib:10s} ACC {100 * r['acc']:5.1f}  F {100 * r['forgetting']:5.1f}"
                          + (f" (Avalanche's own {100 * own:5.1f})" if own is not None else "")
                          + f"  in-process {r['in_process']:6.1f} s  process {wall:6.1f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))

    def pick(lib, strategy, key):
        return [r[key] for r in runs if r["library"] == lib and r["strategy"] == strategy]

    threads = runs[0]["threads"] if runs else "?"
    first = f" (the first {args.experiences})" if args.experiences < NUM_EXPERIENCES else ""
    print(f"\nSplit Fashion-MNIST 5x2{first}, class-incremental, MLP 784-400-400-10, SGD 0.01/0.9, batch 128, {args.epochs} epochs; "
          f"seeds {args.seeds}; device {args.device}; torch {torch.__version__}, {threads} threads")
    print("accuracy and forgetting: mean over seeds, in %; times: median over seeds, in s "
          "(in-process: data + training + evaluation; process: the whole Python process)\n")
    if len(args.libraries) == 1:
        return one_library(args, pick)
    head = ("| strategy | ACC ours | ACC Avalanche | diff | forgetting ours | forgetting Avalanche "
            "| in-process ours | in-process Avalanche | ratio | process ours | process Avalanche | ratio |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    totals = {lib: 0.0 for lib in LIBRARIES}
    for s in args.strategies:
        if not all(pick(lib, s, "acc") for lib in LIBRARIES):
            print(f"| {s} | no complete run in one of the libraries |")
            continue
        acc = {lib: 100 * statistics.mean(pick(lib, s, "acc")) for lib in LIBRARIES}
        fgt = {lib: 100 * statistics.mean(pick(lib, s, "forgetting")) for lib in LIBRARIES}
        inp = {lib: statistics.median(pick(lib, s, "in_process")) for lib in LIBRARIES}
        proc = {lib: statistics.median(pick(lib, s, "process")) for lib in LIBRARIES}
        for lib in LIBRARIES:
            totals[lib] += sum(pick(lib, s, "process"))
        print(f"| {s} | {acc['continual']:.1f} | {acc['avalanche']:.1f} | {acc['continual'] - acc['avalanche']:+.1f} "
              f"| {fgt['continual']:.1f} | {fgt['avalanche']:.1f} "
              f"| {inp['continual']:.1f} | {inp['avalanche']:.1f} | {inp['avalanche'] / inp['continual']:.1f}x "
              f"| {proc['continual']:.1f} | {proc['avalanche']:.1f} | {proc['avalanche'] / proc['continual']:.1f}x |")
    failed = len(args.seeds) * len(args.strategies) * len(args.libraries) - len(runs)
    if failed:
        print(f"\n{failed} run(s) failed and are left out")
    print(f"\nall processes: ours {totals['continual']:.0f} s, Avalanche {totals['avalanche']:.0f} s "
          f"({totals['avalanche'] / totals['continual']:.1f}x)")


def one_library(args: argparse.Namespace, pick) -> None:
    """The table of one library's runs (``--libraries`` with one name): no comparison."""
    (lib,) = args.libraries
    print("| strategy | library | ACC | forgetting | in-process | process |\n|---|---|---|---|---|---|")
    for s in args.strategies:
        if not pick(lib, s, "acc"):
            print(f"| {s} | {lib} | no complete run |")
            continue
        print(f"| {s} | {lib} | {100 * statistics.mean(pick(lib, s, 'acc')):.1f} | {100 * statistics.mean(pick(lib, s, 'forgetting')):.1f} "
              f"| {statistics.median(pick(lib, s, 'in_process')):.1f} | {statistics.median(pick(lib, s, 'process')):.1f} |")


if __name__ == "__main__":
    main()
