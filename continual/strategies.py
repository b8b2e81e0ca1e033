"""Strategies: names mapped to a training schedule and a set of plugins.

A :class:`Strategy` is data, not a subclass of the trainer: its ``schedule`` says which data each
step trains on and ``make_plugins(params, context)`` builds its plugins from its hyperparameters.
Modules that add methods register them here with :func:`register`.

Baselines defined here:
    - ``finetune``: naive sequential training, the lower bound (no plugin).
    - ``joint``: one model trained on the union of all experiences, the upper bound; its single
      row is reported against every experience.
    - ``cumulative``: at each step, continue training on all data seen so far.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from .errors import ContinualError
from .streams import Stream
from .trainer import SCHEDULES, Schedule


@dataclass(frozen=True)
class Context:
    """What a plugin factory may need to know about the run it is built for."""

    stream: Stream
    device: torch.device
    seed: int


@dataclass(frozen=True)
class Range:
    """The accepted range of a number: ``low <= value`` (``<`` with ``low_open``), likewise ``high``.

    >>> str(Range(0, 1, high_open=True)), str(Range(1)), str(Range(0, low_open=True))
    ('in [0, 1)', '>= 1', '> 0')
    >>> Range(1).check(0, "mem")
    Traceback (most recent call last):
    ...
    continual.errors.ContinualError: mem=0 is out of range: expected >= 1
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {high}"
        return "a finite number"

    def check(self, value: float, label: str) -> float:
        """``value`` if it is finite and in range; a :class:`ContinualError` naming ``label`` and the range otherwise."""
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and self.low is not None:
            ok = value > self.low if self.low_open else value >= self.low
        if ok and self.high is not None:
            ok = value < self.high if self.high_open else value <= self.high
        if not ok:
            raise ContinualError(f"{label}={value!r} is out of range: expected {self}")
        return value


def _number(x: float | None) -> str:
    return str(x) if x is None or isinstance(x, int) else f"{x:g}"


Limit = Range | tuple[str, ...]  # a number's range, or the accepted names of a text setting


def check_limit(limit: Limit, value: object, label: str) -> object:
    """``value`` if ``limit`` (a :class:`Range` or a tuple of accepted names) allows it; a one-line error otherwise."""
    if isinstance(limit, Range):
        return limit.check(value, label)
    if value not in limit:
        raise ContinualError(f"{label}={value!r} is not accepted; expected one of {', '.join(limit)}")
    return value


@dataclass(frozen=True)
class Strategy:
    """A named way to train on a stream.

    Attributes:
        name: the registry name (``continual run --strategy NAME``).
        summary: one line for ``continual list``.
        schedule: ``"sequential"``, ``"cumulative"`` or ``"joint"`` (see :meth:`Trainer.run`).
        defaults: hyperparameters and their defaults (the paper's, where there is one); their types
            are the types accepted by overrides.
        make_plugins: ``(params, context) -> list of plugins``; ``params`` holds every default,
            overridden by the user's values.
        prepare_model: ``(model, params, context) -> None or [(parameters, lr scale), ...]``,
            called once on the freshly built (and, with ``--pretrained``, loaded) model before the
            trainer is made: it may freeze parts of the model and ask for learning-rate scales of
            parameter groups (transfer baselines).
        needs_pretrained: the strategy needs pretrained weights (``RunConfig.pretrained``).
        limits: accepted values of hyperparameters, checked by :meth:`params`: a :class:`Range`
            for a number, a tuple of names for a text setting. Every float must be finite.
        past_classes: the strategy trains on past classes or their logits (replay, distillation,
            cumulative training), so a head that masks past classes (``incremental-mask-past``)
            does not apply to it.
        comes_before: strategies that must come after this one in a combination (BiC before
            LwF: LwF's frozen copy must carry the bias correction, and a resumed run rebuilds
            it only in that order).
        classifier: the evaluation classifier the method predicts with in its paper (``"nme"``
            for iCaRL), the run's default when ``RunConfig.classifier`` is not given.
        replaces_loss: the strategy's plugin replaces the training loss (a ``criterion``: iCaRL,
            ER-ACE); a combination may hold one such part only.
        alone: why the strategy does not combine with any other (GDumb retrains a new model on
            its memory alone), or ``None``.
    """

    name: str
    summary: str
    schedule: Schedule = "sequential"
    defaults: Mapping[str, object] = field(default_factory=dict)
    make_plugins: Callable[[dict, Context], list] = lambda params, context: []
    prepare_model: Callable[..., list | None] | None = None
    needs_pretrained: bool = False
    limits: Mapping[str, Limit] = field(default_factory=dict)
    past_classes: bool = False
    comes_before: tuple[str, ...] = ()
    classifier: str = "linear"
    replaces_loss: bool = False
    alone: str | None = None

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ContinualError(f"strategy {self.name!r}: unknown schedule {self.schedule!r}; expected one of {', '.join(SCHEDULES)}")
        unknown = [k for k in self.limits if k not in self.defaults]
        if unknown:
            raise ContinualError(f"strategy {self.name!r}: limits for {', '.join(unknown)}, which are not among its parameters")

    def params(self, overrides: Mapping[str, object] | None = None) -> dict:
        """The defaults with ``overrides`` applied; strings are parsed to each default's type.

        Raises:
            ContinualError: for an unknown key (naming the accepted ones), a value of the wrong type,
                a float that is not finite or a value outside its limits.
        """
        params = dict(self.defaults)
        for key, value in (overrides or {}).items():
            if key not in params:
                accepted = ", ".join(sorted(params)) or "none"
                raise ContinualError(f"strategy {self.name!r} has no parameter {key!r}; accepted: {accepted}")
            params[key] = coerce(value, type(params[key]), f"{self.name}.{key}")
        for key, value in params.items():
            if key in self.limits:
                check_limit(self.limits[key], value, f"{self.name}.{key}")
            elif isinstance(value, float) and not math.isfinite(value):
                raise ContinualError(f"{self.name}.{key}={value!r} must be a finite number")
        return params


def coerce(value: object, kind: type, label: str) -> object:
    """``value`` as ``kind`` (bool, int, float or str), parsing strings; a clear error otherwise.

    >>> coerce("0.5", float, "lam"), coerce("true", bool, "flag"), coerce(3, float, "lam")
    (0.5, True, 3.0)
    """
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is bool:
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
    elif kind is int:
        try:
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                return int(value)
        except ValueError:
            pass
    elif kind is float:
        try:
            if isinstance(value, (int, str)) and not isinstance(value, bool):
                return float(value)
        except ValueError:
            pass
    elif kind is str:
        return str(value)
    raise ContinualError(f"{label}={value!r} is not a valid {kind.__name__}")


STRATEGIES: dict[str, Strategy] = {}


def register(strategy: Strategy) -> Strategy:
    """Add a strategy to the registry (its name must be new)."""
    if strategy.name in STRATEGIES:
        raise ContinualError(f"a strategy named {strategy.name!r} is already registered")
    STRATEGIES[strategy.name] = strategy
    return strategy


def get_strategy(name: str) -> Strategy:
    """The registered strategy called ``name``, or the composition ``"a+b"`` of registered ones;
    a clear error listing the names otherwise."""
    if name in STRATEGIES:
        return STRATEGIES[name]
    if "+" in name:
        return compose(*name.split("+"))
    raise ContinualError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)} (or a+b to combine)")


def compose(*names: str, summary: str | None = None) -> Strategy:
    """One strategy running the plugins of several sequential strategies together (e.g. EWC + replay).

    The hyperparameters are the union of the parts'. A name that several parts define is
    given per part as ``PART.NAME`` (``ewc+mas`` has ``ewc.lam`` and ``mas.lam``).

    Raises:
        ContinualError: for an unknown or repeated part, or a part that is not sequential.
    """
    parts = [get_strategy(n) for n in names]
    if len({p.name for p in parts}) != len(parts):
        raise ContinualError(f"cannot combine {'+'.join(names)}: a strategy appears twice")
    for part in parts:
        if part.alone:
            raise ContinualError(f"cannot combine {'+'.join(names)}: {part.alone}")
    losses = [p.name for p in parts if p.replaces_loss]
    if len(losses) > 1:
        raise ContinualError(f"cannot combine {'+'.join(names)}: {' and '.join(losses)} each replace the training loss; "
                             "combine at most one of them")
    for i, part in enumerate(parts):
        early = [p.name for p in parts[:i] if p.name in part.comes_before]
        if early:
            order = [p.name for p in parts if p.name not in early]
            order[order.index(part.name) + 1:1 + order.index(part.name)] = early
            raise ContinualError(f"cannot combine {'+'.join(names)}: {part.name!r} must come before {', '.join(map(repr, early))}; "
                                 f"write {'+'.join(order)}")
    for part in parts:
        if part.schedule != "sequential":
            raise ContinualError(f"cannot combine {part.name!r} (schedule {part.schedule!r}); only sequential strategies combine")
    owners: dict[str, int] = {}
    for part in parts:
        for key in part.defaults:
            owners[key] = owners.get(key, 0) + 1
    # per part: its own name of a hyperparameter -> the combined strategy's name for it
    names_of = [{k: (f"{part.name}.{k}" if owners[k] > 1 else k) for k in part.defaults} for part in parts]
    defaults = {names_of[i][k]: v for i, part in enumerate(parts) for k, v in part.defaults.items()}

    def own(i: int, params: dict) -> dict:
        return {k: params[combined] for k, combined in names_of[i].items()}

    def make_plugins(params: dict, context: Context) -> list:
        return [plugin for i, part in enumerate(parts) for plugin in part.make_plugins(own(i, params), context)]

    preparers = [i for i, part in enumerate(parts) if part.prepare_model is not None]

    def prepare_model(model, params: dict, context: Context) -> list:
        return [g for i in preparers for g in (parts[i].prepare_model(model, own(i, params), context) or [])]

    limits = {names_of[i][k]: v for i, part in enumerate(parts) for k, v in part.limits.items()}
    return Strategy("+".join(names), summary or " + ".join(p.name for p in parts), defaults=defaults, make_plugins=make_plugins,
                    prepare_model=prepare_model if preparers else None, needs_pretrained=any(p.needs_pretrained for p in parts),
                    limits=limits, past_classes=any(p.past_classes for p in parts),
                    comes_before=tuple(n for p in parts for n in p.comes_before),
                    classifier=next((p.classifier for p in parts if p.classifier != "linear"), "linear"),
                    replaces_loss=bool(losses))


register(Strategy("finetune", "naive sequential training on each experience (lower bound)"))
register(Strategy("joint", "one model trained on all experiences at once (upper bound)", schedule="joint"))
register(Strategy("cumulative", "at each step, train on all data seen so far", schedule="cumulative", past_classes=True))
