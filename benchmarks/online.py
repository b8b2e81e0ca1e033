"""Online Split Fashion-MNIST, batch 10: our Trainer against a bare PyTorch loop and Avalanche's OnlineNaive.

Protocol (the same everywhere): Split Fashion-MNIST, 5 experiences of 2 classes (class order
0/1, 2/3, ...), class-incremental, one pass over each experience's training samples in batches of
10 (one update per batch: ``train_passes=1``), MLP 784-400-400-10 with a fixed 10-way head, SGD
lr 0.01, inputs normalised with mean 0.2860, std 0.3530 (ours: the dataset's transform, per batch
on the device), evaluation on every experience's test split at the end of each experience and
nowhere else (``eval_every=None``; the bare loop and Avalanche evaluate at the same points).

- ours: ``Trainer(online=True, batch_size=10)`` on ``split(fashion_mnist())``, the fine-tuning
  strategy (no plugin), the stream's stored order within each experience;
- bare: the loop a user would write over the same tensors on the device, the same batches in the
  same order (slices of the experience's tensors), the same model initialisation (``torch.manual_seed``),
  the same evaluations (also the one before training that a run records for forward transfer);
- Avalanche: ``OnlineNaive(train_mb_size=10, train_passes=1)`` on ``split_online_stream(
  SplitFMNIST(...).train_stream, experience_size=10)`` (one 10-sample experience per batch: its
  online protocol), ``eval`` on the test stream after each original experience.

Ours and bare run in this process, alternating which goes first, ``--repeats`` times each; the
table gives the medians and ``ours / bare`` (target <= 1.1x). Avalanche runs ``--avalanche-repeats``
times in this process after them (its in-process time: benchmark construction, training, evaluation;
ours is timed the same way for that ratio). The timed part of ours and bare excludes loading the data.

    python benchmarks/online.py                      # full sizes, CPU
    python benchmarks/online.py --device cuda
    python benchmarks/online.py --quick              # tiny sizes: checks the script runs
    python benchmarks/online.py --no-avalanche
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

LR, BATCH, EVAL_BATCH, NUM_EXPERIENCES = 0.01, 10, 1024, 5


def stream_of(device: str, samples: int | None, experiences: int):
    """Our Split Fashion-MNIST stream, each experience cut to its first ``samples`` training samples."""
    import continual as cl

    stream = cl.split(cl.fashion_mnist(), NUM_EXPERIENCES, scenario="class", device=device)[:experiences]
    if samples is None:
        return stream
    cut = [dataclasses.replace(e, x_train=e.x_train[:samples], y_train=e.y_train[:samples], t_train=e.t_train[:samples])
           for e in stream]
    return cl.Stream(cut, name=stream.name, scenario=stream.scenario, num_classes=stream.num_classes, class_order=stream.class_order)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_ours(stream, device: str, seed: int) -> tuple[float, list[list[float]]]:
    import continual as cl

    sync(device)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = cl.build_model("mlp", (1, 28, 28), 10, head="fixed")
    trainer = cl.Trainer(model, lr=LR, batch_size=BATCH, eval_batch_size=EVAL_BATCH, device=device, seed=seed, online=True)
    acc = trainer.run(stream)
    sync(device)
    return time.perf_counter() - t0, acc.tolist()


def run_bare(stream, device: str, seed: int) -> tuple[float, list[list[float]]]:
    """The bare loop: the same model, data, batches and evaluation points, nothing else."""
    import continual as cl

    sync(device)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = cl.build_model("mlp", (1, 28, 28), 10, head="fixed").to(device)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    mean, std = stream[0].transform.mean[0], stream[0].transform.std[0]

    @torch.no_grad()
    def evaluate() -> list[float]:
        model.eval()
        hits = []
        for t in stream:
            h = torch.zeros((), dtype=torch.int64, device=device)
            for s in range(0, t.num_test, EVAL_BATCH):
                x = (t.x_test[s : s + EVAL_BATCH].float() * (1 / 255) - mean) / std
                h += (model(x).argmax(1) == t.y_test[s : s + EVAL_BATCH]).sum()
            hits.append(h)
        model.train()
        return (torch.stack(hits).double().cpu() / torch.tensor([t.num_test for t in stream], dtype=torch.float64)).tolist()

    evaluate()  # before training, as a run records the random-init accuracies (forward transfer)
    rows = []
    for e in stream:
        for s in range(0, e.num_train, BATCH):
            x = (e.x_train[s : s + BATCH].float() * (1 / 255) - mean) / std
            loss = F.cross_entropy(model(x), e.y_train[s : s + BATCH])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        rows.append(evaluate())
    sync(device)
    return time.perf_counter() - t0, rows


def run_avalanche(root: Path, device: str, seed: int, samples: int | None, experiences: int) -> tuple[float, list[list[float]]]:
    import warnings

    from avalanche.benchmarks.classic import SplitFMNIST
    from avalanche.benchmarks.scenarios.online import split_online_stream
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.models import SimpleMLP
    from avalanche.training import OnlineNaive
    from avalanche.training.plugins import EvaluationPlugin

    from continual.interop import accuracy_matrix_from_avalanche

    warnings.filterwarnings("ignore")
    sync(device)
    t0 = time.perf_counter()
    bench = SplitFMNIST(n_experiences=NUM_EXPERIENCES, fixed_class_order=list(range(10)), dataset_root=str(root))
    torch.manual_seed(seed)
    model = SimpleMLP(num_classes=10, input_size=784, hidden_size=400, hidden_layers=2, drop_rate=0.0)
    strategy = OnlineNaive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=LR), criterion=torch.nn.CrossEntropyLoss(),
                           train_passes=1, train_mb_size=BATCH, eval_mb_size=EVAL_BATCH, device=torch.device(device),
                           evaluator=EvaluationPlugin(accuracy_metrics(experience=True, stream=True), loggers=[]))
    results = []
    for exp in bench.train_stream[:experiences]:
        for k, mini in enumerate(split_online_stream([exp], experience_size=BATCH)):
            if samples is not None and k * BATCH >= samples:
                break
            strategy.train(mini)
        results.append(strategy.eval(bench.test_stream[:experiences]))
    sync(device)
    return time.perf_counter() - t0, accuracy_matrix_from_avalanche(results).tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5, help="runs of ours and of the bare loop (alternating)")
    ap.add_argument("--avalanche-repeats", type=int, default=1, help="runs of Avalanche's OnlineNaive (slow)")
    ap.add_argument("--no-avalanche", action="store_true")
    ap.add_argument("--samples", type=int, default=None, help="train on the first N samples of each experience (default: all)")
    ap.add_argument("--experiences", type=int, default=NUM_EXPERIENCES)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (200 samples of 2 experiences, 2 repeats): checks the script")
    ap.add_argument("--avalanche-root", type=Path, default=Path(tempfile.gettempdir()) / "continual-vs-avalanche")
    args = ap.parse_args()
    if args.quick:
        args.samples, args.experiences, args.repeats = 200, 2, 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"--device {args.device}: CUDA is not available here")
    stream = stream_of(args.device, args.samples, args.experiences)
    run_ours(stream, args.device, 0)  # warm-up (allocator, kernels), not timed
    run_bare(stream, args.device, 0)
    times: dict[str, list[float]] = {"ours": [], "bare": []}
    rows: dict[str, list] = {}
    for r in range(args.repeats):
        for name in (("ours", "bare") if r % 2 == 0 else ("bare", "ours")):
            seconds, rows[name] = (run_ours if name == "ours" else run_bare)(stream, args.device, 0)
            times[name].append(seconds)
            print(f"repeat {r} {name:5s} {seconds:7.3f} s  final acc {100 * sum(rows[name][-1]) / len(rows[name][-1]):5.1f}%", flush=True)
    same = rows["ours"] == rows["bare"]
    ours, bare = statistics.median(times["ours"]), statistics.median(times["bare"])
    n = sum(e.num_train for e in stream)
    print(f"\nonline Split Fashion-MNIST ({args.experiences} experiences, {n} samples), batch {BATCH}, device {args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.repeats}")
    print(f"| ours (s) | bare loop (s) | ours / bare | same accuracy matrix |\n|---|---|---|---|\n"
          f"| {ours:.3f} | {bare:.3f} | {ours / bare:.3f}x | {same} |")
    if args.no_avalanche:
        return
    from vs_avalanche import prepare_torchvision_root

    prepare_torchvision_root(args.avalanche_root)
    ava, ours_full = [], []
    for _ in range(args.avalanche_repeats):
        t0 = time.perf_counter()
        s = stream_of(args.device, args.samples, args.experiences)  # ours timed with its data loading, as Avalanche's is
        seconds, _ = run_ours(s, args.device, 0)
        ours_full.append(time.perf_counter() - t0)
        seconds, acc = run_avalanche(args.avalanche_root, args.device, 0, args.samples, args.experiences)
        ava.append(seconds)
        print(f"avalanche {seconds:7.3f} s  final acc {100 * sum(acc[-1]) / len(acc[-1]):5.1f}%", flush=True)
    a, o = statistics.median(ava), statistics.median(ours_full)
    print(f"\n| ours with data loading (s) | Avalanche OnlineNaive (s) | Avalanche / ours |\n|---|---|---|\n| {o:.2f} | {a:.2f} | {a / o:.1f}x |")


if __name__ == "__main__":
    main()
