"""iCaRL: S.-A. Rebuffi, A. Kolesnikov, G. Sperl, C. H. Lampert, "iCaRL: Incremental Classifier and
Representation Learning", CVPR 2017.

What the paper does, and what this module does:

- Exemplars (Sec. 2.2, Algorithms 4 and 5): a fixed total budget ``K`` (2000 in the paper's
  CIFAR-100 runs and in G-U-N/PyCIL ``models/icarl.py``, ``memory_size = 2000``) shared out among
  the classes seen; each class's exemplars chosen by herding on the trained model's features, an
  old class's set reduced by keeping its first ``m``. Here: a :class:`ClassBalancedBuffer` with
  ``selection="herding"`` (:func:`continual.replay.herding`), rebuilt in ``after_experience``
  from the experience's own samples (not the exemplars it was trained with).
- Training data (Algorithm 3, "UpdateRepresentation"): the union of the new classes' samples and
  all exemplars, as PyCIL builds its loader (``appendent=self._get_memory()``). Here:
  ``experience_data`` returns the experience with the exemplars concatenated to its training
  split (one copy per experience, not per step), so each epoch visits every exemplar once, as in
  the paper. (A replay batch joined to each batch, as ER does, would visit exemplars in a ratio
  set by the batch sizes instead: not the paper's objective.)
- Loss (Algorithm 3), ``loss="bce"``: sigmoid binary cross-entropy over the classes seen so far,
  with the one-hot label as target for the new classes and the previous model's sigmoid outputs
  for the old ones (distillation). Averaged over every (sample, class) entry that takes part, as
  PyCIL's first version (``F.binary_cross_entropy_with_logits(logits, onehots)``, mean reduction)
  and the original code (Theano, mean) do; the paper writes a sum. Logits at -inf (classes not in
  use in a growing head, or outside a sample's task) are left out, and so are classes not seen
  yet (a fixed head's later classes).
- ``loss="softmax-kd"`` (PyCIL's current ``models/icarl.py``, ``_update_representation``):
  ``F.cross_entropy(logits, y)`` over the classes seen plus ``_KD_loss(logits[:, :known],
  old_logits, T)`` with ``T = 2``: ``-sum(softmax(old / T) * log_softmax(new / T)) / B`` over the
  old classes' logits (a cross-entropy with soft targets, not multiplied by T^2, weight 1).
  PyCIL trains its first task with the plain cross-entropy, which is what this gives before an
  old model exists.
- Old classes are the classes seen before the current experience that are not in it. In a
  class-incremental stream that is the paper's split (new classes: labels; old ones:
  distillation). In a domain-incremental stream, where every class comes back, the labels win
  (PyCIL's ``[:, :known_classes]`` would distil every class and never train on labels again).
- The previous model: a frozen deep copy (eval mode, no gradients) taken at the end of each
  experience, like :class:`continual.regularizers.LwF`; saved in ``state_dict`` and rebuilt on
  resume from ``load_state_dict(state, model=...)``; its bytes are counted in
  :meth:`ICaRL.memory_bytes` (the memory ledger), as the survey's memory-aligned comparison asks.
- Short form: when the classes seen are ``0..n-1`` and the old ones ``0..k-1`` (classes arrive
  contiguously in a class-incremental stream) and the scenario is not task-incremental, the loss
  is computed on ``out[:, :n]`` as PyCIL writes it (every one of those logits is in use), with
  fewer operations per step than the masked general form; the two are equal (tested).
- Classification: the nearest mean of exemplars (:class:`continual.classifiers.NearestMeanClassifier`),
  the strategy's default evaluation classifier; the model's own argmax is recorded beside it.

How the old model sees the batch. The trainer's ``criterion(out, y)`` gets no input, and with
on-device augmentation (CIFAR's random crop and flip) the old model must see the very batch the
current model saw. A forward pre-hook on the trained model records the arguments of its last
forward pass in training mode (with gradients enabled); ``criterion`` runs the old model on them
and forgets them. Evaluation, herding and the NME classifier run in eval mode and are not
recorded. The hook object turns into an inert one when the model is deep-copied (a copied model
must not keep this plugin, its buffer and its old model alive).

Deviations: training settings (epochs, learning rate and its schedule, batch size, weight decay)
are the run's (the paper: 70 epochs, lr 2.0 divided by 5 at epochs 49 and 63, batch 128, weight
decay 1e-5); iCaRL's own code also averages the features of flipped exemplars into the class
means, which the NME classifier here does not (see its module).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ContinualError
from ..strategies import Range, Strategy, register
from ..streams import Experience
from ..trainer import Plugin
from .buffers import SELECTIONS, ClassBalancedBuffer, join_exemplars

Loss = Literal["bce", "softmax-kd"]
LOSSES: tuple[str, ...] = get_args(Loss)


class _InputRecorder:
    """Forward pre-hook: keep the arguments of the model's last training-mode forward with gradients."""

    def __init__(self) -> None:
        self.enabled = True
        self.inputs: tuple[tuple, dict] | None = None

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.enabled and module.training and torch.is_grad_enabled():
            self.inputs = (args, kwargs)
        return None

    def __deepcopy__(self, memo: dict) -> _InputRecorder:
        inert = _InputRecorder()  # a copied model records nothing and holds nothing of the plugin
        inert.enabled = False
        return inert


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode with no parameter requiring gradients."""
    return copy.deepcopy(model).eval().requires_grad_(False)


def icarl_bce(out: Tensor, y: Tensor, old: Tensor | None, *, seen: Tensor, old_classes: Tensor | None) -> Tensor:
    """iCaRL's loss: sigmoid BCE over the classes seen, old classes' targets the old model's sigmoids.

    Args:
        out: ``(B, C)`` logits of the trained model (-inf where a class is not in use).
        y: ``(B,)`` labels.
        old: ``(B, C_old)`` logits of the previous model on the same inputs, or ``None``.
        seen: ``(C,)`` bool, the classes seen so far (this experience's included).
        old_classes: ``(C,)`` bool, the classes distilled (seen before, not in this experience).

    Returns:
        The mean of the binary cross-entropy over the (sample, class) entries that take part.

    >>> out = torch.tensor([[2.0, -1.0, float("-inf")]])
    >>> round(icarl_bce(out, torch.tensor([0]), None, seen=torch.tensor([True, True, True]), old_classes=None).item(), 4)
    0.2201
    """
    valid = torch.isfinite(out) & seen[: out.shape[1]]  # (B, C) entries that take part
    target = torch.zeros_like(out).scatter_(1, y[:, None], 1.0)  # (B, C) one-hot (F.one_hot checks the labels on the host)
    if old is not None and old_classes is not None:
        w = min(old.shape[1], out.shape[1])
        distil = torch.zeros_like(valid)
        distil[:, :w] = valid[:, :w] & old_classes[:w] & torch.isfinite(old[:, :w])
        soft = torch.zeros_like(target)
        soft[:, :w] = torch.sigmoid(old[:, :w].to(out.dtype))
        target = torch.where(distil, soft, target)
    logits = torch.where(valid, out, torch.zeros_like(out))  # -inf would give nan (inf * 0)
    per_entry = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (per_entry * valid).sum() / valid.sum().clamp(min=1)


def icarl_softmax_kd(out: Tensor, y: Tensor, old: Tensor | None, *, seen: Tensor, old_classes: Tensor | None,
                     temperature: float = 2.0) -> Tensor:
    """PyCIL's iCaRL loss: cross-entropy on the labels + KD (temperature T) on the old classes' logits.

    Args are as :func:`icarl_bce`'s; ``temperature`` is PyCIL's ``T``.

    Returns:
        ``CE(out, y) - sum(softmax(old / T) * log_softmax(out / T)) / B``, both softmaxes over the
        old classes only (the second term 0 without an old model).

    >>> out, y = torch.tensor([[1.0, 0.0, 3.0]]), torch.tensor([2])
    >>> seen = torch.tensor([True, True, True])
    >>> round(icarl_softmax_kd(out, y, None, seen=seen, old_classes=None).item(), 4)
    0.1698
    """
    valid = torch.isfinite(out) & seen[: out.shape[1]]
    ce = F.cross_entropy(out.masked_fill(~valid, float("-inf")), y)
    if old is None or old_classes is None:
        return ce
    w = min(old.shape[1], out.shape[1])
    distil = valid[:, :w] & old_classes[:w] & torch.isfinite(old[:, :w])  # (B, w)
    rows = distil.any(1, keepdim=True)  # (B, 1): a row with no old class adds nothing
    T = temperature
    new_z = torch.where(rows, out[:, :w].masked_fill(~distil, float("-inf")), torch.zeros_like(out[:, :w])) / T
    old_z = torch.where(rows, old[:, :w].to(out.dtype).masked_fill(~distil, float("-inf")), torch.zeros_like(out[:, :w])) / T
    log_p = torch.where(distil, F.log_softmax(new_z, dim=1), torch.zeros_like(new_z))
    q = torch.where(distil, F.softmax(old_z, dim=1), torch.zeros_like(old_z))
    return ce - (q * log_p).sum() / out.shape[0]


def _bce_prefix(out: Tensor, y: Tensor, old: Tensor | None, num_seen: int, num_old: int) -> Tensor:
    """:func:`icarl_bce` when the classes seen are ``0..num_seen-1``, the old ones ``0..num_old-1`` and
    no logit among them is masked (class-incremental streams): PyCIL's expression, in fewer operations."""
    target = out.new_zeros(len(y), num_seen).scatter_(1, y[:, None], 1.0)  # (B, n) one-hot
    if old is not None and num_old:
        target = torch.cat([torch.sigmoid(old[:, :num_old].to(out.dtype)), target[:, num_old:]], 1)
    return F.binary_cross_entropy_with_logits(out[:, :num_seen], target)


def _softmax_kd_prefix(out: Tensor, y: Tensor, old: Tensor | None, num_seen: int, num_old: int, temperature: float) -> Tensor:
    """:func:`icarl_softmax_kd` under :func:`_bce_prefix`'s conditions."""
    ce = F.cross_entropy(out[:, :num_seen], y)
    if old is None or not num_old:
        return ce
    T = temperature
    q = F.softmax(old[:, :num_old].to(out.dtype) / T, dim=1)
    return ce - (q * F.log_softmax(out[:, :num_old] / T, dim=1)).sum() / out.shape[0]


class ICaRL(Plugin):
    """iCaRL (Rebuffi et al. 2017): herding exemplars, training on new data plus exemplars, and
    a distillation loss from the previous model (see the module docstring).

    Args:
        buffer: a class-balanced buffer (``selection="herding"`` for the paper's exemplars).
        loss: ``"bce"`` (the paper's) or ``"softmax-kd"`` (PyCIL's).
        temperature: the KD temperature of ``"softmax-kd"``.

    Attributes:
        buffer: the exemplar memory (the nearest-mean classifier reads its class means from it).
        old_model: the frozen previous model (``None`` during the first experience).

    Example:
        >>> icarl = ICaRL(ClassBalancedBuffer(20, selection="herding"))
        >>> icarl.report()["loss"], icarl.memory_bytes()
        ('bce', 0)
    """

    name = "icarl"

    def __init__(self, buffer: ClassBalancedBuffer, *, loss: Loss = "bce", temperature: float = 2.0) -> None:
        if not isinstance(buffer, ClassBalancedBuffer):
            raise ContinualError(f"iCaRL needs a class-balanced buffer (exemplars per class); got {type(buffer).__name__}")
        if loss not in LOSSES:
            raise ContinualError(f"unknown iCaRL loss {loss!r}; expected one of {', '.join(LOSSES)}")
        if not temperature > 0:
            raise ContinualError(f"temperature={temperature} must be positive")
        self.buffer = buffer
        self.loss = loss
        self.temperature = float(temperature)
        self.old_model: nn.Module | None = None
        self.seen: list[int] = []  # classes seen so far, this experience's included
        self.old: list[int] = []  # classes distilled in this experience
        self._masks: dict[torch.device, tuple[Tensor, Tensor]] = {}
        self._recorder = _InputRecorder()
        self._hooked: nn.Module | None = None
        self._handle = None
        self._experience: Experience | None = None  # the experience as given, before the exemplars join it
        self._prefix = False  # the loss's short form applies (set per experience)

    # ------------------------------------------------------------------ hooks
    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        if self._hooked is not model:
            if self._handle is not None:
                self._handle.remove()
            self._handle = model.register_forward_pre_hook(self._recorder, with_kwargs=True)
            self._hooked = model
        before = set(self.seen)
        self.seen = sorted(before | set(experience.classes))
        self.old = sorted(before - set(experience.classes))
        self._masks = {}
        # Classes 0..n-1 seen, 0..k-1 old and no per-sample task masking: the short form of the loss.
        self._prefix = (experience.scenario != "task" and self.seen == list(range(len(self.seen)))
                        and self.old == list(range(len(self.old))))
        return None

    def experience_data(self, experience: Experience) -> Experience | None:
        self._experience = experience
        return join_exemplars(experience, self.buffer)

    def _class_masks(self, device: torch.device, width: int) -> tuple[Tensor, Tensor]:
        if device not in self._masks or self._masks[device][0].shape[0] < width:
            size = max(width, max(self.seen, default=0) + 1)
            seen = torch.zeros(size, dtype=torch.bool)
            seen[self.seen] = True
            old = torch.zeros(size, dtype=torch.bool)
            old[self.old] = True
            self._masks[device] = (seen.to(device), old.to(device))
        return self._masks[device]

    def criterion(self, out: Tensor, y: Tensor) -> Tensor:
        """The iCaRL loss on the trainer's batch (the old model sees the inputs recorded by the hook)."""
        old = None
        if self.old_model is not None and self.old:
            if self._recorder.inputs is None:
                raise ContinualError("iCaRL's criterion found no recorded model input: it must follow a training-mode forward "
                                     "of the model given to before_experience")
            args, kwargs = self._recorder.inputs
            with torch.no_grad():
                old = self.old_model(*args, **kwargs)  # (B, C_old), the same (augmented) batch
        self._recorder.inputs = None
        if self._prefix and out.shape[1] >= len(self.seen) and (old is None or old.shape[1] >= len(self.old)):
            n, k = len(self.seen), len(self.old)
            if self.loss == "bce":
                return _bce_prefix(out, y, old, n, k)
            return _softmax_kd_prefix(out, y, old, n, k, self.temperature)
        seen, old_classes = self._class_masks(out.device, out.shape[1])
        if self.loss == "bce":
            return icarl_bce(out, y, old, seen=seen, old_classes=old_classes if old is not None else None)
        return icarl_softmax_kd(out, y, old, seen=seen, old_classes=old_classes if old is not None else None,
                                temperature=self.temperature)

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        given = self._experience if self._experience is not None else experience
        self._recorder.inputs = None
        self.buffer.update(given, model=model)  # the experience's own samples, not the exemplars trained with
        self.old_model = frozen_copy(model)
        self._experience = None

    # ------------------------------------------------------------------ state
    def memory_bytes(self) -> int:
        """Bytes of the frozen previous model (parameters and buffers); the exemplars are the buffer's."""
        if self.old_model is None:
            return 0
        return sum(v.numel() * v.element_size() for v in self.old_model.state_dict().values())

    def state_dict(self) -> dict[str, Tensor]:
        """The buffer (``buffer.*``), the frozen model (``old_model.*``) and the classes seen."""
        state = {f"buffer.{k}": v for k, v in self.buffer.state_dict().items()}
        state["seen"] = torch.tensor(self.seen, dtype=torch.long)
        state["old"] = torch.tensor(self.old, dtype=torch.long)
        if self.old_model is not None:
            state.update({f"old_model.{k}": v.clone() for k, v in self.old_model.state_dict().items()})
        return state

    def load_state_dict(self, state: Mapping[str, Tensor], *, model: nn.Module | None = None) -> None:
        """Restore :meth:`state_dict`; ``model`` (the same architecture, grown as the checkpoint's)
        is the template of the frozen copy."""
        self.buffer.load_state_dict({k[len("buffer."):]: v for k, v in state.items() if k.startswith("buffer.")})
        self.seen, self.old = state["seen"].tolist(), state["old"].tolist()
        self._masks = {}
        old = {k[len("old_model."):]: v for k, v in state.items() if k.startswith("old_model.")}
        if not old:
            self.old_model = None
            return
        if self.old_model is None:
            if model is None:
                raise ContinualError("ICaRL.load_state_dict needs model= (a model of the same architecture) to rebuild the frozen copy")
            self.old_model = frozen_copy(model)
        self.old_model.load_state_dict(old)

    def report(self) -> dict:
        return {**self.buffer.report(), "loss": self.loss, "temperature": self.temperature,
                "old_model_bytes": self.memory_bytes(), "classes_seen": len(self.seen)}


def _icarl_plugins(params: dict, context) -> list:
    buffer = ClassBalancedBuffer(params["mem"], device=context.device, seed=context.seed, selection=params["selection"])
    return [ICaRL(buffer, loss=params["loss"], temperature=params["temperature"])]


register(Strategy(
    "icarl", "iCaRL (Rebuffi et al. 2017): herding exemplars + new data, sigmoid BCE with distillation, nearest-mean classifier",
    defaults={
        "mem": 2000,  # exemplars in total, shared out among the classes seen (paper Sec. 4; PyCIL memory_size)
        "selection": "herding",  # herding (paper, Algorithm 4) | random
        "loss": "bce",  # bce (paper, Algorithm 3) | softmax-kd (PyCIL: CE + KD on the old classes)
        "temperature": 2.0,  # softmax-kd's T (PyCIL models/icarl.py)
    },
    make_plugins=_icarl_plugins,
    limits={"mem": Range(1), "selection": SELECTIONS, "loss": LOSSES, "temperature": Range(0, low_open=True)},
    past_classes=True,
    classifier="nme",
    replaces_loss=True,  # the BCE (or CE + KD) replaces the cross-entropy
))
