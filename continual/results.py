"""Results of a run as versioned JSON: save atomically, load with validation, group over seeds.

One file per run. Schema (version 1)::

    {"schema": "continual.result", "version": 1,
     "config": {...resolved run configuration...}, "seed": 0,
     "acc_matrix": [[...T floats...] x T], "random_init": [...T floats...],
     "metrics": {"final_average_accuracy": ..., ...},
     "timings": {"train": [...], "eval": [...], "plugins": [...], "total_train": ..., "wall": ...},
     "penalties": {"EWC": [...mean penalty per experience...]},
     "extra": {...method-specific records by plugin name, e.g. head sizes...,
               "memory": {...bytes held, see continual.ledger.memory_ledger...},
               "by_step": {"seen": [...], "old": [...], "new": [...]}},
     "environment": {"torch": "2.x", "device": "cpu", ...}, "created": "ISO time",
     "test_sizes": [...T ints: test samples of each experience...],
     "classifiers": {"nme": {"acc_matrix": [[...]], "random_init": [...], "metrics": {...}}},
     "provenance": {...what a reader needs to compare numbers, see continual.ledger.provenance...},
     "validation": {"fraction": 0.2, "sizes": [...], "acc_matrix": [[...]], "random_init": [...], "metrics": {...}}}

The last four keys (added within version 1) are optional: files written before them load, with
``test_sizes == []`` (unknown: the sample-weighted class-incremental metrics are then not
computed), no extra classifiers, an empty provenance and no validation matrix.

- ``test_sizes``: the number of test samples of each experience; with them ``metrics`` holds the
  class-incremental papers' sample-weighted ``average_incremental_accuracy`` and
  ``last_accuracy`` (see :func:`continual.metrics.summary`).
- ``classifiers``: accuracy matrices of evaluation classifiers other than the main one (the main
  one is the configuration's ``classifier``, ``"linear"`` for ``"both"``), by name, each with
  its random-init row (NaN where not defined) and its metrics. Tables and plots show each as its
  own row or line, labelled ``"<label> (<classifier>)"`` (:func:`classifier_views`).
- ``extra["memory"]``: the memory ledger (bytes of model parameters, model buffers, exemplars and
  each plugin's state, and their total).
- ``extra["by_step"]``: after each step, the sample-weighted accuracy on every class seen so far,
  on the old classes (``None`` at step 0) and on the newest experience's (:func:`by_step`; each
  entry of ``classifiers`` has its own). ``memory`` and ``by_step`` are the run's records, so no
  plugin may be named so.
- ``provenance``: augmentation, batch size, epochs, optimiser and learning-rate schedule, class
  order and the seed it was drawn with, run seed, head, classifier, memory policy, versions.
- ``validation``: a run with ``validation=F`` (:mod:`continual.validation`): the held-out
  fraction, the validation samples of each experience (``sizes``) and the accuracy matrix on them
  with its random-init row, metrics and ``by_step`` curves (the main classifier's); ``{}`` otherwise.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import ContinualError
from .files import atomic_torch_save, atomic_write_text  # noqa: F401 (also importable from here, as before)
from .metrics import AccuracyMatrix, average_incremental_accuracy, last_accuracy, summary

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
    test_sizes: list[int] = field(default_factory=list)
    classifiers: dict[str, dict] = field(default_factory=dict)
    provenance: dict[str, object] = field(default_factory=dict)
    validation: dict[str, object] = field(default_factory=dict)

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

    @property
    def classifier(self) -> str:
        """The main matrix's evaluation classifier: the config's ``classifier`` (``"linear"`` when
        absent, and for ``"both"``, whose other classifiers are in :attr:`classifiers`)."""
        name = str(self.config.get("classifier") or "linear")
        return "linear" if name == "both" else name

    def matrix(self) -> AccuracyMatrix:
        return AccuracyMatrix.from_rows(self.acc_matrix, self.random_init, test_sizes=self.test_sizes or None)

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
    T = _check_matrix(obj["acc_matrix"], obj["random_init"], source, "")
    _check_optional(obj, T, source)
    fields = {k: obj[k] for k in Result.__dataclass_fields__ if k in obj}
    return Result(**fields)


def _check_matrix(R: list, init: object, source: str, where: str, T: int | None = None) -> int:
    """Check a square accuracy matrix and its random-init row; return T. ``where`` prefixes the key names."""
    T = len(R) if T is None else T
    if len(R) == 0 or len(R) != T or any(not isinstance(row, list) or len(row) != T for row in R):
        shape = "a non-empty square list of lists" if where == "" else f"a {T} x {T} list of lists"
        raise ContinualError(f"{source}: '{where}acc_matrix' must be {shape}")
    if not isinstance(init, list):
        raise ContinualError(f"{source}: '{where}random_init' must be a list, got {type(init).__name__}")
    try:
        values = [float(v) for row in R for v in row] + [float(v) for v in init]
    except (TypeError, ValueError):
        raise ContinualError(f"{source}: '{where}acc_matrix' and '{where}random_init' must hold numbers") from None
    if len(init) != T:
        raise ContinualError(f"{source}: '{where}random_init' has {len(init)} entries for {T} experiences")
    if any(not (0.0 <= v <= 1.0) for v in values if not math.isnan(v)):
        raise ContinualError(f"{source}: accuracies must lie in [0, 1]" + (f" (in '{where[:-1]}')" if where else ""))
    return T


def _check_optional(obj: dict, T: int, source: str) -> None:
    """The keys added within version 1 (absent from older files): ``test_sizes``, ``classifiers``, ``provenance``, ``validation``."""
    sizes = obj.get("test_sizes", [])
    if not isinstance(sizes, list) or (sizes and (len(sizes) != T or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in sizes))):
        raise ContinualError(f"{source}: 'test_sizes' must be a list of {T} counts (integers >= 0), or empty; got {sizes!r:.80}")
    classifiers = obj.get("classifiers", {})
    if not isinstance(classifiers, dict):
        raise ContinualError(f"{source}: 'classifiers' must be an object, got {type(classifiers).__name__}")
    for name, entry in classifiers.items():
        where = f"classifiers.{name}."
        if not name or not isinstance(entry, dict):
            raise ContinualError(f"{source}: 'classifiers' must map names to objects; {name!r} does not")
        for key, kind in (("acc_matrix", list), ("random_init", list), ("metrics", dict)):
            if not isinstance(entry.get(key), kind):
                raise ContinualError(f"{source}: '{where}{key}' must be a {kind.__name__}")
        _check_matrix(entry["acc_matrix"], entry["random_init"], source, where, T)
    if not isinstance(obj.get("provenance", {}), dict):
        raise ContinualError(f"{source}: 'provenance' must be an object, got {type(obj['provenance']).__name__}")
    validation = obj.get("validation", {})
    if not isinstance(validation, dict):
        raise ContinualError(f"{source}: 'validation' must be an object, got {type(validation).__name__}")
    if validation:
        for key, kind in (("acc_matrix", list), ("random_init", list), ("metrics", dict), ("sizes", list)):
            if not isinstance(validation.get(key), kind):
                raise ContinualError(f"{source}: 'validation.{key}' must be a {kind.__name__}")
        _check_matrix(validation["acc_matrix"], validation["random_init"], source, "validation.", T)
        sizes = validation["sizes"]
        if len(sizes) != T or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in sizes):
            raise ContinualError(f"{source}: 'validation.sizes' must be a list of {T} counts (integers >= 0); got {sizes!r:.80}")


def by_step(matrix: np.ndarray | list, test_sizes: list[int]) -> dict[str, list[float | None]]:
    """The class-incremental curves after each step, sample-weighted: accuracy on every class seen
    so far (``seen``), on the classes of earlier experiences (``old``, ``None`` at step 0) and on
    the newest experience's (``new``); ``None`` for a step not trained (a resumed run's gap).

    >>> by_step([[0.9, 0.0], [0.6, 0.8]], [100, 300])
    {'seen': [0.9, 0.75], 'old': [None, 0.6], 'new': [0.9, 0.8]}
    """
    from .metrics import old_new_accuracy, seen_accuracy_curve

    R = np.asarray(matrix, dtype=float)
    old, new = old_new_accuracy(R, test_sizes)
    as_list = lambda v: [None if math.isnan(x) else round(float(x), 12) for x in v]  # noqa: E731
    return {"seen": as_list(seen_accuracy_curve(R, test_sizes)), "old": as_list(old), "new": as_list(new)}


def classifier_record(matrix: AccuracyMatrix, test_sizes: list[int] | None = None) -> dict[str, object]:
    """One entry of :attr:`Result.classifiers`: the matrix, its random-init row (NaN where the
    classifier has none) and its metrics (:func:`continual.metrics.summary`, sample-weighted
    with ``test_sizes``). ``matrix`` may also be a square array (no random-init row)."""
    if not isinstance(matrix, AccuracyMatrix):
        matrix = AccuracyMatrix.from_rows(matrix)
    T = matrix.num_experiences
    init = matrix.random_init
    return {
        "acc_matrix": matrix.tolist(),
        "random_init": init.tolist() if init is not None else [math.nan] * T,
        "metrics": summary(matrix.values, init, test_sizes=test_sizes or None),
        **({"by_step": by_step(matrix.values, test_sizes)} if test_sizes else {}),
    }


def classifier_views(results: Iterable[Result]) -> list[Result]:
    """Each result as one result per evaluation classifier, for tables and plots.

    An ordinary run (classifier ``"linear"`` or not recorded, no extra classifiers) is passed
    through unchanged. Otherwise the main matrix is shown as ``"<label> (<classifier>)"``, e.g.
    ``"replay (linear)"`` for ``classifier="both"`` or ``"icarl (nme)"``, and each entry of
    :attr:`Result.classifiers` becomes a result of its own labelled ``"<label> (<name>)"``, with
    that classifier's matrix and metrics and the run's other records.
    """
    views = []
    for r in results:
        if not r.classifiers and str(r.config.get("classifier") or "linear") == "linear":
            views.append(r)
            continue
        views.append(replace(r, config={**r.config, "label": f"{r.label} ({r.classifier})"}, classifiers={}))
        for name, entry in r.classifiers.items():
            config = {**r.config, "label": f"{r.label} ({name})"}
            views.append(replace(r, config=config, acc_matrix=entry["acc_matrix"], random_init=entry["random_init"],
                                 metrics=dict(entry["metrics"]), classifiers={}, validation={}))  # validation: the main classifier's
    return views


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
# Cached features give the recomputing run's result (continual.features), and a compiled step the
# same arithmetic (to the rounding of fused kernels), so feature_cache and compile are such settings too.
NOT_IDENTITY = ("seed", "data_root", "download", "feature_cache", "compile")
# Settings added after results were first written, with the value that means what a configuration
# without them meant: left out of identities at that value, so earlier results keep their ids.
ADDED_LATER = {"adapt_first": False, "feature_cache": "auto", "resize": None, "hidden": None, "normalise": True, "compile": False,
               "validation": 0.0, "online": False, "eval_every": None, "train_passes": 1, "boundaries": False, "blurry": None}


def stable(config: dict) -> dict:
    """``config`` without the :data:`ADDED_LATER` settings that hold their original meaning."""
    return {k: v for k, v in config.items() if not (k in ADDED_LATER and v == ADDED_LATER[k])}


def identity(config: dict) -> dict:
    """The settings that make two runs repetitions of one experiment: the resolved configuration
    without :data:`NOT_IDENTITY` (and :func:`stable`)."""
    return {k: v for k, v in stable(config).items() if k not in NOT_IDENTITY}


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
CLASS_IL_METRICS = (
    ("average_incremental_accuracy", "avg inc acc", 100.0),
    ("last_accuracy", "last acc", 100.0),
)
"""The class-incremental papers' columns (sample-weighted, :mod:`continual.metrics`), shown when
any result in the table recorded its test sizes."""
_CLASS_IL_KEYS = {key for key, _, _ in CLASS_IL_METRICS}
VALIDATION_METRICS = (("validation_accuracy", "val acc", 100.0),)
"""The final average accuracy on the held-out validation split (:mod:`continual.validation`),
shown when any result in the table has one."""


def _class_il(r: Result) -> tuple[float, float]:
    return average_incremental_accuracy(r.acc_matrix, r.test_sizes), last_accuracy(r.acc_matrix, r.test_sizes)


def summarize(results: Iterable[Result]) -> list[dict[str, object]]:
    """One row per configuration (:func:`group_results`) and evaluation classifier
    (:func:`classifier_views`): each headline metric and the training plus evaluation time as
    ``(mean, 95% CI half-width)`` over seeds (t distribution; NaN half-width for one seed).

    ``average_incremental_accuracy`` and ``last_accuracy`` are the sample-weighted ones,
    computed from each result's matrix and test sizes; NaN (shown as a dash) unless every seed of
    the row recorded its test sizes (``row["sized"]``). ``validation_accuracy`` is the final
    average accuracy on the validation split; NaN unless every seed of the row has one.
    """
    from .metrics import mean_ci

    rows = []
    for (bench, scenario, label), group in group_results(classifier_views(results)).items():
        row: dict[str, object] = {"benchmark": bench, "scenario": scenario, "strategy": label, "seeds": len(group)}
        row["sized"] = all(r.test_sizes for r in group)
        pairs = [_class_il(r) for r in group] if row["sized"] else []
        for k, (key, _, _) in enumerate(CLASS_IL_METRICS):
            row[key] = mean_ci([p[k] for p in pairs]) if pairs else (math.nan, math.nan)
        for key, _, _ in TABLE_METRICS:
            values = [r.metrics[key] for r in group if key in r.metrics]
            row[key] = mean_ci(values) if values else (math.nan, math.nan)
        validated = [r.validation["metrics"]["final_average_accuracy"] for r in group if r.validation]
        row["validation_accuracy"] = mean_ci(validated) if len(validated) == len(group) else (math.nan, math.nan)
        row["time"] = mean_ci([float(r.timings.get("total_train", 0.0)) + float(r.timings.get("total_eval", 0.0)) for r in group])
        rows.append(row)
    return rows


def _columns(rows: list[dict[str, object]]) -> tuple[tuple[str, str, float], ...]:
    """The metric columns of a table: the class-incremental ones first when any row has test sizes,
    then the validation accuracy when any row has one."""
    validated = any(not math.isnan(r.get("validation_accuracy", (math.nan,))[0]) for r in rows)
    return (CLASS_IL_METRICS if any(r.get("sized") for r in rows) else ()) + (VALIDATION_METRICS if validated else ()) + TABLE_METRICS


def format_table(rows: list[dict[str, object]]) -> str:
    """A fixed-width text table of :func:`summarize` rows: metrics in percent, mean ± 95% CI."""

    def cell(pair, scale: float, digits: int) -> str:
        m, h = pair
        if math.isnan(m):
            return "-"
        return f"{scale * m:.{digits}f}" if math.isnan(h) else f"{scale * m:.{digits}f} ± {scale * h:.{digits}f}"

    columns = _columns(rows)
    header = ["benchmark", "scenario", "strategy", "seeds"] + [name + " (%)" for _, name, _ in columns] + ["train+eval (s)"]
    body = [
        [str(r["benchmark"]), str(r["scenario"]), str(r["strategy"]), str(r["seeds"])]
        + [cell(r.get(key, (math.nan, math.nan)), scale, 1) for key, _, scale in columns]
        + [cell(r["time"], 1.0, 2)]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]
    fmt = lambda line: "  ".join(v.ljust(w) if i < 3 else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths)))  # noqa: E731
    lines = [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(line) for line in body]
    note = "mean ± 95% CI over seeds (t distribution)" if any(r["seeds"] > 1 for r in rows) else "single seed"
    if any(r.get("sized") for r in rows):
        note += "; avg inc acc and last acc over all test samples seen (sample-weighted)"
    if VALIDATION_METRICS[0] in columns:
        note += "; val acc on the held-out validation split (choose hyperparameters by it, report test)"
    return "\n".join(lines + [note])


def _cell(pair, scale: float, digits: int) -> tuple[str, str]:
    m, h = pair
    return (f"{scale * m:.{digits}f}" if not math.isnan(m) else "", f"{scale * h:.{digits}f}" if not math.isnan(h) else "")


def format_markdown(rows: list[dict[str, object]]) -> str:
    """:func:`summarize` rows as a markdown table (metrics in percent, mean ± 95% CI; a dash where
    a row has no value for a column another row has)."""
    columns = _columns(rows)
    head = ["benchmark", "scenario", "strategy", "seeds"] + [f"{name} (%)" for _, name, _ in columns] + ["train+eval (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["benchmark"]), str(r["scenario"]), str(r["strategy"]), str(r["seeds"])]
        for key, _, scale in columns + (("time", "", 1.0),):
            m, h = _cell(r.get(key, (math.nan, math.nan)), scale, 2 if key == "time" else 1)
            cells.append((f"{m} ± {h}" if h else m) or ("-" if key in _CLASS_IL_KEYS or key == "validation_accuracy" else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_csv(rows: list[dict[str, object]]) -> str:
    """:func:`summarize` rows as CSV: one mean and one CI half-width column per metric (fractions,
    seconds; ``nan`` where a row has no value)."""
    import csv
    import io

    keys = [k for k, _, _ in _columns(rows)] + ["time"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["benchmark", "scenario", "strategy", "seeds"] + [f"{k}_{s}" for k in keys for s in ("mean", "ci95")])
    for r in rows:
        w.writerow([r["benchmark"], r["scenario"], r["strategy"], r["seeds"]] + [v for k in keys for v in r.get(k, (math.nan, math.nan))])
    return buf.getvalue()
