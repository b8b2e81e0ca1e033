"""The regularizer protocol, the shared quadratic penalty, and :func:`combine`.

A regularizer adds a penalty to the loss and consolidates after each experience:

- ``penalty(model, x=None, y=None, t=None, out=None) -> Tensor`` (a scalar added to the loss; 0
  before the first consolidation);
- ``consolidate(model, experience)`` (after an experience: compute importances, store anchors);
- optional ``after_step(model)`` (path-integral methods, called after each optimizer step);
- ``state_dict()`` / ``load_state_dict(state)`` (tensors only: ``torch.load(weights_only=True)``).

Every regularizer is also a trainer plugin (``after_experience`` calls ``consolidate``), and it
never edits the trainer's state. From a plain PyTorch loop::

    loss = task_loss + ewc.penalty(model)
    ...
    ewc.consolidate(model, experience)

EWC (online), SI, MAS and L2 share one form, :class:`QuadraticPenalty`:
``strength * scale * sum_i Omega_i (theta_i - anchor_i)^2 + const``. Importances and anchors are
keyed by parameter name, so a head that grows between experiences is handled: a parameter that
did not exist at consolidation is not penalised, and a parameter that grew along dim 0 gets zero
importance on its new rows (its stored tensors are zero-padded once, when first seen).

Reference for :func:`combine`: the ``chain`` combinator of optax (a regularizer made of parts,
equal to the sum of the parts applied by hand).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ..errors import ContinualError
from ..streams import Experience
from ..trainer import Plugin, load_plugin_state


@runtime_checkable
class Regularizer(Protocol):
    """What a regularizer provides (structural: any object with these methods is one)."""

    def penalty(self, model: nn.Module, x: Tensor | None = None, y: Tensor | None = None,
                t: Tensor | None = None, out: Tensor | None = None) -> Tensor: ...

    def consolidate(self, model: nn.Module, experience: Experience) -> None: ...

    def state_dict(self) -> dict[str, Tensor]: ...

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None: ...


def check_choice(label: str, value: str, accepted: Iterable[str]) -> str:
    """``value`` if it is one of ``accepted``; a :class:`ContinualError` naming both otherwise.

    >>> check_choice("mode", "online", ("separate", "online"))
    'online'
    """
    accepted = tuple(accepted)
    if value not in accepted:
        raise ContinualError(f"unknown {label} {value!r}; expected one of {', '.join(accepted)}")
    return value


def zero(model: nn.Module) -> Tensor:
    """A scalar 0 on the model's device: the penalty before anything is consolidated (so that
    ``loss = task_loss + reg.penalty(model)`` works from the first step)."""
    p = next(model.parameters(), None)
    return torch.zeros((), device=p.device if p is not None else None)


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    """The model's parameters that require gradients, by name."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def fit_shape(stored: Tensor, param: Tensor, name: str) -> Tensor:
    """``stored`` zero-padded along dim 0 to ``param``'s shape (a head that grew); itself if equal.

    Raises:
        ContinualError: if the shapes differ other than by growth along dim 0.
    """
    if stored.shape == param.shape:
        return stored
    if stored.dim() == param.dim() and stored.shape[1:] == param.shape[1:] and stored.shape[0] < param.shape[0]:
        pad = stored.new_zeros((param.shape[0] - stored.shape[0], *stored.shape[1:]))
        return torch.cat([stored, pad])
    raise ContinualError(
        f"parameter {name!r} has shape {tuple(param.shape)} but was consolidated with shape {tuple(stored.shape)}; "
        "only growth along dim 0 (new output rows) is supported"
    )


class RegularizerBase(Plugin):
    """Plugin plumbing shared by every regularizer: ``after_experience`` consolidates.

    Subclasses implement :meth:`penalty`, :meth:`consolidate`, :meth:`state_dict` and
    :meth:`load_state_dict`; path-integral methods also override ``after_step`` (the trainer only
    calls hooks a plugin really overrides).
    """

    name = "regularizer"

    def penalty(self, model: nn.Module, x: Tensor | None = None, y: Tensor | None = None,  # type: ignore[override]
                t: Tensor | None = None, out: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def consolidate(self, model: nn.Module, experience: Experience) -> None:
        raise NotImplementedError

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        self.consolidate(model, experience)

    def state_dict(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        raise NotImplementedError

    def report(self) -> dict:
        return {}


class _WeightedSquares(torch.autograd.Function):
    """``scale * sum_i omega_i (theta_i - anchor_i)^2 + const`` over lists of tensors, as one node.

    Forward: ``d = theta - anchor`` (minus ``low`` when the anchor is given as a float32 pair
    ``anchor + low``, see :func:`split_float64`), ``w = omega * d``, ``value = sum <w, d>`` with
    foreach ops; backward: ``2 scale w g``. One autograd node instead of four per parameter.
    """

    @staticmethod
    def forward(ctx, scale: float, const: float, omegas: list[Tensor], anchors: list[Tensor],
                lows: list[Tensor] | None, *params: Tensor) -> Tensor:
        d = torch._foreach_sub(list(params), anchors)
        if lows is not None:
            torch._foreach_sub_(d, lows)
        w = torch._foreach_mul(d, omegas)
        value = torch.stack([torch.dot(a.reshape(-1), b.reshape(-1)) for a, b in zip(w, d)]).sum()
        ctx.save_for_backward(*w)
        ctx.scale = scale
        return value * scale + const if const else value * scale

    @staticmethod
    def backward(ctx, grad: Tensor):
        w = ctx.saved_tensors
        return (None, None, None, None, None, *torch._foreach_mul(list(w), (2 * ctx.scale) * grad))


def weighted_squares(omegas: list[Tensor], anchors: list[Tensor], params: list[Tensor], *,
                     scale: float = 1.0, const: float = 0.0, lows: list[Tensor] | None = None) -> Tensor:
    """``scale * sum_i omega_i (theta_i - anchor_i - low_i)^2 + const`` summed over the lists,
    differentiable in ``params`` (``lows``: the low halves of anchors split by :func:`split_float64`).

    >>> p = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> weighted_squares([torch.tensor([1.0, 0.5])], [torch.zeros(2)], [p]).item()
    3.0
    """
    return _WeightedSquares.apply(float(scale), float(const), omegas, anchors, lows, *params)


def split_float64(x: Tensor, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """``(high, low)`` in ``dtype`` with ``high + low`` equal to the float64 ``x`` to about twice
    ``dtype``'s precision.

    ``theta - high - low`` then gives a float32 ``theta`` minus a float64 anchor with one
    rounding: ``theta - high`` is exact when ``theta`` is within a factor 2 of ``high`` (Sterbenz),
    which is when precision matters (a difference small against the values).

    >>> high, low = split_float64(torch.tensor([1 + 2.0**-30], dtype=torch.float64))
    >>> high.item(), low.item() == 2.0**-30
    (1.0, True)
    """
    high = x.to(dtype)
    return high, (x - high.double()).to(dtype)


class QuadraticPenalty(RegularizerBase):
    """``strength * scale * sum_i importance_i * (theta_i - anchor_i)^2 + const``, with one anchor.

    Subclasses compute an importance per parameter in :meth:`importance` and choose how it joins
    the stored one with ``decay``: ``Omega <- decay * Omega + Omega_new`` (``decay=1``: accumulate
    as SI and MAS do; ``decay=0``: replace, as L2 to the latest anchor does; ``0 < decay < 1``:
    online EWC's gamma). The anchor is the latest consolidated parameters.

    The penalty costs one pass over the parameters per step, whatever the number of experiences.

    Args:
        strength: the penalty's strength (lambda, or c for SI).
        scale: a constant factor on the sum (0.5 for EWC's lambda/2 convention, else 1).
        decay: how the stored importance is kept at consolidation (see above).
    """

    def __init__(self, strength: float, *, scale: float = 1.0, decay: float = 1.0) -> None:
        if strength < 0:
            raise ContinualError(f"strength={strength} must be >= 0")
        if decay < 0:
            raise ContinualError(f"decay={decay} must be >= 0")
        self.strength = float(strength)
        self.scale = float(scale)
        self.decay = float(decay)
        self.importances: dict[str, Tensor] = {}
        self.anchors: dict[str, Tensor] = {}
        self.consts: dict[str, float] = {}  # value-only offsets (separate EWC); no gradient
        self.anchor_lows: dict[str, Tensor] = {}  # low halves of float64 anchors (separate EWC)
        self.num_consolidations = 0

    # ------------------------------------------------------------ importances
    def importance(self, model: nn.Module, experience: Experience) -> dict[str, Tensor]:
        """The new importance of each trainable parameter after ``experience`` (by name)."""
        raise NotImplementedError

    @torch.no_grad()
    def consolidate(self, model: nn.Module, experience: Experience) -> None:
        """Join the new importances to the stored ones and anchor at the current parameters."""
        new = self.importance(model, experience)
        params = trainable(model)
        for name, omega in new.items():
            old = self.importances.get(name)
            if old is not None and self.decay != 0:
                omega = omega + self.decay * fit_shape(old, omega, name)
            self.importances[name] = omega.detach().clone()
            self.anchors[name] = params[name].detach().clone()
        self.num_consolidations += 1

    # ---------------------------------------------------------------- penalty
    def _terms(self, model: nn.Module) -> list[tuple[Tensor, Tensor, Tensor, str]]:
        """(parameter, importance, anchor, name) for each stored name the model still has, padded if it grew."""
        params = trainable(model)
        terms = []
        for name, omega in self.importances.items():
            p = params.get(name)
            if p is None:
                continue
            if omega.device != p.device:  # loaded from a state on another device: move once
                self.importances[name] = omega = omega.to(p.device)
                self.anchors[name] = self.anchors[name].to(p.device)
                if name in self.anchor_lows:
                    self.anchor_lows[name] = self.anchor_lows[name].to(p.device)
            if omega.shape != p.shape:  # a head grew: pad the stored tensors once
                self._grow(name, p)
                omega = self.importances[name]
            terms.append((p, omega, self.anchors[name], name))
        return terms

    def _grow(self, name: str, param: Tensor) -> None:
        self.importances[name] = fit_shape(self.importances[name], param, name)
        self.anchors[name] = fit_shape(self.anchors[name], param, name)
        if name in self.anchor_lows:
            self.anchor_lows[name] = fit_shape(self.anchor_lows[name], param, name)

    def penalty(self, model: nn.Module, x: Tensor | None = None, y: Tensor | None = None,
                t: Tensor | None = None, out: Tensor | None = None) -> Tensor:
        """The penalty, a scalar tensor (0 before the first consolidation)."""
        if not self.importances:
            return zero(model)
        terms = self._terms(model)
        if not terms:
            return zero(model)
        params, omegas, anchors, names = zip(*terms)
        lows = [self.anchor_lows.get(n, torch.zeros_like(a)) for n, a in zip(names, anchors)] if self.anchor_lows else None
        k = self.strength * self.scale
        const = k * sum(self.consts.values()) if self.consts else 0.0
        return weighted_squares(list(omegas), list(anchors), list(params), scale=k, const=const, lows=lows)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Tensor]:
        """Importances, anchors and counters as a flat dict of tensors."""
        state = {"num_consolidations": torch.tensor(self.num_consolidations)}
        for name in self.importances:
            state[f"importance.{name}"] = self.importances[name]
            state[f"anchor.{name}"] = self.anchors[name]
        for name, value in self.consts.items():
            state[f"const.{name}"] = torch.tensor(value, dtype=torch.float64)
        return state

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.num_consolidations = int(state["num_consolidations"])
        self.importances = {k[len("importance."):]: v.clone() for k, v in state.items() if k.startswith("importance.")}
        self.anchors = {k[len("anchor."):]: v.clone() for k, v in state.items() if k.startswith("anchor.")}
        self.consts = {k[len("const."):]: float(v) for k, v in state.items() if k.startswith("const.")}

    def report(self) -> dict:
        return {"strength": self.strength, "num_consolidations": self.num_consolidations,
                "num_parameters": int(sum(v.numel() for v in self.importances.values()))}


class Combined(RegularizerBase):
    """A regularizer whose penalty is the sum of named parts' penalties (see :func:`combine`).

    Each part's penalty is recorded per experience (mean over steps) and reported by name.
    """

    name = "combined"

    def __init__(self, parts: Mapping[str, object]) -> None:
        if not parts:
            raise ContinualError("combine needs at least one regularizer, e.g. combine(ewc=EWC(), l2=L2())")
        self.parts = dict(parts)
        self._sums: dict[str, Tensor] = {}
        self._steps = 0
        self.terms: dict[str, list[float]] = {name: [] for name in self.parts}

    def before_experience(self, model: nn.Module, experience: Experience):
        new = []
        for part in self.parts.values():
            hook = getattr(part, "before_experience", None)
            if hook is not None:
                new += list(hook(model, experience) or [])
        return new or None

    def penalty(self, model: nn.Module, x: Tensor | None = None, y: Tensor | None = None,
                t: Tensor | None = None, out: Tensor | None = None) -> Tensor:
        """The sum of the parts' penalties (0 if every part returns ``None``)."""
        total = None
        for name, part in self.parts.items():
            value = part.penalty(model, x=x, y=y, t=t, out=out)
            if value is None:
                continue
            self._sums[name] = self._sums.get(name, 0) + value.detach()
            total = value if total is None else total + value
        self._steps += 1
        return total if total is not None else zero(model)

    def after_step(self, model: nn.Module) -> None:
        for part in self.parts.values():
            hook = getattr(part, "after_step", None)
            if hook is not None:
                hook(model)

    def consolidate(self, model: nn.Module, experience: Experience) -> None:
        for name in self.parts:  # the experience's mean penalty per part (one host sync each)
            total = self._sums.get(name)
            self.terms[name].append(float(total) / max(self._steps, 1) if total is not None else 0.0)
        self._sums, self._steps = {}, 0
        for part in self.parts.values():
            part.consolidate(model, experience)

    def state_dict(self) -> dict[str, Tensor]:
        return {f"{name}.{k}": v for name, part in self.parts.items() for k, v in part.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, Tensor], *, model: nn.Module | None = None) -> None:
        """Each part's state; ``model`` goes to the parts that take it (LwF's frozen copy)."""
        for name, part in self.parts.items():
            prefix = f"{name}."
            part_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if model is not None:
                load_plugin_state(part, part_state, model)
            else:
                part.load_state_dict(part_state)

    def report(self) -> dict:
        """``{"terms": {part: [mean penalty per experience]}, part: part.report(), ...}``."""
        out: dict = {"terms": {name: list(values) for name, values in self.terms.items()}}
        for name, part in self.parts.items():
            if callable(getattr(part, "report", None)):
                out[name] = part.report()
        return out


def combine(**parts: object) -> Combined:
    """A regularizer that sums the penalties of named parts and reports each term by name.

    Example:
        >>> from continual.regularizers import EWC, L2
        >>> reg = combine(ewc=EWC(lam=100.0), l2=L2(lam=0.01))
        >>> sorted(reg.parts)
        ['ewc', 'l2']
    """
    return Combined(parts)


def subsample(experience: Experience, num_samples: int | None, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """The experience's stored training inputs, labels and task ids; a seeded subset of
    ``num_samples`` of them when that is smaller than the experience (``None`` or 0: all)."""
    x, y, t = experience.x_train, experience.y_train, experience.t_train
    if num_samples and num_samples < len(y):
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:num_samples].to(y.device)
        x, y, t = x[idx], y[idx], t[idx]
    return x, y, t
