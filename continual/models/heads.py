"""Growing classifier heads: one head over every class seen so far, or one head per task id.

- :class:`IncrementalClassifier` (class-incremental scenario): a linear head that grows when an
  experience brings classes it has not seen. Rows are kept in blocks, one ``nn.Linear`` per
  growth step (``blocks.0.weight``/``blocks.0.bias`` for the first classes, ``blocks.1.*`` for
  the next...), so old rows are never copied or re-created: their values, their names (which
  regularizers key importances by) and their optimizer state (momentum, Adam moments) are kept,
  and only the new block joins the optimizer. Parameters iterate in the order they were added
  (block by block), so a resumed optimizer's groups line up with them. Each block's logits are
  computed by its own ``F.linear``, so old logits stay bit-identical for any input after a
  growth step. That costs one small matmul per block (see ``benchmarks/heads.py``); ``fused=True`` computes all logits
  with one matmul over the concatenated rows instead (faster after many expansions; old logits
  then equal up to the matmul kernel's rounding, which may depend on the output width).
  Classes not seen yet have no row, hence no logit: evaluation's argmax covers the seen classes
  only. With ``mask_past=True`` the logits of past classes (seen before, absent from the current
  experience) are set to -inf during training (the "labels trick"); off by default. It cannot
  be used with methods that train on past classes (replay, DER++, LwF).
- :class:`MultiHeadClassifier` (task-incremental scenario): one :class:`IncrementalClassifier`
  per task id, grown as task ids arrive; a mixed batch is routed sample by sample (without a
  host sync) and the logits are returned in the stream's label space, ``-inf`` outside each
  sample's task.
- :class:`HeadExpansion`: the plugin that grows the heads of a model before each experience,
  hands the new parameters to the trainer's optimizer and records the head size after each
  experience (``extra["head"]`` of a result); its ``state_dict``/``load_state_dict`` regrow the
  heads of a resumed run.

Growth follows Avalanche's ``IncrementalClassifier``/``MultiHeadClassifier``
(``avalanche/models/dynamic_modules.py``), with one deviation: Avalanche copies old rows into a
new, larger ``nn.Linear`` (new parameter objects, so the optimizer must be reset or patched);
here old rows stay the same parameter objects.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ContinualError


class IncrementalClassifier(nn.Module):
    """A linear head whose output grows with the classes seen; old rows are never touched.

    Args:
        in_features: size of the features it reads.
        num_classes: initial number of outputs (0: no class yet).
        bias: whether rows have a bias.
        mask_past: set logits of past classes to -inf during training (see the module docstring).
        fused: one matmul over the concatenated rows instead of one per block (see the module docstring).

    Example:
        >>> head = IncrementalClassifier(4, 3)
        >>> x = torch.randn(2, 4)
        >>> old = head(x)
        >>> new_params = head.grow(5)
        >>> len(new_params), head(x).shape, torch.equal(head(x)[:, :3], old)
        (2, torch.Size([2, 5]), True)
    """

    def __init__(self, in_features: int, num_classes: int = 0, *, bias: bool = True, mask_past: bool = False, fused: bool = False) -> None:
        super().__init__()
        if in_features < 1 or num_classes < 0:
            raise ContinualError(f"IncrementalClassifier(in_features={in_features}, num_classes={num_classes}): "
                                 "in_features must be positive and num_classes non-negative")
        self.in_features = in_features
        self.bias = bias
        self.mask_past = mask_past
        self.fused = fused
        self.blocks = nn.ModuleList()
        self.register_buffer("_anchor", torch.empty(0), persistent=False)  # follows .to(device/dtype)
        self._active: Tensor | None = None  # classes of the current experience (for mask_past)
        self.grow(num_classes)

    @property
    def num_classes(self) -> int:
        """Current number of outputs."""
        return sum(b.out_features for b in self.blocks)

    @property
    def sizes(self) -> list[int]:
        """Rows per block, in growth order."""
        return [b.out_features for b in self.blocks]

    def grow(self, num_classes: int) -> list[nn.Parameter]:
        """Grow to ``num_classes`` outputs (no-op when already that wide); return the new parameters.

        New rows get ``nn.Linear``'s default initialisation (drawn from the global RNG).
        """
        new_rows = num_classes - self.num_classes
        if new_rows <= 0:
            return []
        block = nn.Linear(self.in_features, new_rows, bias=self.bias).to(self._anchor)
        self.blocks.append(block)
        return list(block.parameters())

    def adapt(self, classes: Iterable[int]) -> list[nn.Parameter]:
        """Grow to cover ``classes`` (labels of the coming experience); return the new parameters."""
        classes = sorted({int(c) for c in classes})
        if classes and classes[0] < 0:
            raise ContinualError(f"class labels must be non-negative; got {classes[0]}")
        new = self.grow(classes[-1] + 1) if classes else []
        if self.mask_past:
            active = torch.zeros(self.num_classes, dtype=torch.bool, device=self._anchor.device)
            active[classes] = True
            self._active = active
        return new

    def forward(self, x: Tensor) -> Tensor:
        if self.fused and len(self.blocks) > 1:
            bias = torch.cat([b.bias for b in self.blocks]) if self.bias else None
            out = F.linear(x, torch.cat([b.weight for b in self.blocks]), bias)  # (B, num_classes)
            return self._mask(out)
        parts = [block(x) for block in self.blocks]  # (B, rows of each block)
        if not parts:
            return x.new_zeros(x.shape[0], 0)  # (B, 0): no class yet
        return self._mask(parts[0] if len(parts) == 1 else torch.cat(parts, 1))  # (B, num_classes)

    def _mask(self, out: Tensor) -> Tensor:
        active = self.training_mask()
        if self.training and active is not None:
            out = out.masked_fill(~active.to(out.device), float("-inf"))
        return out

    def training_mask(self) -> Tensor | None:
        """The logits training may use, ``(num_classes,)`` bool: the current experience's classes
        with ``mask_past``; ``None`` when every logit is used."""
        return self._active if self.mask_past else None

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, num_classes={self.num_classes}, blocks={self.sizes}, "
                f"mask_past={self.mask_past}, fused={self.fused}")


def training_mask(model: nn.Module) -> Tensor | None:
    """The logits ``model`` trains on, ``(num_classes,)`` bool, when a ``mask_past`` head masks
    past classes in training; ``None`` when it trains on all of them.

    Importance estimates (EWC's Fisher, MAS) run in eval mode, where the head does not mask;
    they use this to see the logits training saw.
    """
    masks = [m.training_mask() for m in model.modules() if isinstance(m, IncrementalClassifier)]
    masks = [m for m in masks if m is not None]
    return masks[0] if len(masks) == 1 else None


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
        return head.grow(len(known))

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
            logits = head(x)  # (B, c_k): every sample through every head (no host sync)
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

    ``before_experience`` returns the new rows' parameters, which the trainer adds to its
    optimizer (old parameters, and their optimizer state, are untouched). ``report()`` gives
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
