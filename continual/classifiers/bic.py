"""Bias correction: Wu et al., "Large Scale Incremental Learning", CVPR 2019 (BiC).

A class-incremental model trained with few exemplars of the old classes is biased towards the
new ones. BiC adds a linear correction per experience to that experience's logits,
``o_c <- alpha_k * o_c + beta_k`` for the classes ``c`` it brought (Eq. 4), and after training on
experience ``k > 0`` learns only the newest pair ``(alpha_k, beta_k)`` (initialised to ``(1, 0)``)
with the cross-entropy of the corrected logits on a small held-out validation set, balanced over
every class seen so far, with the rest of the model frozen (Eq. 5, "stage 2"). Earlier pairs stay
fixed; experience 0 has none.

Stage 2 settings follow G-U-N/PyCIL ``models/bic.py`` (``_stage2_bias_correction``: SGD, lr 0.1,
momentum 0.9, weight decay 2e-4, 170 epochs, learning rate divided by 10 at epochs 60, 100 and
140, batch 128). Its stage-2 epochs are not scaled down here: the model is frozen, so the
validation set's logits are computed once and each step is a scale and a cross-entropy on a
``(batch, classes)`` tensor. With another ``epochs`` the milestones keep their fractions
(60/170, 100/170, 140/170). mmasana/FACIL ``src/approach/bic.py`` uses 200 epochs at a constant
lr 0.1 (the original code's 2 x 100), momentum 0.9, no weight decay and a ``0.1 * beta^2 / 2``
penalty taken from the original code.

Deviations and choices:

- Validation set. The paper (Sec. 4, Fig. 2) splits it off the old classes' exemplars and the new
  classes' data (train/validation 9:1 on the exemplars); PyCIL draws
  ``int(0.1 * memory_size / known_classes)`` samples per class (20 for a 2000-sample memory at
  10 known classes: the default ``val_per_class`` here) from the new classes' data and from each
  old class's exemplars, at every step. Here each class's validation samples are held out of its
  training data once, when the class is new (:meth:`BiasCorrection.experience_data`, which the
  trainer calls before an experience's batches), and kept in this plugin's own store beside the
  replay memory, counted in :meth:`BiasCorrection.memory_bytes`. They are never trained on, so the
  validation set is disjoint from the training data and from the replay memory, and the memory
  keeps its whole budget for training. At stage 2 every class seen so far contributes the same
  number of samples: ``val_per_class``, or the smallest count a class has (a class never gives
  more than half of its training samples; one with a single sample gives none and is left out).
- The samples held out are drawn uniformly at random within each class with the plugin's own
  seeded ``torch.Generator`` (on the CPU, so the split is the same on every device).
- The loss is the cross-entropy of the corrected logits (the paper's Eq. 5 and FACIL). PyCIL
  applies ``F.cross_entropy`` to ``softmax(logits)``, a softmax twice; that is not followed.
- The model is in eval mode during stage 2 (FACIL; PyCIL leaves it in train mode, so batch-norm
  statistics move on the validation data) and under ``no_grad``: no parameter of the model, and
  no gradient or optimizer state of it, changes. Inputs get the experience's evaluation
  transform (PyCIL's validation loader augments).
- The correction is applied by a forward hook on the model's head (its first growing head, else
  ``model.head``, else the model), in training and in evaluation, to the columns of each
  experience's new classes. A copy of the model (LwF's frozen teacher) carries the pairs trained
  when it was copied. PyCIL and FACIL correct the old network's outputs with every pair, the
  newest included: list ``bic`` before ``lwf`` (``bic+lwf``) so the teacher is copied after
  stage 2, as there; that order also resumes exactly (the pairs are hooked on the model before
  LwF rebuilds its copy from it).
- An experience that brings no class not seen before (domain-incremental streams) gets no pair.
- The paper's stage 1 also distils the old model's logits with weight ``n / (n + m)``; this plugin
  is the bias-correction part only and composes with replay, LwF... (``replay+bic``, ``bic+lwf``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ContinualError
from ..models import forward, growing_heads
from ..streams import Experience
from ..trainer import Plugin

# Stage 2 (PyCIL models/bic.py): SGD with this momentum; lr / 10 at these fractions of the epochs.
MOMENTUM = 0.9
MILESTONES = (60 / 170, 100 / 170, 140 / 170)


def correct(out: Tensor, columns: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
    """``out`` with ``out[:, columns] = alpha * out[:, columns] + beta`` (out of place; other columns untouched).

    ``alpha`` and ``beta`` are scalars or one value per column.

    >>> correct(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([1, 2]), torch.tensor(2.0), torch.tensor(-1.0)).tolist()
    [[1.0, 3.0, 5.0]]
    """
    return out.index_copy(1, columns, out.index_select(1, columns) * alpha + beta)


class _Correction:
    """The forward hook: the trained pairs as one scale and one shift per corrected column.

    Kept apart from the plugin so that a copy of the model (``copy.deepcopy``) copies only this
    small object: the copy keeps the pairs of the moment it was made.
    """

    def __init__(self) -> None:
        self.pairs: list[tuple[list[int], float, float]] = []  # (classes, alpha, beta) of each trained experience
        self._cache: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}

    def set(self, pairs: list[tuple[list[int], float, float]]) -> None:
        self.pairs = [(list(c), float(a), float(b)) for c, a, b in pairs]
        self._cache = {}

    def _tensors(self, width: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        key = (width, device, dtype)
        if key not in self._cache:  # built once per width and device (a host-to-device copy, not per step)
            cols, a, b = [], [], []
            for classes, alpha, beta in self.pairs:
                kept = [c for c in classes if c < width]
                cols += kept
                a += [alpha] * len(kept)
                b += [beta] * len(kept)
            self._cache[key] = (torch.tensor(cols, dtype=torch.long, device=device),
                                torch.tensor(a, dtype=dtype, device=device), torch.tensor(b, dtype=dtype, device=device))
        return self._cache[key]

    def __call__(self, module: nn.Module, args, out: Tensor) -> Tensor | None:
        if not self.pairs or not isinstance(out, Tensor) or out.dim() != 2:
            return None
        cols, a, b = self._tensors(out.shape[1], out.device, out.dtype)
        if len(cols) == 0:
            return None
        return correct(out, cols, a, b)

    def __deepcopy__(self, memo) -> _Correction:
        copy = _Correction()
        copy.set(self.pairs)
        return copy


class BiasCorrection(Plugin):
    """BiC's bias correction (Wu et al. 2019): one learned ``(alpha, beta)`` per experience.

    Args:
        val_per_class: validation samples held out of each class's training data when the class
            is new (PyCIL's 10% of a 2000-sample memory over 10 classes).
        epochs: stage-2 epochs over the validation set; 0 holds samples out but learns no pair.
        lr: stage-2 learning rate (SGD, momentum 0.9, divided by 10 at 60/170, 100/170, 140/170 of
            the epochs).
        weight_decay: stage-2 weight decay on ``(alpha, beta)``.
        batch_size: stage-2 batch size.
        seed: seeds the plugin's generator (which samples are held out; stage-2 batch order).

    ``report()`` gives ``alpha`` and ``beta`` per experience (``1`` and ``0`` where no pair was
    learned), ``val_samples_per_class`` (the count each class contributed to each stage 2; 0 where
    there was none) and the settings.
    """

    name = "bic"

    def __init__(self, *, val_per_class: int = 20, epochs: int = 170, lr: float = 0.1, weight_decay: float = 2e-4,
                 batch_size: int = 128, seed: int = 0) -> None:
        for key, value, low in (("val_per_class", val_per_class, 1), ("epochs", epochs, 0), ("batch_size", batch_size, 1)):
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
                raise ContinualError(f"bias correction: {key}={value!r} must be an integer >= {low}")
        if not lr > 0:
            raise ContinualError(f"bias correction: lr={lr!r} must be positive")
        if not weight_decay >= 0:
            raise ContinualError(f"bias correction: weight_decay={weight_decay!r} must be >= 0")
        self.val_per_class = val_per_class
        self.epochs = epochs
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        # Validation store: stored inputs, labels, task ids of the held-out samples, grouped by class.
        self.val_x: Tensor | None = None
        self.val_y: Tensor | None = None
        self.val_t: Tensor | None = None
        # Per experience, in order: its new classes, its pair, how many samples per class its stage 2 used.
        self.classes: list[list[int]] = []
        self.alphas: list[float] = []
        self.betas: list[float] = []
        self.val_used: list[int] = []
        self._hook = _Correction()
        self._handle = None
        self._hooked: nn.Module | None = None

    # ------------------------------------------------------------------ data
    def experience_data(self, experience: Experience) -> Experience | None:
        """The experience without the validation samples held out of its new classes (``None``
        when nothing is held out); the held-out samples join the plugin's store."""
        seen = set() if self.val_y is None else set(self.val_y.unique().tolist())
        y = experience.y_train.cpu()
        n = len(y)
        if n == 0:
            return None
        perm = torch.randperm(n, generator=self.generator)  # uniform order within each class
        order = perm[torch.sort(y[perm], stable=True).indices]  # grouped by class, random within
        labels, counts = torch.unique_consecutive(y[order], return_counts=True)
        quota = torch.tensor([0 if int(c) in seen else min(self.val_per_class, int(k) // 2) for c, k in zip(labels, counts)],
                             dtype=torch.long)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(n) - torch.repeat_interleave(starts, counts)  # position within its class
        held = rank < torch.repeat_interleave(quota, counts)
        if not held.any():
            return None
        out_idx = order[held].to(experience.device)  # grouped by class
        keep_idx = torch.sort(order[~held]).values.to(experience.device)  # the training data keeps its order
        x_val, y_val, t_val = experience.x_train[out_idx], experience.y_train[out_idx], experience.t_train[out_idx]
        if self.val_x is None:
            self.val_x, self.val_y, self.val_t = x_val, y_val, t_val
        else:  # once per experience
            dev = self.val_x.device
            self.val_x = torch.cat([self.val_x, x_val.to(dev)])
            self.val_y = torch.cat([self.val_y, y_val.to(dev)])
            self.val_t = torch.cat([self.val_t, t_val.to(dev)])
        return dataclasses.replace(experience, x_train=experience.x_train[keep_idx], y_train=experience.y_train[keep_idx],
                                   t_train=experience.t_train[keep_idx])

    def validation_set(self) -> tuple[Tensor, Tensor, Tensor, int]:
        """The class-balanced validation set: the same number of stored samples of every class
        held out so far (the smallest count), and that number."""
        if self.val_y is None or len(self.val_y) == 0:
            empty = torch.zeros(0, dtype=torch.long)
            return empty, empty, empty, 0
        y = self.val_y
        labels, counts = torch.unique_consecutive(y, return_counts=True)  # the store is grouped by class
        m = int(counts.min())
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(y), device=y.device) - torch.repeat_interleave(starts, counts)
        idx = (rank < m).nonzero().flatten()
        return self.val_x[idx], self.val_y[idx], self.val_t[idx], m

    # --------------------------------------------------------------- the hook
    def _attach(self, model: nn.Module) -> None:
        """Register the correction hook on ``model``'s head (once; moved if the model changed)."""
        heads = growing_heads(model)  # an IncrementalClassifier or a MultiHeadClassifier: logits in label space
        head = heads[0] if heads else getattr(model, "head", None)
        head = head if isinstance(head, nn.Module) else model
        if head is self._hooked:
            return
        if self._handle is not None:
            self._handle.remove()
        self._handle = head.register_forward_hook(self._hook)
        self._hooked = head

    def _trained_pairs(self) -> list[tuple[list[int], float, float]]:
        return [(c, a, b) for c, a, b in zip(self.classes, self.alphas, self.betas) if c and (a, b) != (1.0, 0.0)]

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        if self._trained_pairs():
            self._attach(model)
        return None

    # ---------------------------------------------------------------- stage 2
    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        """Stage 2 after an experience that brought new classes beside old ones: learn its pair."""
        before = {c for cs in self.classes for c in cs}
        new = sorted({int(c) for c in experience.classes} - before)
        self.classes.append(new)
        alpha, beta, used = 1.0, 0.0, 0
        if new and before and self.epochs > 0:
            x, y, t, used = self.validation_set()
            if used > 0:
                alpha, beta = self._stage2(model, experience, new, x, y, t)
        self.alphas.append(alpha)
        self.betas.append(beta)
        self.val_used.append(used)
        self._hook.set(self._trained_pairs())
        if self._trained_pairs():
            self._attach(model)

    def _stage2(self, model: nn.Module, experience: Experience, new: list[int], x: Tensor, y: Tensor, t: Tensor) -> tuple[float, float]:
        """Train ``(alpha, beta)`` of the new classes on the validation set; the model stays frozen."""
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():  # the frozen model's logits, with the earlier pairs applied by the hook
                logits = torch.cat([forward(model, experience.transform(x[s : s + 1024]), t[s : s + 1024])
                                    for s in range(0, len(y), 1024)])  # (N, C)
        finally:
            model.train(was_training)
        device = logits.device
        y = y.to(device)
        cols = torch.tensor([c for c in new if c < logits.shape[1]], dtype=torch.long, device=device)
        alpha = torch.ones((), device=device, requires_grad=True)
        beta = torch.zeros((), device=device, requires_grad=True)
        opt = torch.optim.SGD([alpha, beta], lr=self.lr, momentum=MOMENTUM, weight_decay=self.weight_decay)
        milestones = sorted({max(1, round(f * self.epochs)) for f in MILESTONES})
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
        n, bs = len(y), self.batch_size
        orders = torch.stack([torch.randperm(n, generator=self.generator) for _ in range(self.epochs)]).to(device)
        for epoch in range(self.epochs):
            for s in range(0, n, bs):
                idx = orders[epoch, s : s + bs]
                loss = F.cross_entropy(correct(logits[idx], cols, alpha, beta), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sched.step()
        a, b = float(alpha.item()), float(beta.item())  # one host sync per experience
        if not (math.isfinite(a) and math.isfinite(b)):
            raise ContinualError(f"bias correction: stage 2 of experience {experience.index} gave alpha={a}, beta={b}; "
                                 f"the logits of classes {new} must be finite (a head grown to cover them) and bic_lr={self.lr:g} small enough")
        return a, b

    # ------------------------------------------------------------------ state
    def memory_bytes(self) -> int:
        """Bytes of the validation store (inputs, labels, task ids) and the pairs (two float32 each)."""
        store = sum(v.numel() * v.element_size() for v in (self.val_x, self.val_y, self.val_t) if v is not None)
        return store + 8 * len(self.alphas)

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only: the pairs, each experience's classes, the validation store, the generator."""
        state: dict[str, Tensor] = {
            "alpha": torch.tensor(self.alphas, dtype=torch.float64),
            "beta": torch.tensor(self.betas, dtype=torch.float64),
            "val_used": torch.tensor(self.val_used, dtype=torch.long),
            "generator": self.generator.get_state(),
        }
        for i, c in enumerate(self.classes):
            state[f"classes.{i}"] = torch.tensor(c, dtype=torch.long)
        if self.val_y is not None:
            state.update(val_x=self.val_x.clone(), val_y=self.val_y.clone(), val_t=self.val_t.clone())
        return state

    def load_state_dict(self, state: Mapping[str, Tensor], *, model: nn.Module | None = None) -> None:
        """Restore :meth:`state_dict` and hook the correction on ``model``'s head (the trainer
        passes its model; without one, the hook is attached at the next ``before_experience``)."""
        self.alphas = [float(a) for a in state["alpha"].tolist()]
        self.betas = [float(b) for b in state["beta"].tolist()]
        self.val_used = [int(v) for v in state["val_used"].tolist()]
        self.classes = [state[f"classes.{i}"].tolist() for i in range(len(self.alphas))]
        self.generator.set_state(state["generator"])
        device = next((p.device for p in model.parameters()), None) if model is not None else None
        if "val_y" in state:
            self.val_x, self.val_y, self.val_t = (state[k].to(device or state[k].device).clone() for k in ("val_x", "val_y", "val_t"))
        else:
            self.val_x = self.val_y = self.val_t = None
        self._hook.set(self._trained_pairs())
        if model is not None and self._trained_pairs():
            self._attach(model)

    def report(self) -> dict:
        return {"alpha": list(self.alphas), "beta": list(self.betas), "val_per_class": self.val_per_class,
                "val_samples_per_class": list(self.val_used), "epochs": self.epochs, "lr": self.lr,
                "weight_decay": self.weight_decay, "batch_size": self.batch_size}
