"""The replay plugins and strategies: ER, ER-ACE and DER++ (and ``ewc+replay``).

References:
    - ER: A. Chaudhry et al., "On Tiny Episodic Memories in Continual Learning", 2019 (each
      training batch is joined by a replay batch drawn from a small episodic memory; the joined
      batch's mean cross-entropy is minimised).
    - ER-ACE: L. Caccia et al., "New Insights on Reducing Abrupt Representation Change in Online
      Continual Learning", ICLR 2022 (the asymmetric cross-entropy: the incoming samples' loss
      only over the classes present in the incoming batch, the replayed samples' over all
      classes). Code: the authors' ``pclucas14/AML:methods/er_ace.py`` (with ``methods/er.py``
      and ``main.py``) and Mammoth's ``aimagelab/mammoth:models/er_ace.py``.
    - DER / DER++: P. Buzzega et al., "Dark Experience for General Continual Learning: a Strong,
      Simple Baseline", NeurIPS 2020 (the buffer also stores the logits the network gave a sample
      when it was stored; loss = CE(current) + alpha * MSE(replayed logits, stored logits)
      + beta * CE(replayed labels)).

Deviations and choices:
    - DER++ draws one replay batch and uses it for both terms (the paper and its code draw two;
      Avalanche's DER also uses one). The replayed samples join the trainer's batch with label
      ``IGNORE_LABEL`` (-100, PyTorch's ``ignore_index``), so the trainer's cross-entropy covers
      the current samples only and the plugin adds ``alpha * MSE + beta * CE`` on the replayed
      part: the loss is the paper's. The MSE is averaged over the compared logits only: columns
      past a sample's stored width (a head that grew since) and logits masked to -inf (task
      scenario) are left out.
    - ER-ACE's loss is ``CE(incoming, masked) + CE(replayed)``, the sum of the two batch means,
      as both codes compute it (``inc_loss + re_loss``; Mammoth ``loss += loss_re``). For the
      incoming rows the logits kept are the classes present among the incoming labels and the
      classes not seen yet; classes seen before but absent from the batch are set to -inf.
      Both codes keep "not seen yet" as ``mask[:, seen_so_far.max():] = 1`` (every index from
      the largest seen label on, which assumes labels arrive in increasing order); we keep the
      classes not in a running ``seen`` set, which is the same for such orders and right for any
      other. With the class-incremental head those logits are -inf anyway; with a fixed head they
      matter. The masked value is -inf (the library's convention; the authors use -1e9, Mammoth
      ``finfo.min``: the same softmax). We follow the authors' task-free form (``er_ace.py`` sets
      ``task_free``, under which ``methods/er.py`` rehearses as soon as the buffer holds
      samples): the mask and the replay apply from the first step on; Mammoth applies both only
      from the second task on. The buffer is a reservoir filled with the incoming
      batch after the replay batch is drawn from it (both codes add after the step; no sample is
      replayed in the step it arrives either way), and the replay batch is as large as the
      incoming one by default (AML ``main.py``: ``batch_size = buffer_batch_size = 10``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ContinualError
from ..strategies import Range, Strategy, register
from ..streams import Experience
from ..trainer import Plugin
from .buffers import BUFFERS, IGNORE_LABEL, SELECTIONS, Buffer, ReservoirBuffer, Samples, make_buffer

def _check_replay_batch(batch_size: int) -> int:
    if not (isinstance(batch_size, int) and batch_size >= 0):
        raise ContinualError(f"replay_batch={batch_size!r} must be a non-negative integer (0: the training batch's size)")
    return batch_size


class ER(Plugin):
    """Experience replay (Chaudhry et al. 2019): join each training batch with a replay batch.

    A reservoir buffer takes in each batch after the replay batch is drawn from it; balanced
    buffers are rebuilt at the end of each experience.

    Args:
        buffer: the memory.
        batch_size: replay samples per batch; 0 for as many as the training batch has.

    Example:
        >>> er = ER(ReservoirBuffer(100))
        >>> x, y, t = torch.randn(8, 4), torch.zeros(8, dtype=torch.long), torch.zeros(8, dtype=torch.long)
        >>> er.batch(x, y, t) is None, len(er.batch(x, y, t)[0])  # empty, then the first batch is replayed
        (True, 16)
    """

    name = "replay"

    def __init__(self, buffer: Buffer, *, batch_size: int = 0) -> None:
        self.buffer = buffer
        self.batch_size = _check_replay_batch(batch_size)

    def batch(self, x: Tensor, y: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        replay = self.buffer.sample(self.batch_size or len(y))
        if self.buffer.per_batch:
            self.buffer.add(x, y, t)
        if replay is None:
            return None
        return torch.cat([x, replay.x]), torch.cat([y, replay.y]), torch.cat([t, replay.t])

    @property
    def task_free(self) -> bool:
        """A reservoir buffer takes in each batch: no experience boundary needed (online runs)."""
        return self.buffer.per_batch

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        if not self.buffer.per_batch:
            self.buffer.update(experience, model=model)

    def state_dict(self) -> dict[str, Tensor]:
        return self.buffer.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.buffer.load_state_dict(state)

    def report(self) -> dict:
        return {**self.buffer.report(), "replay_batch": self.batch_size}


def asymmetric_cross_entropy(out: Tensor, y: Tensor, *, num_incoming: int, seen: Tensor | None = None) -> Tensor:
    """ER-ACE's loss (Caccia et al. 2022): the incoming rows' cross-entropy over the classes present
    among their labels (and, with ``seen``, the classes not seen yet), plus the replayed rows'
    cross-entropy over all logits.

    Args:
        out: ``(B + R, C)`` logits, the ``B`` incoming rows first, then the ``R`` replayed ones.
        y: ``(B + R,)`` labels.
        num_incoming: ``B``.
        seen: ``(C,)`` bool, the classes seen so far; the incoming rows keep the logits of classes
            not in it. ``None``: every class counts as seen (only the present ones are kept).

    Returns:
        The mean over the incoming rows plus the mean over the replayed rows (only the first term
        when ``R = 0``).

    Example:
        >>> out = torch.tensor([[2.0, 0.0, 1.0], [1.0, 0.0, 3.0], [0.0, 3.0, 0.0]])  # 2 incoming rows, 1 replayed
        >>> y = torch.tensor([0, 2, 1])  # class 1 is absent from the incoming rows: masked there only
        >>> loss = asymmetric_cross_entropy(out, y, num_incoming=2)
        >>> incoming = F.cross_entropy(out[:2, [0, 2]], torch.tensor([0, 1]))  # over classes 0 and 2
        >>> torch.allclose(loss, incoming + F.cross_entropy(out[2:], y[2:]))
        True
    """
    B, C = num_incoming, out.shape[1]
    y_in = y[:B]
    # (C,) the classes to mask in the incoming rows: seen, and absent from them (no host sync)
    drop = torch.ones(C, dtype=torch.bool, device=out.device) if seen is None else seen[:C].clone()
    drop.index_fill_(0, y_in, False)
    loss = F.cross_entropy(out[:B].masked_fill(drop, float("-inf")), y_in)
    if len(y) > B:
        loss = loss + F.cross_entropy(out[B:], y[B:])
    return loss


class ERACE(ER):
    """ER-ACE (Caccia et al. 2022): replay with the asymmetric cross-entropy.

    :meth:`batch` joins a replay batch to the incoming one as ER does (and offers the incoming
    batch to a reservoir buffer), remembering how many rows are incoming; :meth:`criterion`
    replaces the trainer's cross-entropy with :func:`asymmetric_cross_entropy`, keeping a running
    set of the classes seen (a device tensor; no host sync).

    Args:
        buffer: the memory (the strategy uses a reservoir, as both reference codes do).
        batch_size: replay samples per batch; 0 for as many as the incoming batch has.

    In a combination, the rows after the incoming ones all count as replayed: list ER-ACE before
    other plugins that enlarge the batch.

    Example:
        >>> ace = ERACE(ReservoirBuffer(100))
        >>> x, y, t = torch.randn(4, 3), torch.tensor([0, 0, 1, 1]), torch.zeros(4, dtype=torch.long)
        >>> ace.batch(x, y, t) is None, len(ace.batch(x, y, t)[0])  # empty, then the first batch is replayed
        (True, 8)
    """

    name = "er-ace"

    def __init__(self, buffer: Buffer, *, batch_size: int = 0) -> None:
        super().__init__(buffer, batch_size=batch_size)
        self.seen: Tensor | None = None  # (C,) bool: the classes seen in incoming batches so far
        self._num_incoming: int | None = None

    def batch(self, x: Tensor, y: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        self._num_incoming = len(y)
        return super().batch(x, y, t)  # ER's: a replay batch joined after the incoming one

    def criterion(self, out: Tensor, y: Tensor) -> Tensor:
        B = self._num_incoming if self._num_incoming is not None else len(y)
        C = out.shape[1]
        if self.seen is None or len(self.seen) < C:  # first step, or a head that grew past its capacity
            seen = torch.zeros(C, dtype=torch.bool, device=out.device)
            if self.seen is not None:
                seen[: len(self.seen)] = self.seen
            self.seen = seen
        loss = asymmetric_cross_entropy(out, y, num_incoming=B, seen=self.seen)  # the classes present are kept either way
        self.seen.index_fill_(0, y[:B], True)
        return loss

    def state_dict(self) -> dict:
        state = {"buffer": self.buffer.state_dict()}
        if self.seen is not None:
            state["seen"] = self.seen.clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.buffer.load_state_dict(state["buffer"])
        self.seen = state["seen"].to(self.buffer.device).clone() if "seen" in state else None

    def memory_bytes(self) -> int:
        """Bytes held besides the buffer: the seen-classes mask."""
        return 0 if self.seen is None else self.seen.numel() * self.seen.element_size()


class DERpp(Plugin):
    """DER++ (Buzzega et al. 2020): replay stored logits (MSE) and labels (CE).

    The buffer is a reservoir that also stores the logits the model gave each sample when it
    was stored (taken from the trainer's forward pass in :meth:`penalty`, so no extra forward).
    The replayed samples join the batch with label ``IGNORE_LABEL``; the penalty adds
    ``alpha * MSE(logits, stored logits) + beta * CE(logits, stored labels)`` on them, comparing
    only the stored width of each row (a head may have grown since).

    Args:
        buffer: a :class:`ReservoirBuffer` with ``logit_width`` set to the widest head expected.
        alpha: weight of the logit-matching term.
        beta: weight of the replayed labels' cross-entropy (0 gives DER).
        batch_size: replay samples per batch; 0 for as many as the training batch has.

    In a combination, the batch DER++ receives is what it stores, and its replayed part is the
    slice it appended: list DER++ before other plugins that enlarge the batch.
    """

    name = "der++"
    strength_names = ("alpha", "beta")  # named in the message when the loss diverges

    def __init__(self, buffer: ReservoirBuffer, *, alpha: float = 0.1, beta: float = 0.5, batch_size: int = 0) -> None:
        if not isinstance(buffer, ReservoirBuffer):
            raise ContinualError(f"DER++ needs a reservoir buffer (it stores logits per batch); got {buffer.kind!r}")
        if alpha < 0 or beta < 0:
            raise ContinualError(f"alpha={alpha} and beta={beta} must be non-negative")
        self.buffer = buffer
        self.alpha, self.beta = float(alpha), float(beta)
        self.batch_size = _check_replay_batch(batch_size)
        self._current: tuple[Tensor, Tensor, Tensor] | None = None
        self._replay: Samples | None = None
        self._incoming = 0  # rows of the incoming batch (the replayed ones follow)

    def batch(self, x: Tensor, y: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        self._current = (x, y, t)  # stored in penalty, with the logits of this step's forward pass
        self._replay = self.buffer.sample(self.batch_size or len(y))
        self._incoming = len(y)
        if self._replay is None:
            return None
        r = self._replay
        return torch.cat([x, r.x]), torch.cat([y, torch.full_like(r.y, IGNORE_LABEL)]), torch.cat([t, r.t])

    def penalty(self, model: nn.Module, *, x: Tensor, y: Tensor, t: Tensor, out: Tensor) -> Tensor | None:
        if self._current is not None:  # the first update on an incoming batch stores it (online runs repeat updates)
            cx, cy, ct = self._current
            self.buffer.add(cx, cy, ct, logits=out[: len(cy)])
            self._current = None
        r, B = self._replay, self._incoming
        if r is None:
            return None
        out_r = out[B : B + len(r.y)]  # (R, C) the replayed tail appended in batch()
        w = min(out_r.shape[1], r.logits.shape[1])
        stored, now = r.logits[:, :w], out_r[:, :w]
        valid = torch.isfinite(stored) & torch.isfinite(now)
        sq = torch.where(valid, now - stored, 0.0).pow(2)
        mse = sq.sum() / valid.sum().clamp(min=1)
        return self.alpha * mse + self.beta * F.cross_entropy(out_r, r.y)

    def state_dict(self) -> dict[str, Tensor]:
        return self.buffer.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.buffer.load_state_dict(state)

    def report(self) -> dict:
        return {**self.buffer.report(), "replay_batch": self.batch_size, "alpha": self.alpha, "beta": self.beta}


def _er_plugins(params: dict, context) -> list:
    per_class = params["mem_per_class"] or None
    capacity = per_class * context.stream.num_classes if per_class else params["mem"]  # per class: allocated ahead for every class
    buffer = make_buffer(params["buffer"], capacity, selection=params["selection"], device=context.device, seed=context.seed,
                         per_class=per_class)
    return [ER(buffer, batch_size=params["replay_batch"])]


def _erace_plugins(params: dict, context) -> list:
    buffer = make_buffer("reservoir", params["mem"], device=context.device, seed=context.seed)
    return [ERACE(buffer, batch_size=params["replay_batch"])]


def _derpp_plugins(params: dict, context) -> list:
    buffer = make_buffer("reservoir", params["mem"], device=context.device, seed=context.seed,
                         logit_width=context.stream.num_classes)
    return [DERpp(buffer, alpha=params["alpha"], beta=params["beta"], batch_size=params["replay_batch"])]


register(Strategy(
    "replay", "experience replay (ER, Chaudhry et al. 2019): each batch joined by a batch from a buffer",
    defaults={
        "buffer": "reservoir",  # reservoir | class-balanced | experience-balanced
        "selection": "random",  # random | herding (class-balanced only)
        "mem": 500,  # buffer capacity in samples: a fixed total, shared out among the classes seen (class-balanced)
        "mem_per_class": 0,  # > 0: a fixed number per class seen instead of mem (class-balanced only; iCaRL's 20)
        "replay_batch": 0,  # replay samples per batch; 0: the training batch size
    },
    make_plugins=_er_plugins,
    limits={"buffer": BUFFERS, "selection": SELECTIONS, "mem": Range(1), "mem_per_class": Range(0), "replay_batch": Range(0)},
    past_classes=True,
))
register(Strategy(
    "der++", "DER++ (Buzzega et al. 2020): replay stored logits (MSE) and labels (CE) from a reservoir",
    defaults={
        "mem": 500,  # buffer capacity in samples
        "alpha": 0.1,  # weight of the logit MSE
        "beta": 0.5,  # weight of the replayed labels' CE
        "replay_batch": 0,  # replay samples per batch; 0: the training batch size
    },
    make_plugins=_derpp_plugins,
    limits={"mem": Range(1), "alpha": Range(0), "beta": Range(0), "replay_batch": Range(0)},
    past_classes=True,
))
register(Strategy(
    "er-ace", "ER-ACE (Caccia et al. 2022): replay with the asymmetric cross-entropy (incoming rows over the batch's classes)",
    defaults={
        "mem": 500,  # reservoir capacity in samples (as ER's default, for equal-memory comparisons)
        "replay_batch": 0,  # replay samples per batch; 0: the incoming batch size (AML main.py: 10 and 10)
    },
    make_plugins=_erace_plugins,
    limits={"mem": Range(1), "replay_batch": Range(0)},
    past_classes=True,
    replaces_loss=True,  # the asymmetric cross-entropy replaces the cross-entropy
))
