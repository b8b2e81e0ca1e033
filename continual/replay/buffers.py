"""Replay buffers: reservoir, class-balanced and experience-balanced memories, herding.

References:
    - Reservoir sampling: J. S. Vitter, "Random sampling with a reservoir", ACM TOMS 1985
      (algorithm R: the k-th sample seen, 0-based, enters a buffer of capacity C with probability
      C / (k + 1) and replaces a uniformly chosen slot).
    - Herding: S.-A. Rebuffi et al., "iCaRL: Incremental Classifier and Representation
      Learning", CVPR 2017 (Algorithm 4: exemplars chosen one by one so that their running mean
      of L2-normalised features best approximates the class mean; an exemplar set is reduced by
      keeping its first m).

Deviations and choices:
    - Reservoir insertion is vectorised per batch: one draw per sample, and when several samples
      of one batch pick the same slot the last one wins, exactly as the sequential algorithm R.
    - Herding follows the paper's Algorithm 4 (argmin of the distance between the class mean and
      the running exemplar mean, without picking a sample twice), not the iCaRL code's
      ``w += mu - phi`` iteration. Features come from ``model.features`` in eval mode (logits for
      a model without one). When a class comes back in a later experience (domain-incremental
      streams), herding runs over its current exemplars and the new samples together.
    - Balanced buffers are rebuilt at the end of each experience; with ``selection="random"``
      a class that comes back keeps a uniform random subset of all its samples seen so far (the
      number of new samples it keeps is drawn from the hypergeometric distribution).
    - Budgets: a balanced buffer keeps a fixed total shared out among the groups seen (iCaRL's
      ``mem=2000``) or, with ``per_class``/``per_group``, a fixed number per group.

Buffers are preallocated tensors (inputs in their stored dtype, labels, task ids, optionally
logits) allocated on the first insertion, when shapes and dtypes are known; they never grow.
Sampling uses the buffer's own seeded ``torch.Generator`` on the buffer's device, and no step
of the per-batch path (reservoir insertion, replay sampling) synchronises with the host.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ContinualError
from ..models import forward
from ..streams import Experience

IGNORE_LABEL = -100  # F.cross_entropy's default ignore_index
BufferKind = Literal["reservoir", "class-balanced", "experience-balanced"]
BUFFERS: tuple[str, ...] = get_args(BufferKind)
Selection = Literal["random", "herding"]
SELECTIONS: tuple[str, ...] = get_args(Selection)


def available_memory(device: torch.device | str) -> int | None:
    """Bytes that can still be allocated on ``device`` (``None`` when unknown).

    CUDA: the driver's free memory plus what PyTorch's caching allocator holds unused. CPU: the
    kernel's ``MemAvailable`` (``/proc/meminfo``), else free pages from ``os.sysconf``.
    """
    device = torch.device(device)
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
            return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
        except Exception:  # no driver, or a device that cannot be queried
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _size(num_bytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if num_bytes < 1000 or unit == "TB":
            return f"{num_bytes:.0f} {unit}" if unit == "bytes" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    return ""  # unreachable


def check_memory(num_bytes: int, device: torch.device | str, what: str, *, hint: str = "lower mem") -> None:
    """Refuse, in one line, to allocate ``num_bytes`` for ``what`` when ``device`` has less available.

    >>> check_memory(10**20, "cpu", "a buffer")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    continual.errors.ContinualError: a buffer needs 100000000.0 TB on cpu, but ...
    """
    free = available_memory(device)
    if free is not None and num_bytes > free:
        raise ContinualError(f"{what} needs {_size(num_bytes)} on {torch.device(device)}, but {_size(free)} is available; {hint}")


class Samples(NamedTuple):
    """A batch drawn from a buffer: inputs as stored, labels, task ids and stored logits (or ``None``)."""

    x: Tensor
    y: Tensor
    t: Tensor
    logits: Tensor | None


class Buffer:
    """Base class: fixed-capacity preallocated storage, seeded sampling, exact state round trips.

    Args:
        capacity: the number of samples the buffer holds at most.
        device: where the storage and the generator live (the training device).
        seed: seeds the buffer's generator.

    Subclasses decide which samples are kept (:meth:`add` per batch or :meth:`update` per
    experience).
    """

    kind = "buffer"
    _index_tensors = 2  # int64 entries stored per sample beside the input (label, task id)
    per_batch = False  # True: filled from each training batch (add); False: at the end of each experience (update)

    def __init__(self, capacity: int, *, device: torch.device | str = "cpu", seed: int = 0) -> None:
        if not (isinstance(capacity, int) and capacity > 0):
            raise ContinualError(f"buffer capacity={capacity!r} must be a positive integer")
        self.capacity = capacity
        self.device = torch.device(device)
        self.seed = seed
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.size = 0  # filled slots 0..size-1 (a host int: known without a device sync)
        self.x: Tensor | None = None
        self.y: Tensor | None = None
        self.t: Tensor | None = None
        self.logits: Tensor | None = None

    # ---------------------------------------------------------------- storage
    def _storage_names(self) -> tuple[str, ...]:
        return ("x", "y", "t", "logits")

    def _allocate(self, x: Tensor, logit_width: int | None = None) -> None:
        """Preallocate every storage tensor for ``capacity`` samples shaped like ``x[0]``.

        Raises:
            ContinualError: when the device has not the memory (checked before allocating), saying
                how much the buffer needs and how much is available.
        """
        C, dev = self.capacity, self.device
        per_sample = x[0].numel() * x.element_size() + 8 * self._index_tensors + 4 * (logit_width or 0)
        check_memory(C * per_sample, dev, f"a {self.kind} buffer of mem={C} samples ({per_sample} bytes each)")
        try:
            self.x = torch.zeros((C, *x.shape[1:]), dtype=x.dtype, device=dev)
            self.y = torch.zeros(C, dtype=torch.int64, device=dev)
            self.t = torch.zeros(C, dtype=torch.int64, device=dev)
            if logit_width is not None:
                self.logits = torch.full((C, logit_width), float("-inf"), device=dev)
        except RuntimeError as exc:  # out of memory after all (the check cannot see every limit)
            self.x = self.y = self.t = self.logits = None
            raise ContinualError(f"a {self.kind} buffer of mem={C} samples needs {_size(C * per_sample)} on {dev}, "
                                 f"which could not be allocated ({(str(exc).splitlines() or [''])[0][:120]}); lower mem") from None

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the storage tensors: exactly capacity x bytes per sample (0 before allocation)."""
        return sum(t.numel() * t.element_size() for t in self._tensors().values())

    def _tensors(self) -> dict[str, Tensor]:
        return {k: getattr(self, k) for k in self._storage_names() if getattr(self, k) is not None}

    def __len__(self) -> int:
        return self.size

    # --------------------------------------------------------------- sampling
    def sample(self, n: int) -> Samples | None:
        """Draw ``min(n, len(self))`` distinct stored samples uniformly; ``None`` when empty."""
        if self.size == 0 or n <= 0:
            return None
        idx = torch.randperm(self.size, generator=self.generator, device=self.device)[:n]
        return Samples(self.x[idx], self.y[idx], self.t[idx], None if self.logits is None else self.logits[idx])

    def add(self, x: Tensor, y: Tensor, t: Tensor, *, logits: Tensor | None = None) -> None:
        raise ContinualError(f"a {self.kind} buffer is filled at the end of each experience (update), not per batch")

    def update(self, experience: Experience, *, model: nn.Module | None = None) -> None:
        raise ContinualError(f"a {self.kind} buffer is filled from each batch (add), not per experience")

    def stored(self) -> Samples:
        """The filled part of the buffer (views, not copies)."""
        n = self.size
        if self.x is None:
            raise ContinualError("the buffer is empty: nothing has been stored yet")
        return Samples(self.x[:n], self.y[:n], self.t[:n], None if self.logits is None else self.logits[:n])

    # ------------------------------------------------------------------ state
    def _extra_state(self) -> dict[str, Tensor]:
        return {}

    def _load_extra_state(self, state: dict[str, Tensor]) -> None:
        return None

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only (loadable with ``torch.load(..., weights_only=True)``): storage, counters, generator."""
        state = {k: v.clone() for k, v in self._tensors().items()}
        state["capacity"] = torch.tensor(self.capacity)
        state["size"] = torch.tensor(self.size)
        state["generator"] = self.generator.get_state()
        state.update(self._extra_state())
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore a :meth:`state_dict`; future samples are then identical to the saved buffer's.

        Raises:
            ContinualError: when the capacity differs from this buffer's.
        """
        capacity = int(state["capacity"])
        if capacity != self.capacity:
            raise ContinualError(f"cannot load a buffer of capacity {capacity} into one of capacity {self.capacity}")
        for k in self._storage_names():
            setattr(self, k, state[k].to(self.device).clone() if k in state else None)
        self.size = int(state["size"])
        self.generator.set_state(state["generator"])
        self._load_extra_state(state)

    def report(self) -> dict:
        """JSON-able facts for the results: kind, capacity, filled size, memory in bytes."""
        per_sample = self.memory_bytes // self.capacity
        return {"buffer": self.kind, "capacity": self.capacity, "size": self.size,
                "memory_bytes": self.memory_bytes, "bytes_per_sample": per_sample}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(capacity={self.capacity}, size={self.size}, device={self.device})"


def _rows(mask: Tensor, like: Tensor) -> Tensor:
    """``mask`` (B,) shaped to broadcast over the rows of ``like`` (B, ...)."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


class ReservoirBuffer(Buffer):
    """A uniform sample of everything seen so far (Vitter's algorithm R), vectorised per batch.

    Args:
        capacity: samples kept.
        device: storage device.
        seed: seeds the buffer's generator.
        logit_width: store logits of this many classes (DER++); a narrower row is padded with -inf,
            which marks "not compared".

    Example:
        >>> buf = ReservoirBuffer(4, seed=0)
        >>> buf.add(torch.arange(10.0).view(10, 1), torch.arange(10), torch.zeros(10, dtype=torch.long))
        >>> len(buf), buf.num_seen, buf.memory_bytes  # 4 x (4 + 8 + 8) bytes
        (4, 10, 80)
    """

    kind = "reservoir"
    per_batch = True

    def __init__(self, capacity: int, *, device: torch.device | str = "cpu", seed: int = 0, logit_width: int | None = None) -> None:
        super().__init__(capacity, device=device, seed=seed)
        self.logit_width = logit_width
        self.num_seen = 0

    def add(self, x: Tensor, y: Tensor, t: Tensor, *, logits: Tensor | None = None) -> None:
        """Offer a batch to the reservoir (no per-sample Python, no host sync).

        Args:
            x: inputs as stored ``(B, ...)``; y, t: labels and task ids ``(B,)``.
            logits: ``(B, W)`` logits to store with the samples (DER++), ``W`` at most the
                buffer's logit width.
        """
        B = len(y)
        if B == 0:
            return
        x, y, t = x.to(self.device), y.to(self.device), t.to(self.device)
        if self.x is None:
            width = None if logits is None else max(self.logit_width or 0, logits.shape[1])
            self._allocate(x, width)
        if logits is not None:
            logits = self._pad_logits(logits.detach().to(self.device, torch.float32))
        C, n = self.capacity, self.num_seen
        if n + B <= C:  # still filling: every sample takes the next free slot
            sl = slice(n, n + B)
            self.x[sl], self.y[sl], self.t[sl] = x, y, t
            if logits is not None:
                self.logits[sl] = logits
        else:
            k = torch.arange(n, n + B, device=self.device)  # 0-based position of each sample in the stream
            u = torch.rand(B, dtype=torch.float64, generator=self.generator, device=self.device)
            j = torch.minimum((u * (k + 1)).long(), k)  # uniform in 0..k
            j = torch.where(k < C, k, j)  # the first C samples fill the buffer
            accept = j < C
            # Several samples of the batch may pick one slot: the last one wins, as in the sequential algorithm.
            pos = torch.arange(B, device=self.device)
            bins = torch.where(accept, j, C)
            winner = torch.full((C + 1,), -1, dtype=torch.long, device=self.device).scatter_reduce_(0, bins, pos, "amax")
            # Every write to a slot carries that slot's final value, so duplicate indices are harmless;
            # rejected samples rewrite slot 0 with its own final value (no data-dependent shapes).
            target = torch.where(accept, j, 0)
            src = winner[target]  # (B,) batch position whose sample ends in each target slot; -1: keep the old one
            keep = src < 0
            src = src.clamp(min=0)
            for name, new in (("x", x), ("y", y), ("t", t), ("logits", logits)):
                store = getattr(self, name)
                if store is None or new is None:
                    continue
                store[target] = torch.where(_rows(keep, store), store[target], new[src])
        self.num_seen = n + B
        self.size = min(self.num_seen, C)

    def _pad_logits(self, logits: Tensor) -> Tensor:
        W = self.logits.shape[1] if self.logits is not None else logits.shape[1]
        if logits.shape[1] > W:
            raise ContinualError(
                f"logits of width {logits.shape[1]} do not fit the buffer's logit width {W}; "
                f"build the buffer with logit_width >= the largest head (e.g. the stream's num_classes)"
            )
        if logits.shape[1] < W:
            logits = F.pad(logits, (0, W - logits.shape[1]), value=float("-inf"))
        return logits

    def _extra_state(self) -> dict[str, Tensor]:
        return {"num_seen": torch.tensor(self.num_seen)}

    def _load_extra_state(self, state: dict[str, Tensor]) -> None:
        self.num_seen = int(state["num_seen"])

    def report(self) -> dict:
        return {**super().report(), "num_seen": self.num_seen}


def herding(features: Tensor, m: int) -> Tensor:
    """Indices of ``m`` exemplars chosen by herding (iCaRL, Rebuffi et al. 2017, Algorithm 4).

    The k-th exemplar minimises ``|| mu - (phi(x) + sum_{j<k} phi(p_j)) / k ||`` over the samples not
    chosen yet, with ``phi`` the L2-normalised features and ``mu`` their mean. The result is in
    selection order, so its first ``m'`` entries are the exemplars herding picks for ``m' < m``.

    Args:
        features: ``(N, D)`` features of one class.
        m: how many exemplars, at most ``N``.

    Example:
        >>> herding(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), 2).tolist()
        [2, 0]
    """
    n = len(features)
    if not 0 <= m <= n:
        raise ContinualError(f"herding: cannot choose m={m} exemplars out of {n} samples")
    phi = F.normalize(features.float(), dim=1)  # (N, D)
    mu = phi.mean(0)  # (D,)
    running = torch.zeros_like(mu)
    taken = torch.zeros(n, dtype=torch.bool, device=phi.device)
    chosen = torch.empty(m, dtype=torch.long, device=phi.device)
    for k in range(1, m + 1):
        dist = (mu - (running + phi) / k).norm(dim=1).masked_fill(taken, float("inf"))  # (N,)
        i = dist.argmin()
        chosen[k - 1] = i
        taken[i] = True
        running += phi[i]
    return chosen


@torch.no_grad()
def embed(model: nn.Module, x: Tensor, t: Tensor, transform, *, batch_size: int = 1024) -> Tensor:
    """Features of stored inputs ``x`` (``model.features``, or logits for a model without one), in eval mode."""
    was_training = model.training
    model.eval()
    feats = []
    for s in range(0, len(x), batch_size):
        xb, tb = transform(x[s : s + batch_size]), t[s : s + batch_size]
        feats.append(model.features(xb) if callable(getattr(model, "features", None)) else forward(model, xb, tb))
    model.train(was_training)
    return torch.cat(feats).flatten(1)


def balanced_quotas(available: list[int], capacity: int) -> list[int]:
    """Equal shares of ``capacity`` over groups, capped by what each group has (water filling).

    Groups that have fewer samples than their share keep all of them and the rest is shared out
    again; the remainder of the division goes to the first groups, so shares differ by at most one.

    >>> balanced_quotas([100, 100, 100], 10), balanced_quotas([2, 100, 100], 10)
    ([4, 3, 3], [2, 4, 4])
    """
    quota = [0] * len(available)
    open_ = [g for g, a in enumerate(available) if a > 0]
    left = capacity
    while open_ and left > 0:
        share = left // len(open_)
        small = [g for g in open_ if available[g] <= share]
        if not small:
            for rank, g in enumerate(open_):
                quota[g] = share + (1 if rank < left - share * len(open_) else 0)
            break
        for g in small:
            quota[g] = available[g]
            left -= available[g]
        open_ = [g for g in open_ if g not in small]
    return quota


class _GroupBalancedBuffer(Buffer):
    """Equal share of the capacity per group, rebuilt at the end of each experience.

    Storage is kept with each group's samples contiguous and in priority order (herding order,
    or a random order), so shrinking a group keeps its first samples.

    Budget: a fixed total (``capacity`` samples shared out among the groups seen so far), or,
    with ``per_group``, a fixed number per group (the budget grows with the groups seen, up to
    the ``capacity`` allocated ahead).
    """

    def __init__(self, capacity: int, *, device: torch.device | str = "cpu", seed: int = 0, selection: Selection = "random",
                 per_group: int | None = None) -> None:
        super().__init__(capacity, device=device, seed=seed)
        if selection not in SELECTIONS:
            raise ContinualError(f"unknown selection {selection!r}; expected one of {', '.join(SELECTIONS)}")
        if per_group is not None and not (isinstance(per_group, int) and 1 <= per_group <= capacity):
            raise ContinualError(f"mem_per_class={per_group!r} must be a positive integer, at most the capacity {capacity}")
        self.selection = selection
        self.per_group = per_group
        self.seen: dict[int, int] = {}  # samples of each group offered so far

    def _groups(self, experience: Experience) -> Tensor:
        raise NotImplementedError

    def _stored_groups(self) -> Tensor:
        raise NotImplementedError

    def _write_groups(self, groups: Tensor) -> None:
        return None

    def update(self, experience: Experience, *, model: nn.Module | None = None) -> None:
        """Rebalance the buffer over every group seen so far, taking samples from ``experience``.

        Args:
            experience: the experience just trained on.
            model: the trained model (needed for herding).
        """
        if self.selection == "herding" and model is None:
            raise ContinualError("herding selection needs the model (update(experience, model=model))")
        exp = experience.to(self.device)
        if exp.num_train == 0:
            return
        if self.x is None:
            self._allocate(exp.x_train)
        new_groups = self._groups(exp)  # (N,)
        old_groups = self._stored_groups()  # (size,)
        keys = sorted(set(old_groups.unique().tolist()) | set(new_groups.unique().tolist()))
        old_idx = {g: (old_groups == g).nonzero().flatten() for g in keys}  # slots in priority order
        new_idx = {g: (new_groups == g).nonzero().flatten() for g in keys}
        budget = self.capacity if self.per_group is None else min(self.capacity, self.per_group * len(keys))
        quotas = balanced_quotas([len(old_idx[g]) + len(new_idx[g]) for g in keys], budget)
        take_old, take_new = [], []  # per group: slots to keep and experience samples to add, in layout order
        order = []  # per group: layout position r takes pick order[r] of (old picks + new picks)
        for g, q in zip(keys, quotas):
            o, nw = old_idx[g], new_idx[g]
            if len(nw) == 0:  # only shrinking: keep the first q
                take_old.append(o[:q])
                take_new.append(nw)
                continue
            if self.selection == "herding":
                cand_x = torch.cat([self.x[o], exp.x_train[nw]])  # current exemplars, then the new samples
                feats = embed(model, cand_x, torch.cat([self.t[o], exp.t_train[nw]]), exp.transform)
                pick = herding(feats, q)  # indices into old + new, in herding order
                is_old = pick < len(o)
                # Layout: the group's slots hold old picks then new picks; keep herding order via `order`.
                take_old.append(o[pick[is_old]])
                take_new.append(nw[pick[~is_old] - len(o)])
                herd_rank = torch.cat([is_old.nonzero().flatten(), (~is_old).nonzero().flatten()])  # of each pick as laid out
                order.append((g, torch.argsort(herd_rank)))
            else:
                k_new = self._new_share(g, len(o), len(nw), q)
                k_old = q - k_new
                take_old.append(o[:k_old])
                take_new.append(nw[torch.randperm(len(nw), generator=self.generator, device=self.device)[:k_new]])
                order.append((g, torch.randperm(q, generator=self.generator, device=self.device)))
        self._rebuild(keys, take_old, take_new, dict(order), exp, new_groups)
        for g in new_groups.unique().tolist():
            self.seen[g] = self.seen.get(g, 0) + int((new_groups == g).sum())

    def _new_share(self, group: int, stored: int, offered: int, quota: int) -> int:
        """How many of ``offered`` new samples a group keeps so that its ``quota`` is a uniform
        random subset of every sample it has seen: hypergeometric, the number of new samples
        among ``quota`` drawn without replacement from ``seen + offered``.

        Drawn as the count of new samples in the first ``quota`` places of a seeded permutation
        (an experience boundary, not the training step). The draw is bounded below by
        ``quota - stored``: a group shrunk earlier below its new quota (only when the integer
        remainder of the shares moves between groups) cannot give back samples it dropped.
        """
        seen = self.seen.get(group, 0)
        if seen == 0:
            return min(offered, quota)
        perm = torch.randperm(seen + offered, generator=self.generator, device=self.device)[:quota]
        drawn = int((perm >= seen).sum())
        return max(quota - stored, drawn)

    def _rebuild(self, keys, take_old, take_new, order, exp, new_groups) -> None:
        """Write each group's picks contiguously, in priority order, into the preallocated storage."""
        parts_x, parts_y, parts_t, parts_g = [], [], [], []
        old_g = self._stored_groups()
        for g, o, nw in zip(keys, take_old, take_new):
            xs = torch.cat([self.x[o], exp.x_train[nw]])
            ys = torch.cat([self.y[o], exp.y_train[nw]])
            ts = torch.cat([self.t[o], exp.t_train[nw]])
            gs = torch.cat([old_g[o], new_groups[nw]])
            if g in order:  # into priority order
                perm = order[g]
                xs, ys, ts, gs = xs[perm], ys[perm], ts[perm], gs[perm]
            parts_x.append(xs), parts_y.append(ys), parts_t.append(ts), parts_g.append(gs)
        n = sum(len(p) for p in parts_y)
        self.x[:n] = torch.cat(parts_x)  # temporaries at an experience boundary; the storage itself never grows
        self.y[:n] = torch.cat(parts_y)
        self.t[:n] = torch.cat(parts_t)
        self._write_groups(torch.cat(parts_g))
        self.size = n

    def _extra_state(self) -> dict[str, Tensor]:
        keys = sorted(self.seen)
        return {"seen_groups": torch.tensor(keys, dtype=torch.long), "seen_counts": torch.tensor([self.seen[k] for k in keys], dtype=torch.long)}

    def _load_extra_state(self, state: dict[str, Tensor]) -> None:
        self.seen = dict(zip(state["seen_groups"].tolist(), state["seen_counts"].tolist()))

    def group_counts(self) -> dict[int, int]:
        """How many stored samples each group has."""
        if self.size == 0:
            return {}
        g, c = self._stored_groups().unique(return_counts=True)
        return dict(zip(g.tolist(), c.tolist()))

    def report(self) -> dict:
        budget = f"{self.per_group} per class" if self.per_group is not None else f"{self.capacity} in total"
        return {**super().report(), "selection": self.selection, "budget": budget,
                "per_group": {str(k): v for k, v in self.group_counts().items()}}


class ClassBalancedBuffer(_GroupBalancedBuffer):
    """An equal share of the capacity for each class seen so far, re-balanced when new classes arrive.

    Filled at the end of each experience; ``selection="herding"`` picks each class's exemplars by
    herding on the model's features (iCaRL), ``"random"`` uniformly.

    Args:
        capacity: samples kept (with ``per_class``: the storage allocated ahead, e.g. the
            stream's classes times ``per_class``).
        device: storage device.
        seed: seeds the buffer's generator.
        selection: ``"random"`` or ``"herding"``.
        per_class: a fixed number of exemplars per class seen (iCaRL's "20 per class") instead
            of a fixed total shared out among them (``mem=2000``).

    Example:
        >>> buf = ClassBalancedBuffer(100, per_class=20)  # 20 per class, up to 5 classes
        >>> buf.per_group
        20
    """

    kind = "class-balanced"

    def __init__(self, capacity: int, *, device: torch.device | str = "cpu", seed: int = 0, selection: Selection = "random",
                 per_class: int | None = None) -> None:
        super().__init__(capacity, device=device, seed=seed, selection=selection, per_group=per_class)

    def _groups(self, experience: Experience) -> Tensor:
        return experience.y_train

    def _stored_groups(self) -> Tensor:
        return self.y[: self.size] if self.y is not None else torch.zeros(0, dtype=torch.long, device=self.device)


class ExperienceBalancedBuffer(_GroupBalancedBuffer):
    """An equal share of the capacity for each experience seen so far, chosen uniformly within it.

    Args:
        capacity: samples kept.
        device: storage device.
        seed: seeds the buffer's generator.
    """

    kind = "experience-balanced"

    def __init__(self, capacity: int, *, device: torch.device | str = "cpu", seed: int = 0, selection: Selection = "random") -> None:
        if selection != "random":
            raise ContinualError(f"selection {selection!r} is not available for an experience-balanced buffer; "
                                 f"use 'random' (herding works per class: buffer=class-balanced)")
        super().__init__(capacity, device=device, seed=seed, selection=selection)
        self.experience: Tensor | None = None  # each slot's experience index

    def _storage_names(self) -> tuple[str, ...]:
        return ("x", "y", "t", "logits", "experience")

    _index_tensors = 3  # label, task id, experience index

    def _allocate(self, x: Tensor, logit_width: int | None = None) -> None:
        super()._allocate(x, logit_width)
        self.experience = torch.zeros(self.capacity, dtype=torch.long, device=self.device)

    def _groups(self, experience: Experience) -> Tensor:
        return torch.full((experience.num_train,), experience.index, dtype=torch.long, device=self.device)

    def _stored_groups(self) -> Tensor:
        return self.experience[: self.size] if self.experience is not None else torch.zeros(0, dtype=torch.long, device=self.device)

    def _write_groups(self, groups: Tensor) -> None:
        self.experience[: len(groups)] = groups


def join_exemplars(experience: Experience, buffer: Buffer) -> Experience | None:
    """``experience`` with the buffer's stored samples appended to its training split: the
    protocol of iCaRL, LUCIR and DER, which train on the new data and the exemplars together
    rather than drawing a replay batch; ``None`` when the buffer is empty.

    >>> from continual import split, synthetic
    >>> e = split(synthetic(num_features=4, seed=0), 2)[0]
    >>> buf = ClassBalancedBuffer(10); buf.update(e)
    >>> join_exemplars(e, buf).num_train == e.num_train + 10, join_exemplars(e, ClassBalancedBuffer(10))
    (True, None)
    """
    if len(buffer) == 0:
        return None
    s = buffer.stored()
    dev = experience.x_train.device
    return replace(experience, x_train=torch.cat([experience.x_train, s.x.to(dev)]), y_train=torch.cat([experience.y_train, s.y.to(dev)]),
                   t_train=torch.cat([experience.t_train, s.t.to(dev)]))


def make_buffer(
    kind: str, capacity: int, *, selection: str = "random", device: torch.device | str = "cpu", seed: int = 0,
    logit_width: int | None = None, per_class: int | None = None,
) -> Buffer:
    """Build a buffer by name (``reservoir``, ``class-balanced``, ``experience-balanced``).

    ``per_class`` (class-balanced only) keeps that many exemplars per class seen instead of a
    fixed total; ``capacity`` is then the storage allocated ahead.

    Raises:
        ContinualError: for an unknown kind or selection, herding or a per-class budget with a
            buffer other than class-balanced.
    """
    if kind not in BUFFERS:
        raise ContinualError(f"unknown buffer {kind!r}; expected one of {', '.join(BUFFERS)}")
    if selection not in SELECTIONS:
        raise ContinualError(f"unknown selection {selection!r}; expected one of {', '.join(SELECTIONS)}")
    if selection == "herding" and kind != "class-balanced":
        raise ContinualError(f"selection 'herding' needs buffer=class-balanced (got buffer={kind!r})")
    if per_class is not None and kind != "class-balanced":
        raise ContinualError(f"mem_per_class={per_class} needs buffer=class-balanced (got buffer={kind!r})")
    if not (isinstance(capacity, int) and capacity > 0):
        raise ContinualError(f"mem={capacity!r} must be a positive integer")
    if kind == "reservoir":
        return ReservoirBuffer(capacity, device=device, seed=seed, logit_width=logit_width)
    if kind == "class-balanced":
        return ClassBalancedBuffer(capacity, device=device, seed=seed, selection=selection, per_class=per_class)
    return ExperienceBalancedBuffer(capacity, device=device, seed=seed)
