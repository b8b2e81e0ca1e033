"""Growing classifier heads: one head over every class seen so far, or one head per task id.

- :class:`IncrementalClassifier` (class-incremental scenario): a linear head that grows when an
  experience brings classes it has not seen, at a fixed cost per step. Its rows are allocated
  ahead, ``capacity`` of them (the stream's number of classes when it is known; doubling when a
  growth needs more): ``weight`` ``(capacity, in_features)`` and ``bias`` ``(capacity,)``, one
  tensor each, so the module's shapes stay static while it grows (``torch.compile`` and CUDA
  graphs see one shape) and a step costs what a fixed head of the capacity's width costs
  (``benchmarks/heads.py``). The classes in use are the first ``num_classes`` rows; the
  ``active`` mask, ``(capacity,)`` bool, says which (see "The active-classes mask" below).
- :class:`MultiHeadClassifier` (task-incremental scenario): one :class:`IncrementalClassifier`
  per task id, grown as task ids arrive; a mixed batch is routed sample by sample (without a
  host sync) and the logits are returned in the stream's label space, ``-inf`` outside each
  sample's task.
- :class:`HeadExpansion`: the plugin that grows the heads of a model before each experience and
  records the head size after each experience (``extra["head"]`` of a result); its
  ``state_dict``/``load_state_dict`` regrow the heads of a resumed run.
- :func:`sync_optimizer`: applies a growth to an optimizer (the trainer calls it after the
  ``before_experience`` hooks; call it from your own loop after growing a head).

The active-classes mask. ``forward`` returns ``(B, capacity)`` logits with the logits of rows
not in use set to ``-inf``, in training and in evaluation: such a class never wins an argmax,
has probability 0 under a softmax, and its row gets no gradient from any loss on the logits
(``masked_fill`` passes none back). Use ``out[:, :head.num_classes]`` for the classes in use
only. With ``mask_past=True`` the logits of past classes (in use, absent from the current
experience) are also set to -inf during training (the "labels trick"); off by default, and not
for methods that train on past classes (replay, DER++, LwF). :meth:`IncrementalClassifier.training_mask`
is the mask of the logits training uses (importance estimates run in eval mode and use it).

What a growth keeps (what the block-per-growth head of version 0.1 promised, and how exactly):

- Old logits are unchanged by a growth, bit for bit: the matrix product has the same shapes
  before and after, and old rows are not touched. (A reallocation, when a growth exceeds the
  capacity, changes the product's width; old logits are then equal up to the matmul kernel's
  rounding, which may depend on the width.)
- Rows coming into use are initialised as a fresh ``nn.Linear(in_features, new_rows)`` would be
  (its default initialisation, drawn from the global RNG as that layer's construction would
  draw it), and their optimizer state (SGD momentum, Adam's moments) is reset to zero by
  :func:`sync_optimizer`, so they train from the next step as a new layer's rows would.
  Deviation: Adam's step count is one per tensor, so the new rows' bias correction uses the
  tensor's step count (the steps taken since the head was built), not a count from when they
  came into use; with zeroed moments that makes their first updates smaller than a new layer's
  by the factor ``sqrt(1 - beta2^k) / (1 - beta1^k)`` of the tensor's step ``k`` against 1.
- Old rows keep their values, their names (``weight``, ``bias``: regularizers key importances
  by name) and their optimizer state. Rows not in use get zero gradient; weight decay may still
  move them, which does not matter: they are re-initialised when they come into use.
- A reallocation (only when the capacity is exceeded) replaces ``weight`` and ``bias`` by new,
  larger parameters holding the old rows; :func:`sync_optimizer` swaps them into the optimizer
  and pads their state with zeros.

Growth follows Avalanche's ``IncrementalClassifier`` (``avalanche/models/dynamic_modules.py``)
in what it promises; Avalanche copies the old rows into a new, larger ``nn.Linear`` at every
growth (new parameter objects, so the optimizer must be reset or patched, and shapes change);
here they are allocated ahead and masked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ContinualError


@dataclass
class RowChange:
    """A growth, as an optimizer must see it: ``param`` (replacing ``old`` when not ``None``)
    whose rows ``start:stop`` came into use."""

    param: nn.Parameter
    start: int
    stop: int
    old: nn.Parameter | None = None


class IncrementalClassifier(nn.Module):
    """A linear head whose classes in use grow with the classes seen; fixed shapes, masked rows.

    Args:
        in_features: size of the features it reads.
        num_classes: classes in use at the start (0: none yet).
        capacity: rows allocated ahead (default: ``num_classes``; a growth past it doubles it).
        bias: whether rows have a bias.
        mask_past: set logits of past classes to -inf during training (see the module docstring).

    Example:
        >>> head = IncrementalClassifier(4, 3, capacity=5)
        >>> x = torch.randn(2, 4)
        >>> old = head(x)
        >>> head.grow(5), head(x).shape, torch.equal(head(x)[:, :3], old[:, :3]), old[:, 3:].isinf().all().item()
        ([], torch.Size([2, 5]), True, True)
    """

    def __init__(self, in_features: int, num_classes: int = 0, *, capacity: int | None = None, bias: bool = True,
                 mask_past: bool = False) -> None:
        super().__init__()
        capacity = num_classes if capacity is None else capacity
        if in_features < 1 or num_classes < 0 or capacity < num_classes:
            raise ContinualError(f"IncrementalClassifier(in_features={in_features}, num_classes={num_classes}, capacity={capacity}): "
                                 "in_features must be positive, num_classes non-negative and capacity at least num_classes")
        self.in_features = in_features
        self.mask_past = mask_past
        self.weight = nn.Parameter(torch.zeros(capacity, in_features))
        self.bias = nn.Parameter(torch.zeros(capacity)) if bias else None
        self.register_buffer("active", torch.zeros(capacity, dtype=torch.bool))  # classes in use (saved with the model)
        self._num_classes = 0
        self._current: Tensor | None = None  # classes of the current experience (for mask_past)
        # Logits forward sets to -inf, in evaluation and in training: ~active, and ~(current classes)
        # with mask_past; None when there is nothing to hide. Kept up to date at each growth, so a
        # step does one masked_fill and nothing else (non-persistent: they follow .to(device)).
        self.register_buffer("_hide", None, persistent=False)
        self.register_buffer("_hide_train", None, persistent=False)
        self.history: list[int] = []  # rows added by each growth, in order (to regrow on resume)
        self._changes: list[RowChange] = []  # growths not yet applied to an optimizer
        self.grow(num_classes)
        self._changes.clear()  # rows in use from the start: nothing for an optimizer to reset

    @property
    def num_classes(self) -> int:
        """Classes in use: rows ``0..num_classes-1``."""
        return self._num_classes

    @property
    def capacity(self) -> int:
        """Rows allocated (the width of the logits)."""
        return self.weight.shape[0]

    @property
    def sizes(self) -> list[int]:
        """Rows added by each growth, in order."""
        return list(self.history)

    def grow(self, num_classes: int) -> list[nn.Parameter]:
        """Bring classes up to ``num_classes`` into use (no-op when already that many).

        The rows coming into use are initialised as a fresh ``nn.Linear``'s; past the capacity,
        ``weight`` and ``bias`` are reallocated with twice the capacity (or ``num_classes`` if
        more). Returns ``[]`` (no new parameter joins an optimizer); the change waits for
        :func:`sync_optimizer`.
        """
        start = self._num_classes
        if num_classes <= start:
            return []
        old = [(self.weight, "weight"), (self.bias, "bias")]
        if num_classes > self.capacity:
            self._reallocate(max(num_classes, 2 * self.capacity))
        fresh = nn.Linear(self.in_features, num_classes - start, bias=self.bias is not None)  # its default init
        with torch.no_grad():
            self.weight[start:num_classes] = fresh.weight.to(self.weight)
            if self.bias is not None:
                self.bias[start:num_classes] = fresh.bias.to(self.bias)
        self.active[start:num_classes] = True
        self._num_classes = num_classes
        self._update_masks()
        self.history.append(num_classes - start)
        for before, name in old:
            if before is not None:
                now = getattr(self, name)
                self._changes.append(RowChange(now, start, num_classes, before if now is not before else None))
        return []

    def _reallocate(self, capacity: int) -> None:
        n = self.capacity
        weight = self.weight.detach().new_zeros(capacity, self.in_features)
        weight[:n] = self.weight.detach()
        self.weight = nn.Parameter(weight, requires_grad=self.weight.requires_grad)
        if self.bias is not None:
            bias = self.bias.detach().new_zeros(capacity)
            bias[:n] = self.bias.detach()
            self.bias = nn.Parameter(bias, requires_grad=self.bias.requires_grad)
        active = self.active.new_zeros(capacity)
        active[:n] = self.active
        self.active = active
        if self._current is not None:  # mask_past's current classes, padded with classes not current
            current = self._current.new_zeros(capacity)
            current[:n] = self._current
            self._current = current

    def take_changes(self) -> list[RowChange]:
        """The growths since the last call (for :func:`sync_optimizer`), and forget them."""
        changes, self._changes = self._changes, []
        return changes

    def adapt(self, classes: Iterable[int]) -> list[nn.Parameter]:
        """Grow to cover ``classes`` (labels of the coming experience); returns ``[]`` (see :meth:`grow`)."""
        classes = sorted({int(c) for c in classes})
        if classes and classes[0] < 0:
            raise ContinualError(f"class labels must be non-negative; got {classes[0]}")
        new = self.grow(classes[-1] + 1) if classes else []
        if self.mask_past:
            current = torch.zeros(self.capacity, dtype=torch.bool, device=self.active.device)
            current[classes] = True
            self._current = current
            self._update_masks()
        return new

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.weight, self.bias)  # (B, capacity)
        hide = self._hide_train if self.training else self._hide
        return out if hide is None else out.masked_fill(hide, float("-inf"))

    def _update_masks(self) -> None:
        self._hide = None if self._num_classes == self.capacity else ~self.active
        keep = self.training_mask()
        self._hide_train = None if keep is None else ~keep

    def training_mask(self) -> Tensor | None:
        """The logits training uses, ``(capacity,)`` bool: the classes in use (with ``mask_past``,
        those of the current experience); ``None`` when every logit is used."""
        if self.mask_past and self._current is not None:
            return self._current.to(self.active.device) & self.active
        return None if self._num_classes == self.capacity else self.active

    def unused_rows(self) -> Tensor:
        """``(capacity,)`` bool: rows not in use."""
        return ~self.active

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._num_classes = int(self.active.sum())  # rows 0..n-1 are the ones in use
        self._update_masks()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, num_classes={self.num_classes}, capacity={self.capacity}, "
                f"bias={self.bias is not None}, mask_past={self.mask_past}")


def sync_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Apply the growths of ``model``'s heads since the last call to ``optimizer``.

    A reallocated parameter replaces the old one in its parameter group, its state padded with
    zeros; rows that came into use get their state (every tensor of the parameter's shape:
    momentum, Adam's moments) reset to zero. Call it after growing a head in your own loop.
    """
    for head in model.modules():
        if not isinstance(head, IncrementalClassifier):
            continue
        for change in head.take_changes():
            p = change.param
            if change.old is not None:
                for group in optimizer.param_groups:
                    group["params"] = [p if q is change.old else q for q in group["params"]]
                state = optimizer.state.pop(change.old, None)
                if state:
                    optimizer.state[p] = {k: _pad(v, p) for k, v in state.items()}
            state = optimizer.state.get(p)
            for v in (state or {}).values():
                if torch.is_tensor(v) and v.shape == p.shape:
                    v[change.start : change.stop] = 0


def _pad(value, param: Tensor):
    if not (torch.is_tensor(value) and value.dim() == param.dim() and value.dim() > 0 and value.shape[1:] == param.shape[1:]):
        return value
    out = value.new_zeros(param.shape)
    out[: value.shape[0]] = value
    return out


def training_mask(model: nn.Module) -> Tensor | None:
    """The logits ``model`` trains on, ``(num_logits,)`` bool, when its class-incremental head
    masks some (rows not in use; past classes with ``mask_past``); ``None`` when it uses all.

    Importance estimates (EWC's Fisher, MAS) run in eval mode; they use this to see the logits
    training saw.
    """
    masks = [m.training_mask() for m in model.modules() if isinstance(m, IncrementalClassifier)]
    masks = [m for m in masks if m is not None]
    return masks[0] if len(masks) == 1 and not any(isinstance(m, MultiHeadClassifier) for m in model.modules()) else None


def unused_rows(model: nn.Module) -> dict[str, Tensor]:
    """For each parameter of a class-incremental head with rows not in use, by name: a bool
    tensor of the parameter's shape, ``True`` on those rows (a regularizer gives them no importance)."""
    found = {}
    for prefix, head in model.named_modules():
        if isinstance(head, IncrementalClassifier):
            rows = head.unused_rows()
            for name, p in head.named_parameters(recurse=False):
                if p.dim() == 0 or p.shape[0] != rows.shape[0]:  # not a per-row parameter (a cosine head's scale)
                    continue
                found[f"{prefix}.{name}" if prefix else name] = rows.view(-1, *([1] * (p.dim() - 1))).expand_as(p)
    return found


class MultiHeadClassifier(nn.Module):
    """One growing linear head per task id; routes each sample of a batch to its task's head.

    The output is in the stream's label space, ``(B, num_classes)`` with ``num_classes`` the
    largest label seen plus one: a sample's logits are its task head's at its task's classes and
    ``-inf`` elsewhere (so cross-entropy and argmax need no extra masking). The heads are
    ``heads["<task id>"]``, each an :class:`IncrementalClassifier` over the task's classes in
    the order they arrived.

    Args:
        in_features: size of the features it reads.
        bias: whether rows have a bias.
    """

    takes_task_id = True

    def __init__(self, in_features: int, *, bias: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.bias = bias
        self.heads = nn.ModuleDict()
        self.task_classes: dict[int, list[int]] = {}
        self.history: list[tuple[int, list[int]]] = []  # (task id, classes added), in order
        self.register_buffer("_anchor", torch.empty(0), persistent=False)

    @property
    def num_classes(self) -> int:
        return max((max(c) + 1 for c in self.task_classes.values() if c), default=0)

    @property
    def sizes(self) -> dict[int, int]:
        """Outputs per task id."""
        return {k: len(c) for k, c in sorted(self.task_classes.items())}

    def add_classes(self, task_id: int, classes: Iterable[int]) -> list[nn.Parameter]:
        """Make sure task ``task_id`` has a head covering ``classes``; return the new parameters."""
        task_id = int(task_id)
        if task_id < 0:
            raise ContinualError(f"task ids must be non-negative; got {task_id}")
        known = self.task_classes.setdefault(task_id, [])
        fresh = sorted({int(c) for c in classes} - set(known))
        if not fresh:
            return []
        key = str(task_id)
        if key not in self.heads:
            self.heads[key] = IncrementalClassifier(self.in_features, 0, bias=self.bias).to(self._anchor)
        head = self.heads[key]
        known += fresh
        self.history.append((task_id, fresh))
        head.register_buffer("class_index", torch.tensor(known, dtype=torch.int64, device=self._anchor.device), persistent=False)
        fresh_head = head.num_classes == 0
        head.grow(len(known))
        return list(head.parameters()) if fresh_head else []  # a grown head's changes go through sync_optimizer

    def adapt(self, pairs: Iterable[tuple[int, int]]) -> list[nn.Parameter]:
        """Grow for the ``(task id, class)`` pairs of a coming experience; return the new parameters."""
        by_task: dict[int, set[int]] = {}
        for task, c in pairs:
            by_task.setdefault(int(task), set()).add(int(c))
        return [p for task in sorted(by_task) for p in self.add_classes(task, by_task[task])]

    def forward(self, x: Tensor, t: Tensor | None) -> Tensor:
        if t is None:
            raise ContinualError("MultiHeadClassifier needs per-sample task ids: call model(x, t)")
        out = x.new_full((x.shape[0], self.num_classes), float("-inf"))  # (B, C)
        for key, head in self.heads.items():
            logits = head(x)[:, : head.num_classes]  # (B, c_k): every sample through every head (no host sync)
            cols = head.class_index
            mine = (t == int(key)).unsqueeze(1)  # (B, 1)
            out = out.index_copy(1, cols, torch.where(mine, logits, out.index_select(1, cols)))
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, task_classes={self.task_classes}"


def growing_heads(model: nn.Module) -> list[nn.Module]:
    """The model's growing heads (``IncrementalClassifier`` and ``MultiHeadClassifier``, not nested ones)."""
    found: list[nn.Module] = []
    for m in model.modules():
        if isinstance(m, (IncrementalClassifier, MultiHeadClassifier)) and not any(m in h.modules() for h in found):
            found.append(m)
    return found


def grow_head(model: nn.Module, experience) -> list[nn.Parameter]:
    """Grow every growing head of ``model`` for ``experience``; return the new parameters.

    An :class:`IncrementalClassifier` grows to cover ``experience.classes``; a
    :class:`MultiHeadClassifier` to cover each (task id, class) pair of its training data (so a
    joint or cumulative experience grows one head per task it holds).
    """
    new: list[nn.Parameter] = []
    for head in growing_heads(model):
        if isinstance(head, MultiHeadClassifier):
            t, y = experience.t_train, experience.y_train
            width = int(y.max()) + 1 if len(y) else 1
            keys = torch.unique(t * width + y).tolist()  # one host sync per experience
            new += head.adapt((k // width, k % width) for k in keys)
        else:
            new += head.adapt(experience.classes)
    return new


def head_size(model: nn.Module) -> int | dict[int, int] | None:
    """The current size of the model's head: outputs of an incremental or fixed linear head, or per task."""
    heads = growing_heads(model)
    if heads:
        return heads[0].sizes if isinstance(heads[0], MultiHeadClassifier) else heads[0].num_classes
    head = getattr(model, "head", None)
    return head.out_features if isinstance(head, nn.Linear) else None


class HeadExpansion:
    """Plugin: grow the model's heads before each experience and record their size after it.

    ``before_experience`` grows the heads and returns the parameters of new task heads (a
    multi-head model), which the trainer adds to its optimizer; a class-incremental head's rows
    coming into use reach the optimizer through :func:`sync_optimizer`, which the trainer calls
    next (old parameters, and their optimizer state, are untouched). ``report()`` gives
    ``{"sizes": [size after experience 0, 1, ...]}`` (an int per experience, or a dict
    task id -> outputs for a multi-head model).

    Args:
        model: the model whose heads it grows; needed only to save and restore its growth
            (``state_dict``/``load_state_dict``) before the first experience has been seen.
    """

    name = "head"

    def __init__(self, model: nn.Module | None = None) -> None:
        self.sizes: list[object] = []
        self._model = model

    def before_experience(self, model: nn.Module, experience) -> list[nn.Parameter]:
        self._model = model
        return grow_head(model, experience)

    @property
    def task_free(self) -> bool:
        """Whether the heads can grow without experience boundaries (online runs): one
        class-incremental head without ``mask_past`` (a task's head needs its task id, and
        ``mask_past`` the experience's classes)."""
        heads = growing_heads(self._model) if self._model is not None else []
        return all(isinstance(h, IncrementalClassifier) and not h.mask_past for h in heads)

    def new_classes(self, model: nn.Module, classes) -> list[nn.Parameter]:
        """Online: grow the class-incremental head to cover ``classes``, first seen in the coming batch."""
        self._model = model
        for head in growing_heads(model):
            if not isinstance(head, IncrementalClassifier) or head.mask_past:
                raise ContinualError("an online run grows only a class-incremental head without mask_past (head 'incremental')")
            head.grow(max(int(c) for c in classes) + 1)
        return []

    def after_experience(self, model: nn.Module, experience) -> None:
        size = head_size(model)
        self.sizes.append({str(k): v for k, v in size.items()} if isinstance(size, dict) else size)

    def report(self) -> dict:
        return {"sizes": list(self.sizes)}

    def state_dict(self) -> dict:
        """The recorded sizes and each growing head's growth history (to rebuild it on resume)."""
        heads = growing_heads(self._model) if self._model is not None else []
        return {"sizes": list(self.sizes), "heads": [_history(h) for h in heads]}

    def load_state_dict(self, state: dict) -> None:
        """Restore the recorded sizes and regrow the model's heads block by block as they grew,
        so a checkpoint's weights and optimizer groups fit (needs the model: ``HeadExpansion(model)``)."""
        self.sizes = list(state["sizes"])
        if state["heads"] and self._model is None:
            raise ContinualError("HeadExpansion.load_state_dict needs the model: build the plugin as HeadExpansion(model)")
        for head, history in zip(growing_heads(self._model) if self._model is not None else [], state["heads"]):
            for step in history[len(_history(head)):]:
                if isinstance(head, MultiHeadClassifier):
                    head.add_classes(step[0], step[1])
                else:
                    head.grow(head.num_classes + int(step))


def _history(head: nn.Module) -> list:
    if isinstance(head, MultiHeadClassifier):
        return [[task, list(classes)] for task, classes in head.history]
    return list(head.sizes)


class CosineIncrementalClassifier(IncrementalClassifier):
    """A cosine-normalised growing head with a learnable scale (LUCIR, Hou et al., CVPR 2019, Eq. 4).

    ``logits = sigma * <x / ||x||, w_c / ||w_c||>`` for each row ``c`` in use, no bias, ``-inf``
    for rows not in use; everything else (fixed capacity, the active-classes mask, ``mask_past``,
    :meth:`grow`, :func:`sync_optimizer`, :meth:`training_mask`, state and resume) is
    :class:`IncrementalClassifier`'s. :meth:`cosine` gives the scores before the scale (in [-1, 1]),
    which LUCIR's margin ranking loss uses.

    Initialisation as the reference's ``CosineLinear.reset_parameters`` (mmasana/FACIL
    ``src/approach/lucir.py``, copied from the authors' ``modified_linear.py``, hshustc/CVPR19_Incremental_Learning,
    as JoyHuYY1412/DDE_CIL ``cifar100-class-incremental/modified_linear.py`` holds it): ``sigma = 1`` and rows drawn
    from ``U(-1/sqrt(in_features), 1/sqrt(in_features))``. That is exactly the distribution of a
    bias-free ``nn.Linear``'s default initialisation, which :meth:`IncrementalClassifier.grow`
    already draws for rows coming into use, so growth is inherited unchanged. (The authors' run
    scripts also "imprint" new rows from class-mean features: :class:`continual.regularizers.lucir.LUCIR`
    does that, as an option, after the growth.)

    Args:
        in_features: size of the features it reads.
        num_classes: classes in use at the start.
        capacity: rows allocated ahead (see :class:`IncrementalClassifier`).
        mask_past: see :class:`IncrementalClassifier`.
        sigma: initial value of the learnable scale (the reference's 1).

    Example:
        >>> head = CosineIncrementalClassifier(4, 2, capacity=3)
        >>> out = head(torch.randn(5, 4))
        >>> out.shape, bool((out[:, :2].abs() <= 1).all()), out[:, 2].isinf().all().item()
        (torch.Size([5, 3]), True, True)
    """

    def __init__(self, in_features: int, num_classes: int = 0, *, capacity: int | None = None, mask_past: bool = False,
                 sigma: float = 1.0) -> None:
        super().__init__(in_features, num_classes, capacity=capacity, bias=False, mask_past=mask_past)
        self.sigma = nn.Parameter(torch.tensor([float(sigma)]))  # (1,), as the reference's Parameter(torch.Tensor(1))

    @classmethod
    def like(cls, head: IncrementalClassifier, *, sigma: float = 1.0) -> CosineIncrementalClassifier:
        """A cosine head with ``head``'s capacity, classes in use, growth history, ``mask_past``
        state, device and dtype; its rows in use are ``head``'s weight rows (the bias is dropped)."""
        new = cls(head.in_features, 0, capacity=head.capacity, mask_past=head.mask_past, sigma=sigma)
        new = new.to(device=head.weight.device, dtype=head.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(head.weight)
            new.active.copy_(head.active)
        new.weight.requires_grad_(head.weight.requires_grad)
        new._num_classes = head.num_classes
        new.history = list(head.history)
        new._current = None if head._current is None else head._current.clone()
        new._update_masks()
        return new

    def cosine(self, x: Tensor) -> Tensor:
        """Cosine similarities ``(B, capacity)`` of ``x`` with every row, unscaled and unmasked."""
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))

    def forward(self, x: Tensor) -> Tensor:
        out = self.sigma * self.cosine(x)  # (B, capacity)
        hide = self._hide_train if self.training else self._hide
        return out if hide is None else out.masked_fill(hide, float("-inf"))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, cosine=True"
