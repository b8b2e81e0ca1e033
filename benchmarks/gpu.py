"""Run every benchmark on the GPU, one after another, and write ``benchmarks/gpu-report.md``.

Each part runs in its own subprocess with a timeout (a failure or a hang stops only that part),
its stdout and stderr captured, in this order: overhead, replay, regularizers, heads, data,
vs_avalanche, batched, features, methods, online (every script here that takes ``--device``), then
``pytest -m gpu``. The whole suite has a budget (``--budget``, default 480 s: 8 minutes on one
H100/H200); a part gets at most its own timeout and what is left of the budget, and a part whose
turn comes after the budget is spent is reported as skipped. The report names the device, the
torch, CUDA and driver versions, lists the failures at the top, and gives each part's command,
status, wall time and printed figures verbatim. It is written to a temporary file and renamed
over the old one, so an interrupted suite never leaves half a report.

The arguments chosen to fit 8 minutes (estimates for small models on an H100/H200, where a step
is bound by kernel launches, about 0.3-1.5 ms; not yet measured, since no GPU has been lent):

- ``overhead.py --repeats 5`` (split-digits, 10 epochs; 12 runs of 460 steps): ~15 s;
- ``replay.py --repeats 3`` (both parts; part 2 is 20 experiences x 3 epochs): ~90 s;
- ``regularizers.py --repeats 3 --step-repeats 7`` (10k-sample Fisher, the per-sample loop on 500): ~45 s;
- ``heads.py --repeats 9 --class-repeats 2``: ~30 s;
- ``data.py --repeats 3`` (rotated-fmnist's build is a ``grid_sample`` per experience): ~20 s;
- ``vs_avalanche.py --seeds 0`` (4 strategies, one seed: 8 processes instead of 24): ~120 s;
- ``batched.py --seeds 10 --repeats 2`` (issue 17's GPU target: 10 seeds): ~60 s;
- ``features.py --epochs 2`` (split-fmnist, ConvNet): ~45 s;
- ``methods.py --repeats 3``: ~30 s;
- ``online.py --repeats 3 --samples 2000`` (online split-fmnist, batch 10, 10k samples; Avalanche's
  ``OnlineNaive`` once): ~30 s;
- ``pytest -m gpu``: ~20 s (about 505 s in all: the budget may cut the last part short).

``--dry-run`` runs every part on the CPU with each script's smallest arguments (repeats 1, an
epoch or two, two experiences where a stream is long, split-digits where the script allows it),
only to check that the suite works (about 2 minutes on one busy core): its figures mean nothing.
If Avalanche cannot be imported, ``vs_avalanche.py`` runs our side alone and the report says so;
if Fashion-MNIST is not installed, ``data.py`` times the augmentation alone and
``vs_avalanche.py`` is skipped, and the report says so.

    python benchmarks/gpu.py                                  # on a CUDA machine: the suite, ~8 minutes
    python benchmarks/gpu.py --dry-run --report /tmp/r.md     # on any machine: tiny sizes, CPU

Exit status: 0 when every part passed, 1 when one failed or timed out, 2 without a CUDA device
(and without ``--dry-run``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
BUDGET = 480.0  # seconds for the whole suite on a GPU (issue 17: 8 minutes on one H100/H200)


@dataclasses.dataclass
class Part:
    """One benchmark: its command line (after ``python``), the timeout, and what it came to."""

    name: str
    args: list[str]
    timeout: float  # seconds, before the budget's cap
    note: str = ""  # why the arguments differ from the plan (e.g. Avalanche missing)
    status: str = "not run"  # ok | failed (exit N) | timed out | skipped: why
    wall: float = 0.0
    stdout: str = ""
    stderr: str = ""


def script(name: str, *args: str) -> list[str]:
    return [str(BENCH / f"{name}.py"), *args]


def fashion_mnist_installed() -> bool:
    from continual.data import search_dirs

    f = "train-images-idx3-ubyte"
    return any((d / f).exists() or (d / f"{f}.gz").exists() for d in search_dirs("fashion-mnist"))


class AvalancheCheck:
    """Whether ``import avalanche`` works in a fresh interpreter (it may raise more than ImportError:
    a torchvision built for another torch raises RuntimeError). Started at once and read when
    ``vs_avalanche`` comes: the import takes seconds, spent while the first parts run."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", "import avalanche"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)

    def result(self) -> tuple[bool, str]:
        """(importable, the last line of the error); asked again, the same answer."""
        if getattr(self, "_answer", None) is None:
            self._answer = self._wait()
        return self._answer

    def _wait(self) -> tuple[bool, str]:
        try:
            _, err = self.proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.communicate()
            return False, "import avalanche took over 120 s"
        lines = err.strip().splitlines()
        return self.proc.returncode == 0, (lines[-1] if lines else "")


def plan(dry: bool, fmnist: bool) -> list[Part]:
    """The parts and their arguments: the GPU sizes of the module docstring, or the dry run's tiny ones."""
    dev = ["--device", "cpu" if dry else "cuda"]
    if dry:
        parts = [
            Part("overhead", script("overhead", *dev, "--repeats", "1", "--epochs", "1"), 120),
            Part("replay", script("replay", *dev, "--repeats", "1", "--epochs", "1", "--epochs2", "1",
                                  "--experiences2", "2"), 120),
            Part("regularizers", script("regularizers", *dev, "--samples", "64", "--loop-samples", "10", "--repeats", "1",
                                        "--step-batch-sizes", "32", "--steps", "2", "--step-repeats", "1",
                                        "--consolidations", "2", "--convnet-samples", "10"), 120),
            Part("heads", script("heads", *dev, "--steps", "2", "--iters", "2", "--repeats", "1", "--class-repeats", "1",
                                 "--benchmark", "split-digits"), 120),
            Part("data", script("data", *dev, "--repeats", "1", "--aug-batches", "10", "--streams", "split-fmnist"), 120),
            Part("vs_avalanche", script("vs_avalanche", *dev, "--seeds", "0", "--strategies", "finetune", "--epochs", "1",
                                        "--experiences", "2"), 240),
            Part("batched", script("batched", *dev, "--seeds", "2", "--repeats", "1", "--epochs", "1",
                                   "--strategies", "finetune", "--hidden", "32,32"), 120),
            Part("features", script("features", *dev, "--benchmark", "split-digits", "--epochs", "1", "--repeats", "1"), 180),
            Part("methods", script("methods", *dev, "--repeats", "1", "--epochs", "2", "--parts", "1", "--experiences", "2"), 180),
            Part("online", script("online", *dev, "--quick", "--no-avalanche"), 120),
        ]
    else:
        parts = [
            Part("overhead", script("overhead", *dev, "--repeats", "5"), 60),
            Part("replay", script("replay", *dev, "--repeats", "3"), 180),
            Part("regularizers", script("regularizers", *dev, "--repeats", "3", "--step-repeats", "7"), 120),
            Part("heads", script("heads", *dev, "--repeats", "9", "--class-repeats", "2"), 90),
            Part("data", script("data", *dev, "--repeats", "3"), 90),
            Part("vs_avalanche", script("vs_avalanche", *dev, "--seeds", "0"), 240),
            Part("batched", script("batched", *dev, "--seeds", "10", "--repeats", "2"), 150),
            Part("features", script("features", *dev, "--epochs", "2"), 150),
            Part("methods", script("methods", *dev, "--repeats", "3"), 120),
            Part("online", script("online", *dev, "--repeats", "3", "--samples", "2000"), 120),
        ]
    parts.append(Part("pytest -m gpu", ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", str(ROOT / "tests")], 180))
    by_name = {p.name: p for p in parts}
    if not fmnist:
        data = by_name["data"]
        data.args = [a for a in data.args if a not in ("--streams", "split-fmnist")] + ["--only", "augment"]
        data.note = "Fashion-MNIST is not installed: the augmentation alone (no load or stream build)"
        by_name["vs_avalanche"].status = "skipped: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)"
        by_name["online"].status = "skipped: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)"
    return parts


def without_avalanche(part: Part, why: str) -> None:
    """``vs_avalanche`` (or ``online``) with our side alone."""
    part.args += ["--libraries", "continual"] if part.name == "vs_avalanche" else ["--no-avalanche"]
    part.note = f"Avalanche cannot be imported here ({why}): our side alone, no comparison"


def run_part(part: Part, timeout: float, env: dict) -> None:
    """Run ``part`` in a new process group (killed whole on a timeout: vs_avalanche and pytest start children)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *part.args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        part.stdout, part.stderr = proc.communicate(timeout=timeout)
        part.status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        part.stdout, part.stderr = proc.communicate()
        part.status = f"timed out after {timeout:.0f} s"
    part.wall = time.perf_counter() - t0


def environment(dry: bool) -> list[str]:
    """Lines naming the machine and the versions."""
    import torch

    lines = [f"- python {platform.python_version()}, torch {torch.__version__} (CUDA build {torch.version.cuda}), "
             f"{platform.machine()}, {os.cpu_count()} CPU cores"]
    if dry or not torch.cuda.is_available():
        lines.insert(0, "- device: cpu (dry run: tiny sizes, the figures mean nothing)")
        return lines
    driver = "unknown"
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    lines.insert(0, f"- device: {torch.cuda.get_device_name(0)} (CUDA runtime {torch.version.cuda}, driver {driver})")
    return lines


def fence(text: str) -> str:
    """``text`` in a code block that its own backticks cannot close."""
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}\n{text.rstrip()}\n{ticks}"


def report(parts: list[Part], args: argparse.Namespace, env_lines: list[str], total: float) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python benchmarks/gpu.py" + (" --dry-run" if args.dry_run else "") + (f" --budget {args.budget:g}" if args.budget != BUDGET else "")
    out = ["# GPU suite report", "", f"Written by `{cmd}` on {when}; {total:.0f} s in all (budget {args.budget:.0f} s).", "",
           *env_lines, "", "## Failures", ""]
    bad = [p for p in parts if p.status != "ok"]
    out += [f"- {p.name}: {p.status}" for p in bad] or ["none"]
    out += ["", "## Parts", "", "| part | status | wall s |", "|---|---|---|"]
    out += [f"| {p.name} | {p.status} | {p.wall:.1f} |" for p in parts]
    for p in parts:
        shown = " ".join(["python", *(str(Path(a).relative_to(ROOT)) if a.startswith(str(ROOT)) else a for a in p.args)])
        out += ["", f"## {p.name}", "", f"- command: `{shown}`", f"- status: {p.status}; wall time {p.wall:.1f} s"]
        if p.note:
            out.append(f"- note: {p.note}")
        if p.stdout.strip():
            out += ["", fence(p.stdout)]
        if p.stderr.strip():
            tail = p.stderr.strip()[-4000:]
            out += ["", "stderr" + (" (last 4000 characters)" if len(p.stderr.strip()) > 4000 else "") + ":", "", fence(tail)]
    return "\n".join(out) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a report is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="on the CPU with tiny sizes: checks that every part runs")
    ap.add_argument("--report", type=Path, default=BENCH / "gpu-report.md", help="where the report goes")
    ap.add_argument("--budget", type=float, default=BUDGET, help="seconds for the whole suite")
    args = ap.parse_args()

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device here: use --dry-run to check the suite on the CPU", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))  # this checkout's library, here as in the parts
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])  # this checkout's library
    if args.dry_run:
        env.setdefault("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    parts = plan(args.dry_run, fashion_mnist_installed())
    avalanche = AvalancheCheck() if any(p.name == "vs_avalanche" and p.status == "not run" for p in parts) else None
    for part in parts:
        if part.status != "not run":  # skipped by the plan
            print(f"{part.name}: {part.status}", flush=True)
            continue
        left = args.budget - (time.perf_counter() - start)
        if part.name in ("vs_avalanche", "online") and avalanche is not None and left > 0 and "--no-avalanche" not in part.args:
            importable, why = avalanche.result()
            if not importable:
                without_avalanche(part, why)
            left = args.budget - (time.perf_counter() - start)
        if left <= 0:
            part.status = "skipped: the budget was spent"
        else:
            run_part(part, min(part.timeout, left), env)
        print(f"{part.name}: {part.status} ({part.wall:.1f} s)", flush=True)
    if avalanche is not None and avalanche.proc.poll() is None:  # its part never came (the budget)
        os.killpg(avalanche.proc.pid, signal.SIGKILL)
        avalanche.proc.communicate()
    total = time.perf_counter() - start
    write_atomically(args.report, report(parts, args, environment(args.dry_run), total))
    print(f"report: {args.report}")
    return 0 if all(p.status == "ok" for p in parts) else 1


if __name__ == "__main__":
    sys.exit(main())
