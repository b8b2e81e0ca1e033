"""Results of a run as versioned JSON: save atomically, load with validation, group over seeds.

One file per run. Schema (version 1)::

    {"schema": "continual.result", "version": 1,
     "config": {...resolved run configuration...}, "seed": 0,
     "acc_matrix": [[...T floats...] x T], "random_init": [...T floats...],
     "metrics": {"final_average_accuracy": ..., ...},
     "timings": {"train": [...], "eval": [...], "plugins": [...], "total_train": ..., "wall": ...},
     "penalties": {"EWC": [...mean penalty per experience...]},
     "extra": {...method-specific records, e.g. head sizes...},
     "environment": {"torch": "2.x", "device": "cpu", ...}, "created": "ISO time"}
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import ContinualError
from .files import atomic_torch_save, atomic_write_text  # noqa: F401 (also importable from here, as before)
from .metrics import AccuracyMatrix

SCHEMA = "continual.result"
VERSION = 1


@dataclass
class Result:
    """Everything one run produced (see the module docstring for the file layout)."""

    config: dict
    seed: int
    acc_matrix: list[list[float]]
    random_init: list[float]
    metrics: dict[str, float]
    timings: dict[str, object]
    penalties: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)
    environment: dict[str, object] = field(default_factory=dict)
    created: str = ""

    @property
    def strategy(self) -> str:
        return str(self.config.get("strategy", "?"))

    @property
    def label(self) -> str:
        """The name a run is shown under: the config's ``label`` if given, else the strategy."""
        return str(self.config.get("label") or self.strategy)

    @property
    def benchmark(self) -> str:
        return str(self.config.get("benchmark", "?"))

    @property
    def scenario(self) -> str:
        return str(self.config.get("scenario", "?"))

    def matrix(self) -> AccuracyMatrix:
        return AccuracyMatrix.from_rows(self.acc_matrix, self.random_init)

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "version": VERSION, **asdict(self)}


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in a results file")


def save_result(result: Result, path: str | Path) -> Path:
    """Write ``result`` as JSON to ``path`` atomically (temporary file, then rename)."""
    text = json.dumps(result.to_dict(), indent=1, default=_json_default, allow_nan=True)
    return atomic_write_text(path, text)


_REQUIRED = {"config": dict, "seed": int, "acc_matrix": list, "random_init": list, "metrics": dict, "timings": dict}


def result_from_dict(obj: object, source: str = "result") -> Result:
    """Validate a decoded results object and build a :class:`Result`; errors name what is wrong."""
    if not isinstance(obj, dict):
        raise ContinualError(f"{source}: expected a JSON object, got {type(obj).__name__}")
    if obj.get("schema") != SCHEMA:
        raise ContinualError(f"{source}: not a continual results file (schema {obj.get('schema')!r}, expected {SCHEMA!r})")
    if obj.get("version") != VERSION:
        raise ContinualError(f"{source}: results schema version {obj.get('version')!r} is not supported (expected {VERSION})")
    for key, kind in _REQUIRED.items():
        if key not in obj:
            raise ContinualError(f"{source}: missing key {key!r}")
        if not isinstance(obj[key], kind):
            raise ContinualError(f"{source}: {key!r} must be a {kind.__name__}, got {type(obj[key]).__name__}")
    R = obj["acc_matrix"]
    T = len(R)
    if T == 0 or any(not isinstance(row, list) or len(row) != T for row in R):
        raise ContinualError(f"{source}: 'acc_matrix' must be a non-empty square list of lists")
    try:
        values = [float(v) for row in R for v in row] + [float(v) for v in obj["random_init"]]
    except (TypeError, ValueError):
        raise ContinualError(f"{source}: 'acc_matrix' and 'random_init' must hold numbers") from None
    if len(obj["random_init"]) != T:
        raise ContinualError(f"{source}: 'random_init' has {len(obj['random_init'])} entries for {T} experiences")
    if any(not (0.0 <= v <= 1.0) for v in values if not math.isnan(v)):
        raise ContinualError(f"{source}: accuracies must lie in [0, 1]")
    fields = {k: obj[k] for k in Result.__dataclass_fields__ if k in obj}
    return Result(**fields)


def load_result(path: str | Path) -> Result:
    """Read and validate one results file.

    Raises:
        ContinualError: naming the file and what is wrong (missing, unreadable, not UTF-8, not
            JSON, nested too deeply to parse, wrong schema...).
    """
    path = Path(path)
    try:
        obj = _read_json(path)
    except FileNotFoundError:
        raise ContinualError(f"{path}: no such results file") from None
    except OSError as exc:
        raise ContinualError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ContinualError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    except RecursionError:
        raise ContinualError(f"{path}: JSON nested too deeply to read") from None
    except json.JSONDecodeError as exc:
        raise ContinualError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return result_from_dict(obj, str(path))


def _read_json(path: Path) -> object:
    """``json.loads`` of the file's strict UTF-8 text (OSError, UnicodeDecodeError, RecursionError
    and JSONDecodeError pass through)."""
    return json.loads(path.read_bytes().decode("utf-8"))


def find_results(paths: Iterable[str | Path]) -> tuple[list[Result], list[str]]:
    """Load every results file under ``paths`` (files, or folders searched recursively for ``*.json``).

    In folders, JSON files that are not results files (no ``schema`` key, e.g. a sweep's
    ``config.json``) are passed over silently; a file given by name is always checked.

    Returns:
        ``(results, problems)``: the valid results, and one message per path or file that was
        missing, unreadable or malformed (these are skipped, not fatal).
    """
    results, problems = [], []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*.json") if not f.name.startswith("."))
            named = False
        elif p.exists():
            files, named = [p], True
        else:
            problems.append(f"{p}: no such file or folder")
            continue
        for f in files:
            try:
                results.append(load_result(f))
            except ContinualError as exc:
                if named or _claims_schema(f):
                    problems.append(str(exc))
    return results, problems


def _claims_schema(path: Path) -> bool:
    """True unless the file is valid JSON that does not claim to be a results file."""
    try:
        obj = _read_json(path)
    except (OSError, ValueError, RecursionError):  # unreadable, not UTF-8, not JSON, too deep
        return True
    return not isinstance(obj, dict) or "schema" in obj


# Settings that do not change what a run computes: where the data was read from, whether it was
# downloaded, and the seed (the seeds of one configuration are its repetitions).
NOT_IDENTITY = ("seed", "data_root", "download")


def identity(config: dict) -> dict:
    """The settings that make two runs repetitions of one experiment: the resolved configuration
    without :data:`NOT_IDENTITY`."""
    return {k: v for k, v in config.items() if k not in NOT_IDENTITY}


def config_id(config: dict) -> str:
    """A short, stable hash of :func:`identity` (10 hex digits): the seeds of one configuration
    share it, any other setting changes it.

    >>> a = {"strategy": "finetune", "lr": 0.05, "seed": 0}
    >>> config_id(a) == config_id({**a, "seed": 3}), config_id(a) == config_id({**a, "lr": 0.01})
    (True, False)
    """
    text = json.dumps(identity(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _flat(config: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{k}."))
        else:
            out[prefix + k] = v
    return out


def group_results(results: Iterable[Result]) -> dict[tuple[str, str, str], list[Result]]:
    """Results grouped by configuration (:func:`identity`: all but the seed), each group sorted by
    seed, keyed by ``(benchmark, scenario, name)``.

    ``name`` is the label; where several configurations share a label (a sweep over ``lr`` in
    its ``[base]``, a changed ``--epochs``), each name also shows the settings in which they
    differ, e.g. ``finetune [lr=0.01]`` and ``finetune [lr=0.05]``.
    """
    by_id: dict[str, list[Result]] = {}
    for r in results:
        by_id.setdefault(config_id(r.config), []).append(r)
    by_label: dict[tuple[str, str, str], list[str]] = {}
    for key, group in by_id.items():
        r = group[0]
        by_label.setdefault((r.benchmark, r.scenario, r.label), []).append(key)
    groups: dict[tuple[str, str, str], list[Result]] = {}
    for (bench, scenario, label), keys in by_label.items():
        flats = {k: _flat(identity(by_id[k][0].config)) for k in keys}
        names = sorted({n for f in flats.values() for n in f})
        differ = [n for n in names if len({json.dumps(f.get(n), sort_keys=True, default=str) for f in flats.values()}) > 1]
        for k in keys:
            shown = ",".join(f"{n}={flats[k].get(n)}" for n in differ)
            groups[(bench, scenario, f"{label} [{shown}]" if shown else label)] = sorted(by_id[k], key=lambda r: r.seed)
    return dict(sorted(groups.items()))


TABLE_METRICS = (
    ("final_average_accuracy", "final acc", 100.0),
    ("average_forgetting", "forgetting", 100.0),
    ("backward_transfer", "BWT", 100.0),
    ("forward_transfer", "FWT", 100.0),
)


def summarize(results: Iterable[Result]) -> list[dict[str, object]]:
    """One row per configuration (:func:`group_results`): each headline metric and the training plus
    evaluation time as ``(mean, 95% CI half-width)`` over seeds (t distribution; NaN half-width
    for one seed)."""
    from .metrics import mean_ci

    rows = []
    for (bench, scenario, label), group in group_results(results).items():
        row: dict[str, object] = {"benchmark": bench, "scenario": scenario, "strategy": label, "seeds": len(group)}
        for key, _, _ in TABLE_METRICS:
            values = [r.metrics[key] for r in group if key in r.metrics]
            row[key] = mean_ci(values) if values else (math.nan, math.nan)
        row["time"] = mean_ci([float(r.timings.get("total_train", 0.0)) + float(r.timings.get("total_eval", 0.0)) for r in group])
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, object]]) -> str:
    """A fixed-width text table of :func:`summarize` rows: metrics in percent, mean ± 95% CI."""

    def cell(pair, scale: float, digits: int) -> str:
        m, h = pair
        if math.isnan(m):
            return "-"
        return f"{scale * m:.{digits}f}" if math.isnan(h) else f"{scale * m:.{digits}f} ± {scale * h:.{digits}f}"

    header = ["benchmark", "scenario", "strategy", "seeds"] + [name + " (%)" for _, name, _ in TABLE_METRICS] + ["train+eval (s)"]
    body = [
        [str(r["benchmark"]), str(r["scenario"]), str(r["strategy"]), str(r["seeds"])]
        + [cell(r[key], scale, 1) for key, _, scale in TABLE_METRICS]
        + [cell(r["time"], 1.0, 2)]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]
    fmt = lambda line: "  ".join(v.ljust(w) if i < 3 else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths)))  # noqa: E731
    lines = [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(line) for line in body]
    note = "mean ± 95% CI over seeds (t distribution)" if any(r["seeds"] > 1 for r in rows) else "single seed"
    return "\n".join(lines + [note])


def _cell(pair, scale: float, digits: int) -> tuple[str, str]:
    m, h = pair
    return (f"{scale * m:.{digits}f}" if not math.isnan(m) else "", f"{scale * h:.{digits}f}" if not math.isnan(h) else "")


def format_markdown(rows: list[dict[str, object]]) -> str:
    """:func:`summarize` rows as a markdown table (metrics in percent, mean ± 95% CI)."""
    head = ["benchmark", "scenario", "strategy", "seeds"] + [f"{name} (%)" for _, name, _ in TABLE_METRICS] + ["train+eval (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["benchmark"]), str(r["scenario"]), str(r["strategy"]), str(r["seeds"])]
        for key, _, scale in TABLE_METRICS + (("time", "", 1.0),):
            m, h = _cell(r[key], scale, 2 if key == "time" else 1)
            cells.append(f"{m} ± {h}" if h else m)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_csv(rows: list[dict[str, object]]) -> str:
    """:func:`summarize` rows as CSV: one mean and one CI half-width column per metric (fractions, seconds)."""
    import csv
    import io

    keys = [k for k, _, _ in TABLE_METRICS] + ["time"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["benchmark", "scenario", "strategy", "seeds"] + [f"{k}_{s}" for k in keys for s in ("mean", "ci95")])
    for r in rows:
        w.writerow([r["benchmark"], r["scenario"], r["strategy"], r["seeds"]] + [v for k in keys for v in r[k]])
    return buf.getvalue()
