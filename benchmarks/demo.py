"""``continual demo`` (every strategy x 3 seeds on split-digits, CPU), whole-process wall time,
against the same command at an earlier commit, side by side.

The earlier commit is checked out into a temporary ``git worktree`` (removed afterwards); the two
processes alternate (baseline, current, baseline, ...) so that both see the same machine, and the
medians are printed with their ratio. Each process runs ``python -m continual.cli demo --quiet``
into a fresh temporary folder with the tree on ``PYTHONPATH`` (the same Python, torch and data).
Issue 17's target: the current demo >= 2x faster than the previous commit's.

    python benchmarks/demo.py --baseline 69bd2b8             # about 10 minutes on 2 cores
    python benchmarks/demo.py --baseline HEAD~1 --repeats 1 --seeds 1

Figures: benchmarks/README.md ("Seeds trained together").
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def demo_seconds(tree: Path, seeds: int, extra: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "continual.cli", "demo", "--quiet", "--seeds", str(seeds), "--out", out, *extra],
                       cwd=out, env=env, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="the earlier commit (any git revision)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--current-args", default="", help="extra arguments for the current demo (e.g. '--workers 1')")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base), args.baseline], check=True)
        try:
            rev = subprocess.run(["git", "-C", str(base), "log", "-1", "--format=%h %s"], capture_output=True, text=True).stdout.strip()
            print(f"baseline {rev[:90]}\ncurrent  {ROOT} (working tree)")
            times: dict[str, list[float]] = {"baseline": [], "current": []}
            for k in range(args.repeats):
                times["baseline"].append(demo_seconds(base, args.seeds, []))
                times["current"].append(demo_seconds(ROOT, args.seeds, args.current_args.split()))
                print(f"repeat {k + 1}: baseline {times['baseline'][-1]:.1f} s, current {times['current'][-1]:.1f} s", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
    b, c = statistics.median(times["baseline"]), statistics.median(times["current"])
    print(f"continual demo --seeds {args.seeds}, whole process: baseline {b:.1f} s, current {c:.1f} s: **{b / c:.2f}x faster** "
          f"(medians of {args.repeats})")


if __name__ == "__main__":
    main()
