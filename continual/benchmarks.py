"""Named benchmarks: a dataset, how it is cut into a stream, and the defaults it is run with.

``continual list`` prints them. Each records its scenarios, its number of experiences, its default
model and training hyperparameters; :func:`make_stream` builds the stream.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from . import data, streams
from .errors import ContinualError
from .streams import Stream


@dataclass(frozen=True)
class Benchmark:
    """A named stream recipe and its defaults.

    Attributes:
        name: the registry name (``--benchmark NAME``).
        summary: one line for ``continual list``.
        load: returns the dataset (may read files; never downloads unless asked).
        kind: ``"split"``, ``"permuted"`` or ``"rotated"``: which builder cuts the dataset.
        scenarios: the scenarios it supports; the first is the default.
        num_experiences: default number of experiences.
        model: default model name; epochs, lr, batch_size: default training hyperparameters.
        num_classes: the dataset's number of classes, if known before it is loaded (a split
            stream has at most that many experiences; a class order is a permutation of them).
    """

    name: str
    summary: str
    load: Callable[..., data.Dataset]
    kind: str
    scenarios: tuple[str, ...]
    num_experiences: int
    model: str = "mlp"
    epochs: int = 1
    lr: float = 0.01
    batch_size: int = 32
    num_classes: int | None = None

    @property
    def default_scenario(self) -> str:
        return self.scenarios[0]

    @property
    def max_experiences(self) -> int | None:
        """The most experiences the benchmark can be cut into (``None``: no limit)."""
        return self.num_classes if self.kind == "split" else None  # permuted/rotated: any number


BENCHMARKS: dict[str, Benchmark] = {}


def register(benchmark: Benchmark) -> Benchmark:
    """Add a benchmark to the registry (its name must be new)."""
    if benchmark.name in BENCHMARKS:
        raise ContinualError(f"a benchmark named {benchmark.name!r} is already registered")
    BENCHMARKS[benchmark.name] = benchmark
    return benchmark


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark called ``name``, or one on the user's own data for ``split:PATH``,
    ``permuted:PATH`` or ``rotated:PATH`` (an image folder or an .npz, :mod:`continual.user_data`,
    read once per process); a clear error listing the names and forms otherwise."""
    from . import user_data

    if isinstance(name, str) and name in BENCHMARKS:
        return BENCHMARKS[name]
    if user_data.is_spec(name):
        return user_data.benchmark(name)
    raise ContinualError(f"unknown benchmark {name!r}; expected one of {', '.join(BENCHMARKS)}, or {user_data.FORMS}")


def _loader_kwargs(bench: Benchmark, *, root, download: bool, **load_kwargs) -> dict:
    """``load_kwargs`` plus ``root``/``download`` where given and the loader takes them (bundled data takes neither)."""
    accepted = inspect.signature(bench.load).parameters
    for key, value in (("root", root), ("download", download)):
        if value and key in accepted:
            load_kwargs[key] = value
        elif key == "download" and value:
            raise ContinualError(f"benchmark {bench.name!r} uses bundled data; there is nothing to download")
    unknown = [k for k in load_kwargs if k not in accepted]
    if unknown:
        raise ContinualError(f"benchmark {bench.name!r} does not take {', '.join(unknown)}; its loader takes "
                             f"{', '.join(accepted) or 'no arguments'}")
    return load_kwargs


def make_stream(
    name: str,
    *,
    scenario: str | None = None,
    num_experiences: int | None = None,
    seed: int = 0,
    class_order: str | list[int] | None = None,
    increments: list[int] | None = None,
    split: str | None = None,
    classes: list[int] | None = None,
    device: torch.device | str = "cpu",
    root: str | None = None,
    download: bool = False,
    **load_kwargs,
) -> Stream:
    """Build the named benchmark's stream on ``device``.

    Args:
        name: a registered benchmark.
        scenario: one of the benchmark's scenarios (default: its first).
        num_experiences: default: the benchmark's.
        seed: seeds permutations, random angles and a ``"random"`` class order.
        class_order: split benchmarks only: ``None`` (standard order), ``"random"``, ``"icarl"`` or a list.
        increments: split benchmarks only: classes per experience (instead of ``num_experiences``).
        split: split benchmarks only: ``"B<first>-Inc<increment>"`` (instead of ``num_experiences``).
        classes: split benchmarks only: the labels used (default: all).
        device: where the tensors live.
        root: a folder searched first for file-based datasets (``--data-root``); ignored by
            benchmarks on bundled data.
        download: file-based datasets only: download (SHA-256 verified) when not found.
        **load_kwargs: passed to the dataset loader (e.g. ``augment=False`` for CIFAR).
    """
    bench = get_benchmark(name)
    scenario = scenario or bench.default_scenario
    if scenario not in bench.scenarios:
        raise ContinualError(f"benchmark {name!r} has no scenario {scenario!r}; expected one of {', '.join(bench.scenarios)}")
    cut = {"increments": increments, "split": split, "classes": classes}
    given = [k for k, v in cut.items() if v is not None]
    if bench.kind != "split" and (given or class_order is not None):
        raise ContinualError(f"{', '.join(given + (['class_order'] if class_order is not None else []))} applies to split "
                             f"benchmarks only; {name!r} is {bench.kind}")
    dataset = bench.load(**_loader_kwargs(bench, root=root, download=download, **load_kwargs))
    if bench.kind == "split":
        first, increment = streams.parse_split(split) if split is not None else (None, None)
        if increments is not None or split is not None:
            if increments is not None and split is not None:
                raise ContinualError(f"give increments={increments} or split={split!r}, not both")
            num_experiences = None
        else:
            num_experiences = num_experiences or bench.num_experiences
        return streams.split(dataset, num_experiences, increments=increments, first=first, increment=increment, classes=classes,
                             scenario=scenario, class_order=class_order, seed=seed, device=device, name=name)
    num_experiences = num_experiences or bench.num_experiences
    if bench.kind == "permuted":
        return streams.permuted(dataset, num_experiences, seed=seed, device=device, name=name)
    if bench.kind == "rotated":
        return streams.rotated(dataset, num_experiences, seed=seed, device=device, name=name)
    raise ContinualError(f"benchmark {name!r} has unknown kind {bench.kind!r}")


register(Benchmark(
    "split-digits", "scikit-learn's 8x8 digits (bundled), 5 experiences of 2 classes",
    load=data.digits, kind="split", scenarios=("class", "task"), num_experiences=5,
    num_classes=10, model="mlp", epochs=10, lr=0.05, batch_size=32,
))
register(Benchmark(
    "permuted-digits", "8x8 digits (bundled), each experience with its own pixel permutation",
    load=data.digits, kind="permuted", scenarios=("domain",), num_experiences=5,
    num_classes=10, model="mlp", epochs=10, lr=0.05, batch_size=32,
))
register(Benchmark(
    "rotated-digits", "8x8 digits (bundled), each experience rotated by a further 36 degrees",
    load=data.digits, kind="rotated", scenarios=("domain",), num_experiences=5,
    num_classes=10, model="mlp", epochs=10, lr=0.05, batch_size=32,
))

# File-based benchmarks. Files are searched for in --data-root, $CONTINUAL_DATA, ~/.cache/continual
# and system folders (see continual.data); --download fetches them (SHA-256 verified).
# Standard class orders: labels 0..C-1 in order (Split MNIST: 0/1, 2/3, ..., as van de Ven & Tolias
# 2019); --class-order random gives a seeded shuffled order.
# MNIST-like: MLP 784-400-400 (van de Ven & Tolias 2019); one epoch at batch 10 for the split
# streams, batch 128 for permuted/rotated (the epochs and batch sizes of DER, Buzzega et al. 2020).
# The learning rates are ours for plain SGD without momentum (DER tunes them per method).
for _name, _load, _title in (("mnist", data.mnist, "MNIST"), ("fmnist", data.fashion_mnist, "Fashion-MNIST")):
    _where = " (apt-get install dataset-fashion-mnist, or --download)" if _name == "fmnist" else " (--download or --data-root)"
    register(Benchmark(
        f"split-{_name}", f"{_title}{_where}, 5 experiences of 2 classes (0/1, 2/3, ...)",
        load=_load, kind="split", scenarios=("class", "task"), num_experiences=5,
        num_classes=10, model="mlp", epochs=1, lr=0.03, batch_size=10,
    ))
    register(Benchmark(
        f"permuted-{_name}", f"{_title}, each experience with its own fixed pixel permutation (GEM and DER use 20)",
        load=_load, kind="permuted", scenarios=("domain",), num_experiences=10,
        num_classes=10, model="mlp", epochs=1, lr=0.1, batch_size=128,
    ))
    register(Benchmark(
        f"rotated-{_name}", f"{_title}, experience i rotated by 180*i/N degrees (GEM and DER use 20)",
        load=_load, kind="rotated", scenarios=("domain",), num_experiences=10,
        num_classes=10, model="mlp", epochs=1, lr=0.1, batch_size=128,
    ))

# CIFAR: the binary distributions; training batches get random crop (padding 4) and flip on the
# device. The papers' backbone is a (reduced) ResNet-18; the default here is the small ConvNet.
register(Benchmark(
    "split-cifar10", "CIFAR-10 (binary; --download or --data-root), 5 experiences of 2 classes; papers use ResNet-18",
    load=data.cifar10, kind="split", scenarios=("class", "task"), num_experiences=5,
    num_classes=10, model="convnet", epochs=50, lr=0.1, batch_size=32,  # epochs and batch of DER's Seq-CIFAR-10
))
register(Benchmark(
    "split-cifar100", "CIFAR-100 (binary), 10 experiences of 10 classes; papers use ResNet-18",
    load=data.cifar100, kind="split", scenarios=("class", "task"), num_experiences=10,
    num_classes=100, model="convnet", epochs=50, lr=0.1, batch_size=32,
))
register(Benchmark(
    "split-cifar100-20", "CIFAR-100 (binary), 20 experiences of 5 classes, task-incremental, a single pass "
    "(GEM, A-GEM, ER; reduced ResNet-18 there)",
    load=partial(data.cifar100, augment=False), kind="split", scenarios=("task", "class"), num_experiences=20,
    num_classes=100, model="convnet", epochs=1, lr=0.03, batch_size=10,  # single pass, batch 10, lr 0.03, no augmentation (A-GEM, ER)
))
