"""How many CPU threads a run should use: 1 against all cores, on a quiet machine and beside one
competing busy process (a laptop with a browser, a shared cluster node).

Part ``steps``: the median time of a training step (forward, cross-entropy, backward, SGD step)
of each benchmark's default model at its batch size, with 1 thread and with every core, quiet and
loaded; settings alternate inside one process (``torch.set_num_threads``), the busy process is a
second Python process spinning on one core.

Part ``process``: whole ``continual`` processes (what a user waits for), quiet and loaded:
``continual run --benchmark split-digits --strategy finetune`` with ``--threads 1`` and
``--threads <cores>``, ``continual demo`` and a 4-worker ``continual sweep``.

    python benchmarks/threads.py                  # both parts (about 6 minutes on 2 cores)
    python benchmarks/threads.py --part steps --repeats 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from continual.models import build_model

# (label, model, input shape, batch size, classes): the benchmarks' defaults (continual list)
CASES = [
    ("split-digits mlp 64-400-400, batch 32", "mlp", (1, 8, 8), 32, 10),
    ("split-fmnist mlp 784-400-400, batch 10", "mlp", (1, 28, 28), 10, 10),
    ("permuted-fmnist mlp 784-400-400, batch 128", "mlp", (1, 28, 28), 128, 10),
    ("split-cifar10 convnet 32-64-128, batch 32", "convnet", (3, 32, 32), 32, 10),
    ("split-cifar100 resnet18 (nf=20), batch 32", "resnet18", (3, 32, 32), 32, 100),
]
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def busy(on: bool):
    """One competing process spinning on a core while the block runs."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if on else None
    try:
        if proc:
            time.sleep(0.5)  # let it take its core
        yield
    finally:
        if proc:
            proc.kill()
            proc.wait()


def step_time(model, x, y, opt, steps: int) -> float:
    """Seconds per training step, over ``steps`` steps."""
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def part_steps(repeats: int, seconds: float) -> None:
    print(f"training step, median of {repeats} alternating repeats (ms); {CORES} cores")
    print(f"{'case':<46} {'load':<8} {'1 thread':>9} {f'{CORES} threads':>10} {'ratio':>7}")
    for label, name, shape, batch, classes in CASES:
        torch.manual_seed(0)
        model = build_model(name, shape, classes)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x, y = torch.randn(batch, *shape), torch.randint(0, classes, (batch,))
        torch.set_num_threads(1)
        step_time(model, x, y, opt, 3)  # warm-up
        one = step_time(model, x, y, opt, 5)
        steps = max(5, int(seconds / max(one, 1e-5)))
        for load in ("quiet", "loaded"):
            times: dict[int, list[float]] = {1: [], CORES: []}
            with busy(load == "loaded"):
                for _ in range(repeats):
                    for n in times:
                        torch.set_num_threads(n)
                        times[n].append(step_time(model, x, y, opt, steps))
            a, b = statistics.median(times[1]), statistics.median(times[CORES])
            print(f"{label:<46} {load:<8} {1e3 * a:9.3f} {1e3 * b:10.3f} {b / a:7.2f}", flush=True)
    torch.set_num_threads(CORES)


def timed(cmd: list[str], cwd: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def part_process(repeats: int) -> None:
    exe = [sys.executable, "-m", "continual.cli"]
    sweep = Path(__file__).resolve().parent.parent / "sweeps" / "regularizers.toml"
    commands = {
        "run split-digits finetune --threads 1": exe + ["run", "--benchmark", "split-digits", "--strategy", "finetune", "--seeds", "1", "--device", "cpu", "--threads", "1", "--quiet", "--out", "r1"],
        f"run split-digits finetune --threads {CORES}": exe + ["run", "--benchmark", "split-digits", "--strategy", "finetune", "--seeds", "1", "--device", "cpu", "--threads", str(CORES), "--quiet", "--out", "r2"],
        "run split-digits finetune (default threads)": exe + ["run", "--benchmark", "split-digits", "--strategy", "finetune", "--seeds", "1", "--device", "cpu", "--quiet", "--out", "r3"],
        "run split-digits ewc (default threads)": exe + ["run", "--benchmark", "split-digits", "--strategy", "ewc", "--seeds", "1", "--device", "cpu", "--quiet", "--out", "r4"],
        "sweep regularizers.toml --workers 4": exe + ["sweep", str(sweep), "--workers", "4", "--quiet", "--set", "out=sw"],
        "demo (every strategy x 3 seeds)": exe + ["demo", "--quiet", "--out", "demo"],
    }
    print(f"\nwhole processes, median of {repeats} (s); {CORES} cores; quiet and loaded alternate")
    print(f"{'command':<48} {'quiet':>8} {'loaded':>8} {'loaded/quiet':>13}")
    for label, cmd in commands.items():
        times: dict[str, list[float]] = {"quiet": [], "loaded": []}
        n = 1 if label.startswith(("demo", "sweep")) else repeats
        for _ in range(n):
            for load in times:
                with tempfile.TemporaryDirectory() as d, busy(load == "loaded"):
                    times[load].append(timed(cmd, Path(d)))
        q, lo = statistics.median(times["quiet"]), statistics.median(times["loaded"])
        print(f"{label:<48} {q:8.2f} {lo:8.2f} {lo / q:13.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("steps", "process", "both"), default="both")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.5, help="time per measured block in the steps part")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {CORES} cores, {os.uname().machine}")
    if args.part in ("steps", "both"):
        part_steps(args.repeats, args.seconds)
    if args.part in ("process", "both"):
        part_process(3)


if __name__ == "__main__":
    main()
