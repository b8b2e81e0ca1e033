"""The replay plugins and strategies: ER and DER++ (and ``ewc+replay``).

References:
    - ER: A. Chaudhry et al., "On Tiny Episodic Memories in Continual Learning", 2019 (each
      training batch is joined by a replay batch drawn from a small episodic memory; the joined
      batch's mean cross-entropy is minimised).
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

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        if not self.buffer.per_batch:
            self.buffer.update(experience, model=model)

    def state_dict(self) -> dict[str, Tensor]:
        return self.buffer.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.buffer.load_state_dict(state)

    def report(self) -> dict:
        return {**self.buffer.report(), "replay_batch": self.batch_size}


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

    def batch(self, x: Tensor, y: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        self._current = (x, y, t)  # stored in penalty, with the logits of this step's forward pass
        self._replay = self.buffer.sample(self.batch_size or len(y))
        if self._replay is None:
            return None
        r = self._replay
        return torch.cat([x, r.x]), torch.cat([y, torch.full_like(r.y, IGNORE_LABEL)]), torch.cat([t, r.t])

    def penalty(self, model: nn.Module, *, x: Tensor, y: Tensor, t: Tensor, out: Tensor) -> Tensor | None:
        if self._current is None:
            return None
        cx, cy, ct = self._current
        B = len(cy)
        self.buffer.add(cx, cy, ct, logits=out[:B])
        self._current, r = None, self._replay
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
