"""The ``continual`` command: run, pretrain, sweep, compare, plot, demo, list.

Bad input ends with one line on stderr (``continual: error: ...``) and exit status 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import ContinualError
from .files import check_writable  # one line, before training, for an output folder it cannot write

DEMO_BENCHMARK = "split-digits"
THREADS_HELP = "CPU threads (default: the model's, 1 for the benchmarks' models; see benchmarks/README.md)"
_TEMP_SUFFIX = len("..12345678.tmp")  # what a temporary file's name adds to the name written (results.atomic_*)


def _is_dir(path: Path) -> bool | None:
    """True for a folder (or a link to one), False for anything else that exists, None when
    nothing is there or it cannot be looked at (a name too long, a loop of links...)."""
    try:
        return path.is_dir() or (False if path.exists() else None)
    except (OSError, ValueError):  # ValueError: an embedded NUL (only from Python; argv cannot hold one)
        return None


def _name_max(path: Path) -> int:
    """The longest file name (bytes) the file system of ``path``'s nearest existing folder allows."""
    for folder in (path, *path.parents):
        if _is_dir(folder):
            try:
                return os.pathconf(folder, "PC_NAME_MAX")
            except (OSError, ValueError):
                break
    return 255


def _check_path_name(path: Path, text: str, option: str) -> None:
    """Refuse a path with a part longer than the file system allows, or through a file (``file/sub``)."""
    limit = _name_max(path)
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            raise ContinualError(f"{option} {text[:60]!r}...: the name {part[:40]!r}... is {len(os.fsencode(part))} bytes long; "
                                 f"this file system allows {limit}")
    try:
        path_max = os.pathconf("/", "PC_PATH_MAX")
    except (OSError, ValueError):
        path_max = 4096
    size = len(os.fsencode(os.path.abspath(path)))
    if size + limit > path_max:  # room for the files written inside
        raise ContinualError(f"{option} {text[:60]!r}...: the path is {size} bytes long; this system allows {path_max} "
                             f"for a whole path, and {limit} more are needed for the files written there")
    for parent in reversed(path.parents):
        if _is_dir(parent) is False:
            raise ContinualError(f"{option} {text!r}: {str(parent)!r} is a file, not a folder; give a path through folders only")


def check_out_dir(path: str | os.PathLike, *, option: str = "--out") -> Path:
    """``path`` as the folder a command writes into, once its *name* is known to be usable.

    Checked before anything runs: the name is not empty; it is a folder or does not exist yet
    (not a file, a link to one or a broken link); no part of the path is a file; no part is
    longer than the file system allows. Whether the folder can be written (permissions, a
    read-only or full disk) is a separate check.

    Raises:
        ContinualError: one line naming the path and what is wrong.
    """
    text = os.fspath(path)
    if not text.strip():
        raise ContinualError(f"{option} '' is empty; give a folder (it is created if missing)")
    out = Path(text)
    _check_path_name(out, text, option)
    if out.is_symlink() and not out.exists():
        raise ContinualError(f"{option} {text!r} is a broken symbolic link; give a folder")
    if _is_dir(out) is False:
        raise ContinualError(f"{option} {text!r} is a file, not a folder; give a folder (it is created if missing)")
    return out


def check_out_file(path: str | os.PathLike, *, option: str = "--out") -> Path:
    """``path`` as a file a command writes (``pretrain --out``), once its name is known to be usable:
    not empty, not an existing folder, no part of the path a file, the name short enough.

    Raises:
        ContinualError: one line naming the path and what is wrong.
    """
    text = os.fspath(path)
    if not text.strip():
        raise ContinualError(f"{option} '' is empty; give a file name such as digits01.pt")
    out = Path(text)
    _check_path_name(out, text, option)
    if _is_dir(out) or text.endswith(("/", os.sep)) or out.name in ("", ".", ".."):
        raise ContinualError(f"{option} {text!r} is a folder; give a file name such as {os.path.join(text, 'pretrained.pt')}")
    check_file_name(out.parent, out.name, what=f"{option} {text!r}")
    return out


def check_file_name(folder: Path, name: str, *, what: str) -> None:
    """Refuse a file name that, with its temporary file's extra characters, is longer than the
    file system of ``folder`` allows; ``what`` names the setting that made it."""
    limit = _name_max(folder)
    size = len(os.fsencode(name)) + _TEMP_SUFFIX
    if size > limit:
        raise ContinualError(f"{what}: the file name {name[:40]!r}... would be {size} bytes with its temporary suffix; "
                             f"this file system allows {limit}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        raise ContinualError(f"{message} (see '{self.prog} --help')")


def _parse_sets(items: Sequence[str]) -> dict[str, str]:
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ContinualError(f"--set expects KEY=VALUE, got {item!r}")
        values[key.strip()] = value.strip()
    return values


def _progress(total: int, desc: str, quiet: bool):
    """A tqdm bar over experiences, and the trainer callback that advances it."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="exp", disable=True if quiet else None, leave=False, file=sys.stderr)

    def callback(event: str, info: dict) -> None:
        if event == "experience_end":
            bar.update(1)
            bar.set_postfix(acc=f"{100 * sum(info['row'][: info['index'] + 1]) / (info['index'] + 1):.1f}%")

    return bar, callback


def _run_saved(cfg, out: Path, threads: int | None, callbacks=(), workers: int = 1, log: tuple[list[str], Path] | None = None):
    """Run one configuration and save its result file as ``out/<result name>.json``; return the result.

    ``log``: logger names and their folder (``--log``, ``--log-dir``); the run logs under its
    result file's name stem (:mod:`continual.loggers`).

    The run checkpoints after every experience under ``out/.checkpoints/<name>``; the same
    command started again after a crash resumes there. The checkpoints go once the result is saved.
    It uses ``threads`` CPU threads, or its model's default within a ``1/workers`` share of the
    cores (:func:`continual.experiment.choose_threads`). It holds a lock on its checkpoint folder:
    the same run started in another process meanwhile stops with one line naming this one's pid.
    Temporary files a killed write left (of the result file, of checkpoints) are removed under the lock.
    """
    import shutil

    from .experiment import choose_threads, run, set_threads
    from .files import FolderLock, remove_temporaries
    from .loggers import close_all, make_loggers
    from .results import save_result

    resolved = cfg.resolve()
    set_threads(choose_threads(resolved.model, requested=threads, workers=workers))
    name = result_name(resolved)
    checkpoints = out / ".checkpoints" / name
    path = out / f"{name}.json"
    loggers = []
    try:
        with FolderLock(checkpoints, what=f"run {name}"):
            remove_temporaries(checkpoints)
            remove_temporaries(out, (path.name,))
            loggers = make_loggers(*log, run_name=name, epochs=resolved.epochs) if log else []
            result = run(cfg, callbacks=[*callbacks, *loggers], checkpoint_dir=checkpoints,
                         on_problem=lambda msg: print(f"continual: {msg}", file=sys.stderr))
            save_result(result, path)
            for logger in loggers:
                logger.finish(result)
            shutil.rmtree(checkpoints, ignore_errors=True)
    finally:
        close_all(loggers)
        try:
            checkpoints.parent.rmdir()  # only if empty (another run may be using it)
        except OSError:
            pass
    return result


def _run_in_worker(cfg, out: Path, threads: int | None, workers: int, log) -> dict:
    """:func:`_run_saved` in a pool worker -> ``{"result": ...}`` or ``{"error": one line}``."""
    from .errors import ContinualError

    try:
        return {"result": _run_saved(cfg, out, threads, workers=workers, log=log).to_dict()}
    except ContinualError as exc:
        return {"error": str(exc)}


def _report(result, path: Path) -> None:
    m = result.metrics
    print(f"{result.label:<14} seed {result.seed}: final acc {100 * m['final_average_accuracy']:5.1f}%  "
          f"forgetting {100 * m['average_forgetting']:5.1f}%  ({result.timings['wall']:.2f} s) -> {path}", file=sys.stderr)


def _warm_up() -> None:
    """A pool worker's first task: the imports every run needs, done while the parent prepares."""
    import continual.experiment  # noqa: F401  (torch, the models, the data)
    import continual.plot  # noqa: F401  (matplotlib)


def _pool(workers: int):
    """A pool of ``workers`` spawned processes (no forked torch threads), each already importing
    what a run needs (:func:`_warm_up`)."""
    import concurrent.futures as cf
    import multiprocessing

    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    for _ in range(workers):
        pool.submit(_warm_up)
    return pool


def _run_many(configs, out: Path, quiet: bool, threads: int | None = None, workers: int = 1, *,
              log: tuple[list[str], Path] | None = None, pool=None) -> list:
    """Run each configuration, save its result file (:func:`_run_saved`, which also takes ``log``),
    return the results in ``configs``' order.

    ``workers > 1`` runs them in a pool of that many processes (spawned: no forked torch threads),
    each run with its model's default threads within ``cores // workers`` (or ``threads``): the
    small models here use one thread each (``continual.experiment.THREADS``), so a pool is how
    they use a machine's other cores. A run that fails stops the command with its one-line error
    once the runs in flight end (their results are saved; a restart skips nothing but resumes
    none either: each run's checkpoints are removed only once its result is saved). ``pool``: an
    executor from :func:`_pool` to use (and leave open) instead of a new one. The runs are handed
    to the pool last first: the registry lists the costlier class-incremental methods last, and
    starting them early keeps every process busy to the end.
    """
    from .errors import ContinualError
    from .results import result_from_dict

    for cfg in configs:  # every file name checked before anything runs
        resolved = cfg.resolve()
        what = f"--label {resolved.label!r}" if resolved.label else f"strategy {resolved.strategy!r}"
        check_file_name(out, result_name(resolved) + ".json", what=what)
    if (workers > 1 or pool is not None) and len(configs) > 1:
        import concurrent.futures as cf
        import contextlib

        from tqdm import tqdm

        results: dict[int, object] = {}
        bar = tqdm(total=len(configs), desc=f"{len(configs)} runs, {workers} processes", unit="run",
                   disable=True if quiet else None, file=sys.stderr)
        with contextlib.ExitStack() as stack:
            if pool is None:
                pool = stack.enter_context(_pool(workers))
            futures = {pool.submit(_run_in_worker, configs[i], out, threads, workers, log): i for i in reversed(range(len(configs)))}
            try:
                for fut in cf.as_completed(futures):
                    reply = fut.result()
                    if "error" in reply:
                        raise ContinualError(reply["error"])
                    i = futures[fut]
                    results[i] = result_from_dict(reply["result"], f"run {i}")
                    bar.update(1)
                    if not quiet:
                        bar.clear()
                        _report(results[i], out / f"{result_name(configs[i].resolve())}.json")
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
            finally:
                bar.close()
        return [results[i] for i in range(len(configs))]
    results = []
    for cfg in configs:
        resolved = cfg.resolve()
        total = 1 if _schedule(cfg.strategy) == "joint" else resolved.num_experiences
        bar, callback = _progress(total, f"{resolved.label or resolved.strategy} seed {cfg.seed}", quiet)
        try:
            result = _run_saved(cfg, out, threads, callbacks=[callback], log=log)
        finally:
            bar.close()
        results.append(result)
        if not quiet:
            _report(result, out / f"{result_name(resolved)}.json")
    return results


def _run_batched(configs, out: Path, quiet: bool, threads: int | None, *, required: bool,
                 log: tuple[list[str], Path] | None = None) -> list | None:
    """Train the seeds together (:mod:`continual.batched`) and save each seed's result; ``None``
    when they should be trained one at a time instead.

    ``--batched auto`` batches on a CUDA device only: on a CPU the step of the MLPs here is bound
    by its matrix products, so 5 seeds batched cost what 5 runs cost (``benchmarks/batched.py``).
    ``--batched on`` batches wherever it can; a configuration it cannot batch says why in one
    line and trains one seed at a time.

    The seeds checkpoint together after every experience under
    ``out/.checkpoints/<first seed's result name>-batched<N>``; the same command started again
    after a crash resumes there (to the same results). The folder is locked while the run uses it
    (as :func:`_run_many` locks each run's) and removed once every seed's result is saved.

    ``log``: as :func:`_run_many`'s; each seed logs its own run (its own losses and rows, through
    :func:`continual.loggers.seed_callback`), as it would trained alone.
    """
    import shutil

    from .batched import batchable, run_batched
    from .experiment import choose_threads, resolve_device, set_threads
    from .files import FolderLock, remove_temporaries
    from .loggers import close_all, make_loggers, seed_callback
    from .results import save_result

    resolved = configs[0].resolve()
    if not required and resolve_device(resolved.device).type != "cuda":
        return None
    reason = batchable(configs[0])
    if reason is not None:
        print(f"continual: training the seeds one at a time: {reason}", file=sys.stderr)
        return None
    names = [result_name(c.resolve()) for c in configs]
    for name in names:
        check_file_name(out, name + ".json", what=f"seed {name.rsplit('seed', 1)[-1]}")
    set_threads(choose_threads(resolved.model, requested=threads))
    if not quiet:
        print(f"continual: training seeds {configs[0].seed}..{configs[-1].seed} together (batched)", file=sys.stderr)
    checkpoints = out / ".checkpoints" / f"{names[0]}-batched{len(configs)}"
    loggers: list[list] = []
    try:
        with FolderLock(checkpoints, what=f"batched run {checkpoints.name}"):
            remove_temporaries(checkpoints)
            remove_temporaries(out, tuple(f"{name}.json" for name in names))
            for name in names if log else ():
                loggers.append(make_loggers(*log, run_name=name, epochs=resolved.epochs))
            results = run_batched(configs[0], [c.seed for c in configs], checkpoint_dir=checkpoints,
                                  callbacks=[seed_callback(loggers)] if loggers else (),
                                  on_problem=lambda msg: print(f"continual: {msg}", file=sys.stderr))
            for name, result, seed_loggers in zip(names, results, loggers or [[]] * len(names)):
                save_result(result, out / f"{name}.json")
                for logger in seed_loggers:
                    logger.finish(result)
            shutil.rmtree(checkpoints, ignore_errors=True)
    finally:
        close_all(logger for seed_loggers in loggers for logger in seed_loggers)
        try:
            checkpoints.parent.rmdir()  # only if empty (another run may be using it)
        except OSError:
            pass
    for name, result in zip(names, results):
        path = out / f"{name}.json"
        if not quiet:
            m = result.metrics
            print(f"{result.label:<14} seed {result.seed}: final acc {100 * m['final_average_accuracy']:5.1f}%  "
                  f"forgetting {100 * m['average_forgetting']:5.1f}%  -> {path}", file=sys.stderr)
    return results


DEMO_MAX_WORKERS = 8  # the demo's default processes at most: each holds its own torch (peak RSS 0.7 GB after a split-digits run)


def _check_workers(workers: int | None) -> int | None:
    if workers is not None and not 1 <= workers <= 256:
        raise ContinualError(f"--workers {workers} is out of range: expected 1..256")
    return workers if workers is not None else 1


def result_name(resolved) -> str:
    """The file stem of a run's result: readable (benchmark, scenario, label, seed) plus the
    configuration's hash (:func:`continual.results.config_id`), so runs that differ in any other
    setting (lr, epochs, optimizer, a strategy's hyperparameter...) never share a file or a
    checkpoint folder, and the seeds of one configuration sort together."""
    from .results import config_id

    label = _slug(resolved.label or resolved.strategy)[:80]  # the hash keeps long labels apart
    return f"{_slug(resolved.benchmark)[:80]}_{resolved.scenario}_{label}_{config_id(resolved.to_dict())}_seed{resolved.seed}"


def _check_seeds(seeds: int, first: int = 0) -> None:
    from .experiment import MAX_SEEDS, SEED_MAX

    if not 1 <= seeds <= MAX_SEEDS:
        raise ContinualError(f"--seeds {seeds} is out of range: expected 1..{MAX_SEEDS}")
    if not 0 <= first <= SEED_MAX:
        raise ContinualError(f"seed={first} is out of range: expected in [0, {SEED_MAX}]")
    if first + seeds - 1 > SEED_MAX:
        raise ContinualError(f"--seed {first} with --seeds {seeds} is out of range: seeds run from --seed to --seed + --seeds - 1, "
                             f"each in 0..{SEED_MAX}")


def _schedule(strategy: str) -> str:
    from .strategies import get_strategy

    return get_strategy(strategy).schedule


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=," else "_" for c in text)


def cmd_run(args) -> int:
    from .experiment import RunConfig, parse_class_order, parse_ints
    from .loggers import check_loggers
    from .results import format_table, summarize

    out = check_out_dir(args.out)
    kinds = check_loggers(args.log)  # unknown names and missing extras: one line, before anything runs
    if args.log_dir is not None and not kinds:
        raise ContinualError(f"--log-dir {args.log_dir!r} without --log: add --log tensorboard, wandb or csv")
    log_dir = check_out_dir(args.log_dir, option="--log-dir") if args.log_dir is not None else out / "logs"
    log = (kinds, log_dir) if kinds else None
    sets = _parse_sets(args.set)
    base = RunConfig(
        benchmark=args.benchmark, strategy=args.strategy, scenario=args.scenario, num_experiences=args.num_experiences,
        class_order=parse_class_order(args.class_order), split=args.split, increments=parse_ints(args.increments, "--increments"),
        classes=parse_ints(args.classes, "--classes"), model=args.model, epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, optimizer=args.optimizer, momentum=args.momentum, weight_decay=args.weight_decay,
        lr_schedule=args.lr_schedule, milestones=parse_ints(args.milestones, "--milestones") or [], lr_decay=args.lr_decay,
        classifier=args.classifier, device=args.device, label=args.label, data_root=args.data_root, download=args.download,
        head=args.head, pretrained=args.pretrained, adapt_first=args.adapt_first, feature_cache=args.feature_cache, resize=args.resize,
        hidden=parse_ints(args.hidden, "--hidden"), normalise=args.normalise, compile=args.compile, seed=args.seed,
        validation=args.validation,
        online=args.online, eval_every=args.eval_every, train_passes=args.train_passes, boundaries=args.boundaries, blurry=args.blurry,
    ).override(sets)  # --set seed=N is the first seed too
    _check_seeds(args.seeds, base.seed)
    workers = _check_workers(args.workers)
    if base.label is None and base.params:
        base.label = base.strategy + "[" + ",".join(f"{k}={v}" for k, v in sorted(base.params.items())) + "]"
    base.resolve()  # check every name and value before anything runs
    configs = [base.override({"seed": base.seed + k}) for k in range(args.seeds)]
    check_writable(out)
    if log:
        check_writable(log_dir)
    results = None
    if args.batched != "off" and args.seeds > 1:
        results = _run_batched(configs, out, args.quiet, args.threads, required=args.batched == "on", log=log)
    if results is None:
        results = _run_many(configs, out, args.quiet, args.threads, workers, log=log)
    print(format_table(summarize(results)))
    _print_anytime(results, out)
    print(f"results: {Path(args.out).resolve()}")
    return 0


def _print_anytime(results, out: Path) -> None:
    """Online runs: A_AUC, AAA and WC-Acc per run, and the plot of accuracy against samples seen."""
    from .plot import save_anytime

    online = [r for r in results if isinstance(r.extra.get("anytime"), dict)]
    for r in online:
        m = r.metrics
        print(f"{r.label} seed {r.seed}: A_AUC {100 * m['anytime_accuracy_auc']:.1f}%  AAA {100 * m['average_anytime_accuracy']:.1f}%  "
              f"WC-Acc {100 * m['worst_case_accuracy']:.1f}%  ({len(r.extra['anytime']['samples'])} evaluation points)")
    if online:
        first = online[0]
        print(f"plot: {save_anytime(online, out / f'anytime_{_slug(first.benchmark)}_{_slug(first.label)}.png')}")


def cmd_pretrain(args) -> int:
    from .transfer import pretrain

    from .experiment import RunConfig

    check_out_file(args.out)
    RunConfig(benchmark=args.benchmark, model=args.model, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
              seed=args.seed, device=args.device).resolve()  # the same names and ranges as a run's, before training
    classes = None
    if args.classes is not None:
        try:
            classes = [int(c) for c in args.classes.split(",")]
        except ValueError:
            raise ContinualError(f"--classes {args.classes!r}: expected comma-separated labels like 0,1,2") from None
    from .benchmarks import get_benchmark
    from .experiment import choose_threads, set_threads

    set_threads(choose_threads(args.model or get_benchmark(args.benchmark).model, requested=args.threads))
    check_writable(Path(args.out).parent)
    source = pretrain(args.benchmark, args.out, classes=classes, model=args.model, epochs=args.epochs, lr=args.lr,
                      batch_size=args.batch_size, seed=args.seed, device=args.device)
    print(f"pretrained {args.model or 'the default model'} on {args.benchmark} classes {source['classes']} "
          f"({source['num_train']} training images): test accuracy {100 * source['test_accuracy']:.1f}% -> {args.out}")
    return 0


def demo_pretrained(out: Path, device: str, threads: int | None = None) -> tuple[Path, dict]:
    """The demo's checkpoint for the transfer baselines: the first experience's classes of the demo stream.

    Source: split-digits classes 0 and 1 (the stream's first experience), training split only, so
    no future class and no test image is seen; written to the demo folder (retrained each time, in about a second).
    """
    from .experiment import choose_threads, set_threads
    from .transfer import pretrain

    set_threads(choose_threads("mlp", requested=threads))  # the demo benchmark's model
    path = out / "pretrained_split-digits_classes0-1.pt"
    return path, pretrain(DEMO_BENCHMARK, path, classes=[0, 1], device=device, seed=0)


def _load_results(args) -> tuple[list, Path]:
    """The valid results under ``args.paths`` (bad files reported on stderr and skipped) and the
    output folder (``--out``, else the first folder given)."""
    from .results import find_results

    out = check_out_dir(args.out) if args.out is not None else None
    for text in args.paths:
        _check_path_name(Path(text), text, "results path")
    results, problems = find_results(args.paths)
    if not results:
        raise ContinualError(f"no valid results files found in {', '.join(args.paths)}" + (f" ({'; '.join(problems)})" if problems else ""))
    for p in problems:
        print(f"continual: skipped {p}", file=sys.stderr)
    first = Path(args.paths[0])
    return results, out if out is not None else (first if first.is_dir() else first.parent)


def _results_arguments(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("paths", nargs="+", help="results files or folders (searched recursively)")
    p.add_argument("--out", default=None, help=f"folder for {what} (default: the first folder given)")
    p.add_argument("--band", default="ci", choices=("ci", "std", "none"), help="band over seeds in the plots")


def cmd_plot(args) -> int:
    from .plot import save_figures

    results, out = _load_results(args)
    for path in save_figures(results, out, band=args.band):
        print(path)
    return 0


def cmd_sweep(args) -> int:
    from .sweep import Sweep, print_outcome, run_sweep

    from .experiment import choose_threads

    sweep = Sweep.from_file(args.file).override(_parse_sets(args.set))
    check_out_dir(sweep.out, option="the sweep's out")
    configs = sweep.configs(here=args.engine != "ray")  # every name and value checked before anything runs
    if args.threads is not None:
        choose_threads(None, requested=args.threads)
    from .loggers import check_loggers

    check_loggers(args.log)
    print(f"sweep {args.file}: {len(configs)} runs -> {sweep.out}", file=sys.stderr)
    if args.dry_run:
        from .sweep import run_dir

        for cfg in configs:
            print(f"{run_dir(sweep.out, cfg)}  {cfg.benchmark}/{cfg.scenario} {cfg.label or cfg.strategy} seed {cfg.seed}")
        return 0
    from tqdm import tqdm

    bar = tqdm(total=len(configs), desc="sweep", unit="run", disable=True if args.quiet else None, file=sys.stderr)
    show = print_outcome(len(configs)) if not args.quiet else None

    def on_outcome(o) -> None:
        bar.update(1)
        if show:
            bar.clear()
            show(o)

    try:
        outcomes = run_sweep(sweep, workers=args.workers, engine=args.engine, address=args.address, on_outcome=on_outcome,
                             threads=args.threads, batched=args.batched, log=args.log,
                             on_note=None if args.quiet else lambda msg: print(f"continual: {msg}", file=sys.stderr))
    finally:
        bar.close()
    failed = [o for o in outcomes if o.status == "failed"]
    busy = [o for o in outcomes if o.status == "busy"]
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    print(f"sweep finished: {counts['done']} run, {counts['skipped']} skipped, {counts['failed']} failed"
          + (f", {len(busy)} in progress in another process" if busy else "")
          + f"; compare with: continual compare {sweep.out}")
    for o in failed:
        print(f"continual: run {o.folder} failed: {o.error}", file=sys.stderr)
    for o in busy:
        print(f"continual: run {o.folder} is {o.error}", file=sys.stderr)
    if any(cfg.validation for cfg in configs):
        print(f"choose the configuration by validation accuracy, not test: continual compare {sweep.out} --rank-by validation")
    return 1 if failed or busy else 0


def cmd_compare(args) -> int:
    from .plot import save_figures
    from .results import atomic_write_text, format_csv, format_markdown, format_table, summarize
    from .validation import rank_rows

    results, out = _load_results(args)
    rows = summarize(results)
    if args.rank_by is not None:
        rows = rank_rows(rows, args.rank_by)  # best first
    settings = sorted({(r["benchmark"], r["scenario"]) for r in rows})
    for bench, scenario in settings:
        print(f"\n{bench} ({scenario}-incremental)")
        print(format_table([r for r in rows if (r["benchmark"], r["scenario"]) == (bench, scenario)]))
    atomic_write_text(out / "compare.md", format_markdown(rows))
    atomic_write_text(out / "compare.csv", format_csv(rows))
    figures = [p for p in save_figures(results, out, band=args.band) if p.name.startswith("curves_")]
    print(f"\nwrote {out / 'compare.md'}, {out / 'compare.csv'}, " + ", ".join(str(f) for f in figures))
    return 0


def cmd_demo(args) -> int:
    from .experiment import RunConfig
    from .plot import save_figures
    from .results import format_table, summarize
    from .strategies import STRATEGIES

    from .experiment import choose_threads

    if args.threads is not None:
        choose_threads(None, requested=args.threads)  # checked before anything runs
    out = check_out_dir(args.out)
    _check_seeds(args.seeds)
    RunConfig(benchmark=DEMO_BENCHMARK, device=args.device).resolve()  # the device, before anything runs
    workers = _check_workers(args.workers)
    if args.workers is None:  # a process per core: each MLP run takes one thread (no OpenMP threads to spin)
        from .experiment import available_cores

        workers = min(available_cores(), DEMO_MAX_WORKERS) if str(args.device) == "cpu" else 1
    print(f"continual demo: every strategy on {DEMO_BENCHMARK} (class-incremental, expanding head), {args.seeds} seeds, "
          f"device {args.device}, {workers} process{'es' if workers > 1 else ''}", file=sys.stderr)
    check_writable(out)
    import contextlib

    with contextlib.ExitStack() as stack:
        # the processes start (and import torch) while the backbone pretrains; they draw the figures too
        pool = stack.enter_context(_pool(workers)) if workers > 1 else None
        ckpt, source = demo_pretrained(out, args.device, args.threads)
        print(f"pretrained backbone for the transfer baselines: {DEMO_BENCHMARK} classes {source['classes']} "
              f"(the first experience, training split only) -> {ckpt}", file=sys.stderr)
        configs = [
            RunConfig(benchmark=DEMO_BENCHMARK, strategy=name, scenario="class", device=args.device, seed=seed,
                      pretrained=str(ckpt) if STRATEGIES[name].needs_pretrained else None)
            for name in STRATEGIES for seed in range(args.seeds)
        ]
        results = _run_many(configs, out, args.quiet, args.threads, workers, pool=pool)
        print(format_table(summarize(results)))
        figures = save_figures(results, out, executor=pool)
    print(f"accuracy-over-tasks plot: {figures[0]}")
    print(f"results and {len(figures) - 1} more figures: {out.resolve()}")
    return 0


def cmd_list(args) -> int:
    from .benchmarks import BENCHMARKS
    from .strategies import STRATEGIES

    print("benchmarks:")
    for b in BENCHMARKS.values():
        print(f"  {b.name:<18} {b.summary}")
        print(f"  {'':<18} scenarios: {', '.join(b.scenarios)}; {b.num_experiences} experiences; "
              f"model {b.model}, epochs {b.epochs}, lr {b.lr}, batch {b.batch_size}")
    from .user_data import FORMS, LAYOUT

    print(f"  {'your own data':<18} {FORMS}")
    print(f"  {'':<18} image folders: {LAYOUT}; an .npz: x_train, y_train, x_test, y_test (optional class_names)")
    print(f"  {'':<18} model convnet for colour images, mlp otherwise; epochs 10, lr 0.05, batch 32; "
          "5 experiences (split: at most one per class)")
    print("strategies:")
    for s in STRATEGIES.values():
        params = ", ".join(f"{k}={v}" for k, v in s.defaults.items())
        print(f"  {s.name:<18} {s.summary}" + (f" [{params}]" if params else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="continual", description="Continual-learning benchmarks: run, plot, demo, list.")
    parser.add_argument("--version", action="version", version=f"continual {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("run", help="run a strategy on a benchmark for one or more seeds")
    p.add_argument("--benchmark", default="split-digits", help="a benchmark name (see 'continual list'), or your own data: "
                   "split:PATH, permuted:PATH or rotated:PATH, PATH an image folder (root/<class>/<image>, or "
                   "root/train/... and root/test/...) or an .npz (x_train, y_train, x_test, y_test); options after "
                   "commas, e.g. split:/data/flowers,size=32")
    p.add_argument("--strategy", default="finetune", help="a strategy name (see 'continual list')")
    p.add_argument("--scenario", default=None, help="class, task or domain (default: the benchmark's)")
    p.add_argument("--num-experiences", type=int, default=None, help="default: the benchmark's")
    p.add_argument("--class-order", default=None, help="'random' (from the run's seed), 'icarl' (the field's order, "
                   "its own seed 1993) or comma-separated labels")
    p.add_argument("--split", default=None, metavar="BmIncn", help="B<first>-Inc<increment>, e.g. B50-Inc10: first classes, then "
                   "increment per experience (B0: an equal split); split benchmarks")
    p.add_argument("--increments", default=None, metavar="N,N,...", help="classes per experience, e.g. 3,2 or 50,10,10,10,10,10")
    p.add_argument("--classes", default=None, metavar="C,C,...", help="only these dataset labels, e.g. 0,1,2,3,4 (default: all)")
    p.add_argument("--model", default=None, help="mlp, convnet, resnet18, resnet18-full, resnet32, resnet18-torchvision, resnet50-torchvision "
                   "or vit-b16-torchvision (default: the benchmark's)")
    p.add_argument("--head", default=None, help="fixed, incremental, incremental-mask-past or multi "
                   "(default: incremental in the class scenario, fixed otherwise)")
    p.add_argument("--pretrained", default=None, metavar="PATH|imagenet|torchvision:ENUM",
                   help="the backbone's starting weights: a checkpoint ('continual pretrain'), or for a torchvision model "
                        "imagenet or torchvision:ResNet50_Weights.IMAGENET1K_V2 (from $TORCH_HOME; fetched only with --download)")
    p.add_argument("--resize", type=int, default=None, metavar="N", help="torchvision models: resize inputs to NxN inside the model")
    p.add_argument("--hidden", default=None, metavar="W,W,...", help="the MLP's hidden widths (default 400,400)")
    p.add_argument("--no-normalise", dest="normalise", action="store_false",
                   help="pixels scaled to [0, 1] only, without the dataset's mean/std normalisation")
    p.add_argument("--compile", action="store_true", help="train through torch.compile of the model (pays on CUDA; "
                   "on a CPU see benchmarks/compile.py)")
    p.add_argument("--adapt-first", action="store_true", help="train the backbone on the first experience only, then "
                   "run the strategy (first-session adaptation; stands in for --pretrained, or adapts it)")
    p.add_argument("--feature-cache", default="auto", help="auto (default: a frozen backbone's features are computed once "
                   "per experience, unless training augmentation is on), on (refuse a run it cannot apply to) or off")
    p.add_argument("--validation", type=float, default=0.0, metavar="F",
                   help="hold out a fraction F (0 < F < 1) of each experience's training data, class-stratified and seeded, "
                        "and record the accuracy matrix on it beside the test matrix (default 0: off)")
    p.add_argument("--online", action="store_true", help="online: one pass over the stream in small batches (default 10), "
                   "task boundaries hidden from the methods, anytime metrics (A_AUC, AAA, WC-Acc) and their plot")
    p.add_argument("--eval-every", type=int, default=None, metavar="K", help="online: evaluate every K samples on the classes "
                   "seen so far (default: at each experience's end only)")
    p.add_argument("--train-passes", type=int, default=1, metavar="N", help="online: updates per incoming batch (default 1)")
    p.add_argument("--boundaries", action="store_true", help="online: tell the methods where experiences end "
                   "(lets regularizers such as ewc run online)")
    p.add_argument("--blurry", default=None, metavar="PROTOCOL", help="i-blurry-N-M (N%% disjoint classes, M%% of the "
                   "others' samples in other experiences, e.g. i-blurry-50-10), si-blurry or si-blurry-N-M; split benchmarks")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (runs seed, seed+1, ...)")
    p.add_argument("--batched", default="auto", choices=("auto", "on", "off"),
                   help="train the seeds together in one process: auto (on CUDA only: on a CPU it does not pay, "
                        "benchmarks/batched.py), on, off; strategies it cannot batch train one seed at a time. "
                        "The seeds checkpoint together after each experience and a restarted command resumes them")
    p.add_argument("--workers", type=int, default=1, help="seeds trained one at a time run in this many parallel "
                   "processes (each with its model's threads within cores // workers)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--epochs", type=int, default=None, help="epochs per experience (default: the benchmark's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the benchmark's)")
    p.add_argument("--batch-size", type=int, default=None, help="training batch size (default: the benchmark's)")
    p.add_argument("--optimizer", default="sgd", help="sgd or adam")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=0.0, help="optimizer weight decay")
    p.add_argument("--lr-schedule", default="constant", help="constant, step (needs --milestones) or cosine, within each experience")
    p.add_argument("--milestones", default=None, metavar="E,E,...", help="epochs at which a step schedule multiplies the lr by --lr-decay")
    p.add_argument("--lr-decay", type=float, default=0.1, help="factor of each step milestone (default 0.1)")
    p.add_argument("--classifier", default=None, help="linear (the head's argmax), nme (nearest mean of exemplars) or both "
                   "(both matrices recorded); class-incremental; default: the strategy's (nme for iCaRL, else linear)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a strategy hyperparameter or config field")
    p.add_argument("--label", default=None, help="name shown in tables and plots (default: the strategy)")
    p.add_argument("--out", default="runs", help="folder for the results JSON files")
    p.add_argument("--log", action="append", default=[], metavar="KIND[,KIND]",
                   help="log each run to tensorboard, wandb and/or csv (repeat, or comma-separate: --log tensorboard,csv); "
                        "tensorboard and wandb are extras: pip install 'continual[tensorboard,wandb]'; WANDB_MODE=offline "
                        "logs without an account")
    p.add_argument("--log-dir", default=None, metavar="DIR", help="folder for the logs (default: <out>/logs): "
                   "csv/<run>.csv, tensorboard/<run>/, wandb/; <run> is the result file's name")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="folder searched first for dataset files; then $CONTINUAL_DATA, ~/.cache/continual, "
                        "system folders (/usr/share/datasets/fashion-mnist from apt-get install dataset-fashion-mnist)")
    p.add_argument("--download", action="store_true",
                   help="download missing dataset files (SHA-256 verified) into --data-root, $CONTINUAL_DATA or "
                        "~/.cache/continual, and torchvision weights into $TORCH_HOME; without it nothing is downloaded")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("pretrain", help="train a backbone on some classes of a benchmark's dataset and save it")
    p.add_argument("--benchmark", default="split-digits", help="the source dataset's benchmark (see 'continual list'; "
                   "also split:PATH on your own data)")
    p.add_argument("--classes", default=None, help="comma-separated source labels, e.g. ones held out of the stream (default: all)")
    p.add_argument("--model", default=None, help="the backbone (default: the benchmark's)")
    p.add_argument("--epochs", type=int, default=None, help="default: the benchmark's")
    p.add_argument("--lr", type=float, default=None, help="default: the benchmark's")
    p.add_argument("--batch-size", type=int, default=None, help="default: the benchmark's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="the checkpoint file to write")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("plot", help="draw curves and heatmaps from results files or folders")
    _results_arguments(p, "the PNGs")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("sweep", help="run a grid of configurations from a TOML file (finished runs are skipped)")
    p.add_argument("file", help="the sweep file (see continual.sweep for its format)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override out, seeds or a [base] field")
    p.add_argument("--workers", type=int, default=1, help="local engine: parallel processes")
    p.add_argument("--engine", default="local", choices=("local", "ray"), help="local (default) or ray")
    p.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray instance)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per run (default: the model's default within cores // workers; Ray: 1 per task)")
    p.add_argument("--batched", default="auto", choices=("auto", "on", "off"),
                   help="train the seeds of each configuration together in one process: auto (on CUDA only), on, off; "
                        "configurations it cannot batch train one seed at a time")
    p.add_argument("--log", action="append", default=[], metavar="KIND[,KIND]",
                   help="log every run to tensorboard, wandb and/or csv under <out>/logs (local engine)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their folders, run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("compare", help="table (mean ± 95%% CI over seeds), markdown/CSV and curves from results")
    _results_arguments(p, "compare.md/.csv and the PNGs")
    p.add_argument("--rank-by", default=None, choices=("test", "validation"),
                   help="order the rows by final average accuracy on the validation split (runs with --validation; how "
                        "to choose hyperparameters without the test set) or on the test split (default: no ranking)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("demo", help=f"every strategy on {DEMO_BENCHMARK}, 3 seeds, on CPU; table and plot")
    p.add_argument("--out", default="continual-demo", help="folder for results and figures")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--workers", type=int, default=None, help="runs in parallel processes (default: one per CPU core, at most 8, "
                   "on --device cpu, each run one thread; 1 otherwise)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("list", help="list benchmarks and strategies")
    p.set_defaults(func=cmd_list)
    return parser


def _show_warning(show):
    """``warnings.showwarning`` that prints a :class:`ContinualWarning` as one line."""
    from .errors import ContinualWarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, ContinualWarning):
            print(f"continual: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning(warnings.showwarning)
            args = build_parser().parse_args(argv)
            return args.func(args)
    except ContinualError as exc:
        print(f"continual: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("continual: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped (`| head`): not an error of the run
        sys.stdout = None  # nothing more reaches the closed pipe, and Python's exit flush stays quiet
        return 0
    except OSError as exc:  # a file error no check above turned into a ContinualError: still one line
        where = exc.filename if exc.filename is not None else "?"
        print(f"continual: error: {where}: {exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
