"""Reproductions of published tables: rows of a paper, run over seeds, side by side, checked against bands.

Each folder of ``papers/`` is a script that lists a paper's table as :class:`Row` objects (the
method's configuration with where each setting comes from, the published number and its spread,
and a band stated before anything was run) and hands them to :func:`main`, which gives it one
command line:

    python papers/<name>/run.py                    # every row, the paper's seeds; prints the table
    python papers/<name>/run.py --check            # exit 1 when a row's mean falls outside its band
    python papers/<name>/run.py --write-readme     # put the table into the folder's README
    python papers/<name>/run.py --smoke            # each row end to end on generated data (tests)

Results go to ``papers/<name>/results/`` (one JSON file per row and seed, written atomically; a
finished run is not run again, so an interrupted reproduction resumes). The table shows, per row,
the published number, ours (mean and 95% confidence interval over the seeds, Student's t, as
``continual compare``), the band and the status: ``within band``, ``outside band``, ``not run``.

The README's table sits between ``<!-- results -->`` and ``<!-- /results -->`` and is only ever
written by ``--write-readme``, so every number in it comes from the command.

``--smoke`` replaces the benchmark by generated data of the same shape and number of classes (a
few samples per class), one epoch, small memories: it checks the script runs end to end, not its
numbers, and never reads the real data.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import ContinualError

STATUS_IN, STATUS_OUT, STATUS_NOT_RUN, STATUS_SMOKE = "within band", "outside band", "not run", "smoke run (generated data)"
BEGIN, END = "<!-- results -->", "<!-- /results -->"


@dataclass
class Row:
    """One row of a published table and how to run it.

    Attributes:
        name: the row's name as the paper prints it (``"Online-EWC"``).
        config: :class:`~continual.experiment.RunConfig` fields (``benchmark``, ``strategy``,
            ``params``, ``epochs``...): the paper's protocol.
        published: the paper's number, in percent (``None``: the paper has none).
        spread: the paper's spread of it (its standard deviation or standard error, ``spread_kind``).
        band: the accepted range of our mean, in percent, stated before running.
        metric: the result's metric the paper's number is (a key of ``Result.metrics``).
        note: what differs from the paper.
        spread_kind: ``"std"`` or ``"se"``.
        explained: why the row falls outside its band, when it does and the reason is known and
            documented (the folder's README gives the evidence): ``--check`` then reports it
            without failing. Never set before the row has been run and looked into.
    """

    name: str
    config: dict
    published: float | None
    spread: float | None = None
    band: tuple[float, float] | None = None
    metric: str = "final_average_accuracy"
    note: str = ""
    spread_kind: str = "std"
    explained: str = ""

    def __post_init__(self) -> None:
        if not self.name.strip() or "," in self.name or "|" in self.name:
            raise ContinualError(f"row name {self.name!r} must be non-empty, without ',' (--rows splits on it) or '|' (a table cell)")
        if self.band is not None and not self.band[0] <= self.band[1]:
            raise ContinualError(f"row {self.name!r}: band {self.band} must be (low, high) with low <= high")


def default_band(published: float, spread: float | None, *, points: float = 2.0, spreads: float = 2.0) -> tuple[float, float]:
    """``published +- max(points, spreads * spread)``: the band of the issue's rule, in percent.

    >>> default_band(82.03, 0.57), default_band(19.48, 0.01)
    ((80.03, 84.03), (17.48, 21.48))
    """
    half = max(points, spreads * (spread or 0.0))
    return (round(published - half, 4), round(published + half, 4))


@dataclass
class Outcome:
    """Our numbers for a row: the metric of each seed, in percent."""

    row: Row
    values: list[float] = field(default_factory=list)
    seconds: float = 0.0
    smoke: bool = False
    results: list = field(default_factory=list)  # each seed's Result

    @property
    def mean(self) -> float | None:
        return sum(self.values) / len(self.values) if self.values else None

    @property
    def ci(self) -> float | None:
        """Half-width of the 95% confidence interval of the mean (Student's t); 0 for one seed."""
        from .metrics import mean_ci

        if not self.values:
            return None
        return float(mean_ci(self.values)[1]) if len(self.values) > 1 else 0.0

    @property
    def status(self) -> str:
        if self.smoke:
            return STATUS_SMOKE
        if self.mean is None or self.row.band is None:
            return STATUS_NOT_RUN
        low, high = self.row.band
        if low <= self.mean <= high:
            return STATUS_IN
        return f"{STATUS_OUT} (explained: see the README)" if self.row.explained else STATUS_OUT


def _smoke_benchmark(name: str) -> str:
    """Register (once) a generated benchmark shaped like ``name``'s data; return its name."""
    from . import benchmarks, data

    bench = benchmarks.get_benchmark(name)
    smoke = f"smoke:{name}"
    if smoke in benchmarks.BENCHMARKS:
        return smoke
    shapes = {"split-fmnist": (1, 28, 28), "split-mnist": (1, 28, 28), "split-cifar100": (3, 32, 32),
              "split-cifar10": (3, 32, 32), "permuted-mnist": (1, 28, 28), "permuted-fmnist": (1, 28, 28),
              "split-digits": (1, 8, 8)}
    if name not in shapes:
        raise ContinualError(f"--smoke has no generated stand-in for benchmark {name!r}; known: {', '.join(shapes)}")
    shape, num_classes = shapes[name], bench.num_classes or 10

    def load(**_ignored) -> data.Dataset:
        g = torch.Generator().manual_seed(0)
        per_train, per_test = 6, 2
        y_train = torch.arange(num_classes).repeat_interleave(per_train)
        y_test = torch.arange(num_classes).repeat_interleave(per_test)
        x_train = torch.randint(0, 256, (len(y_train), *shape), generator=g, dtype=torch.uint8)
        x_test = torch.randint(0, 256, (len(y_test), *shape), generator=g, dtype=torch.uint8)
        return data.Dataset(f"smoke-{name}", x_train, y_train, x_test, y_test,
                            transform=data.Transform(mean=(0.5,) * shape[0], std=(0.25,) * shape[0], scale=1 / 255))

    benchmarks.register(dataclasses.replace(bench, name=smoke, summary=f"generated stand-in for {name} (--smoke)", load=load))
    return smoke


def smoke_config(config: dict) -> dict:
    """``config`` shrunk to run in seconds on generated data of the same shape.

    A benchmark of more than 20 classes (CIFAR-100) keeps two experiences of its first 20 labels.
    """
    from .benchmarks import get_benchmark

    name = config.get("benchmark", "split-digits")
    out = dict(config, benchmark=_smoke_benchmark(name), epochs=1)
    if (get_benchmark(name).num_classes or 0) > 20:  # e.g. 10 experiences of ResNet-32 on one core: a minute a row
        for key in ("split", "increments"):
            out.pop(key, None)
        out.update(classes=list(range(20)), num_experiences=2)
    out.pop("data_root", None)
    out.pop("download", None)
    if out.get("milestones"):
        out.pop("milestones")
        out["lr_schedule"] = "constant"
    params = dict(out.get("params", {}))
    for key in ("mem", "mem_per_class"):
        if key in params:
            params[key] = min(int(params[key]), 20 if key == "mem" else 2)
    if "val_per_class" in params:
        params["val_per_class"] = 1
    out["params"] = params
    return out


def run_rows(rows: Sequence[Row], *, seeds: Sequence[int], out: Path, smoke: bool = False, data_root: str | None = None,
             download: bool = False, device: str = "auto", quiet: bool = False,
             log: Callable[[str], None] = print) -> list[Outcome]:
    """Run every row for every seed (finished runs are read back, not run again).

    Rows with the same configuration (two metrics of one run, e.g. a survey's last and average
    incremental accuracy) run once per seed; each row still gets its own results file.
    """
    from .experiment import RunConfig, run
    from .results import load_result, save_result

    outcomes = []
    if not smoke:
        out.mkdir(parents=True, exist_ok=True)
    done: dict[str, object] = {}  # rows that read two metrics of one run (same config and seed) share it
    for index, row in enumerate(rows):
        outcome = Outcome(row, smoke=smoke)
        config = smoke_config(row.config) if smoke else dict(row.config, data_root=data_root, download=download)
        for seed in seeds:
            path = out / f"{index:02d}-{_slug(row.name)}_seed{seed}.json"
            cfg = RunConfig(**{**config, "seed": seed, "device": device, "label": row.name})
            key = repr(dataclasses.replace(cfg, label=None))
            if path.is_file() and not smoke:
                result = load_result(path)
                if result.config.get("seed") != seed:
                    raise ContinualError(f"{path}: holds seed {result.config.get('seed')}, not {seed}; remove it")
            elif key in done:
                result = done[key]
                if not smoke:
                    save_result(result, path)
            else:
                t0 = time.perf_counter()
                result = run(cfg)
                outcome.seconds += time.perf_counter() - t0
                if not smoke:
                    save_result(result, path)
            done[key] = result
            outcome.results.append(result)
            if row.metric not in result.metrics:
                raise ContinualError(f"row {row.name!r}: metric {row.metric!r} is not among the result's ({', '.join(result.metrics)})")
            outcome.values.append(100.0 * float(result.metrics[row.metric]))
            if not quiet:
                log(f"  {row.name}, seed {seed}: {outcome.values[-1]:.2f}")
        outcomes.append(outcome)
    return outcomes


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def _num(value: float | None, spread: float | None = None, kind: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" + (f" ± {spread:.2f}{' (' + kind + ')' if kind else ''}" if spread is not None else "")


def table(outcomes: Sequence[Outcome], *, seeds: Sequence[int]) -> str:
    """The side-by-side markdown table: published, ours (mean ± 95% CI over the seeds), band, status."""
    lines = [f"| row | published | ours: mean ± 95% CI ({len(seeds)} seeds) | band | status | note |",
             "|---|---|---|---|---|---|"]
    for o in outcomes:
        r = o.row
        band = f"[{r.band[0]:.2f}, {r.band[1]:.2f}]" if r.band else "–"
        note = r.note.replace("|", "\\|")  # a table cell
        lines.append(f"| {r.name} | {_num(r.published, r.spread, r.spread_kind)} | {_num(o.mean, o.ci)} | {band} | {o.status} | {note} |")
    return "\n".join(lines)


def runs_summary(outcomes: Sequence[Outcome]) -> str:
    """One line from the results files: when and where the runs ran, and their wall time in all
    (each distinct run counted once, so a resumed reproduction still reports the whole cost)."""
    runs = {id(r): r for o in outcomes for r in o.results}.values()
    if not runs:
        return "No run yet."
    env = next(iter(runs)).environment
    dates = sorted({str(r.created)[:10] for r in runs})
    wall = sum(float(r.timings.get("wall", 0.0)) for r in runs)
    where = env.get("gpu") or f"{env.get('cpu') or env.get('processor')}, {env.get('cpu_count')} cores"
    return (f"{len(runs)} runs on {', '.join(dates)}, {where}, torch {env.get('torch')}, device {env.get('device')}: "
            f"{wall / 60:.1f} min of wall time in all (the sum of the runs' own).")


def write_readme(readme: Path, text: str) -> None:
    """Replace the README's table between the markers (atomically; the rest is untouched)."""
    from .results import atomic_write_text

    body = readme.read_text()
    if BEGIN not in body or END not in body:
        raise ContinualError(f"{readme} has no {BEGIN} ... {END} markers to write the table between")
    head, rest = body.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    atomic_write_text(readme, f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(rows: Sequence[Row], *, title: str, folder: str | Path, seeds: int, argv: Sequence[str] | None = None) -> int:
    """The command line of a reproduction script (see the module docstring). Returns the exit code."""
    parser = argparse.ArgumentParser(description=title)
    parser.add_argument("--seeds", type=int, default=seeds, help=f"number of seeds, 0..N-1 (default: the paper's, {seeds})")
    parser.add_argument("--rows", default=None, help="comma-separated row names (default: all)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a row's mean falls outside its band")
    parser.add_argument("--smoke", action="store_true", help="generated data of the same shape, one epoch (checks the script runs)")
    parser.add_argument("--write-readme", action="store_true", help="write the table into the folder's README")
    parser.add_argument("--out", default=None, help="results folder (default: <folder>/results)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--download", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    folder = Path(folder)
    chosen = list(rows)
    if args.rows:
        names = [n.strip() for n in args.rows.split(",")]
        unknown = [n for n in names if n not in {r.name for r in rows}]
        if unknown:
            print(f"error: unknown row {unknown[0]!r}; rows: {', '.join(r.name for r in rows)}", file=sys.stderr)
            return 2
        chosen = [r for r in rows if r.name in names]
    if not 1 <= args.seeds <= 100:
        print(f"error: --seeds {args.seeds} must be in 1..100", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else folder / "results"
    seed_list = list(range(args.seeds))
    try:
        t0 = time.perf_counter()
        outcomes = run_rows(chosen, seeds=seed_list, out=out, smoke=args.smoke, data_root=args.data_root,
                            download=args.download, device=args.device, quiet=args.quiet)
        wall = time.perf_counter() - t0
        text = table(outcomes, seeds=seed_list) + "\n\n" + runs_summary(outcomes)
        print(f"\n{title}\n\n{text}\n\nthis command: {wall:.0f} s")
        if args.write_readme and not args.smoke:
            write_readme(folder / "README.md", text)
    except ContinualError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check and not args.smoke:
        failed = [o for o in outcomes if o.status == STATUS_OUT]
        for o in outcomes:
            if o.status.startswith(STATUS_OUT):
                why = f" (explained: {o.row.explained})" if o.row.explained else ""
                print(f"outside band: {o.row.name}: {o.mean:.2f} not in [{o.row.band[0]:.2f}, {o.row.band[1]:.2f}]{why}", file=sys.stderr)
        return 1 if failed else 0
    return 0


__all__ = ["Outcome", "Row", "default_band", "main", "run_rows", "runs_summary", "smoke_config", "table", "write_readme"]
