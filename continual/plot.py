"""Figures from results: accuracy-over-tasks curves, per-experience curves, accuracy-matrix heatmaps,
the class-incremental curve (accuracy over all test samples seen, sample-weighted), and labelled
bars of a few accuracies (:func:`plot_bars`, the README's recipes), and online runs' anytime
accuracy against samples seen (:func:`plot_anytime`).

Every function draws into the ``ax`` it is given (or a new figure's) and returns the figure; none
calls ``plt.show()``. Curves over seeds show the mean and a band: by default the 95% confidence
interval of the mean from the t distribution (``band="ci"``); ``"std"`` (standard deviation) and
``"none"`` are also offered. The legend says which.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .errors import ContinualError  # noqa: E402
from .metrics import accuracy_curve, seen_accuracy_curve, t_quantile_975  # noqa: E402
from .results import Result, classifier_views, group_results  # noqa: E402

BANDS = ("ci", "std", "none")


def _axes(ax, size=(6, 4)):
    if ax is None:
        fig, ax = plt.subplots(figsize=size, layout="constrained")
        return fig, ax
    return ax.figure, ax


def _mean_band(curves: np.ndarray, band: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean over rows and the band's half-width (0 for one row or ``band="none"``)."""
    if band not in BANDS:
        raise ContinualError(f"unknown band {band!r}; expected one of {', '.join(BANDS)}")
    mean = curves.mean(axis=0)
    n = curves.shape[0]
    if n < 2 or band == "none":
        return mean, np.zeros_like(mean)
    std = curves.std(axis=0, ddof=1)
    if band == "std":
        return mean, std
    return mean, t_quantile_975(n - 1) * std / np.sqrt(n)


def _band_label(n: int, band: str) -> str:
    if n < 2 or band == "none":
        return f"n={n}"
    return f"mean ± {'95% CI' if band == 'ci' else 'std'}, n={n}"


def plot_accuracy_curves(results: Sequence[Result], *, ax=None, band: str = "ci", title: str | None = None):
    """Average accuracy on the experiences seen so far (A_k) against experiences trained, one line
    per strategy (label), mean over seeds with a band.

    Args:
        results: results of one benchmark and scenario (several strategies and seeds).
        ax: a matplotlib Axes to draw into (default: a new figure).
        band: ``"ci"`` (95% t interval of the mean), ``"std"`` or ``"none"``.
        title: the axes title (default: benchmark and scenario).
    """
    if not results:
        raise ContinualError("no results to plot")
    return _plot_curves(results, lambda r: accuracy_curve(r.acc_matrix), "average accuracy on experiences seen (%)",
                        ax=ax, band=band, title=title)


def plot_seen_accuracy_curves(results: Sequence[Result], *, ax=None, band: str = "ci", title: str | None = None):
    """The class-incremental curve: after each experience, the accuracy over all test samples of
    the experiences seen so far (sample-weighted, :func:`continual.metrics.seen_accuracy_curve`),
    one line per strategy (label), mean over seeds with a band. It equals
    :func:`plot_accuracy_curves` when every experience has as many test samples.

    Results without recorded test sizes (files written before they were) are left out.

    Args:
        results: results of one benchmark and scenario (several strategies and seeds).
        ax: a matplotlib Axes to draw into (default: a new figure).
        band: ``"ci"`` (95% t interval of the mean), ``"std"`` or ``"none"``.
        title: the axes title (default: benchmark and scenario).

    Raises:
        ContinualError: when no result has test sizes.
    """
    sized = [r for r in results if r.test_sizes]
    if not sized:
        raise ContinualError("no results with test sizes to plot (results written before they were recorded)")
    return _plot_curves(sized, lambda r: seen_accuracy_curve(r.acc_matrix, r.test_sizes),
                        "accuracy on all test samples seen (%)", ax=ax, band=band, title=title)


def _plot_curves(results: Sequence[Result], curve, ylabel: str, *, ax, band: str, title: str | None):
    """One line per label of ``curve(result)`` (a length-T array) against experiences trained."""
    groups = group_results(results)
    fig, ax = _axes(ax, size=(9, 4.5))
    colors = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20").colors
    markers = "osD^v<>ph*"
    seeds = sorted({len(g) for g in groups.values()})
    for k, ((bench, scenario, label), group) in enumerate(groups.items()):
        curves = np.stack([curve(r) for r in group])  # (seeds, T)
        mean, half = _mean_band(curves, band)
        x = np.arange(1, len(mean) + 1)
        color = colors[k % len(colors)]
        name = label if len(seeds) == 1 else f"{label} (n={len(group)})"
        ax.plot(x, 100 * mean, marker=markers[k % len(markers)], color=color, label=name)
        if half.any():
            ax.fill_between(x, 100 * (mean - half), 100 * (mean + half), color=color, alpha=0.15, linewidth=0)
    first = results[0]
    n = seeds[0] if len(seeds) == 1 else max(seeds)
    ax.set_title(title or f"{first.benchmark} ({first.scenario}-incremental), {_band_label(n, band)}")
    ax.set_xlabel("experiences trained")
    ax.set_ylabel(ylabel)
    ax.set_xticks(np.arange(1, len(first.acc_matrix) + 1))
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig


def plot_per_experience(results: Sequence[Result], *, ax=None, band: str = "ci", title: str | None = None):
    """Accuracy on each experience (one line each) from the random initialisation (x = 0) through
    every training step, mean over the given results (one strategy, several seeds). A line is
    labelled with its experience's class names when the results recorded them (the dataset names
    its classes: Fashion-MNIST's, a user's folders)."""
    if not results:
        raise ContinualError("no results to plot")
    fig, ax = _axes(ax)
    rows = np.stack([np.vstack([r.random_init, r.acc_matrix]) for r in results])  # (seeds, T+1, T)
    T = rows.shape[2]
    x = np.arange(T + 1)
    names = results[0].provenance.get("experience_classes") if isinstance(results[0].provenance, dict) else None
    for j in range(T):
        mean, half = _mean_band(rows[:, :, j], band)
        label = f"experience {j}"
        if isinstance(names, list) and len(names) == T and names[j]:
            label += ": " + textwrap.shorten(", ".join(map(str, names[j])), width=40, placeholder="...")
        (line,) = ax.plot(x, 100 * mean, marker=".", label=label)
        if half.any():
            ax.fill_between(x, 100 * (mean - half), 100 * (mean + half), color=line.get_color(), alpha=0.15, linewidth=0)
    r0 = results[0]
    ax.set_title(title or f"{r0.label} on {r0.benchmark} ({r0.scenario}), {_band_label(len(results), band)}")
    ax.set_xlabel("experiences trained (0 = random init)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(x)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return fig


def plot_accuracy_matrix(acc_matrix, *, ax=None, title: str | None = None):
    """Heatmap of an accuracy matrix (rows: after training on experience i; columns: tested on j),
    with each cell's value in percent."""
    R = 100 * np.asarray(acc_matrix, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1]:
        raise ContinualError(f"an accuracy matrix must be square; got shape {R.shape}")
    fig, ax = _axes(ax)
    im = ax.imshow(R, vmin=0, vmax=100, cmap="viridis")
    T = R.shape[0]
    for i in range(T):
        for j in range(T):
            ax.text(j, i, f"{R[i, j]:.0f}", ha="center", va="center", fontsize=8, color="white" if R[i, j] < 60 else "black")
    ax.set_xticks(range(T))
    ax.set_yticks(range(T))
    ax.set_xlabel("tested on experience j")
    ax.set_ylabel("after training on experience i")
    ax.set_title(title or "accuracy matrix (%)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def plot_bars(values: Mapping[str, float | None] | Mapping[str, Mapping[str, float | None]], *, ax=None,
              title: str | None = None, ylabel: str = "test accuracy (%)", chance: float | None = None):
    """Bars of accuracies (fractions, drawn in percent), each labelled with its value.

    ``values`` maps a name to an accuracy (one bar each), or a name to a mapping of accuracies
    (one group of bars per name, one colour per inner key, with a legend): e.g. per strategy, the
    old classes' accuracy before and after a step. ``None`` (not measured) leaves a gap.

    Args:
        values: ``{"frozen head": 0.86, ...}`` or ``{"replay": {"old": 0.9, "new": 1.0}, ...}``.
        ax: a matplotlib Axes to draw into (default: a new figure).
        title: the axes title.
        ylabel: the y-axis label.
        chance: an accuracy drawn as a dashed line labelled "chance (20%)" (e.g. 1 / number of classes).

    Returns:
        The figure.

    Raises:
        ContinualError: for no values, groups with no accuracies, or accuracies mixed with groups.

    >>> fig = plot_bars({"finetune": {"old": 0.0, "new": 1.0}, "replay": {"old": 0.9, "new": 0.98}}, chance=0.2)
    >>> [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    ['old', 'new', 'chance (20%)']
    """
    if not values:
        raise ContinualError("no values to plot")
    grouped = all(isinstance(v, Mapping) for v in values.values())
    if not grouped and any(isinstance(v, Mapping) for v in values.values()):
        raise ContinualError("values mixes accuracies and groups of accuracies; give one or the other")
    groups = {k: dict(v) for k, v in values.items()} if grouped else {"": dict(values)}
    series = list(dict.fromkeys(s for g in groups.values() for s in g))
    if not series:
        raise ContinualError("no accuracies to plot: every group is empty")
    names = list(groups) if grouped else series
    fig, ax = _axes(ax, size=(max(5.0, 0.55 * len(names) * (len(series) if grouped else 2) + 2.5), 4))
    width = 0.8 / len(series) if grouped else 0.6
    colors = plt.get_cmap("tab10").colors
    handles = []
    for k, s in enumerate(series if grouped else [""]):
        if grouped:
            x = np.arange(len(names)) + (k - (len(series) - 1) / 2) * width
            ys = [groups[n].get(s) for n in names]
        else:
            x, ys = np.arange(len(names)), [groups[""][n] for n in names]
        shown = [(xi, 100 * y) for xi, y in zip(x, ys) if y is not None]
        if not shown:
            continue
        bars = ax.bar(*zip(*shown), width=width, color=colors[k % len(colors)] if grouped else colors[0],
                      label=s if grouped else None)
        ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
        handles.append(bars)
    if chance is not None:
        handles.append(ax.axhline(100 * chance, color="gray", linestyle="--", linewidth=1, label=f"chance ({100 * chance:.0f}%)"))
    ax.set_xticks(np.arange(len(names)), [textwrap.fill(n, 18) for n in names], fontsize=9)
    ax.set_ylim(0, 110)  # room for the labels above 100%
    ax.set_yticks(np.arange(0, 101, 20))
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if grouped or chance is not None:
        handles = handles if grouped else handles[-1:]  # one colour per series, then the chance line
        ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig


def plot_anytime(results: Sequence[Result], *, ax=None, title: str | None = None):
    """Accuracy on the classes seen so far against training samples seen, one line per online run
    (its ``extra["anytime"]`` log, :mod:`continual.online`), with dotted lines at the experiences'
    ends; the legend gives each run's A_AUC, AAA and WC-Acc.

    Raises:
        ContinualError: when no result holds an anytime log (not an online run).
    """
    from .metrics import anytime_summary

    runs = [r for r in results if isinstance(r.extra.get("anytime"), dict)]
    if not runs:
        raise ContinualError("no result holds an anytime log; run with --online")
    fig, ax = _axes(ax, size=(7, 4))
    for r in runs:
        log = r.extra["anytime"]
        m = anytime_summary(log)
        label = (f"{r.label} seed {r.seed}: A_AUC {100 * m['anytime_accuracy_auc']:.1f}, AAA {100 * m['average_anytime_accuracy']:.1f}, "
                 f"WC-Acc {100 * m['worst_case_accuracy']:.1f}")
        ax.plot(log["samples"], 100 * np.asarray(log["seen_acc"]), marker=".", markersize=3, linewidth=1, label=label)
    for b in runs[0].extra["anytime"]["boundaries"][:-1]:
        ax.axvline(b, color="0.7", linestyle=":", linewidth=1)
    ax.set_xlabel("training samples seen")
    ax.set_ylabel("accuracy on the classes seen (%)")
    ax.set_ylim(0, 100)
    protocol = runs[0].config.get("blurry")
    ax.set_title(title or f"{runs[0].benchmark}{' ' + protocol if protocol else ''}, online: anytime accuracy "
                 "(dotted: experience ends)", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    return fig


def save_anytime(results: Sequence[Result], path: str | Path) -> Path:
    """Write :func:`plot_anytime` of ``results`` to the PNG ``path`` (atomically) and return it."""
    return _save(plot_anytime(results), Path(path))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def save_figures(results: Sequence[Result], out_dir: str | Path, *, band: str = "ci", executor=None) -> list[Path]:
    """Write the standard figures for ``results`` into ``out_dir`` and return their paths.

    Per benchmark and scenario: ``curves_<benchmark>_<scenario>.png`` (every strategy) and, when
    results recorded their test sizes, ``seen_<benchmark>_<scenario>.png`` (the class-incremental
    curve, :func:`plot_seen_accuracy_curves`); per strategy: ``experiences_...png`` and
    ``matrix_...png`` (mean over seeds). A result with extra evaluation classifiers is drawn as
    one strategy per classifier (``"replay (nme)"``, :func:`continual.results.classifier_views`).
    Each file is written atomically with the umask's mode (:func:`continual.files.atomic_write_bytes`).

    ``executor``: a :class:`concurrent.futures.Executor` (a process pool) that draws the figures
    in parallel (``continual demo`` passes its pool: drawing is about 0.3 s a figure, most of it
    matplotlib's layout and rendering); the files and their order are the same.

    Raises:
        ContinualError: ``out_dir`` (checked before any figure is drawn) or a figure cannot be
            written; one line naming the path and the cause.
    """
    from .files import check_writable

    out = check_writable(out_dir)  # a folder it cannot write is one line before any figure is drawn
    jobs: list[tuple[str, tuple, dict, Path]] = []  # (plot function, its arguments, the file)
    by_setting: dict[tuple[str, str], list[Result]] = {}
    for r in classifier_views(results):
        by_setting.setdefault((r.benchmark, r.scenario), []).append(r)
    for (bench, scenario), group in sorted(by_setting.items()):
        jobs.append(("plot_accuracy_curves", (group,), {"band": band}, out / f"curves_{_slug(bench)}_{scenario}.png"))
        if any(r.test_sizes for r in group):
            jobs.append(("plot_seen_accuracy_curves", (group,), {"band": band}, out / f"seen_{_slug(bench)}_{scenario}.png"))
        for (_, _, label), runs in group_results(group).items():
            stem = f"{_slug(bench)}_{scenario}_{_slug(label)}"
            jobs.append(("plot_per_experience", (runs,), {"band": band}, out / f"experiences_{stem}.png"))
            mean = np.mean([r.acc_matrix for r in runs], axis=0)
            jobs.append(("plot_accuracy_matrix", (mean,), {"title": f"{label} on {bench} ({scenario}), mean of {len(runs)} (%)"},
                         out / f"matrix_{stem}.png"))
        online = [r for r in group if isinstance(r.extra.get("anytime"), dict)]
        if online:  # online runs: accuracy against samples seen
            jobs.append(("plot_anytime", (online,), {}, out / f"anytime_{_slug(bench)}_{scenario}.png"))
    if executor is None:
        return [_draw(job) for job in jobs]
    return list(executor.map(_draw, jobs))


def _draw(job: tuple[str, tuple, dict, Path]) -> Path:
    """Draw one figure of :func:`save_figures` and write it (here or in a pool's process)."""
    name, args, kwargs, path = job
    return _save(PLOTS[name](*args, **kwargs), path)


def _save(fig, path: Path) -> Path:
    import io

    from .files import atomic_write_bytes

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=120)
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, buf.getbuffer())  # replaced whole or not at all; the umask's mode


PLOTS = {f.__name__: f for f in (plot_accuracy_curves, plot_seen_accuracy_curves, plot_per_experience, plot_accuracy_matrix,
                                 plot_anytime)}  # what save_figures draws, by name (a pool's jobs carry names)
