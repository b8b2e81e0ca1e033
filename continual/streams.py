"""Experiences and streams, and the builders for the three scenarios (van de Ven & Tolias 2019).

- class-incremental (``scenario="class"``): each experience brings new classes; no task id at
  test time; one head over every class seen so far.
- task-incremental (``scenario="task"``): the same split, but the task id is given at test time;
  logits are masked to the experience's classes (or a head per task is used).
- domain-incremental (``scenario="domain"``): every experience has the same label space and a
  shifted input distribution (:func:`permuted`, :func:`rotated`).

In :func:`split`, labels are renumbered by the class order, so the classes of experience 0 are
``0..k-1``, those of experience 1 come next, and so on (as Avalanche does for a fixed class
order); ``stream.class_order[new_label]`` is the original label.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

from .data import Dataset, Transform
from .errors import ContinualError

Scenario = Literal["class", "task", "domain"]
SCENARIOS: tuple[str, ...] = get_args(Scenario)


@dataclass(frozen=True, eq=False)
class Experience:
    """One unit of the stream: train and test tensors already on the training device.

    Attributes:
        index: 0-based position in the stream.
        classes: the labels present in this experience (after renumbering).
        task_id: the experience's task label (used at test time only in the task scenario).
        x_train, y_train, t_train: inputs as stored, int64 labels, int64 per-sample task ids.
        x_test, y_test, t_test: the same for the test split.
        transform: converts a batch of stored inputs into model inputs.
        scenario: the stream's scenario; in ``"task"`` the logits are masked to ``classes``
            (plugins that run the model on an experience, e.g. to estimate importances, use
            :meth:`mask_logits` to see what the trainer sees).
    """

    index: int
    classes: tuple[int, ...]
    task_id: int
    x_train: Tensor
    y_train: Tensor
    t_train: Tensor
    x_test: Tensor
    y_test: Tensor
    t_test: Tensor
    transform: Transform
    scenario: Scenario = "class"

    @property
    def num_train(self) -> int:
        return len(self.y_train)

    @property
    def num_test(self) -> int:
        return len(self.y_test)

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def mask_logits(self, out: Tensor, t: Tensor | None = None) -> Tensor:
        """``out`` ``(B, C)`` with each sample's logits outside its task's classes set to -inf in
        the task scenario (what the trainer does for a single-head model); unchanged otherwise.

        ``t`` holds the samples' task ids; without it every sample is masked to this
        experience's classes. A task's classes are read from this experience's training labels,
        so a concatenated (joint or cumulative) experience masks each sample to its own task.
        """
        if self.scenario != "task":
            return out
        if t is None:
            keep = torch.zeros(out.shape[1], dtype=torch.bool, device=out.device)
            keep[[c for c in self.classes if c < out.shape[1]]] = True
            return out.masked_fill(~keep, float("-inf"))
        cache = self.__dict__.setdefault("_task_mask", {})
        if out.device not in cache:
            num_tasks = int(self.t_train.max()) + 1
            mask = torch.zeros(num_tasks, max(int(self.y_train.max()) + 1, out.shape[1]), dtype=torch.bool, device=out.device)
            mask[self.t_train.to(out.device), self.y_train.to(out.device)] = True
            cache[out.device] = mask
        return out.masked_fill(~cache[out.device][t, : out.shape[1]], float("-inf"))

    def to(self, device: torch.device | str) -> Experience:
        """This experience with every tensor on ``device`` (itself if already there)."""
        device = torch.device(device)
        if self.x_train.device == device:
            return self
        move = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "t_train", "x_test", "y_test", "t_test")}
        return replace(self, **move)

    def __repr__(self) -> str:
        return (
            f"Experience(index={self.index}, classes={list(self.classes)}, task_id={self.task_id}, "
            f"train={self.num_train}, test={self.num_test}, device={self.device})"
        )


def concat(experiences: Sequence[Experience], *, index: int | None = None) -> Experience:
    """One experience holding the union of ``experiences`` (for joint and cumulative training).

    Per-sample task ids are kept, so task-incremental masking still applies sample by sample.
    """
    if not experiences:
        raise ContinualError("concat needs at least one experience")
    first = experiences[-1]
    cat = {k: torch.cat([getattr(e, k) for e in experiences]) for k in ("x_train", "y_train", "t_train", "x_test", "y_test", "t_test")}
    classes = tuple(sorted({c for e in experiences for c in e.classes}))
    return replace(first, index=first.index if index is None else index, classes=classes, **cat)


class Stream(Sequence[Experience]):
    """A sequence of experiences: ``len(stream)``, ``stream[-1]``, ``stream[:3]``, fresh iterators.

    Attributes:
        name: the benchmark's name.
        scenario: ``"class"``, ``"task"`` or ``"domain"``.
        num_classes: size of the label space of the whole stream.
        class_order: original label of each renumbered label (identity when not renumbered).
        class_names: the dataset's names of its original labels (indexed by original label), or
            ``None``; :meth:`experience_class_names` gives each experience's.
    """

    def __init__(
        self,
        experiences: Sequence[Experience],
        *,
        name: str,
        scenario: Scenario,
        num_classes: int,
        class_order: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if scenario not in SCENARIOS:
            raise ContinualError(f"unknown scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")
        self._experiences = tuple(experiences)
        self.name = name
        self.scenario: Scenario = scenario
        self.num_classes = num_classes
        self.class_order = tuple(class_order) if class_order is not None else tuple(range(num_classes))
        self.class_names = tuple(class_names) if class_names is not None else None

    def derive(self, experiences: Sequence[Experience], **changes) -> Stream:
        """A stream of other ``experiences`` (cut, moved, cached...) with this one's name, scenario,
        number of classes, class order and class names, except the ``changes`` given."""
        same = {"name": self.name, "scenario": self.scenario, "num_classes": self.num_classes,
                "class_order": self.class_order, "class_names": self.class_names}
        return Stream(experiences, **(same | changes))

    def experience_class_names(self) -> list[list[str]] | None:
        """Each experience's classes by name (through :attr:`class_order`), in the class and task
        scenarios when the dataset names its classes; ``None`` otherwise.

        >>> from continual.data import digits
        >>> split(digits(), 5).experience_class_names()[:2]
        [['0', '1'], ['2', '3']]
        """
        if self.class_names is None or self.scenario == "domain":
            return None
        names = self.class_names
        if any(not 0 <= self.class_order[c] < len(names) for e in self._experiences for c in e.classes):
            return None
        return [[names[self.class_order[c]] for c in e.classes] for e in self._experiences]

    def __len__(self) -> int:
        return len(self._experiences)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return self.derive(self._experiences[i])
        return self._experiences[i]

    def __iter__(self) -> Iterator[Experience]:
        return iter(self._experiences)  # a fresh iterator each time: nested loops do not interfere

    @property
    def num_tasks(self) -> int:
        return max(e.task_id for e in self._experiences) + 1 if self._experiences else 0

    def to(self, device: torch.device | str) -> Stream:
        """The stream with every experience on ``device``."""
        return self.derive([e.to(device) for e in self._experiences])

    def task_class_mask(self) -> Tensor:
        """Boolean ``(num_tasks, num_classes)``: which classes each task id may predict.

        In the task scenario logits are masked with this, per sample, in training and evaluation.
        """
        mask = torch.zeros(self.num_tasks, self.num_classes, dtype=torch.bool)
        for e in self._experiences:
            mask[e.task_id, list(e.classes)] = True
        return mask

    def __repr__(self) -> str:
        return (
            f"Stream(name={self.name!r}, scenario={self.scenario!r}, num_experiences={len(self)}, "
            f"num_classes={self.num_classes})"
        )


def _check_scenario(scenario: str, allowed: tuple[str, ...]) -> None:
    if scenario not in allowed:
        raise ContinualError(f"unknown scenario {scenario!r}; expected one of {', '.join(allowed)}")


# Class orders the field names, each a fixed seed of its own (never the run's seed):
# "icarl" is numpy.random.seed(1993); numpy.random.permutation(C), the order of iCaRL's code and of
# PyCIL (utils/data_manager.py, shuffle=True, seed=1993; FACIL hard-codes the same CIFAR-100 list).
# For CIFAR-100 it begins 68, 56, 78, 8, 23, 84, 90.
NAMED_ORDERS: dict[str, int] = {"icarl": 1993}
CLASS_ORDERS: tuple[str, ...] = ("random", *NAMED_ORDERS)


def _resolve_class_order(
    class_order: Sequence[int] | str | None, num_classes: int, seed: int
) -> list[int]:
    if class_order is None:
        return list(range(num_classes))
    if isinstance(class_order, str):
        if class_order in NAMED_ORDERS:
            return np.random.RandomState(NAMED_ORDERS[class_order]).permutation(num_classes).tolist()
        if class_order != "random":
            raise ContinualError(f"class_order {class_order!r} is not accepted; give a list of labels, "
                                 f"{', '.join(repr(o) for o in CLASS_ORDERS)} or None")
        return torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed)).tolist()
    order = [int(c) for c in class_order]
    if sorted(order) != list(range(num_classes)):
        raise ContinualError(
            f"class_order {order} must be a permutation of 0..{num_classes - 1} (each label exactly once)"
        )
    return order


def class_increments(num_classes: int, *, num_experiences: int | None = None, increments: Sequence[int] | None = None,
                     first: int | None = None, increment: int | None = None) -> list[int]:
    """How many classes each experience brings, from one of three descriptions.

    - ``num_experiences``: shared out as evenly as possible, earlier experiences taking the remainder;
    - ``increments``: the list itself (positive, summing to ``num_classes``);
    - ``increment`` (and ``first``): the class-incremental literature's "B*first* Inc*increment*":
      ``first`` classes, then ``increment`` per experience, a smaller last one taking what is
      left (PyCIL's ``DataManager``); ``first`` 0 or ``None`` is B0, an equal split.

    Raises:
        ContinualError: for none or several descriptions, or one that does not fit ``num_classes``.

    >>> class_increments(100, first=50, increment=10)
    [50, 10, 10, 10, 10, 10]
    >>> class_increments(10, num_experiences=3), class_increments(10, increment=4)
    ([4, 3, 3], [4, 4, 2])
    """
    if first is not None and increment is None:
        raise ContinualError(f"first={first} goes with increment= (B{first} Inc<increment>)")
    given = [k for k, v in (("num_experiences", num_experiences), ("increments", increments), ("increment", increment)) if v is not None]
    if len(given) != 1:
        raise ContinualError(f"give exactly one of num_experiences, increments or increment (B{{first}} Inc{{increment}}); got "
                             f"{', '.join(given) or 'none'}")
    if num_experiences is not None:
        if not 1 <= num_experiences <= num_classes:
            raise ContinualError(f"num_experiences={num_experiences} must be between 1 and the {num_classes} classes")
        return [len(g) for g in np.array_split(np.arange(num_classes), num_experiences)]
    if increments is not None:
        sizes = [int(k) for k in increments]
        if not sizes or any(k < 1 for k in sizes) or sum(sizes) != num_classes:
            raise ContinualError(f"increments={list(increments)} must be positive class counts summing to the {num_classes} classes")
        return sizes
    first = first or increment
    if not (1 <= increment <= num_classes and 1 <= first <= num_classes):
        raise ContinualError(f"B{first} Inc{increment} does not fit {num_classes} classes: both must be between 1 and {num_classes}")
    sizes = [first]
    while sum(sizes) + increment < num_classes:
        sizes.append(increment)
    if num_classes > sum(sizes):
        sizes.append(num_classes - sum(sizes))
    return sizes


_SPLIT = re.compile(r"^\s*B(\d+)\s*[-_ ]?\s*Inc(\d+)\s*$", re.IGNORECASE)


def parse_split(text: str) -> tuple[int, int]:
    """``"B50-Inc10"`` -> ``(50, 10)``: the class-incremental literature's name of a cut
    (*first* classes, then *increment* per experience; B0 is an equal split).

    >>> parse_split("B50-Inc10"), parse_split("b0inc5")
    ((50, 10), (0, 5))
    """
    m = _SPLIT.match(str(text))
    if m is None or int(m.group(2)) < 1:
        raise ContinualError(f"split={text!r} is not accepted; expected B<first>-Inc<increment> with increment >= 1, e.g. B50-Inc10 or B0-Inc2")
    return int(m.group(1)), int(m.group(2))


def split(
    dataset: Dataset,
    num_experiences: int | None = None,
    *,
    increments: Sequence[int] | None = None,
    first: int | None = None,
    increment: int | None = None,
    classes: Sequence[int] | None = None,
    scenario: Literal["class", "task"] = "class",
    class_order: Sequence[int] | str | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    name: str | None = None,
) -> Stream:
    """Cut a dataset into experiences of disjoint classes (Split MNIST style, or B*m* Inc*n*).

    Args:
        dataset: the dataset to cut.
        num_experiences: how many experiences; classes are shared out as evenly as possible,
            earlier experiences taking the remainder.
        increments: instead, the number of classes of each experience, e.g. ``[50, 10, 10, 10, 10, 10]``.
        first, increment: instead, "B*first* Inc*increment*" (see :func:`class_increments`).
        classes: only these labels of the dataset (e.g. ``[0, 1, 2, 3, 4]`` to grow a 3-class
            model to 5 with ``increments=[3, 2]``); they arrive in the order given, or in the
            class order's order when one is given. Default: every class.
        scenario: ``"class"`` (one head, no task id at test time) or ``"task"`` (experience ``i``
            has task id ``i``; logits are masked to its classes).
        class_order: the order in which classes arrive (over all the dataset's classes, then
            restricted to ``classes``): ``None`` for ``0..C-1``, ``"random"`` for
            a permutation drawn from ``seed``, a named order (``"icarl"``: the field's CIFAR-100
            order, with its own fixed seed 1993, whatever ``seed`` is), or an explicit permutation.
        seed: seeds the ``"random"`` class order.
        device: where the experiences' tensors live.
        name: the stream's name (default ``"split-<dataset>"``).

    Returns:
        A stream whose labels are renumbered by the class order.

    Raises:
        ContinualError: for a bad scenario, class order or cut into experiences.
    """
    _check_scenario(scenario, ("class", "task"))
    order = _resolve_class_order(class_order, dataset.num_classes, seed)
    if classes is not None:
        chosen = [int(c) for c in classes]
        bad = [c for c in chosen if not 0 <= c < dataset.num_classes]
        if not chosen or bad or len(set(chosen)) != len(chosen):
            raise ContinualError(f"classes={list(classes)} must be distinct labels of {dataset.name} in 0..{dataset.num_classes - 1}")
        order = [c for c in order if c in set(chosen)] if class_order is not None else chosen
    num_classes = len(order)
    sizes = class_increments(num_classes, num_experiences=num_experiences, increments=increments, first=first, increment=increment)
    relabel = torch.full((dataset.num_classes,), num_classes, dtype=torch.int64)  # classes left out: past every group
    relabel[torch.tensor(order)] = torch.arange(num_classes)
    y_train, y_test = relabel[dataset.y_train], relabel[dataset.y_test]
    groups = np.split(np.arange(num_classes), np.cumsum(sizes)[:-1])
    experiences = []
    for i, group in enumerate(groups):
        lo, hi = int(group[0]), int(group[-1]) + 1
        tr = (y_train >= lo) & (y_train < hi)
        te = (y_test >= lo) & (y_test < hi)
        task = i if scenario == "task" else 0
        experiences.append(
            Experience(
                index=i, classes=tuple(range(lo, hi)), task_id=task,
                x_train=dataset.x_train[tr].to(device), y_train=y_train[tr].to(device),
                t_train=torch.full((int(tr.sum()),), task, dtype=torch.int64, device=device),
                x_test=dataset.x_test[te].to(device), y_test=y_test[te].to(device),
                t_test=torch.full((int(te.sum()),), task, dtype=torch.int64, device=device),
                transform=dataset.transform, scenario=scenario,
            )
        )
    return Stream(
        experiences, name=name or f"split-{dataset.name}", scenario=scenario,
        num_classes=num_classes, class_order=order, class_names=dataset.class_names,
    )


def _domain_stream(dataset: Dataset, inputs: list[tuple[Tensor, Tensor]], name: str, device) -> Stream:
    num_classes = dataset.num_classes
    experiences = [
        Experience(
            index=i, classes=tuple(range(num_classes)), task_id=i,
            x_train=xtr.to(device), y_train=dataset.y_train.to(device),
            t_train=torch.full((len(xtr),), i, dtype=torch.int64, device=device),
            x_test=xte.to(device), y_test=dataset.y_test.to(device),
            t_test=torch.full((len(xte),), i, dtype=torch.int64, device=device),
            transform=dataset.transform, scenario="domain",
        )
        for i, (xtr, xte) in enumerate(inputs)
    ]
    return Stream(experiences, name=name, scenario="domain", num_classes=num_classes, class_names=dataset.class_names)


def permuted(
    dataset: Dataset,
    num_experiences: int,
    *,
    seed: int = 0,
    identity_first: bool = False,
    device: torch.device | str = "cpu",
    name: str | None = None,
) -> Stream:
    """Domain-incremental stream: each experience applies its own fixed pixel permutation.

    The permutations are drawn from ``seed`` and applied once, when the stream is built. By
    default every experience is permuted (as Avalanche's ``PermutedMNIST``); with
    ``identity_first=True`` the first experience is the unpermuted dataset (as in van de Ven's
    code). Task ids are the experience indices but are not given at test time.
    """
    if num_experiences < 1:
        raise ContinualError(f"num_experiences={num_experiences} must be at least 1")
    g = torch.Generator().manual_seed(seed)
    num_inputs = math.prod(dataset.input_shape)
    inputs = []
    for i in range(num_experiences):
        perm = torch.arange(num_inputs) if (identity_first and i == 0) else torch.randperm(num_inputs, generator=g)
        inputs.append(tuple(
            x.reshape(len(x), -1)[:, perm].reshape(x.shape) for x in (dataset.x_train, dataset.x_test)
        ))
    return _domain_stream(dataset, inputs, name or f"permuted-{dataset.name}", device)


def rotate(x: Tensor, degrees: float) -> Tensor:
    """Rotate a batch of images ``(N, C, H, W)`` by ``degrees`` about the centre (bilinear, zero fill).

    The result has the input's dtype (uint8 inputs are rounded back to uint8).
    """
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    affine = torch.tensor([[[cos, -sin, 0.0], [sin, cos, 0.0]]], dtype=torch.float32)  # (1, 2, 3)
    n, c, h, w = x.shape
    xf = x.reshape(1, n * c, h, w).float()  # every image as a channel of one: a single grid_sample
    grid = torch.nn.functional.affine_grid(affine, [1, n * c, h, w], align_corners=False)
    out = torch.nn.functional.grid_sample(xf, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out.reshape(n, c, h, w)
    if x.dtype == torch.uint8:
        return out.round().clamp(0, 255).to(torch.uint8)
    return out.to(x.dtype)


def rotated(
    dataset: Dataset,
    num_experiences: int,
    *,
    angles: Sequence[float] | Literal["random"] | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    name: str | None = None,
) -> Stream:
    """Domain-incremental stream: each experience rotates every image by a fixed angle.

    Args:
        angles: degrees per experience; ``None`` for ``num_experiences`` evenly spaced angles in
            ``[0, 180)``, ``"random"`` for angles drawn uniformly from ``[0, 180)`` with ``seed``.

    Rotations are applied once, when the stream is built.
    """
    if num_experiences < 1:
        raise ContinualError(f"num_experiences={num_experiences} must be at least 1")
    if len(dataset.input_shape) != 3:
        raise ContinualError(f"rotated needs images (C, H, W); dataset {dataset.name!r} has inputs of shape {dataset.input_shape}")
    if angles is None:
        angles = [180.0 * i / num_experiences for i in range(num_experiences)]
    elif isinstance(angles, str):
        if angles != "random":
            raise ContinualError(f"angles {angles!r} is not accepted; give a list of degrees, 'random' or None")
        angles = (torch.rand(num_experiences, generator=torch.Generator().manual_seed(seed)) * 180).tolist()
    angles = [float(a) for a in angles]
    if len(angles) != num_experiences:
        raise ContinualError(f"got {len(angles)} angles for num_experiences={num_experiences}; give one per experience")
    inputs = [(rotate(dataset.x_train, a), rotate(dataset.x_test, a)) for a in angles]
    return _domain_stream(dataset, inputs, name or f"rotated-{dataset.name}", device)
