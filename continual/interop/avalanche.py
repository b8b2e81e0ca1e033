"""Avalanche interop: its benchmarks as our streams, our regularizers as its plugins, its metrics.

Reference: Lomonaco et al. 2021, "Avalanche: an End-to-End Library for Continual Learning"
(avalanche-lib, tested with 0.6). Needs the extra ``pip install 'continual[avalanche]'``
(avalanche-lib and torchvision); avalanche is imported on first use, never by ``import continual``.

- :func:`from_avalanche`: a classification benchmark (``train_stream``/``test_stream`` of
  experiences with a ``dataset``, ``classes_in_this_experience`` and task labels) becomes a
  :class:`~continual.Stream` with the same experiences, labels, class order and task ids. Each
  experience's datasets are read once, in large batches through a ``DataLoader``, with
  Avalanche's *eval* transforms (deterministic: random training augmentation is not reproduced),
  and kept on the device. Avalanche's transforms usually return normalised float tensors
  (``ToTensor`` + ``Normalize``), so the stream's :class:`~continual.Transform` is the identity;
  inputs that come out as uint8 stay uint8 and get ``Transform(scale=1/255)``. Give
  ``transform=`` to override.
- :func:`as_avalanche_plugin`: EWC, SI, MAS, L2, LwF (anything with ``penalty`` and
  ``consolidate``, also :func:`~continual.regularizers.combine`) as an Avalanche
  ``SupervisedPlugin``: the penalty is added to ``strategy.loss`` in ``before_backward``,
  ``after_step`` runs in ``after_update``, ``before_experience`` in ``before_training_exp`` and
  ``consolidate`` in ``after_training_exp`` on the experience converted by
  :func:`experience_from_avalanche`. Replay plugins (ER, DER++) are refused: they enlarge our
  trainer's batch, while Avalanche replays by replacing the strategy's data loader (use its
  ``ReplayPlugin``).
- :func:`accuracy_matrix_from_avalanche` / :func:`accuracy_matrix_to_avalanche`: the
  ``Top1_Acc_Exp/eval_phase/test_stream/TaskXXX/ExpYYY`` values ``strategy.eval`` returns after
  each training experience <-> an :class:`~continual.AccuracyMatrix`. Avalanche's stream
  forgetting is our ``average_forgetting(mode="first")`` and its BWT our ``backward_transfer``
  (both averaged over the experiences before the last); the tests check both.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import Tensor

from ..data import Transform
from ..errors import ContinualError
from ..metrics import AccuracyMatrix
from ..streams import SCENARIOS, Experience, Stream

INSTALL = "pip install 'continual[avalanche]'"


def _require() -> None:
    """Import avalanche, or a one-line :class:`ContinualError` naming the extra."""
    try:
        import avalanche  # noqa: F401
        import avalanche.training.plugins  # noqa: F401  (imports torchvision)
    except Exception as exc:  # ImportError: missing; RuntimeError: a torchvision built for another torch
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ContinualError(f"Avalanche interop needs avalanche-lib and a torchvision built for torch {torch.__version__}, "
                             f"which cannot be imported here ({type(exc).__name__}: {first}); install them with {INSTALL}") from None


# ------------------------------------------------------------------ benchmarks -> streams
def _materialise(dataset, *, batch_size: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor | None]:
    """Inputs, labels and (if the dataset yields them) task labels of ``dataset``, read once."""
    if hasattr(dataset, "eval"):
        dataset = dataset.eval()  # Avalanche's eval transform group: deterministic
    collate = getattr(dataset, "collate_fn", None)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate)
    xs, ys, ts = [], [], []
    for batch in loader:
        x, y = batch[0], batch[1]
        if not isinstance(x, Tensor):
            raise ContinualError(f"an experience yields inputs of type {type(x).__name__}; give the benchmark a transform "
                                 "that returns tensors (e.g. torchvision's ToTensor())")
        xs.append(x.to(device))
        ys.append(torch.as_tensor(y).to(device=device, dtype=torch.int64))
        if len(batch) > 2:
            ts.append(torch.as_tensor(batch[-1]).to(device=device, dtype=torch.int64))
    if not xs:
        return torch.empty(0, device=device), torch.empty(0, dtype=torch.int64, device=device), None
    return torch.cat(xs), torch.cat(ys), torch.cat(ts) if ts else None


def _task_labels(exp) -> list[int]:
    labels = getattr(exp, "task_labels", None)
    return [int(t) for t in labels] if labels is not None else [0]


def experience_from_avalanche(
    train_exp,
    test_exp=None,
    *,
    index: int | None = None,
    device: torch.device | str = "cpu",
    scenario: str = "class",
    transform: Transform | None = None,
    batch_size: int = 1024,
) -> Experience:
    """One Avalanche experience (and optionally its test counterpart) as an :class:`Experience`.

    Args:
        train_exp: an Avalanche training experience (``dataset``, ``classes_in_this_experience``,
            ``task_labels``).
        test_exp: the matching test experience; without it the test split is empty.
        index: the experience's position (default: its ``current_experience``).
        device: where the tensors go.
        scenario: ``"class"``, ``"task"`` or ``"domain"``.
        transform: the per-batch transform (default: see the module docstring).
        batch_size: samples per ``DataLoader`` batch while reading (speed only).

    Returns:
        The experience, labels and task ids as Avalanche gives them.
    """
    _require()
    if scenario not in SCENARIOS:
        raise ContinualError(f"unknown scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")
    device = torch.device(device)
    task_id = _task_labels(train_exp)[0]
    x_tr, y_tr, t_tr = _materialise(train_exp.dataset, batch_size=batch_size, device=device)
    if test_exp is not None:
        x_te, y_te, t_te = _materialise(test_exp.dataset, batch_size=batch_size, device=device)
    else:
        x_te, y_te, t_te = x_tr[:0], y_tr[:0], None
    if len(x_te) == 0 and len(x_tr):
        x_te = x_tr[:0]
    classes = getattr(train_exp, "classes_in_this_experience", None)
    classes = tuple(sorted(int(c) for c in classes)) if classes is not None else tuple(sorted(set(y_tr.tolist())))
    if transform is None:
        transform = Transform(scale=1 / 255) if x_tr.dtype == torch.uint8 else Transform()
    fill = lambda y, t: t if t is not None else torch.full_like(y, task_id)  # noqa: E731
    return Experience(
        index=int(getattr(train_exp, "current_experience", 0) if index is None else index), classes=classes,
        task_id=task_id, x_train=x_tr, y_train=y_tr, t_train=fill(y_tr, t_tr),
        x_test=x_te, y_test=y_te, t_test=fill(y_te, t_te), transform=transform, scenario=scenario,
    )


def _class_order(benchmark, num_classes: int) -> list[int]:
    """Original label of each label (Avalanche's ``class_mapping`` inverted); identity if not remapped."""
    mapping = getattr(benchmark, "class_mapping", None)
    if not mapping:
        return list(range(num_classes))
    order: list[int | None] = [None] * num_classes
    for original, new in enumerate(mapping):
        if 0 <= new < num_classes:
            order[new] = original
    if any(o is None for o in order) or sorted(order) != list(range(num_classes)):  # type: ignore[type-var]
        return list(range(num_classes))
    return order  # type: ignore[return-value]


def from_avalanche(
    benchmark,
    *,
    device: torch.device | str = "cpu",
    scenario: str | None = None,
    name: str | None = None,
    transform: Transform | None = None,
    batch_size: int = 1024,
) -> Stream:
    """An Avalanche classification benchmark as a :class:`Stream`, materialised once on ``device``.

    Labels are kept as Avalanche gives them (already renumbered by the class order if the
    benchmark was made with ``class_ids_from_zero_from_first_exp=True``; ``stream.class_order``
    then maps them back to the original labels). ``classes`` come from
    ``classes_in_this_experience`` and task ids from the experiences' task labels.

    Args:
        benchmark: e.g. ``SplitMNIST(5)``, ``SplitFMNIST(5)``, ``PermutedMNIST(10)`` or one made
            with ``nc_benchmark``; train and test streams of the same length, or a single test
            experience (``ni_benchmark``), whose tensors every experience then shares (all
            columns of the accuracy matrix are then the same test set).
        device: where the tensors live.
        scenario: default: ``"task"`` if the task labels differ across experiences, else
            ``"domain"`` if every experience (of two or more) has the same classes
            (``PermutedMNIST``), else ``"class"``.
        name: the stream's name (default ``"avalanche-<benchmark class>"``).
        transform: the per-batch transform (default: see the module docstring).
        batch_size: samples per ``DataLoader`` batch while reading (speed only).

    Returns:
        The stream.

    Raises:
        ContinualError: without avalanche, for a bad scenario, or streams of different lengths.
    """
    _require()
    train, test = list(benchmark.train_stream), list(benchmark.test_stream)
    shared = len(test) == 1 and len(train) > 1  # new-instances benchmarks: one test experience for all
    if len(train) != len(test) and not shared:
        raise ContinualError(f"the benchmark has {len(train)} training and {len(test)} test experiences; "
                             "expected as many of each, or a single test experience")
    if scenario is not None and scenario not in SCENARIOS:
        raise ContinualError(f"unknown scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")
    experiences = [
        experience_from_avalanche(tr, None if shared else te, index=i, device=device, transform=transform, batch_size=batch_size)
        for i, (tr, te) in enumerate(zip(train, test * len(train) if shared else test))
    ]
    if shared:
        x_te, y_te, t_te = _materialise(test[0].dataset, batch_size=batch_size, device=torch.device(device))
        t_te = t_te if t_te is not None else torch.full_like(y_te, _task_labels(test[0])[0])
        experiences = [replace(e, x_test=x_te, y_test=y_te, t_test=t_te) for e in experiences]  # the same tensors, not copies
    if scenario is None:
        if len({e.task_id for e in experiences}) > 1:
            scenario = "task"
        elif len(experiences) > 1 and len({e.classes for e in experiences}) == 1:
            scenario = "domain"
        else:
            scenario = "class"
    experiences = [replace(e, scenario=scenario) for e in experiences]
    top = max((int(y.max()) + 1 for e in experiences for y in (e.y_train, e.y_test) if len(y)), default=0)
    num_classes = max(int(getattr(benchmark, "n_classes", 0) or 0), top)
    return Stream(experiences, name=name or f"avalanche-{type(benchmark).__name__}", scenario=scenario,  # type: ignore[arg-type]
                  num_classes=num_classes, class_order=_class_order(benchmark, num_classes))


# ------------------------------------------------------------------ regularizers -> plugins
def _overrides(obj: object, hook: str) -> bool:
    """``obj`` really implements ``hook`` (not the trainer's no-op)."""
    from ..trainer import Plugin

    method = getattr(type(obj), hook, None)
    return method is not None and method is not getattr(Plugin, hook, None)


@functools.cache
def _plugin_class():
    from avalanche.training.plugins import SupervisedPlugin

    class RegularizerPlugin(SupervisedPlugin):
        """A ``continual`` regularizer inside an Avalanche strategy (see :func:`as_avalanche_plugin`).

        Attributes:
            regularizer: the wrapped regularizer.
            penalties: the mean penalty over each training experience's steps.
        """

        def __init__(self, regularizer, *, scenario: str, batch_size: int) -> None:
            super().__init__()
            self.regularizer = regularizer
            self.scenario = scenario
            self.batch_size = batch_size
            self.penalties: list[float] = []
            self._sum: Tensor | None = None
            self._steps = 0

        def _header(self, exp, device) -> Experience:
            """The experience without its data (classes and task id), for ``before_experience``."""
            empty = torch.empty(0, device=device)
            no_labels = torch.empty(0, dtype=torch.int64, device=device)
            task_id = _task_labels(exp)[0]
            classes = tuple(sorted(int(c) for c in getattr(exp, "classes_in_this_experience", ()) or ()))
            return Experience(index=int(getattr(exp, "current_experience", 0)), classes=classes, task_id=task_id,
                              x_train=empty, y_train=no_labels, t_train=no_labels, x_test=empty, y_test=no_labels,
                              t_test=no_labels, transform=Transform(), scenario=self.scenario)  # type: ignore[arg-type]

        def before_training_exp(self, strategy, *args, **kwargs):
            self._sum, self._steps = None, 0
            if _overrides(self.regularizer, "before_experience"):
                self.regularizer.before_experience(strategy.model, self._header(strategy.experience, strategy.device))

        def before_backward(self, strategy, *args, **kwargs):
            value = self.regularizer.penalty(strategy.model, x=strategy.mb_x, y=strategy.mb_y,
                                             t=strategy.mb_task_id, out=strategy.mb_output)
            if value is None:
                return
            strategy.loss = strategy.loss + value
            self._sum = value.detach() if self._sum is None else self._sum + value.detach()
            self._steps += 1

        def after_update(self, strategy, *args, **kwargs):
            if _overrides(self.regularizer, "after_step"):
                self.regularizer.after_step(strategy.model)

        def after_training_exp(self, strategy, *args, **kwargs):
            self.penalties.append(float(self._sum) / self._steps if self._sum is not None else 0.0)
            experience = experience_from_avalanche(strategy.experience, device=strategy.device,
                                                   scenario=self.scenario, batch_size=self.batch_size)
            self.regularizer.consolidate(strategy.model, experience)

    return RegularizerPlugin


def as_avalanche_plugin(regularizer, *, scenario: str = "class", batch_size: int = 1024):
    """Wrap a ``continual`` regularizer as an Avalanche ``SupervisedPlugin``.

    Args:
        regularizer: EWC, SI, MAS, L2, LwF or a :func:`~continual.regularizers.combine` of them
            (any object with ``penalty`` and ``consolidate``).
        scenario: the scenario of the experiences given to ``consolidate`` (``"task"`` masks the
            logits to the experience's classes while estimating importances).
        batch_size: samples per ``DataLoader`` batch while reading an experience to consolidate.

    Returns:
        The plugin; pass it in ``plugins=[...]`` of any Avalanche strategy. ``plugin.penalties``
        holds the mean penalty of each training experience.

    Raises:
        ContinualError: without avalanche, for a replay plugin, or an object that is not a regularizer.

    Example::

        ewc = EWC(1000.0, estimator="batched", convention="avalanche", batch_size=128)
        strategy = Naive(model, optimizer, criterion, plugins=[as_avalanche_plugin(ewc)])
    """
    _require()
    if scenario not in SCENARIOS:
        raise ContinualError(f"unknown scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")
    if hasattr(regularizer, "buffer") or _overrides(regularizer, "batch"):
        raise ContinualError(f"{type(regularizer).__name__} is a replay plugin, which does not map onto Avalanche's "
                             "data loader; use Avalanche's ReplayPlugin (accepted here: EWC, SI, MAS, L2, LwF, combine)")
    if not (callable(getattr(regularizer, "penalty", None)) and callable(getattr(regularizer, "consolidate", None))):
        raise ContinualError(f"{type(regularizer).__name__} is not a regularizer (it needs penalty and consolidate); "
                             "accepted: EWC, SI, MAS, L2, LwF, combine(...)")
    return _plugin_class()(regularizer, scenario=scenario, batch_size=batch_size)


# ------------------------------------------------------------------ metrics
ACC_KEY = re.compile(r"^Top1_Acc_Exp/eval_phase/(?P<stream>[^/]+)/Task(?P<task>\d+)/Exp(?P<exp>\d+)$")


def _row(result: Mapping[str, float], stream: str) -> dict[int, float]:
    row = {}
    for key, value in result.items():
        m = ACC_KEY.match(key)
        if m and m["stream"] == stream:
            row[int(m["exp"])] = float(value)
    return row


def accuracy_matrix_from_avalanche(
    results: Sequence[Mapping[str, float]],
    *,
    num_experiences: int | None = None,
    stream: str = "test_stream",
    random_init: Mapping[str, float] | None = None,
) -> AccuracyMatrix:
    """An :class:`AccuracyMatrix` from what ``strategy.eval(test_stream)`` returned after each
    training experience (row i: the dictionary after experience i).

    Only the per-experience accuracies ``Top1_Acc_Exp/eval_phase/<stream>/TaskXXX/ExpYYY``
    (``accuracy_metrics(experience=True)``) are read; other keys are ignored.

    Args:
        results: one dictionary per trained experience, in order (fewer than T leaves NaN rows).
        num_experiences: T (default: the largest experience index found, plus one).
        stream: the evaluated stream's name.
        random_init: the dictionary of an evaluation before training, for forward transfer.

    Raises:
        ContinualError: if a row lacks an experience's accuracy or there are more rows than T.

    >>> r = [{"Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp000": 0.9, "Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp001": 0.1},
    ...      {"Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp000": 0.5, "Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp001": 0.8}]
    >>> accuracy_matrix_from_avalanche(r).tolist()
    [[0.9, 0.1], [0.5, 0.8]]
    """
    rows = [_row(r, stream) for r in results]
    T = num_experiences or max((max(row) + 1 for row in rows if row), default=0)
    if T == 0:
        raise ContinualError(f"no Top1_Acc_Exp/eval_phase/{stream}/... accuracies found; evaluate with accuracy_metrics(experience=True)")
    if len(rows) > T:
        raise ContinualError(f"{len(rows)} evaluation results for {T} experiences; expected at most one per experience")
    acc = AccuracyMatrix(T)
    for i, row in enumerate(rows):
        missing = [j for j in range(T) if j not in row]
        if missing:
            raise ContinualError(f"evaluation result {i} has no accuracy for experience(s) {missing} of stream {stream!r}")
        acc.set_row(i, [row[j] for j in range(T)])
    if random_init is not None:
        row = _row(random_init, stream)
        if any(j not in row for j in range(T)):
            raise ContinualError(f"the random-init result lacks accuracies for some of the {T} experiences of {stream!r}")
        acc.set_random_init([row[j] for j in range(T)])
    return acc


def accuracy_matrix_to_avalanche(
    acc: AccuracyMatrix,
    *,
    task_ids: Sequence[int] | None = None,
    stream: str = "test_stream",
) -> list[dict[str, float]]:
    """Avalanche's per-experience accuracy dictionaries, one per complete row of ``acc``.

    Args:
        acc: the accuracy matrix.
        task_ids: the task label of each experience (default: 0 for all, class-incremental).
        stream: the stream name used in the keys.

    >>> m = AccuracyMatrix.from_rows([[0.9, 0.1], [0.5, 0.8]])
    >>> accuracy_matrix_to_avalanche(m)[1]["Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp001"]
    0.8
    """
    T = acc.num_experiences
    task_ids = list(task_ids) if task_ids is not None else [0] * T
    if len(task_ids) != T:
        raise ContinualError(f"task_ids has {len(task_ids)} entries for {T} experiences; give one per experience")
    out = []
    for i in range(T):
        if np.isnan(acc.values[i]).any():
            break
        out.append({f"Top1_Acc_Exp/eval_phase/{stream}/Task{task_ids[j]:03d}/Exp{j:03d}": float(acc.values[i, j]) for j in range(T)})
    return out


__all__ = ["INSTALL", "accuracy_matrix_from_avalanche", "accuracy_matrix_to_avalanche", "as_avalanche_plugin",
           "experience_from_avalanche", "from_avalanche"]
