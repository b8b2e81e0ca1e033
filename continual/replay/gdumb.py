"""GDumb: A. Prabhu, P. H. S. Torr, P. K. Dokania, "GDumb: A Simple Approach that Questions Our
Progress in Continual Learning", ECCV 2020.

Two parts, as in the paper (Sec. 3):

- A greedy class-balanced sampler (Algorithm 1) fills a memory of ``k`` samples from the stream:
  a sample is added while the memory is not full; once it is full, a sample of class ``y`` is
  added only if ``y`` has fewer than ``k / |Y|`` stored samples (``|Y|`` the classes seen so far,
  ``y`` included), replacing a random stored sample of the currently largest class; otherwise it
  is skipped. Here: :class:`GreedyClassBalancedMemory`, run over each experience's training
  samples in ``experience_data``: one Python pass over the samples per experience on host
  integers (no tensor work per sample), then one vectorised write of the kept samples into the
  preallocated storage.
- Before each evaluation, a model trained from scratch on the memory only ("dumb learner"):
  ``before_experience`` re-initialises every parameter (each module's ``reset_parameters()``; the
  rows in use of a growing head as a fresh ``nn.Linear`` draws them), ``experience_data`` returns
  the memory as the training split, and ``rebuilds_optimizer`` gives a fresh optimizer. The
  trainer's own loop then trains on it for the run's epochs.

Choices:
    - Re-initialisation draws from the global RNG under ``torch.random.fork_rng`` seeded with
      ``seed * 1_000_003 + experience index``: reproducible, the same after a resume, and the run's
      own random stream is left untouched.
    - Within an experience the samples are offered to the sampler in a random order drawn from
      the memory's generator (a stream stores an experience's samples in whatever order its data
      had, possibly sorted by class). The random replacements use one uniform per offered sample,
      drawn up front from the same generator (saved with the memory).
    - Ties for the largest class go to the smallest label. The comparison ``count < k / |Y|`` is
      made exactly, in integers (``count * |Y| < k``).
    - As Algorithm 1 is written, a full and balanced memory takes no sample of a class it already
      holds its share of: in a domain-incremental stream (no new class after the first
      experience) the memory keeps the first experience's samples. That is the paper's sampler,
      not a bug; GDumb was evaluated on class- and task-incremental formulations.
    - Default ``mem=500``: the paper's MNIST formulation with ``k = 500`` (Table 3; the
      repository's ``scripts/replicate.sh`` also runs 300 and 4400). The bundled digits' training
      split has about 1400 samples, so the memory holds about a third of them.

Deviations (training details): the paper's dumb learner trains with SGD at a learning rate
annealed from 0.05 to 0.0005 with warm restarts (SGDR), batch 16, gradient clipping at 10,
weight decay 1e-6, 128 (MNIST) or 256 passes over the memory, and CutMix on images
(``src/opts.py``, ``scripts/replicate.sh`` of drimpossible/GDumb). Here the run's optimizer,
learning rate, schedule, batch size and epochs are used, with no clipping or CutMix. The paper's
class masking at test time (restricting the logits to the classes of the test sample's task, for
task-incremental formulations) is what the trainer's task scenario does already.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from ..errors import ContinualError
from ..models import IncrementalClassifier
from ..strategies import Range, Strategy, register
from ..streams import Experience
from ..trainer import Plugin
from .buffers import Buffer


def greedy_balanced_picks(stored: list[int], labels: list[int], capacity: int, uniforms: list[float],
                          seen: set[int] | None = None) -> tuple[list[int], set[int]]:
    """GDumb's sampler (Algorithm 1) on host integers: which sample each memory slot holds afterwards.

    Args:
        stored: the label in each filled slot ``0..len(stored)-1``.
        labels: the labels of the offered samples, in the order they are offered.
        capacity: ``k``.
        uniforms: one number in ``[0, 1)`` per offered sample, used when it replaces a sample.
        seen: classes seen before (default: those in ``stored``); updated copy returned.

    Returns:
        ``(slots, seen)``: ``slots[j]`` is ``-1`` when slot ``j`` keeps its sample, else the index of
        the offered sample now in it (``len(slots)`` is the new size); the classes seen.

    >>> greedy_balanced_picks([], [0, 0, 0, 1, 1, 2], 4, [0.0] * 6)[0]
    [4, 1, 5, 3]
    """
    seen = set(stored) if seen is None else set(seen)
    slots = [-1] * len(stored)
    label_of = list(stored)
    members: dict[int, list[int]] = {}  # class -> its slots
    for j, c in enumerate(stored):
        members.setdefault(c, []).append(j)
    for i, c in enumerate(labels):
        seen.add(c)
        if len(label_of) < capacity:
            members.setdefault(c, []).append(len(label_of))
            label_of.append(c)
            slots.append(i)
            continue
        if len(members.get(c, ())) * len(seen) >= capacity:  # count >= k / |Y|: skip
            continue
        largest = max(members, key=lambda g: (len(members[g]), -g))  # ties: the smallest label
        group = members[largest]
        r = min(int(uniforms[i] * len(group)), len(group) - 1)
        j = group[r]
        group[r] = group[-1]  # remove slot j from its class (order within a class does not matter)
        group.pop()
        if not group:
            del members[largest]
        members.setdefault(c, []).append(j)
        label_of[j] = c
        slots[j] = i
    return slots, seen


class GreedyClassBalancedMemory(Buffer):
    """GDumb's memory: ``capacity`` samples kept class-balanced by the greedy sampler (Algorithm 1).

    Filled per experience (:meth:`update`); storage is preallocated on the first update.

    Args:
        capacity: ``k``, the samples kept.
        device: storage device.
        seed: seeds the memory's generator (offering order, replacements).

    Example:
        >>> from continual import split, synthetic
        >>> mem = GreedyClassBalancedMemory(30)
        >>> mem.update(split(synthetic(num_features=4, seed=0), 5)[0])
        >>> len(mem), sorted(mem.counts().values())
        (30, [15, 15])
    """

    kind = "greedy class-balanced"

    def __init__(self, capacity: int, *, device: torch.device | str = "cpu", seed: int = 0) -> None:
        super().__init__(capacity, device=device, seed=seed)
        self.seen: set[int] = set()

    def update(self, experience: Experience, *, model: nn.Module | None = None) -> None:
        """Offer the experience's training samples to the memory, in a random order."""
        exp = experience.to(self.device)
        n = exp.num_train
        if n == 0:
            return
        if self.x is None:
            self._allocate(exp.x_train)
        order = torch.randperm(n, generator=self.generator, device=self.device)
        uniforms = torch.rand(n, generator=self.generator, device=self.device, dtype=torch.float64)
        labels = exp.y_train[order].tolist()  # one host transfer per experience
        stored = self.y[: self.size].tolist()
        slots, self.seen = greedy_balanced_picks(stored, labels, self.capacity, uniforms.tolist(), self.seen)
        slots_t = torch.tensor(slots, dtype=torch.long, device=self.device)
        write = (slots_t >= 0).nonzero().flatten()  # slots taking a new sample
        src = order[slots_t[write]]  # their samples in the experience
        self.x[write] = exp.x_train[src]
        self.y[write] = exp.y_train[src]
        self.t[write] = exp.t_train[src]
        self.size = len(slots)

    def counts(self) -> dict[int, int]:
        """Stored samples per class."""
        if self.size == 0:
            return {}
        c, n = self.y[: self.size].unique(return_counts=True)
        return dict(zip(c.tolist(), n.tolist()))

    def _extra_state(self) -> dict[str, Tensor]:
        return {"seen": torch.tensor(sorted(self.seen), dtype=torch.long)}

    def _load_extra_state(self, state: dict[str, Tensor]) -> None:
        self.seen = set(state["seen"].tolist())

    def report(self) -> dict:
        return {**super().report(), "per_class": {str(k): v for k, v in self.counts().items()}}


@torch.no_grad()
def reset_head_rows(head: IncrementalClassifier) -> None:
    """Re-draw the rows in use of ``head`` as a fresh ``nn.Linear(in_features, num_classes)`` would
    (weight and bias uniform in ``+-1/sqrt(in_features)``, ``kaiming_uniform_(a=sqrt(5))``), from the global RNG."""
    n = head.num_classes
    if n == 0:
        return
    fresh = nn.Linear(head.in_features, n, bias=head.bias is not None)
    head.weight[:n] = fresh.weight.to(head.weight)
    if head.bias is not None:
        head.bias[:n] = fresh.bias.to(head.bias)


@torch.no_grad()
def reinitialise(model: nn.Module, seed: int) -> None:
    """Re-initialise every parameter of ``model`` under a forked global RNG seeded with ``seed``.

    Each module's ``reset_parameters()`` (BatchNorm's also resets its running statistics); an
    :class:`IncrementalClassifier`'s rows in use by :func:`reset_head_rows`.

    Raises:
        ContinualError: naming a parameter that no module can re-initialise.
    """
    covered: set[int] = set()
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for module in model.modules():
            if isinstance(module, IncrementalClassifier):
                reset_head_rows(module)
            elif callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
            else:
                continue
            covered |= {id(p) for p in module.parameters()}
    missing = [name for name, p in model.named_parameters() if id(p) not in covered]
    if missing:
        raise ContinualError(f"GDumb cannot re-initialise {', '.join(missing[:5])}: no module holding it has reset_parameters()")


class GDumb(Plugin):
    """GDumb (Prabhu et al. 2020): a greedy class-balanced memory and a model trained from scratch on it.

    Args:
        memory: the greedy class-balanced memory.
        seed: the run's seed; the re-initialisation before experience ``i`` uses
            ``seed * 1_000_003 + i``.

    Attributes:
        buffer: the memory (what a nearest-mean classifier or the memory ledger reads).
    """

    name = "gdumb"
    rebuilds_optimizer = True  # a fresh optimizer for the re-initialised model at every experience

    def __init__(self, memory: GreedyClassBalancedMemory, *, seed: int = 0) -> None:
        self.buffer = memory
        self.seed = int(seed)

    def init_seed(self, index: int) -> int:
        return (self.seed * 1_000_003 + index) % (2**63)

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        reinitialise(model, self.init_seed(experience.index))
        return None

    def experience_data(self, experience: Experience) -> Experience:
        self.buffer.update(experience)
        mem = self.buffer.stored()
        classes = tuple(sorted(self.buffer.counts()))
        return replace(experience, x_train=mem.x, y_train=mem.y, t_train=mem.t, classes=classes)

    def state_dict(self) -> dict[str, Tensor]:
        return self.buffer.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.buffer.load_state_dict(state)

    def report(self) -> dict:
        return self.buffer.report()


def _gdumb_plugins(params: dict, context) -> list:
    return [GDumb(GreedyClassBalancedMemory(params["mem"], device=context.device, seed=context.seed), seed=context.seed)]


register(Strategy(
    "gdumb", "GDumb (Prabhu et al. 2020): greedy class-balanced memory, model retrained from scratch on it before each evaluation",
    defaults={
        "mem": 500,  # k, samples in memory (the paper's MNIST formulation, Table 3)
    },
    make_plugins=_gdumb_plugins,
    limits={"mem": Range(1)},
    past_classes=True,
    alone="gdumb trains a new model on its memory alone before each evaluation; it does not combine with other strategies",
))
