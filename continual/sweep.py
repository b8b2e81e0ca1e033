"""Sweeps: a TOML file expanded into a grid of runs, each in a folder named by its configuration's hash.

A sweep file::

    out = "sweeps/digits"          # output folder (relative to the current directory)
    seeds = 3                      # an int n (seeds 0..n-1) or a list of seeds

    [base]                         # RunConfig fields shared by every run; a list expands the grid
    benchmark = "split-digits"
    scenario = "class"
    epochs = 10
    device = "cpu"

    [strategies]                   # strategy name -> its hyperparameter grid (lists expand)
    finetune = {}
    joint = {}
    cumulative = {}

A list expands the grid, so a setting whose value is itself a list (``increments``,
``milestones``, ``classes``, ``hidden``, an explicit ``class_order``) is written as text, ``increments =
"50,10,10,10,10,10"``, or as a list of lists to sweep over several, ``milestones = [[60], [60, 120]]``.

Each run's folder is ``out/<hash>`` where the hash is taken over the resolved configuration
(every default filled in), saved beside the result as ``config.json``; a run whose
``result.json`` exists and is valid is skipped when the sweep is started again. Runs execute
sequentially, in a local process pool (``workers > 1``), or as Ray tasks (``engine="ray"``);
either way the worker returns the result and this process writes it, atomically, so nothing
half-written is ever left and remote workers need no shared file system. A failed run is
reported with its error (also saved as ``error.txt`` in its folder) and does not stop the others.
Local runs checkpoint after each experience in ``<run folder>/checkpoints`` and resume from there
when the sweep is started again after a crash; Ray tasks start over (their checkpoints would
live on another machine).

A local run holds a lock on its folder (``<run folder>/.lock``, see
:class:`continual.files.FolderLock`) from the moment it is taken up until its result is written,
so two sweeps of one file started at once share the work: a run another process holds is left to
it (status ``"busy"``) and one it finished meanwhile is skipped. Under the lock the run's folder is
tidied: temporary files a killed write left are removed, and so is the checkpoint folder of a run
whose result was saved just before a kill. Ray runs are not locked.

Seeds of one configuration can train together in one process (:mod:`continual.batched`):
``batched="on"`` groups the pending runs that differ only in their seed and trains each group
batched where :func:`continual.batched.batchable` allows (otherwise one seed at a time, with its
one-line reason passed to ``on_note``); ``"auto"`` (the default) does so only for runs on a CUDA
device, where it pays (on a CPU the small models' steps are bound by their matrix products:
``benchmarks/batched.py``). A group is one unit of work in every engine: its seeds' folders are
locked together, it checkpoints in its first seed's folder (``checkpoints-batched``), and each
seed's result is written to its own folder, noted ``extra["batched"]``. A seed whose result
exists is skipped and the rest of its group trains without it.

With ``log=["tensorboard", "csv", ...]`` (``continual sweep --log``) every local run logs into one
folder, ``out/logs`` (so ``tensorboard --logdir out/logs`` shows the grid side by side), under the
name ``<label>_seed<seed>_<run folder>`` (:mod:`continual.loggers`; seeds trained together each
log their own run). Ray runs are not logged: their logs would be written on the workers' machines.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ContinualError
from .experiment import MAX_SEEDS, RunConfig
from .files import FolderLock, check_writable, remove_temporaries
from .results import atomic_write_text, load_result, result_from_dict, save_result, stable

ENGINES = ("local", "ray")
BATCHED = ("auto", "on", "off")
BATCHED_CHECKPOINTS = "checkpoints-batched"  # a group's checkpoints, in its first seed's folder
_SWEEP_KEYS = {"out", "seeds", "base", "strategies"}


def _load_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ContinualError(f"{path}: no such sweep file") from None
    except IsADirectoryError:
        raise ContinualError(f"{path} is a folder; give a sweep file (TOML)") from None
    except UnicodeDecodeError as exc:
        raise ContinualError(f"{path}: not a text file (byte {exc.start} is not UTF-8); give a sweep file (TOML)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ContinualError(f"{path}: not valid TOML ({exc})") from None


@dataclass
class Sweep:
    """A parsed sweep: the output folder, seeds, shared settings and per-strategy grids."""

    out: Path
    seeds: list[int]
    base: dict[str, object] = field(default_factory=dict)
    strategies: dict[str, dict[str, object]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, obj: Mapping[str, object], source: str = "sweep") -> Sweep:
        unknown = set(obj) - _SWEEP_KEYS
        if unknown:
            raise ContinualError(f"{source}: unknown key {sorted(unknown)[0]!r}; accepted: {', '.join(sorted(_SWEEP_KEYS))}")
        seeds = obj.get("seeds", 1)
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            if not 1 <= seeds <= MAX_SEEDS:
                raise ContinualError(f"{source}: seeds={seeds} is out of range: expected 1..{MAX_SEEDS} (or a list of seeds)")
            seeds = list(range(seeds))
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
            raise ContinualError(f"{source}: seeds must be a positive int or a list of ints, got {seeds!r}")
        base = obj.get("base", {})
        strategies = obj.get("strategies")
        if not isinstance(base, dict):
            raise ContinualError(f"{source}: [base] must be a table")
        if not isinstance(strategies, dict) or not strategies:
            raise ContinualError(f"{source}: [strategies] must list at least one strategy, e.g. finetune = {{}}")
        for name, grid in strategies.items():
            if not isinstance(grid, dict):
                raise ContinualError(f"{source}: strategies.{name} must be a table of hyperparameters, got {grid!r}")
        if "seed" in base or "strategy" in base:
            raise ContinualError(f"{source}: set seeds with 'seeds' and strategies under [strategies], not in [base]")
        return cls(out=Path(str(obj.get("out", "sweeps"))), seeds=list(seeds), base=dict(base), strategies=dict(strategies))

    @classmethod
    def from_file(cls, path: str | Path) -> Sweep:
        path = Path(path)
        return cls.from_dict(_load_toml(path), str(path))

    def override(self, values: Mapping[str, str]) -> Sweep:
        """A copy with ``--set`` values applied: ``out``, ``seeds`` or any [base] field."""
        sweep = Sweep(self.out, list(self.seeds), dict(self.base), dict(self.strategies))
        for key, value in values.items():
            if key == "out":
                sweep.out = Path(value)
            elif key == "seeds":
                sweep.seeds = Sweep.from_dict({"seeds": _parse_scalar(value), "strategies": {"x": {}}}).seeds
            else:
                RunConfig().override({key: value})  # checks the key and type, with the accepted keys in the error
                sweep.base[key] = value
        return sweep

    def configs(self, *, here: bool = True) -> list[RunConfig]:
        """Every run of the grid, resolved (defaults filled in, names and types checked); ``here=False``
        leaves the device and data root to the machine that runs (Ray), see :meth:`RunConfig.resolve`."""
        base_items = [(k, v if isinstance(v, list) else [v]) for k, v in self.base.items()]
        runs = []
        for strategy, grid in self.strategies.items():
            grid_items = [(k, v if isinstance(v, list) else [v]) for k, v in grid.items()]
            varied = [k for k, v in grid_items if len(v) > 1]
            for base_values in itertools.product(*[v for _, v in base_items]):
                for params in itertools.product(*[v for _, v in grid_items]):
                    chosen = dict(zip([k for k, _ in grid_items], params))
                    label = strategy + ("[" + ",".join(f"{k}={chosen[k]}" for k in varied) + "]" if varied else "")
                    settings = dict(zip([k for k, _ in base_items], base_values))
                    for seed in self.seeds:
                        cfg = RunConfig(strategy=strategy, label=label).override({**settings, **chosen, "seed": seed})
                        runs.append(cfg.resolve(here=here))
        return runs


def _parse_scalar(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def config_hash(config: RunConfig) -> str:
    """A short, stable hash of a resolved configuration (same config, same folder)."""
    text = json.dumps(stable(config.to_dict()), sort_keys=True, separators=(",", ":"))  # settings added later left out at their default
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_dir(out: Path, config: RunConfig) -> Path:
    return out / config_hash(config)


def is_finished(folder: Path) -> bool:
    """A run is finished when its result file exists and is valid."""
    try:
        load_result(folder / "result.json")
        return True
    except ContinualError:
        return False


LogSpec = tuple[list[str], str, list[str]]  # logger names, the log folder, each run's name


def log_name(config: RunConfig, folder: Path) -> str:
    """A run's name in a sweep's logs: readable, and unique through its folder's hash."""
    label = "".join(c if c.isalnum() or c in "-_.[]=," else "_" for c in (config.label or config.strategy))[:80]
    return f"{label}_seed{config.seed}_{folder.name}"


def _loggers(log: LogSpec | None, config: RunConfig) -> list[list]:
    """One list of loggers per run name in ``log`` (none without ``log``)."""
    from .loggers import close_all, make_loggers

    made: list[list] = []
    try:
        for name in log[2] if log else ():
            made.append(make_loggers(log[0], log[1], run_name=name, epochs=config.resolve().epochs))
    except BaseException:
        close_all(logger for loggers in made for logger in loggers)
        raise
    return made


def _execute(config_dict: dict, checkpoint_dir: str | None = None, threads: int | None = None, workers: int = 1,
             log: LogSpec | None = None) -> dict:
    """Run one configuration (in this process, a pool worker or a Ray task) -> result dict or error.

    With a ``checkpoint_dir`` (local engines: the run's folder) the run checkpoints after each
    experience and resumes from there when the sweep is started again after a crash. The run
    uses ``threads`` CPU threads, or its model's default within a ``1/workers`` share of the cores
    (:func:`continual.experiment.choose_threads`), so parallel workers share the cores instead of
    each taking all of them.
    """
    from .experiment import choose_threads, run, set_threads
    from .loggers import close_all

    loggers: list = []
    try:
        config = RunConfig(**config_dict)
        set_threads(choose_threads(config.model or config.resolve().model, requested=threads, workers=workers))
        loggers = (_loggers(log, config) or [[]])[0]
        result = run(config, checkpoint_dir=checkpoint_dir, callbacks=loggers)
        for logger in loggers:
            logger.finish(result)
        return {"ok": True, "result": result.to_dict()}
    except ContinualError as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # a failed run is reported, not fatal to the sweep
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    finally:
        close_all(loggers)


def _execute_seeds(config_dict: dict, seeds: list[int], checkpoint_dir: str | None = None, threads: int | None = None,
                   workers: int = 1, log: LogSpec | None = None) -> list[dict]:
    """Train the ``seeds`` of one configuration together (:func:`continual.batched.run_batched`)
    -> one reply per seed, as :func:`_execute` gives one (a failure fails every seed of the group)."""
    from .batched import run_batched
    from .loggers import close_all, seed_callback

    from .experiment import choose_threads, set_threads

    by_seed: list[list] = []
    try:
        config = RunConfig(**config_dict)
        set_threads(choose_threads(config.model or config.resolve().model, requested=threads, workers=workers))
        by_seed = _loggers(log, config)
        results = run_batched(config, seeds, checkpoint_dir=checkpoint_dir, callbacks=[seed_callback(by_seed)] if by_seed else ())
        for result, loggers in zip(results, by_seed):
            for logger in loggers:
                logger.finish(result)
        return [{"ok": True, "result": r.to_dict()} for r in results]
    except ContinualError as exc:
        return [{"ok": False, "error": str(exc)}] * len(seeds)
    except Exception as exc:
        return [{"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}] * len(seeds)
    finally:
        close_all(logger for loggers in by_seed for logger in loggers)


Unit = list[tuple[int, RunConfig, Path]]  # runs trained in one process: one run, or the seeds of one configuration


def _units(pending: Sequence[tuple[int, RunConfig, Path]], batched: str, *, here: bool,
           on_note: Callable[[str], None] | None = None) -> list[Unit]:
    """The pending runs as units of work: with ``batched`` on (or ``"auto"`` on a CUDA device) the
    runs that differ only in their seed form one unit, when :func:`continual.batched.batchable`
    allows; every other run is a unit of its own. Units keep the grid order of their first run."""
    if batched == "off":
        return [[p] for p in pending]
    from .batched import batchable
    from .trainer import resolve_device

    groups: dict[str, Unit] = {}
    for item in pending:
        key = json.dumps({**item[1].to_dict(), "seed": None}, sort_keys=True, default=str)
        groups.setdefault(key, []).append(item)
    units: list[Unit] = []
    for group in groups.values():
        cfg = group[0][1]
        wanted = len(group) > 1 and (batched == "on" or resolve_device(cfg.device, here=here).type == "cuda")
        reason = batchable(cfg) if wanted else None
        if reason and on_note:
            on_note(f"{cfg.label or cfg.strategy}: training the seeds one at a time: {reason}")
        units.extend([group] if wanted and reason is None else [[item] for item in group])
    return sorted(units, key=lambda unit: unit[0][0])


def _execute_unit(unit: Unit, threads: int | None, workers: int = 1, *, local: bool = True,
                  log: list[str] | None = None, log_dir: Path | None = None) -> list[dict]:
    """Run a unit (see :func:`_units`) here -> one reply per run. Local units checkpoint in their
    (first) run's folder; ``local=False`` (a Ray task) keeps no checkpoints. ``log``: logger names,
    writing under ``log_dir`` (:func:`log_name` names each run)."""
    spec = (log, str(log_dir), [log_name(c, f) for _, c, f in unit]) if log else None
    if len(unit) == 1:
        _, cfg, folder = unit[0]
        return [_execute(cfg.to_dict(), str(folder / "checkpoints") if local else None, threads, workers, spec)]
    cfg, folder = unit[0][1], unit[0][2]
    return _execute_seeds(cfg.to_dict(), [c.seed for _, c, _ in unit], str(folder / BATCHED_CHECKPOINTS) if local else None,
                          threads, workers, spec)


@dataclass
class Outcome:
    config: RunConfig
    folder: Path
    status: str  # "done", "skipped", "failed" or "busy" (in progress in another process)
    error: str = ""


def _record(folder: Path, config: RunConfig, reply: dict) -> Outcome:
    if reply.get("ok"):
        save_result(result_from_dict(reply["result"], str(folder)), folder / "result.json")
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
        (folder / "error.txt").unlink(missing_ok=True)
        return Outcome(config, folder, "done")
    error = reply.get("error", "unknown error")
    atomic_write_text(folder / "error.txt", error + "\n" + reply.get("traceback", ""))
    return Outcome(config, folder, "failed", error)


def run_sweep(
    sweep: Sweep,
    *,
    workers: int = 1,
    engine: str = "local",
    address: str | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    threads: int | None = None,
    batched: str = "auto",
    on_note: Callable[[str], None] | None = None,
    log: Sequence[str] | str | None = None,
) -> list[Outcome]:
    """Run every configuration of ``sweep`` that has no valid result yet.

    Args:
        sweep: the parsed sweep.
        workers: local engine: 1 runs sequentially in this process, N > 1 in a process pool.
        engine: ``"local"`` or ``"ray"`` (each run a Ray task; needs the ``ray`` extra).
        address: Ray cluster address (default: start a local Ray instance).
        on_outcome: called once per run as it finishes (progress display).
        threads: CPU threads per run (default: the model's default within ``cores // workers``;
            a Ray task uses as many as the CPUs it reserves, 1 by default).
        batched: ``"auto"``, ``"on"`` or ``"off"``: train the seeds of one configuration together
            (see the module docstring).
        on_note: receives one line for each configuration whose seeds train one at a time
            although ``batched="on"`` asked otherwise (the reason).
        log: logger names (``"tensorboard,csv"`` or a list; :mod:`continual.loggers`): every run
            logs under ``out/logs`` (see the module docstring); local engine only.

    Returns:
        One :class:`Outcome` per configuration, in grid order (status ``"busy"``: another
        process holds the run's lock and is running it).

    Raises:
        ContinualError: for a bad engine or worker count, or a file that cannot be written
            (``out`` is tried first; a result or error file later); one line naming the path.
    """
    if engine not in ENGINES:
        raise ContinualError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if workers < 1:
        raise ContinualError(f"--workers {workers} must be at least 1")
    if batched not in BATCHED:
        raise ContinualError(f"unknown batched={batched!r}; expected one of {', '.join(BATCHED)}")
    from .loggers import check_loggers

    kinds = check_loggers(log)  # unknown names and missing extras, before anything runs
    if kinds and engine == "ray":
        raise ContinualError("--log with --engine ray: the logs would be written on the Ray workers' machines; "
                             "log a local sweep (--engine local)")
    if engine == "ray":
        check_ray_address(address)  # before anything is written
    configs = sweep.configs(here=engine != "ray")
    check_writable(sweep.out)
    outcomes: dict[int, Outcome] = {}
    pending: list[tuple[int, RunConfig, Path]] = []

    def report(i: int, outcome: Outcome) -> None:
        outcomes[i] = outcome
        if on_outcome:
            on_outcome(outcome)

    def claim(i: int, cfg: RunConfig, folder: Path) -> FolderLock | None:
        """Lock the run's folder and tidy it; ``None`` (outcome reported) if another process
        holds it or the run is finished."""
        lock = FolderLock(folder, what=f"run {folder.name}")
        if not lock.acquire():
            report(i, Outcome(cfg, folder, "busy", f"in progress in another process (pid {lock.holder or 'unknown'})"))
            return None
        try:
            remove_temporaries(folder, ("config.json", "result.json", "error.txt"))
            remove_temporaries(folder / "checkpoints")
            remove_temporaries(folder / BATCHED_CHECKPOINTS)
            if is_finished(folder):
                shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # a kill came between result and cleanup
                report(i, Outcome(cfg, folder, "skipped"))
                lock.release()
                return None
        except BaseException:
            lock.release()
            raise
        return lock

    for i, cfg in enumerate(configs):
        folder = run_dir(sweep.out, cfg)
        lock = claim(i, cfg, folder)
        if lock is not None:
            try:  # before any run: also the check that the output folder can be written
                atomic_write_text(folder / "config.json", json.dumps(cfg.to_dict(), indent=1, sort_keys=True))
            finally:
                lock.release()
            pending.append((i, cfg, folder))

    def finish(i: int, cfg: RunConfig, folder: Path, reply: dict) -> None:
        report(i, _record(folder, cfg, reply))

    def finish_unit(unit: Unit, replies: list[dict]) -> None:
        for (i, cfg, folder), reply in zip(unit, replies):
            finish(i, cfg, folder, reply)
        if len(unit) > 1 and all(r.get("ok") for r in replies):
            shutil.rmtree(unit[0][2] / BATCHED_CHECKPOINTS, ignore_errors=True)

    def claim_unit(unit: Unit) -> tuple[Unit, list[FolderLock]]:
        """The unit's runs this process now holds (again: another process may have taken or
        finished some meanwhile), and their locks."""
        held, locks = [], []
        for i, cfg, folder in unit:
            lock = claim(i, cfg, folder)
            if lock is not None:
                held.append((i, cfg, folder))
                locks.append(lock)
        return held, locks

    units = _units(pending, batched, here=engine != "ray", on_note=on_note)
    log_dir = sweep.out / "logs"
    if engine == "ray":
        _run_ray(units, address, finish_unit, threads or 1)
    elif workers == 1:
        for unit in units:
            held, locks = claim_unit(unit)
            try:
                if held:
                    finish_unit(held, _execute_unit(held, threads, log=kinds, log_dir=log_dir))
            finally:
                for lock in locks:
                    lock.release()
    else:
        import concurrent.futures as cf
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # no forked torch threads
        queue = iter(units)
        running: dict = {}  # future -> (unit, locks); at most `workers`, so few locks are held

        try:
            with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                def submit_next() -> None:
                    for unit in queue:
                        held, locks = claim_unit(unit)
                        if held:
                            running[pool.submit(_execute_unit, held, threads, workers, log=kinds, log_dir=log_dir)] = \
                                (held, locks)
                            return

                for _ in range(workers):
                    submit_next()
                while running:
                    done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        held, locks = running.pop(fut)
                        try:
                            try:
                                replies = fut.result()
                            except Exception as exc:  # the worker process died
                                replies = [{"ok": False, "error": f"worker failed: {type(exc).__name__}: {exc}"}] * len(held)
                            finish_unit(held, replies)
                        finally:
                            for lock in locks:
                                lock.release()
                        submit_next()
        finally:  # after an error: the pool has waited for the runs in flight; now free their folders
            for _, locks in running.values():
                for lock in locks:
                    lock.release()
    return [outcomes[i] for i in range(len(configs))]


RAY_CONNECT_TIMEOUT = 10.0  # seconds to reach a Ray cluster's address before giving up


def check_ray_address(address: str | None, *, timeout: float = RAY_CONNECT_TIMEOUT) -> None:
    """Check that a Ray cluster's ``HOST:PORT`` (or ``ray://HOST:PORT``) accepts a connection.

    ``ray.init`` retries an unreachable address for ever; this gives one line after ``timeout``
    seconds instead. ``None``, ``"auto"`` and ``"local"`` are left to Ray.

    Raises:
        ContinualError: for an address that is not ``HOST:PORT`` or that does not answer.
    """
    import socket

    if address in (None, "auto", "local"):
        return
    host, sep, port = str(address).split("://", 1)[-1].rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ContinualError(f"Ray address {address!r} is not accepted; expected HOST:PORT (e.g. 127.0.0.1:6379), "
                             "ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:  # refused, unreachable, unknown host, timed out
        reason = exc.strerror or type(exc).__name__
        raise ContinualError(f"no Ray cluster answers at {address} ({reason}, waited up to {timeout:g} s); "
                             "start one with 'ray start --head' or give its HOST:PORT") from None


def _run_ray(units: Sequence[Unit], address: str | None, finish_unit, threads: int) -> None:
    try:
        import ray
    except ModuleNotFoundError:
        raise ContinualError("--engine ray needs Ray: pip install 'continual[ray]'") from None
    started = False
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except Exception as exc:  # ConnectionError, RuntimeError...: one line, not Ray's traceback
            reason = (str(exc).strip().splitlines() or [""])[0][:200]
            raise ContinualError(f"Ray could not connect to {address or 'a new local instance'} ({type(exc).__name__}: {reason})") from None
        started = True
    try:
        remote = ray.remote(_execute_unit)
        refs = {}
        for unit in units:
            gpus = 1 if str(unit[0][1].device).startswith("cuda") else 0
            refs[remote.options(num_cpus=threads, num_gpus=gpus).remote(unit, threads, 1, local=False)] = unit
        waiting = list(refs)
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            unit = refs[done[0]]
            try:
                replies = ray.get(done[0])
            except Exception as exc:  # the task or its worker died
                replies = [{"ok": False, "error": f"ray task failed: {type(exc).__name__}: {exc}"}] * len(unit)
            finish_unit(unit, replies)
    finally:
        if started:
            ray.shutdown()


def print_outcome(total: int) -> Callable[[Outcome], None]:
    """A progress printer: one line per finished run with a running count."""
    count = 0

    def show(o: Outcome) -> None:
        nonlocal count
        count += 1
        c = o.config
        what = f"{c.benchmark}/{c.scenario} {c.label or c.strategy} seed {c.seed}"
        tail = {"done": "done", "skipped": "skipped (finished before)", "failed": f"FAILED: {o.error}",
                "busy": f"left to another process: {o.error}"}[o.status]
        print(f"[{count}/{total}] {what} ({o.folder.name}): {tail}", file=sys.stderr, flush=True)

    return show
