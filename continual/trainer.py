"""The one training loop and its plugin hooks.

``Trainer.fit(experience)`` trains on one experience with index-sliced batches drawn from a seeded
``torch.Generator`` (no DataLoader, no per-sample Python, no host sync inside a step).
``Trainer.run(stream)`` trains on each experience in turn and fills an :class:`AccuracyMatrix`,
evaluating every experience's test split after each one (and once before training, for forward
transfer).

Plugins see seven hooks (online runs an eighth, ``new_classes``, below); each is optional and
returns what it adds rather than editing the trainer:

- ``before_experience(model, experience)`` -> new parameters for the optimizer, or ``None``
  (a new task head returns its parameters here; a class-incremental head's growth reaches the
  optimizer through :func:`continual.models.sync_optimizer`, which the trainer calls next);
- ``experience_data(experience)`` -> the experience to train on, or ``None`` for the one given
  (a plugin that holds samples out of training, e.g. BiC's validation split);
- ``batch(x, y, t)`` -> ``(x, y, t)``, possibly bigger (replay joins stored samples), or ``None``;
  ``x`` is in its stored dtype, before the transform;
- ``penalty(model, x=, y=, t=, out=)`` -> a scalar tensor added to the loss, or ``None``
  (regularizers); ``x`` is the transformed batch and ``out`` the model's logits on it;
- ``before_step(model)``, after the backward pass and before the optimizer step: the only hook
  that may change the gradients in place (A-GEM's projection);
- ``after_step(model)`` (path-integral methods);
- ``after_experience(model, experience)`` (consolidate importances, fill a buffer).

A plugin may also have a ``name`` (used to label its penalty in the results; default: its class
name), a ``report() -> dict`` of JSON-able facts (buffer memory, head sizes, penalty terms)
that a run stores under ``extra[name]``, and ``strength_names``, the attributes holding its
penalty's strength (EWC: ``("lam",)``), which the error for a loss that diverged names.

Checkpoints: a plugin with state has ``state_dict()`` (tensors and plain values) and
``load_state_dict(state)``. A plugin that keeps a copy of the model (LwF's frozen teacher) may
take ``load_state_dict(state, *, model=...)``: on resume it is handed the trainer's model, already
rebuilt to the checkpoint's architecture by the plugins before it (a grown head), as the template
for its copy. Every registered strategy resumes to the matrix of an uninterrupted run (tested).

A plugin may also replace the training loss: ``criterion(out, y) -> Tensor`` instead of
``F.cross_entropy(out, y)`` (at most one plugin; ER-ACE's asymmetric cross-entropy, iCaRL's
binary cross-entropy). A plugin with ``rebuilds_optimizer = True`` (DER, which adds a backbone
and freezes the old ones; GDumb, which re-initialises the model) gets a new optimizer, of the
same kind and settings, over the parameters that require gradients, at the start of every
experience, as PyCIL builds one per task; no optimizer state carries over between experiences,
and a resumed run does not load one. A plugin with ``skips_training = True`` (a head computed in
closed form from the features, such as NCM) makes ``fit`` run the experience hooks but no
training step.

Evaluation classifiers: a plugin with a ``classifier`` name and ``predict(model, x, t)``
(predicted labels ``(B,)`` for a transformed batch) is evaluated after each experience beside the
model's own argmax (the ``"linear"`` classifier); ``Trainer(classifier=...)`` names the one whose
matrix :meth:`Trainer.run` returns, and ``trainer.matrices`` holds the others' by name (NME).

Learning-rate schedule: within each experience, epoch ``e`` of ``E`` trains at the base rate
times ``lr_decay ** (milestones <= e)`` (``"step"``, PyTorch's ``MultiStepLR``) or
``(1 + cos(pi e / E)) / 2`` (``"cosine"``, ``CosineAnnealingLR`` with ``T_max=E``, stepped per
epoch); each experience starts again from the base rate (each parameter group's own, so
learning-rate scales of groups are kept).

Online runs (``online=True``; :mod:`continual.online`): the same loop, one pass over each
experience in its stored order (no shuffling: the stream's order is the protocol's, see
:func:`continual.online.shuffled`; ``epochs`` must be 1), ``train_passes`` updates on
each incoming batch (its ``batch`` hooks run once per incoming batch; the joined batch is reused
for every pass, and ``penalty``, ``before_step`` and ``after_step`` run at every update), and, with
``eval_every=K``, an evaluation every K training samples seen, written to :attr:`Trainer.anytime`
(samples seen, accuracy on the test samples of the classes seen so far, accuracy on the
experiences reached, accuracy per experience). Task boundaries are hidden: ``before_experience``,
``experience_data`` and ``after_experience`` are not called unless ``boundaries=True``, and a
plugin that needs them is refused with a one-line reason unless it declares ``task_free = True``
(the head expansion; ER with a reservoir buffer). Instead, an eighth hook,
``new_classes(model, classes)`` -> new parameters or ``None``, is called before the batch in which
classes not seen before first arrive (known ahead from one host transfer of the experience's
labels: no host sync per batch), so a class-incremental head grows task-free. The evaluator still
knows the boundaries: after each experience the accuracy row is recorded as offline (it is the
anytime evaluation at that point), so the accuracy matrix and forgetting are computed as usual.

Callbacks are read-only observers: ``callback(event, info)`` with events ``"experience_start"``,
``"anytime"`` (online: an evaluation point, ``info``: experience, samples seen, seen-class accuracy),
``"epoch_end"`` (``info``: the experience's index, the epoch, its mean loss and its number of
steps) and ``"experience_end"``.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ContinualError
from .metrics import AccuracyMatrix
from .models import forward, sync_optimizer
from .streams import Experience, Stream, concat

HOOKS = ("before_experience", "experience_data", "batch", "penalty", "before_step", "after_step", "after_experience", "new_classes")
BOUNDARY_HOOKS = ("before_experience", "experience_data", "after_experience")  # hidden from the methods in an online run
LR_SCHEDULES = ("constant", "step", "cosine")
Schedule = Literal["sequential", "cumulative", "joint"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)
OPTIMIZERS = ("sgd", "adam")
Callback = Callable[[str, dict], None]


class Plugin:
    """Base class with every hook a no-op; subclass and override the hooks you need.

    Plugins need not inherit from it: any object with some of the hook methods works.
    """

    def before_experience(self, model: nn.Module, experience: Experience) -> Iterable[nn.Parameter] | None:
        return None

    def experience_data(self, experience: Experience) -> Experience | None:
        return None

    def batch(self, x: Tensor, y: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        return None

    def penalty(self, model: nn.Module, *, x: Tensor, y: Tensor, t: Tensor, out: Tensor) -> Tensor | None:
        return None

    def before_step(self, model: nn.Module) -> None:
        return None

    def after_step(self, model: nn.Module) -> None:
        return None

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        return None

    def new_classes(self, model: nn.Module, classes: list[int]) -> Iterable[nn.Parameter] | None:
        return None


def _hooks(plugins: Sequence[object], name: str) -> list[tuple[str, Callable]]:
    """(plugin name, bound hook) for the plugins that really implement ``name`` (not the no-op)."""
    found = []
    for p in plugins:
        hook = getattr(p, name, None)
        if hook is None or getattr(type(p), name, None) is getattr(Plugin, name):
            continue
        found.append((getattr(p, "name", type(p).__name__), hook))
    return found


def load_plugin_state(plugin: object, state: dict, model: nn.Module) -> None:
    """``plugin.load_state_dict(state)``, with ``model=model`` for plugins that take it (see the
    module docstring)."""
    if "model" in inspect.signature(plugin.load_state_dict).parameters:
        plugin.load_state_dict(state, model=model)
    else:
        plugin.load_state_dict(state)


DEVICES = "auto, cpu, cuda or cuda:N"  # what resolve_device accepts, for messages


def resolve_device(device: str | torch.device, *, here: bool = True) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``cpu``, ``cuda`` or ``cuda:N`` is checked
    (it must exist and take a tensor here) and returned.

    Args:
        device: the device's name.
        here: check that this machine can use it; ``False`` checks the name only (a run that
            executes elsewhere, e.g. a Ray task on a GPU node; ``"auto"`` then gives ``cpu``).

    Raises:
        ContinualError: one line naming the device and what is accepted, for a name PyTorch does
            not know, a device type this library does not train on (``meta``, ``mps``, ``xla``...)
            or a device this machine cannot use.
    """
    if str(device) == "auto":
        return torch.device("cuda" if here and torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ContinualError(f"unknown device {device!r}; expected {DEVICES}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ContinualError(f"device {device!r} is not supported (type {dev.type!r}); expected {DEVICES}")
    if not here:
        return dev
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ContinualError(f"device {device!r} asked for but CUDA is not available here; use --device cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ContinualError(f"device {device!r} does not exist; this machine has cuda:0..cuda:{torch.cuda.device_count() - 1}")
    try:
        torch.empty(0, device=dev)
    except Exception as exc:  # a driver or build that cannot allocate there, of whatever kind
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ContinualError(f"device {device!r} cannot be used here ({type(exc).__name__}: {reason}); expected {DEVICES}") from None
    return dev


@dataclass
class Timings:
    """Seconds spent per experience in each phase (``plugins`` is included in ``train``)."""

    train: list[float] = field(default_factory=list)
    eval: list[float] = field(default_factory=list)
    plugins: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"train": self.train, "eval": self.eval, "plugins": self.plugins,
                "total_train": sum(self.train), "total_eval": sum(self.eval), "total_plugins": sum(self.plugins)}

    def lists(self) -> dict[str, list[float]]:
        return {"train": list(self.train), "eval": list(self.eval), "plugins": list(self.plugins)}


class Trainer:
    """Train a model on a stream, experience by experience, with plugins.

    Args:
        model: any ``nn.Module`` mapping a batch of transformed inputs to logits.
        lr: learning rate.
        epochs: passes over each experience's training data.
        batch_size: training mini-batch size.
        optimizer: ``"sgd"`` or ``"adam"``; built once and kept across experiences (parameters
            returned by ``before_experience`` hooks join it).
        momentum: SGD momentum.
        weight_decay: L2 weight decay of the optimizer.
        eval_batch_size: batch size for evaluation (large: evaluation has no backward pass).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
        seed: seeds the batch order (and training augmentation) generator.
        lr_schedule: ``"constant"``, ``"step"`` or ``"cosine"``, over the epochs of each
            experience (see the module docstring).
        milestones: epochs (0-based, within an experience) at which ``"step"`` multiplies the rate by ``lr_decay``.
        lr_decay: the factor of each ``"step"`` milestone.
        classifier: the classifier whose matrix :meth:`run` returns: ``"linear"`` (the model's
            argmax) or the ``classifier`` name of an evaluation plugin (``"nme"``).
        online: a single pass in the stream's order with anytime evaluation (see the module docstring).
        eval_every: online: evaluate every this many training samples (``None``: at each
            experience's end only).
        train_passes: online: updates on each incoming batch (i-Blurry's ``online_iter``).
        boundaries: online: tell the plugins where experiences begin and end.
        compile: run the training steps' forward (and so backward) through ``torch.compile`` of
            the model; evaluation and the plugins use the model itself. The growing head's fixed
            capacity keeps the step's shapes static (a last, smaller batch of an epoch compiles a
            second graph). A compiler that fails is a one-line :class:`ContinualError`.
        plugins: hook objects (see the module docstring). The sequence is copied, not modified.
        callbacks: read-only observers ``callback(event, info)``.

    Example:
        >>> from continual import split, synthetic, MLP
        >>> stream = split(synthetic(num_features=8), 5)
        >>> trainer = Trainer(MLP(8, (32,), 10), lr=0.1, epochs=2, device="cpu")
        >>> trainer.run(stream).values.shape
        (5, 5)
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float = 0.01,
        epochs: int = 1,
        batch_size: int = 32,
        optimizer: str = "sgd",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        eval_batch_size: int = 1024,
        device: str | torch.device = "auto",
        seed: int = 0,
        plugins: Sequence[object] = (),
        callbacks: Sequence[Callback] = (),
        lr_schedule: str = "constant",
        milestones: Sequence[int] = (),
        lr_decay: float = 0.1,
        classifier: str = "linear",
        compile: bool = False,
        online: bool = False,
        eval_every: int | None = None,
        train_passes: int = 1,
        boundaries: bool = False,
    ) -> None:
        for key, value in (("lr", lr), ("epochs", epochs), ("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if not value > 0:
                raise ContinualError(f"{key}={value} must be positive")
        if optimizer not in OPTIMIZERS:
            raise ContinualError(f"unknown optimizer {optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        if lr_schedule not in LR_SCHEDULES:
            raise ContinualError(f"unknown lr_schedule {lr_schedule!r}; expected one of {', '.join(LR_SCHEDULES)}")
        if any(m < 1 for m in milestones) or not lr_decay > 0:
            raise ContinualError(f"milestones={list(milestones)} must be epochs >= 1 and lr_decay={lr_decay} positive")
        self.lr_schedule, self.milestones, self.lr_decay = lr_schedule, sorted(int(m) for m in milestones), float(lr_decay)
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.plugins = list(plugins)
        self.callbacks = list(callbacks)
        self.generator = torch.Generator().manual_seed(seed)  # on the CPU: same batch order on every device
        self.augment_generator = torch.Generator(device=self.device).manual_seed(seed)  # for on-device augmentation
        self._optimizer_settings = (optimizer, lr, momentum, weight_decay)
        self.optimizer = self._new_optimizer(list(self.model.parameters()))
        self._hooks = {name: _hooks(self.plugins, name) for name in HOOKS}
        criteria = [p for p in self.plugins if callable(getattr(p, "criterion", None))]
        if len(criteria) > 1:
            raise ContinualError(f"plugins {', '.join(getattr(p, 'name', type(p).__name__) for p in criteria)} each replace the "
                                 "training loss (criterion); at most one may")
        self._criterion = criteria[0].criterion if criteria else F.cross_entropy
        self._rebuilds = any(getattr(p, "rebuilds_optimizer", False) for p in self.plugins)
        self._no_training = any(getattr(p, "skips_training", False) for p in self.plugins)
        self.classifiers = {p.classifier: p for p in self.plugins if getattr(p, "classifier", None) and callable(getattr(p, "predict", None))}
        if classifier != "linear" and classifier not in self.classifiers:
            raise ContinualError(f"classifier {classifier!r} has no plugin; expected 'linear'"
                                 f"{''.join(', ' + repr(k) for k in self.classifiers)}")
        self.classifier = classifier
        self.online, self.eval_every, self.train_passes, self.boundaries = bool(online), eval_every, int(train_passes), bool(boundaries)
        self._check_online()
        self.anytime: dict | None = None  # the online run's anytime log (continual.online.empty_log)
        self._seen: set[int] = set()  # online: classes seen in training so far
        self._seen_samples = 0  # online: training samples seen so far
        self._anytime_stream: Stream | None = None
        self._anytime_seconds = 0.0  # online: evaluation time inside the current experience
        self.matrices: dict[str, AccuracyMatrix] = {}  # the other classifiers' accuracy matrices, by name
        self.timings = Timings()
        self.penalties: dict[str, list[float]] = {}
        self._task_mask: Tensor | None = None
        self._added_groups: list[list[str]] = []  # names of the parameters of each group added by plugins
        # torch.compile of the model for the training steps (evaluation runs the model as it is).
        self._compiled = torch.compile(self.model) if compile else None

    # ----------------------------------------------------------------- helpers
    def _check_online(self) -> None:
        """Refuse online settings without ``online``, and plugins an online run cannot serve, in one line."""
        if not isinstance(self.train_passes, int) or self.train_passes < 1:
            raise ContinualError(f"train_passes={self.train_passes!r} must be a positive number of updates per incoming batch")
        if self.eval_every is not None and (isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int) or self.eval_every < 1):
            raise ContinualError(f"eval_every={self.eval_every!r} must be a positive number of samples (or None: at each experience's end)")
        if not self.online:
            if self.eval_every is not None or self.train_passes != 1 or self.boundaries:
                raise ContinualError("eval_every, train_passes and boundaries apply to online runs; pass online=True (--online)")
            return
        if self.epochs != 1:
            raise ContinualError(f"epochs={self.epochs}: an online run is a single pass over the stream; use epochs=1 "
                                 "(train_passes repeats the updates on each incoming batch)")
        for p in self.plugins:
            name = getattr(p, "name", type(p).__name__)
            if getattr(p, "rebuilds_optimizer", False) or getattr(p, "skips_training", False):
                raise ContinualError(f"plugin {name!r} rebuilds or fits its model at experience boundaries (e.g. GDumb retrains "
                                     "from scratch on its memory before each evaluation), which the online loop does not do; "
                                     "run it offline")
            if getattr(p, "classifier", None) and callable(getattr(p, "predict", None)):
                raise ContinualError(f"plugin {name!r} is an evaluation classifier ({p.classifier!r}); an online run evaluates "
                                     "the model's own argmax at every anytime point")
            used = [h for h in BOUNDARY_HOOKS if _hooks([p], h)]
            if used and not self.boundaries and not getattr(p, "task_free", False):
                raise ContinualError(f"plugin {name!r} acts at experience boundaries ({', '.join(used)}), which an online run hides; "
                                     "pass boundaries=True (--boundaries) or use a task-free strategy "
                                     "(finetune, replay with a reservoir buffer, er-ace, der++)")

    def _new_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        kind, lr, momentum, weight_decay = self._optimizer_settings
        if kind == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)

    def _emit(self, event: str, **info) -> None:
        for cb in self.callbacks:
            cb(event, info)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def logits(self, x: Tensor, t: Tensor) -> Tensor:
        """The model's logits on a transformed batch, masked to each sample's task in the task scenario
        (through the compiled model in training, with ``compile=True``)."""
        if self._compiled is not None and self.model.training:
            try:
                out = forward(self._compiled, x, t)  # (B, C)
            except Exception as exc:  # a compiler missing or failing: one line, not inductor's traceback
                if isinstance(exc, ContinualError):
                    raise
                text = str(exc).strip().splitlines()
                raise ContinualError(f"compile: torch.compile failed ({type(exc).__name__}: {text[0][:200] if text else ''}); "
                                     "run without --compile") from None
        else:
            out = forward(self.model, x, t)  # (B, C)
        if self._task_mask is not None:
            out = out.masked_fill(~self._task_mask[t, : out.shape[1]], float("-inf"))
        return out

    def _set_scenario(self, stream: Stream) -> None:
        if stream.scenario == "task" and not getattr(self.model, "takes_task_id", False):
            self._task_mask = stream.task_class_mask().to(self.device)
        else:
            self._task_mask = None

    def _add_group(self, params: list[nn.Parameter]) -> None:
        """New parameters join the optimizer as one group; their names are remembered so a
        resumed run rebuilds the same groups in the same order."""
        self.optimizer.add_param_group({"params": params})
        names = {id(p): n for n, p in self.model.named_parameters()}
        self._added_groups.append([names.get(id(p), "") for p in params])

    def _divergence(self, loss: float, index: int, epoch: int) -> str:
        """The message for a loss that is not finite: the learning rate and each penalty's strength.

        A penalty plugin names its strength hyperparameters in ``strength_names`` (EWC: ``lam``);
        a name that several plugins share is given as ``PLUGIN.NAME``, as combined strategies spell it.
        """
        found = []  # (plugin name, hyperparameter, value)
        for name, hook in self._hooks["penalty"]:
            plugin = getattr(hook, "__self__", None)
            found += [(name, key, getattr(plugin, key)) for key in getattr(plugin, "strength_names", ())]
        shared = {key for _, key, _ in found if sum(k == key for _, k, _ in found) > 1}
        settings = [f"{name}.{key}" if key in shared else key for name, key, _ in found]
        facts = [f"lr={self.optimizer.param_groups[0]['lr']:g}"] + [f"{name} {key}={value:g}" for name, key, value in found]
        fix = "lower the learning rate (--lr)"
        if found:
            fix += f" or the penalty's strength ({' or '.join(f'--set {k}=...' for k in settings)})"
        elif self._hooks["penalty"]:
            fix += " or a penalty's strength"
        return f"the training loss became {loss} in experience {index}, epoch {epoch} ({', '.join(facts)}): {fix}"

    def lr_factor(self, epoch: int) -> float:
        """The schedule's factor on the base learning rate in ``epoch`` (0-based) of an experience."""
        if self.lr_schedule == "step":
            return self.lr_decay ** sum(m <= epoch for m in self.milestones)
        if self.lr_schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))
        return 1.0

    def _set_lr(self, epoch: int) -> None:
        factor = self.lr_factor(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Everything needed to continue training exactly: model, optimizer, generators, plugin
        states, timings and penalties. Holds only tensors and plain Python values, so it loads
        with ``torch.load(..., weights_only=True)``."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "augment_generator": self.augment_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "plugins": [p.state_dict() if callable(getattr(p, "state_dict", None)) else None for p in self.plugins],
            "timings": self.timings.lists(),
            "penalties": {k: list(v) for k, v in self.penalties.items()},
            "added_groups": [list(names) for names in self._added_groups],
            "matrices": {name: {"values": torch.from_numpy(m.values.copy()), "random_init": torch.from_numpy(m.random_init.copy())}
                         for name, m in self.matrices.items()},
        }
        if self.online:  # the anytime log and where the stream stands (plain values)
            state["online"] = {"anytime": self.anytime, "seen": sorted(self._seen), "samples": self._seen_samples}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`. Plugin states are loaded first, so a plugin that
        changes the model's structure (a grown head) can rebuild it before the weights load;
        parameters in the model but not yet in the optimizer join it, in model order, before the
        optimizer state loads."""
        if len(state["plugins"]) != len(self.plugins):
            raise ContinualError(f"checkpoint has {len(state['plugins'])} plugin states for {len(self.plugins)} plugins")
        for plugin, plugin_state in zip(self.plugins, state["plugins"]):
            if plugin_state is not None:
                load_plugin_state(plugin, plugin_state, self.model)
        sync_optimizer(self.model, self.optimizer)  # a head reallocated by its regrowth
        self.model.load_state_dict(state["model"])
        params = dict(self.model.named_parameters())
        for names in ([] if self._rebuilds else state["added_groups"][len(self._added_groups):]):
            if any(n not in params for n in names):
                raise ContinualError("cannot resume: the checkpoint's optimizer holds parameters the model does not have "
                                     f"({', '.join(n for n in names if n not in params)})")
            self._add_group([params[n] for n in names])
        if not self._rebuilds:  # otherwise the next experience starts with a new optimizer anyway
            self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.augment_generator.set_state(state["augment_generator"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.timings = Timings(**state["timings"])
        self.penalties = {k: list(v) for k, v in state["penalties"].items()}
        self.matrices = {name: AccuracyMatrix.from_rows(m["values"].numpy(), m["random_init"].numpy())
                         for name, m in state.get("matrices", {}).items()}
        if self.online:
            if not isinstance(state.get("online"), dict):
                raise ContinualError("cannot resume an online run from a checkpoint of an offline one (no anytime log)")
            online = state["online"]
            self.anytime = online["anytime"]
            self._seen, self._seen_samples = {int(c) for c in online["seen"]}, int(online["samples"])

    # -------------------------------------------------------------- training
    def fit(self, experience: Experience) -> None:
        """Train on one experience for ``self.epochs`` epochs, calling the plugins' hooks."""
        experience = experience.to(self.device)
        hooks = self._hooks
        plugin_time = 0.0
        online, told = self.online, not self.online or self.boundaries  # told: the plugins see the boundaries
        self._anytime_seconds = 0.0
        self._sync()
        start = time.perf_counter()
        for _, hook in hooks["before_experience"] if told else ():
            new = hook(self.model, experience)
            if new:
                self._add_group(list(new))
        sync_optimizer(self.model, self.optimizer)  # a class-incremental head's growth
        if self._rebuilds:  # a new optimizer over the parameters that train now (DER, GDumb)
            self.optimizer = self._new_optimizer([p for p in self.model.parameters() if p.requires_grad])
            self._added_groups = []
        for _, hook in hooks["experience_data"] if told else ():
            chosen = hook(experience)
            if chosen is not None:
                experience = chosen
        plugin_time += time.perf_counter() - start

        model, opt, transform = self.model, self.optimizer, experience.transform
        x_all, y_all, t_all = experience.x_train, experience.y_train, experience.t_train
        n, bs = experience.num_train, self.batch_size
        if n == 0:
            raise ContinualError(f"experience {experience.index} has no training samples")
        penalty_sums = {name: torch.zeros((), device=self.device) for name, _ in hooks["penalty"]}
        passes = self.train_passes
        if online:  # classes first seen in each batch, read ahead (one host transfer; no sync per batch)
            from .online import arrivals

            grow = arrivals(y_all, self._seen, bs)
        model.train()
        for group in opt.param_groups:
            group.setdefault("base_lr", group["lr"])  # each group's own rate, before any schedule
        for epoch in range(0 if self._no_training else self.epochs):
            self._set_lr(epoch)
            order = None if online else torch.randperm(n, generator=self.generator).to(self.device)  # online: the stream's order
            loss_sum = torch.zeros((), device=self.device)
            for s in range(0, n, bs):
                if online and s in grow:  # classes arriving in this batch: the head grows task-free
                    h0 = time.perf_counter()
                    self._new_classes(grow[s])
                    opt = self.optimizer
                    plugin_time += time.perf_counter() - h0
                if order is None:
                    x, y, t = x_all[s : s + bs], y_all[s : s + bs], t_all[s : s + bs]
                else:
                    idx = order[s : s + bs]
                    x, y, t = x_all[idx], y_all[idx], t_all[idx]
                for _, hook in hooks["batch"]:
                    h0 = time.perf_counter()
                    joined = hook(x, y, t)
                    if joined is not None:
                        x, y, t = joined
                    plugin_time += time.perf_counter() - h0
                for _ in range(passes):  # offline: one
                    xb = transform(x, train=True, generator=self.augment_generator)
                    out = self.logits(xb, t)
                    loss = self._criterion(out, y)
                    for name, hook in hooks["penalty"]:
                        h0 = time.perf_counter()
                        extra = hook(model, x=xb, y=y, t=t, out=out)
                        if extra is not None:
                            loss = loss + extra
                            penalty_sums[name] += extra.detach()
                        plugin_time += time.perf_counter() - h0
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    for _, hook in hooks["before_step"]:
                        h0 = time.perf_counter()
                        hook(model)
                        plugin_time += time.perf_counter() - h0
                    opt.step()
                    for _, hook in hooks["after_step"]:
                        h0 = time.perf_counter()
                        hook(model)
                        plugin_time += time.perf_counter() - h0
                    loss_sum += loss.detach()
                if online:
                    before, self._seen_samples = self._seen_samples, self._seen_samples + min(bs, n - s)
                    if self.eval_every and self._seen_samples // self.eval_every > before // self.eval_every:
                        self._anytime_point(experience.index)
            mean_loss = loss_sum.item() / (-(-n // bs) * passes)  # one host sync per epoch
            if mean_loss != mean_loss or mean_loss in (float("inf"), float("-inf")):
                raise ContinualError(self._divergence(mean_loss, experience.index, epoch))
            self._emit("epoch_end", experience=experience.index, epoch=epoch, loss=mean_loss, steps=-(-n // bs))

        h0 = time.perf_counter()
        for _, hook in hooks["after_experience"] if told else ():
            hook(model, experience)
        self._sync()
        end = time.perf_counter()
        plugin_time += end - h0
        steps = max(1, (0 if self._no_training else self.epochs) * -(-n // bs) * passes)
        for name, total in penalty_sums.items():
            self.penalties.setdefault(name, []).append(total.item() / steps)
        self.timings.train.append(end - start - self._anytime_seconds)  # online: the anytime evaluations go to eval
        self.timings.plugins.append(plugin_time)

    @torch.no_grad()
    def evaluate(self, stream: Sequence[Experience], *, classifier: str = "linear") -> list[float]:
        """Accuracy on each experience's test split (large batches; one host sync in all), of the
        model's argmax (``"linear"``) or of an evaluation plugin's ``predict`` (its ``classifier`` name)."""
        predict = self.classifiers[classifier].predict if classifier != "linear" else None
        model = self.model
        was_training = model.training
        model.eval()
        correct, totals = [], []
        for e in stream:
            e = e.to(self.device)
            hits = torch.zeros((), dtype=torch.int64, device=self.device)
            for s in range(0, e.num_test, self.eval_batch_size):
                sl = slice(s, s + self.eval_batch_size)
                xb, tb = e.transform(e.x_test[sl]), e.t_test[sl]
                pred = self.logits(xb, tb).argmax(1) if predict is None else predict(model, xb, tb)
                hits += (pred == e.y_test[sl]).sum()
            correct.append(hits)
            totals.append(max(e.num_test, 1))
        model.train(was_training)
        if not correct:
            return []
        return (torch.stack(correct).double().cpu() / torch.tensor(totals, dtype=torch.float64)).tolist()

    def _new_classes(self, classes: list[int]) -> None:
        """Online: classes first seen in the coming batch; plugins' ``new_classes`` hooks (the head grows)."""
        for _, hook in self._hooks["new_classes"]:
            new = hook(self.model, classes)
            if new:
                self._add_group(list(new))
        sync_optimizer(self.model, self.optimizer)  # a class-incremental head's growth
        self._seen.update(classes)

    @torch.no_grad()
    def _anytime_point(self, index: int) -> list[float] | None:
        """Online: evaluate on every experience's test split and append a point to :attr:`anytime`
        (one host sync); returns the per-experience accuracies (``None`` outside :meth:`run`)."""
        stream = self._anytime_stream
        if stream is None or self.anytime is None:
            return None
        from .online import log_point

        self._sync()
        t0 = time.perf_counter()
        model = self.model
        was_training = model.training
        model.eval()
        seen = torch.zeros(max(stream.num_classes, max(self._seen, default=0) + 1), dtype=torch.bool)
        seen[sorted(self._seen)] = True
        seen = seen.to(self.device)
        counts = []  # per experience: hits, then (for all of them) seen-class hits and seen-class samples
        seen_hits = torch.zeros((), dtype=torch.int64, device=self.device)
        seen_total = torch.zeros((), dtype=torch.int64, device=self.device)
        for e in stream:
            hits = torch.zeros((), dtype=torch.int64, device=self.device)
            for s in range(0, e.num_test, self.eval_batch_size):
                sl = slice(s, s + self.eval_batch_size)
                y = e.y_test[sl]
                correct = self.logits(e.transform(e.x_test[sl]), e.t_test[sl]).argmax(1) == y
                counted = seen[y]
                hits += correct.sum()
                seen_hits += (correct & counted).sum()
                seen_total += counted.sum()
            counts.append(hits)
        model.train(was_training)
        values = torch.stack([*counts, seen_hits, seen_total]).cpu().tolist()  # the one host sync
        sizes = [e.num_test for e in stream]
        per = [h / max(n, 1) for h, n in zip(values[:-2], sizes)]
        stream_acc = sum(values[: index + 1]) / max(sum(sizes[: index + 1]), 1)
        # the domain scenario has every class from the start: "seen" is the experiences reached
        seen_acc = stream_acc if stream.scenario == "domain" else values[-2] / max(values[-1], 1)
        log_point(self.anytime, samples=self._seen_samples, experience=index, seen_acc=seen_acc,
                  stream_acc=stream_acc, per_experience=per, num_seen=len(self._seen))
        self._emit("anytime", experience=index, samples=self._seen_samples, seen_acc=self.anytime["seen_acc"][-1])
        self._anytime_seconds += time.perf_counter() - t0
        return per

    def _online_row(self, index: int) -> list[float]:
        """Online: the accuracy row after experience ``index``: the anytime point at its end (the
        last one if it fell there), and the boundary recorded in the log."""
        during = self._anytime_seconds  # the evaluations inside fit
        log = self.anytime
        if not (log["samples"] and log["samples"][-1] == self._seen_samples and log["experience"][-1] == index):
            self._anytime_point(index)
        log["boundaries"].append(self._seen_samples)
        self.timings.eval.append(self._anytime_seconds)  # inside fit and at the end
        self._anytime_seconds = during
        return list(log["per_experience"][-1])

    def _evaluate_timed(self, stream: Stream, index: int, rows: int) -> list[float]:
        """The row of the run's classifier after experience ``index`` (written to ``rows`` rows:
        1, or T for joint training); the other classifiers' rows go to :attr:`matrices`."""
        self._sync()
        t0 = time.perf_counter()
        row = self.evaluate(stream, classifier=self.classifier)
        for name in self._other_classifiers():
            other = self.evaluate(stream, classifier=name)
            for i in range(index, index + rows):
                self.matrices[name].set_row(i, other)
        self.timings.eval.append(time.perf_counter() - t0)
        return row

    def _other_classifiers(self) -> list[str]:
        """The classifiers evaluated beside the run's; not the head's argmax when nothing trains it."""
        linear = [] if self._no_training else ["linear"]
        return [name for name in [*linear, *self.classifiers] if name != self.classifier]

    def run(
        self,
        stream: Stream,
        *,
        schedule: Schedule = "sequential",
        resume: AccuracyMatrix | None = None,
        on_experience_end: Callable[[int, AccuracyMatrix], None] | None = None,
    ) -> AccuracyMatrix:
        """Train on ``stream`` and return the accuracy matrix.

        Args:
            stream: the experiences, in order.
            schedule: ``"sequential"`` trains on each experience in turn (fine-tuning and every
                plugin strategy); ``"cumulative"`` trains, at step i, on the union of experiences
                0..i (continuing from the current model); ``"joint"`` trains once on the union of
                all experiences and reports that single row against every experience (all T rows
                are equal, so forgetting and BWT are 0 by construction).
            resume: the accuracy matrix of an interrupted run whose trainer state was restored
                with :meth:`load_state_dict`; training continues after its last complete row.
            on_experience_end: called with ``(index, acc_matrix)`` after each experience's row
                is recorded (where a run writes its checkpoint).
        """
        if schedule not in SCHEDULES:
            raise ContinualError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
        stream = stream.to(self.device)
        self._set_scenario(stream)
        T = len(stream)
        if resume is not None:
            if resume.num_experiences != T:
                raise ContinualError(f"cannot resume: the saved matrix has {resume.num_experiences} experiences, the stream {T}")
            acc = resume
            start = int((~np.isnan(acc.values).any(axis=1)).sum())
        else:
            acc = AccuracyMatrix(T)
            acc.set_random_init(self.evaluate(stream))  # the model's argmax: no classifier is fitted yet
            start = 0
            self.matrices = {name: AccuracyMatrix(T) for name in self._other_classifiers()}
            for other in self.matrices.values():
                other.set_random_init(acc.random_init)
        if self.online:
            from .online import empty_log

            if schedule != "sequential":
                raise ContinualError(f"schedule {schedule!r} trains on several experiences at once; an online run is sequential")
            self._anytime_stream = stream
            if resume is None:
                self.anytime, self._seen, self._seen_samples = empty_log(T), set(), 0
        if schedule == "joint":
            if start == 0:
                self._emit("experience_start", index=0, num_experiences=1)
                self.fit(concat(list(stream), index=0))
                row = self._evaluate_timed(stream, 0, T)
                for i in range(T):
                    acc.set_row(i, row)
                self._emit("experience_end", index=0, num_experiences=1, row=row)
                if on_experience_end:
                    on_experience_end(T - 1, acc)
            return acc
        for i in range(start, T):
            self._emit("experience_start", index=i, num_experiences=T)
            self.fit(concat(list(stream[: i + 1]), index=i) if schedule == "cumulative" else stream[i])
            row = self._online_row(i) if self.online else self._evaluate_timed(stream, i, 1)
            acc.set_row(i, row)
            self._emit("experience_end", index=i, num_experiences=T, row=row)
            if on_experience_end:
                on_experience_end(i, acc)
        return acc
