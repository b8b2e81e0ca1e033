"""Loggers: TensorBoard, Weights & Biases and CSV, as read-only observers of a run.

A logger is a trainer callback (``logger(event, info)``, see :mod:`continual.trainer`) plus
``finish(result)`` and ``close()``. It never computes a metric: it writes the values the trainer
emitted and the finished :class:`~continual.results.Result` holds, as *records*
(:class:`Record`: a key, a value, a global step, and the experience and epoch they belong to).

What is logged, by key (``j``: an experience's index, ``i``: the experience just trained):

- from the trainer's events, as they happen: ``train/loss`` and ``train/steps`` after each
  epoch (the mean loss of the epoch and its number of optimizer steps; the step is the epoch's
  index over the whole run, ``experience * epochs + epoch``, when the logger is given the
  run's ``epochs``, as ``continual run`` does, so a resumed run continues the same axis;
  otherwise the count of epochs this logger has seen), and the accuracy matrix's row after each experience,
  ``accuracy/experience_<j>`` at step ``i``;
- from the finished result (:meth:`RecordLogger.finish`): the rows no event brought (all of them
  for a run without callbacks, those before a resumed run's restart point, rows 1..T-1 of a joint
  run, whose single row the result repeats), the random-init row (``random_init/experience_<j>``,
  step 0), ``penalty/<name>`` and ``timings/<phase>`` (``train``, ``eval``, ``plugins``) per
  experience, the ``extra["by_step"]`` curves (``by_step/seen``, ``old``, ``new``), the scalar
  timings (``timings/total_train``, ``timings/wall``...) and the final ``metrics/<name>`` at the
  last step, each extra evaluation classifier's rows and metrics under
  ``classifiers/<name>/...``, and the configuration (as hyperparameters and text).

Values are written as they are (float64 in the CSV and in TensorBoard, NaN kept); ``None``
entries (``by_step/old`` at step 0) are left out.

Back ends:

- :class:`CSVLogger`: ``<folder>/csv/<run_name>.csv``, a tidy long-format table with the columns
  ``run, step, experience, epoch, key, value`` (``experience``/``epoch`` empty where a record has
  none), appended to and flushed after each event (a resumed run continues the same file, and
  what the killed process logged after its last checkpoint comes again, at the same steps, the
  later line being the finished run's; a run started again from scratch appends a second copy), and the configuration beside it in
  ``<run_name>.config.json`` (written atomically).
- :class:`TensorBoardLogger`: ``<folder>/tensorboard/<run_name>/`` through
  ``torch.utils.tensorboard.SummaryWriter``; scalars as float64 tensors (``new_style``), the
  configuration as text (``config``) and as HParams (flattened: ``params.lam``; lists and
  ``None`` as JSON text) with the final metrics as the HParams metrics.
- :class:`WandbLogger`: a Weights & Biases run (``pip install 'continual[wandb]'``) in
  ``<folder>/wandb/``; ``WANDB_MODE=offline`` logs without an account or network. Per-epoch keys
  are stepped by ``train/epoch_index``, per-experience keys by ``experience``
  (``define_metric``); the final metrics go to the run's summary, the configuration to its config.

Several seeds trained together (:func:`continual.batched.run_batched`) emit each seed's loss and
row in one event; :func:`seed_callback` hands each seed's logger its own.

Example:
    >>> import tempfile
    >>> from continual.experiment import RunConfig, run
    >>> folder = tempfile.mkdtemp()
    >>> loggers = make_loggers("csv", folder, run_name="digits")
    >>> result = run(RunConfig(benchmark="split-digits", epochs=1, num_experiences=2, device="cpu"), callbacks=loggers)
    >>> for logger in loggers:
    ...     logger.finish(result)
    ...     logger.close()
    >>> rows = read_csv(f"{folder}/csv/digits.csv")
    >>> [r.value for r in rows if r.key == "metrics/final_average_accuracy"] == [result.metrics["final_average_accuracy"]]
    True
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from .errors import ContinualError

LOGGERS = ("tensorboard", "wandb", "csv")
CSV_COLUMNS = ("run", "step", "experience", "epoch", "key", "value")
DEFAULT_PROJECT = "continual"
EXPERIENCE_KEYS = ("accuracy", "random_init", "penalty", "timings", "by_step", "metrics", "classifiers")  # stepped by experience


@runtime_checkable
class Logger(Protocol):
    """What a logger is: a trainer callback, then ``finish(result)`` once the run is done, then ``close()``."""

    def __call__(self, event: str, info: dict) -> None: ...

    def finish(self, result) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Record:
    """One logged value: ``key`` at global ``step``, of ``experience`` and ``epoch`` where it has them."""

    key: str
    value: float
    step: int
    experience: int | None = None
    epoch: int | None = None


# ------------------------------------------------------------------------------- records
def event_records(event: str, info: dict, *, epoch_index: int) -> list[Record]:
    """The records of one trainer event (``epoch_index``: the global step of an ``epoch_end``).

    >>> event_records("epoch_end", {"experience": 1, "epoch": 0, "loss": 0.5, "steps": 14}, epoch_index=3)
    [Record(key='train/loss', value=0.5, step=3, experience=1, epoch=0), Record(key='train/steps', value=14.0, step=3, experience=1, epoch=0)]
    >>> [r.key for r in event_records("experience_end", {"index": 1, "num_experiences": 2, "row": [0.0, 0.9]}, epoch_index=0)]
    ['accuracy/experience_0', 'accuracy/experience_1']
    >>> event_records("experience_start", {"index": 0, "num_experiences": 2}, epoch_index=0)
    []
    """
    if event == "epoch_end":
        e, k = int(info["experience"]), int(info["epoch"])
        return [Record("train/loss", float(info["loss"]), epoch_index, e, k),
                Record("train/steps", float(info["steps"]), epoch_index, e, k)]
    if event == "experience_end":
        i = int(info["index"])
        return _row_records("accuracy", i, info["row"])
    return []  # experience_start, and any event a later trainer adds


def _row_records(prefix: str, i: int, row: Iterable) -> list[Record]:
    return [Record(f"{prefix}/experience_{j}", float(v), i, i) for j, v in enumerate(row) if v is not None]


def _series(prefix: str, values: object) -> list[Record]:
    """One record per entry of a per-experience list (entry ``i`` at step ``i``); ``None`` left out."""
    if not isinstance(values, list):
        return []
    return [Record(prefix, float(v), i, i) for i, v in enumerate(values) if _number(v)]


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def result_records(result, *, rows_logged: Iterable[int] = ()) -> list[Record]:
    """The records of a finished result; the accuracy rows in ``rows_logged`` (already logged
    from the trainer's events) are not repeated.

    >>> from continual.results import Result
    >>> r = Result(config={}, seed=0, acc_matrix=[[0.9, 0.1], [0.5, 0.8]], random_init=[0.1, 0.2],
    ...            metrics={"final_average_accuracy": 0.65}, timings={"train": [1.0, 2.0], "wall": 3.5},
    ...            penalties={"ewc": [0.0, 0.25]})
    >>> [(x.key, x.value, x.step) for x in result_records(r, rows_logged=[0])]  # doctest: +NORMALIZE_WHITESPACE
    [('accuracy/experience_0', 0.5, 1), ('accuracy/experience_1', 0.8, 1),
     ('random_init/experience_0', 0.1, 0), ('random_init/experience_1', 0.2, 0),
     ('penalty/ewc', 0.0, 0), ('penalty/ewc', 0.25, 1), ('timings/train', 1.0, 0), ('timings/train', 2.0, 1),
     ('timings/wall', 3.5, 1), ('metrics/final_average_accuracy', 0.65, 1)]
    """
    done = set(rows_logged)
    last = len(result.acc_matrix) - 1
    records = [rec for i, row in enumerate(result.acc_matrix) if i not in done for rec in _row_records("accuracy", i, row)]
    records += [Record(f"random_init/experience_{j}", float(v), 0) for j, v in enumerate(result.random_init) if _number(v)]
    for name, values in result.penalties.items():
        records += _series(f"penalty/{name}", values)
    for phase, value in result.timings.items():
        if isinstance(value, list):
            records += _series(f"timings/{phase}", value)
        elif _number(value):
            records.append(Record(f"timings/{phase}", float(value), last))
    by_step = result.extra.get("by_step") if isinstance(result.extra, dict) else None
    for curve, values in (by_step.items() if isinstance(by_step, dict) else ()):
        records += _series(f"by_step/{curve}", values)
    records += [Record(f"metrics/{k}", float(v), last) for k, v in result.metrics.items() if _number(v)]
    for name, entry in result.classifiers.items():
        records += [rec for i, row in enumerate(entry.get("acc_matrix", [])) for rec in _row_records(f"classifiers/{name}/accuracy", i, row)]
        records += [Record(f"classifiers/{name}/metrics/{k}", float(v), last) for k, v in entry.get("metrics", {}).items() if _number(v)]
    return records


def flatten_config(config: dict, prefix: str = "") -> dict[str, int | float | str | bool]:
    """A configuration as flat hyperparameters: nested keys joined by dots, lists and ``None`` as JSON text.

    >>> flatten_config({"lr": 0.1, "params": {"lam": 50.0}, "milestones": [2, 4], "label": None})
    {'lr': 0.1, 'params.lam': 50.0, 'milestones': '[2, 4]', 'label': 'null'}
    """
    flat: dict[str, int | float | str | bool] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_config(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=str)
    return flat


# ------------------------------------------------------------------------------- base
class RecordLogger:
    """Turns the trainer's events and the finished result into :class:`Record`\\ s; a back end
    implements :meth:`write` (and :meth:`write_config`, :meth:`close`).

    Args:
        run_name: the run's name in the logs (the CLI uses the result file's name stem).
        epochs: the run's epochs per experience, if known: the per-epoch step is then
            ``experience * epochs + epoch`` (the same after a resume), else the epochs seen so far.
    """

    def __init__(self, *, run_name: str = "run", epochs: int | None = None) -> None:
        if not isinstance(run_name, str) or not run_name.strip() or "/" in run_name or run_name in (".", ".."):
            raise ContinualError(f"run_name {run_name!r} must be a non-empty file name (no '/')")
        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
            raise ContinualError(f"epochs={epochs!r} must be a positive integer (or None: count the epochs seen)")
        self.run_name = run_name
        self.epochs = epochs
        self._epochs_seen = 0
        self._rows_logged: set[int] = set()
        self._finished = False

    def __call__(self, event: str, info: dict) -> None:
        step = self._epochs_seen
        if event == "epoch_end" and self.epochs is not None:
            step = int(info["experience"]) * self.epochs + int(info["epoch"])
        records = event_records(event, info, epoch_index=step)
        if event == "epoch_end":
            self._epochs_seen += 1
        elif event == "experience_end":
            self._rows_logged.add(int(info["index"]))
        if records:
            self.write(records)

    def finish(self, result) -> None:
        """Write what only the finished ``result`` holds (see the module docstring); once per run."""
        if self._finished:
            raise ContinualError(f"logger of run {self.run_name!r}: finish() was already called")
        self._finished = True
        self.write(result_records(result, rows_logged=self._rows_logged))
        self.write_config(dict(result.config), {k: float(v) for k, v in result.metrics.items() if _number(v)})

    def write(self, records: list[Record]) -> None:
        raise NotImplementedError

    def write_config(self, config: dict, metrics: dict[str, float]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------- CSV
class CSVLogger(RecordLogger):
    """A tidy long-format CSV, ``<folder>/csv/<run_name>.csv`` (columns :data:`CSV_COLUMNS`),
    and the configuration in ``<run_name>.config.json`` beside it.

    Args:
        folder: the log folder (created if missing).
        run_name: the run's name (the file's and the ``run`` column's).
        epochs: the run's epochs per experience, if known (see :class:`RecordLogger`).
    """

    def __init__(self, folder: str | os.PathLike, *, run_name: str = "run", epochs: int | None = None) -> None:
        super().__init__(run_name=run_name, epochs=epochs)
        self.folder = Path(folder) / "csv"
        self.path = self.folder / f"{run_name}.csv"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists() or self.path.stat().st_size == 0
            self._file = open(self.path, "a", newline="", encoding="utf-8")
        except OSError as exc:
            raise ContinualError(f"CSV log {self.path}: {exc.strerror or exc}") from None
        self._writer = csv.writer(self._file)
        if new:
            self._writer.writerow(CSV_COLUMNS)
            self._file.flush()

    def write(self, records: list[Record]) -> None:
        blank = lambda v: "" if v is None else v  # noqa: E731
        self._writer.writerows((self.run_name, r.step, blank(r.experience), blank(r.epoch), r.key, repr(r.value)) for r in records)
        self._file.flush()

    def write_config(self, config: dict, metrics: dict[str, float]) -> None:
        from .files import atomic_write_text

        atomic_write_text(self.folder / f"{self.run_name}.config.json", json.dumps(config, indent=1, default=str) + "\n")

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def read_csv(path: str | os.PathLike) -> list[Record]:
    """The records of a :class:`CSVLogger` file (every run in it), values as floats.

    Raises:
        ContinualError: the file is missing or its header is not :data:`CSV_COLUMNS`.
    """
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise ContinualError(f"{path}: {exc.strerror or exc}") from None
    if not rows or tuple(rows[0]) != CSV_COLUMNS:
        raise ContinualError(f"{path}: not a continual CSV log (expected the header {','.join(CSV_COLUMNS)})")
    opt = lambda v: None if v == "" else int(v)  # noqa: E731
    return [Record(key, float(value), int(step), opt(e), opt(k)) for _, step, e, k, key, value in rows[1:]]


# ------------------------------------------------------------------------------- TensorBoard
def _missing(package: str, extra: str) -> ContinualError:
    return ContinualError(f"--log {extra} needs the {package!r} package: pip install 'continual[{extra}]'")


class TensorBoardLogger(RecordLogger):
    """TensorBoard event files in ``<folder>/tensorboard/<run_name>/`` (``tensorboard --logdir <folder>/tensorboard``).

    Args:
        folder: the log folder (created if missing).
        run_name: the run's name (its subfolder).
        epochs: the run's epochs per experience, if known (see :class:`RecordLogger`).

    Raises:
        ContinualError: the ``tensorboard`` package is missing (naming ``pip install 'continual[tensorboard]'``).
    """

    def __init__(self, folder: str | os.PathLike, *, run_name: str = "run", epochs: int | None = None) -> None:
        super().__init__(run_name=run_name, epochs=epochs)
        SummaryWriter = _summary_writer()
        self.path = Path(folder) / "tensorboard" / run_name
        try:
            self.writer = SummaryWriter(log_dir=str(self.path))
        except OSError as exc:
            raise ContinualError(f"TensorBoard log {self.path}: {exc.strerror or exc}") from None

    def __call__(self, event: str, info: dict) -> None:
        super().__call__(event, info)
        if event == "experience_end":
            self.writer.flush()  # one experience's records visible to a running tensorboard

    def write(self, records: list[Record]) -> None:
        for r in records:  # float64 tensors: the values exactly as the trainer and the result hold them
            self.writer.add_scalar(r.key, r.value, r.step, new_style=True, double_precision=True)

    def write_config(self, config: dict, metrics: dict[str, float]) -> None:
        from torch.utils.tensorboard.summary import hparams

        self.writer.add_text("config", "```json\n" + json.dumps(config, indent=1, default=str) + "\n```")
        # HParams in this run's own folder (SummaryWriter.add_hparams would start a new subfolder);
        # its metrics are the metrics/<name> scalars written above.
        for summary in hparams(flatten_config(config), {f"metrics/{k}": v for k, v in metrics.items()}):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _summary_writer():
    try:
        import tensorboard  # noqa: F401 (torch.utils.tensorboard may already be imported; the package decides)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise _missing("tensorboard", "tensorboard") from None
    return SummaryWriter


# ------------------------------------------------------------------------------- Weights & Biases
def _wandb():
    try:
        import wandb
    except ImportError:
        raise _missing("wandb", "wandb") from None
    return wandb


class WandbLogger(RecordLogger):
    """A Weights & Biases run; offline with ``WANDB_MODE=offline`` (or ``mode="offline"``).

    Args:
        project: the W&B project (default: ``$WANDB_PROJECT``, else ``"continual"``).
        dir: the folder W&B writes under (its ``wandb/`` subfolder; default: W&B's own choice).
        run_name: the run's display name.
        mode: ``"online"``, ``"offline"`` or ``"disabled"``; default: W&B's (``WANDB_MODE``).
        epochs: the run's epochs per experience, if known (see :class:`RecordLogger`).

    Raises:
        ContinualError: the ``wandb`` package is missing, or W&B could not start a run (one line).
    """

    def __init__(self, *, project: str | None = None, dir: str | os.PathLike | None = None, run_name: str = "run",
                 mode: str | None = None, epochs: int | None = None) -> None:
        super().__init__(run_name=run_name, epochs=epochs)
        wandb = _wandb()
        if dir is not None:
            Path(dir).mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(project=project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT, dir=None if dir is None else str(dir), name=run_name, mode=mode,
                                  reinit="create_new", settings=wandb.Settings(console="off", silent=True))
        except Exception as exc:  # no account, no network...: one line, and how to log offline
            text = str(exc).strip().splitlines()
            raise ContinualError(f"wandb: could not start a run ({type(exc).__name__}: {text[0][:200] if text else ''}); "
                                 "set WANDB_MODE=offline to log without an account") from None
        self.run.define_metric("train/epoch_index")
        self.run.define_metric("train/*", step_metric="train/epoch_index")
        self.run.define_metric("experience")
        for prefix in EXPERIENCE_KEYS:
            self.run.define_metric(f"{prefix}/*", step_metric="experience")

    def write(self, records: list[Record]) -> None:
        groups: dict[tuple[str, int], dict[str, float]] = {}
        for r in records:
            axis = "train/epoch_index" if r.key.startswith("train/") else "experience"
            groups.setdefault((axis, r.step), {axis: r.step})[r.key] = r.value
        for values in groups.values():
            self.run.log(values)

    def write_config(self, config: dict, metrics: dict[str, float]) -> None:
        self.run.config.update(config, allow_val_change=True)
        self.run.summary.update({f"metrics/{k}": v for k, v in metrics.items()})

    def close(self) -> None:
        self.run.finish(exit_code=0 if self._finished else 1)  # a run that failed before finish() is marked so


# ------------------------------------------------------------------------------- building
def parse_kinds(kinds: str | Sequence[str] | None) -> list[str]:
    """Logger names from ``--log`` values (each may hold a comma-separated list), in order, once each.

    >>> parse_kinds(["tensorboard,csv", "csv"])
    ['tensorboard', 'csv']
    >>> parse_kinds("spreadsheet")
    Traceback (most recent call last):
    continual.errors.ContinualError: unknown logger 'spreadsheet'; expected tensorboard, wandb or csv (several: --log tensorboard,csv)
    """
    items = [kinds] if isinstance(kinds, str) else list(kinds or ())
    names: list[str] = []
    for item in items:
        for name in str(item).split(","):
            name = name.strip().lower()
            if name not in LOGGERS:
                raise ContinualError(f"unknown logger {name!r}; expected {', '.join(LOGGERS[:-1])} or {LOGGERS[-1]} "
                                     "(several: --log tensorboard,csv)")
            if name not in names:
                names.append(name)
    return names


def check_loggers(kinds: str | Sequence[str] | None) -> list[str]:
    """:func:`parse_kinds`, and the packages they need importable: one line naming the missing
    extra, before a run starts."""
    names = parse_kinds(kinds)
    if "tensorboard" in names:
        _summary_writer()
    if "wandb" in names:
        _wandb()
    return names


def make_loggers(kinds: str | Sequence[str] | None, folder: str | os.PathLike, *, run_name: str,
                 epochs: int | None = None, project: str | None = None) -> list[RecordLogger]:
    """The loggers named in ``kinds`` (``"tensorboard,csv"`` or a list), writing under ``folder``.

    Args:
        kinds: logger names (:data:`LOGGERS`), comma-separated or as a list.
        folder: the log folder (``csv/``, ``tensorboard/``, ``wandb/`` go inside).
        run_name: this run's name in every log.
        epochs: the run's epochs per experience, if known (the per-epoch step, see :class:`RecordLogger`).
        project: the W&B project (default: ``$WANDB_PROJECT``, else ``"continual"``).

    Raises:
        ContinualError: an unknown name (listing the accepted ones) or a missing package
            (naming the extra to install).
    """
    loggers: list[RecordLogger] = []
    try:
        for name in check_loggers(kinds):
            if name == "csv":
                loggers.append(CSVLogger(folder, run_name=run_name, epochs=epochs))
            elif name == "tensorboard":
                loggers.append(TensorBoardLogger(folder, run_name=run_name, epochs=epochs))
            else:
                loggers.append(WandbLogger(project=project, dir=folder, run_name=run_name, epochs=epochs))
    except BaseException:
        close_all(loggers)
        raise
    return loggers


def close_all(loggers: Iterable[Logger]) -> None:
    """Close every logger, even when one fails (the first failure is raised after the others closed)."""
    error: BaseException | None = None
    for logger in loggers:
        try:
            logger.close()
        except Exception as exc:  # noqa: PERF203
            error = error or exc
    if error is not None:
        raise error


def seed_callback(loggers_by_seed: Sequence[Sequence[Callable[[str, dict], None]]]) -> Callable[[str, dict], None]:
    """A callback for several seeds trained together (:func:`continual.batched.run_batched`):
    its ``epoch_end`` (``loss``: one per seed) and ``experience_end`` (``rows``: one per seed)
    events reach seed ``s``'s callbacks as a single run's, with that seed's loss and row.

    >>> seen = []
    >>> cb = seed_callback([[lambda e, i: seen.append((0, e, i))], [lambda e, i: seen.append((1, e, i))]])
    >>> cb("epoch_end", {"experience": 0, "epoch": 0, "loss": [0.5, 0.7], "steps": 3, "seeds": [0, 1]})
    >>> seen[1]
    (1, 'epoch_end', {'experience': 0, 'epoch': 0, 'loss': 0.7, 'steps': 3})
    """
    def callback(event: str, info: dict) -> None:
        for s, callbacks in enumerate(loggers_by_seed):
            own = {}
            for key, value in info.items():
                if key in ("loss", "rows"):
                    own[key.rstrip("s") if key == "rows" else key] = value[s]
                elif key != "seeds":
                    own[key] = value
            for cb in callbacks:
                cb(event, own)

    return callback


__all__ = ["CSV_COLUMNS", "CSVLogger", "LOGGERS", "Logger", "Record", "RecordLogger", "TensorBoardLogger", "WandbLogger",
           "check_loggers", "close_all", "event_records", "flatten_config", "make_loggers", "parse_kinds", "read_csv",
           "result_records", "seed_callback"]
