"""Named benchmarks: a dataset, how it is cut into a stream, and the defaults it is run with.

``continual list`` prints them. Each records its scenarios, its number of experiences, its default
model and training hyperparameters; :func:`make_stream` builds the stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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

    @property
    def default_scenario(self) -> str:
        return self.scenarios[0]


BENCHMARKS: dict[str, Benchmark] = {}


def register(benchmark: Benchmark) -> Benchmark:
    """Add a benchmark to the registry (its name must be new)."""
    if benchmark.name in BENCHMARKS:
        raise ContinualError(f"a benchmark named {benchmark.name!r} is already registered")
    BENCHMARKS[benchmark.name] = benchmark
    return benchmark


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark called ``name``; a clear error listing the names otherwise."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ContinualError(f"unknown benchmark {name!r}; expected one of {', '.join(BENCHMARKS)}") from None


def make_stream(
    name: str,
    *,
    scenario: str | None = None,
    num_experiences: int | None = None,
    seed: int = 0,
    class_order: str | list[int] | None = None,
    device: torch.device | str = "cpu",
    **load_kwargs,
) -> Stream:
    """Build the named benchmark's stream on ``device``.

    Args:
        name: a registered benchmark.
        scenario: one of the benchmark's scenarios (default: its first).
        num_experiences: default: the benchmark's.
        seed: seeds permutations, random angles and a ``"random"`` class order.
        class_order: split benchmarks only: ``None`` (standard order), ``"random"`` or a list.
        device: where the tensors live.
        **load_kwargs: passed to the dataset loader (e.g. ``root``, ``download`` for file-based data).
    """
    bench = get_benchmark(name)
    scenario = scenario or bench.default_scenario
    if scenario not in bench.scenarios:
        raise ContinualError(f"benchmark {name!r} has no scenario {scenario!r}; expected one of {', '.join(bench.scenarios)}")
    num_experiences = num_experiences or bench.num_experiences
    dataset = bench.load(**load_kwargs)
    if bench.kind == "split":
        return streams.split(dataset, num_experiences, scenario=scenario, class_order=class_order, seed=seed, device=device, name=name)
    if class_order is not None:
        raise ContinualError(f"class_order applies to split benchmarks only; {name!r} is {bench.kind}")
    if bench.kind == "permuted":
        return streams.permuted(dataset, num_experiences, seed=seed, device=device, name=name)
    if bench.kind == "rotated":
        return streams.rotated(dataset, num_experiences, seed=seed, device=device, name=name)
    raise ContinualError(f"benchmark {name!r} has unknown kind {bench.kind!r}")


register(Benchmark(
    "split-digits", "scikit-learn's 8x8 digits (bundled), 5 experiences of 2 classes",
    load=data.digits, kind="split", scenarios=("class", "task"), num_experiences=5,
    model="mlp", epochs=10, lr=0.05, batch_size=32,
))
register(Benchmark(
    "permuted-digits", "8x8 digits (bundled), each experience with its own pixel permutation",
    load=data.digits, kind="permuted", scenarios=("domain",), num_experiences=5,
    model="mlp", epochs=10, lr=0.05, batch_size=32,
))
register(Benchmark(
    "rotated-digits", "8x8 digits (bundled), each experience rotated by a further 36 degrees",
    load=data.digits, kind="rotated", scenarios=("domain",), num_experiences=5,
    model="mlp", epochs=10, lr=0.05, batch_size=32,
))
