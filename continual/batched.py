"""Several seeds of one configuration trained together in one process (issue 17, items 1-2, in part).

``run_batched(config, seeds)`` returns, for each seed, the :class:`~continual.results.Result` that
``run(dataclasses.replace(config, seed=s))`` returns (same fields; ``extra["batched"]`` notes that
it was trained batched), training the N seeds' models as one: their parameters stacked along a
leading seed dimension (``torch.func.stack_module_state``) and the forward pass taken with
``torch.func.functional_call`` under ``torch.vmap`` over that dimension, as in PyTorch's "Model
ensembling" tutorial; a plain MLP (the only model batched today) takes the same forward written
out, one ``baddbmm`` per layer, by default (vmap's dispatch cost 0.3-0.5 ms a step on CPU, the
whole step of a small MLP; ``forward="vmap"`` forces the general path, and both are tested). ``batchable(config)`` says why a configuration cannot be batched (``None``:
it can); the caller falls back to one seed at a time.

What is the same as N separate runs, and why:

- Initialisation: each seed's model, stream, plugins and trainer are built by
  :func:`continual.experiment.build` for that seed, exactly as its separate run builds them; the
  stack starts from those models' parameters.
- Batch order: each seed draws ``torch.randperm(n, generator=...)`` per epoch from its own
  trainer's generator (seeded as the trainer seeds it), so its batches are its separate run's.
- Loss and optimizer: the loss is the sum over seeds of each seed's mean cross-entropy plus its
  penalties; its gradient with respect to seed i's slice of a stacked parameter is seed i's own
  gradient. One SGD or Adam optimizer steps the stacked parameters: both are elementwise, so a
  slice steps as the seed's own tensor would. Adam's step count is one per tensor; every seed
  takes every step (the seeds' experiences have the same sizes), so the stacked tensor's count
  equals each separate tensor's count, and the bias correction is the same.
- The growing head: every seed's :class:`~continual.models.IncrementalClassifier` has the
  stream's capacity, so the stacked head has static shapes. Rows coming into use are drawn by
  growing the seed's own module with the global RNG set to the state the seed's separate run
  has at that moment (kept per seed: after its ``build``, only the experience-level hooks draw
  from the global RNG, and they run with the seed's own state), then copied into the stack; their optimizer state is zeroed
  as :func:`~continual.models.sync_optimizer` does. The masks (which rows are in use) are the
  same for every seed (the classes of experience i do not depend on the seed once the class
  order does not), so the first seed's module, used as the template of ``functional_call``,
  supplies them.
- Experience-level hooks (``before_experience``, ``after_experience``: head growth, EWC's Fisher,
  anchors) run per seed, with the seed's own plugin objects on the seed's own module, whose
  parameters are first set from the stack: exactly the separate run's code on the separate run's
  values. Only step-level work is batched.
- Evaluation: each seed's test splits through the stacked forward, accuracies per seed.

What a plugin must do to be batchable (in one place):

1. Its step-level hooks must be elementwise on state that can be stacked along a leading seed
   dimension: today only the quadratic penalty of :class:`~continual.regularizers.base.QuadraticPenalty`
   (L2, EWC separate and online, MAS), whose importances, anchors (and float32 low halves) and
   constants are stacked per seed after each consolidation, the penalty summed over seeds; and
   SI's ``after_step`` (its path integral, :class:`_StackedPaths`: the per-step state stacked when
   the experience starts, the same elementwise arithmetic on the stacked parameters and gradients,
   and each seed's slice handed back to its own plugin before it consolidates). A new step-level
   hook is batched the same way: a class here that stacks the plugin's per-step state and does its
   arithmetic with a leading seed dimension. LwF's distillation penalty is batched too: after each
   seed's own LwF froze its copy of the seed's model, the copies' parameters are stacked, the old
   logits come from the same stacked forward (in eval mode, as the frozen copy runs) and the
   penalty is lwf.py's formula with a seed dimension (``kl_div`` per element, summed per seed and
   divided by the batch size: ``"batchmean"``). The ``batch`` hooks of ER (replay, any buffer)
   and DER++ are not vectorised but delegated: each seed's own plugin joins its replay samples to
   the seed's slice of the batch (its buffer samples and, a reservoir, takes in the batch with the
   buffer's own generator, seeded per seed: the same draws as the separate run), and the joined
   batches, of one size for every seed, are stacked (:meth:`_Seeds.join`); DER++'s penalty is
   delegated too, each seed's plugin called on its slice of the stacked logits (it stores them in
   its buffer and returns its MSE and CE on the replayed rows, differentiable in the stack), and
   the task loss is the mean over the rows not ignored (the replayed rows' ``IGNORE_LABEL``), as
   ``F.cross_entropy``'s. ER-ACE is delegated the same way: its ``batch`` joins as ER's does (and
   remembers how many rows are incoming), and its ``criterion``, each seed's plugin on its slice
   of the stacked logits, gives that seed's task loss (its asymmetric cross-entropy and its own
   running set of classes seen). Delegation costs S hook calls per step. ``before_step`` hooks and
   other ``criterion`` hooks are not batched yet (A-GEM, iCaRL), nor ``batch`` or ``penalty``
   hooks of other kinds.
   Step-level code must not draw from the global RNG (dropout, augmentation): there is one global
   RNG for N seeds during a step; a plugin's own generator, one per seed, is fine.
2. Its experience-level hooks (``before_experience``, ``after_experience``) may do anything a
   separate run does: they run once per seed, on the seed's own model and plugin objects, with
   the global RNG set to the seed's own state (saved again afterwards). They must not return new
   parameters (a new task head), which the stacked optimizer would not see.
3. It must not replace the optimizer (``rebuilds_optimizer``), the data (``experience_data``)
   or skip training.

Deviations from N separate runs:

- Batched matrix products may round differently from the separate runs' (float32), so losses
  agree to rounding at first and drift apart slowly (the tests bound both). In float64 every
  strategy batched agrees with its separate runs to 1e-15 (measured on LwF and L2). LwF's
  distillation amplifies float32 rounding the most (its gradient is a difference of two close
  softmaxes): 1e-4 relative over the first 50 steps of the class-incremental stream.
- ``timings`` of every seed's result are those of the whole batch (``extra["batched"]`` says so).
- A loss that diverges in any seed stops the whole batch (the error names the seed).
- The global RNG state of the caller is restored at the end (a separate run leaves it seeded).
- Callbacks see every seed's mean loss per epoch at once.

Checkpoints and resume (``checkpoint_dir``): after each experience one checkpoint holds every
seed (:func:`save_batched_checkpoint`: written atomically with a checksum, the last two kept):
the stacked parameters and buffers, the stacked optimizer's state, each seed's generators, global
RNG state, plugin states (its own plugin objects' ``state_dict``, as the trainer collects them)
and penalties, the accuracy matrices and random-init rows, the timings and wall time so far, the
configuration and the seeds. The stacked per-step state (quadratic penalties' tensors, LwF's
stacked old parameters, SI's path: held by each seed's plugin between experiences) is rebuilt
from the plugin states on load. A run started again with the same configuration and seeds
resumes after the newest valid checkpoint (a corrupt one, or one of another configuration or
other seeds, is reported and passed over, :func:`load_batched_checkpoint`), ending with exactly
the results of an uninterrupted batched run on CPU (tested for finetune, EWC, SI, LwF, replay).

Speed (``benchmarks/batched.py``, figures in benchmarks/README.md): on one CPU thread the step of
the MLP 64-400-400-10 at batch 32 is bound by its matrix products (a batched product over 5 seeds
costs what 5 separate ones cost), so batching saves only the per-step overhead: 5 seeds batched
train in 4.4x (finetune) and 4.5x (EWC) one seed's time, against 4.7-4.9x one after another;
replay, which calls each seed's buffer in turn, in 5.9x (5.6x). The issue's target (<= 2x for 5
seeds) is for a device with parallel width to spare (GPU).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from .errors import ContinualError
from .experiment import Built, RunConfig, _config_text, build, environment
from .ledger import memory_ledger, provenance
from .metrics import AccuracyMatrix, summary
from .models import MLP, IncrementalClassifier
from .regularizers.base import QuadraticPenalty
from .regularizers.lwf import LwF
from .regularizers.si import SI
from .replay.buffers import IGNORE_LABEL
from .replay.er import ER, ERACE, DERpp
from .files import atomic_torch_save
from .results import Result, by_step
from .streams import Experience, concat
from .trainer import Callback, Plugin, load_plugin_state

BATCHABLE_STRATEGIES = ("finetune", "joint", "cumulative", "l2", "ewc", "online-ewc", "mas", "si", "lwf", "replay", "der++",
                        "ewc+replay", "er-ace")
BATCHABLE_HEADS = ("fixed", "incremental")
FORWARDS = ("auto", "vmap")
StepHook = Callable[[Tensor], None]  # on_step(losses): each seed's task loss of the step, (S,), detached


class _StackedSquares(torch.autograd.Function):
    """Per seed, ``k * sum_i omega_i (theta_i - anchor_i - low_i)^2 + const``, ``(S,)``, over
    stacked tensors ``(S, ...)``: :func:`continual.regularizers.base.weighted_squares` with a seed
    dimension (one autograd node; the backward is one multiplication, ``2 k w g``)."""

    @staticmethod
    def forward(ctx, k: float, const: Tensor, omegas: list[Tensor], anchors: list[Tensor],
                lows: list[Tensor] | None, *params: Tensor) -> Tensor:
        d = torch._foreach_sub(list(params), anchors)
        if lows is not None:
            torch._foreach_sub_(d, lows)
        w = torch._foreach_mul(d, omegas)
        value = const.clone()
        for a, b in zip(w, d):
            value += (a * b).sum(dim=tuple(range(1, a.dim()))) * k  # (S,)
        ctx.save_for_backward(*w)
        ctx.k = k
        return value

    @staticmethod
    def backward(ctx, grad: Tensor):
        w = ctx.saved_tensors
        g = (2 * ctx.k) * grad  # (S,)
        return (None, None, None, None, None, *[wi * g.view(-1, *([1] * (wi.dim() - 1))) for wi in w])


class _StackedPaths:
    """SI's path integral (:meth:`continual.regularizers.si.SI.after_step`) for every seed at once.

    The per-step state of the seeds' :class:`~continual.regularizers.si.SI` plugins (``path``:
    omega accumulated during the experience, ``prev``: the parameters before the step) is stacked
    along the seed dimension when the experience starts (after each seed's own ``before_experience``
    took its snapshot) and written back into each seed's plugin before its ``after_experience``
    (its own ``consolidate``: importance, clipping, new anchor, new snapshot). Between the two, each
    step does SI's elementwise arithmetic on the stacked tensors: the task-loss gradient ``g`` (the
    stacked gradient minus SI's own surrogate gradient ``2 c Omega (prev - anchor)``, with the
    stacked importances and anchors of the penalty) and ``path -= g * (theta - prev)``.
    """

    def __init__(self, plugins: list[SI], params: dict[str, Tensor]) -> None:
        if any(p.strength != plugins[0].strength for p in plugins):
            raise ContinualError("the seeds' SI plugins have different strengths; not batched")
        self.plugins = plugins
        self.names = [n for n in plugins[0].path if n in params]
        self.path = {n: torch.empty_like(params[n]).copy_(torch.stack([p.path[n] for p in plugins])) for n in self.names}
        self.prev = {n: torch.empty_like(params[n]).copy_(torch.stack([p.prev[n] for p in plugins])) for n in self.names}

    @torch.no_grad()
    def after_step(self, params: dict[str, Tensor], q: dict | None) -> None:
        """Add ``-g * delta theta`` of the step just taken to every seed's path integral."""
        two_c = 2 * self.plugins[0].strength
        for n in self.names:
            p, prev = params[n].detach(), self.prev[n]
            g = params[n].grad
            if g is None:
                prev.copy_(p)
                continue
            if q is not None and f"omega.{n}" in q:  # take SI's own surrogate gradient out, as si.py does
                g = g - two_c * q[f"omega.{n}"] * (prev - q[f"anchor.{n}"])
            self.path[n].addcmul_(g, p - prev, value=-1.0)
            prev.copy_(p)

    def unstack(self) -> None:
        """Each seed's plugin takes its slice of the path integral and of ``prev``."""
        for i, plugin in enumerate(self.plugins):
            for n in self.names:
                plugin.path[n] = self.path[n][i].clone(memory_format=torch.contiguous_format)
                plugin.prev[n] = self.prev[n][i].clone(memory_format=torch.contiguous_format)


def batchable(config: RunConfig) -> str | None:
    """Why ``config`` cannot be trained batched, in one line; ``None`` when it can.

    Example:
        >>> batchable(RunConfig(strategy="ewc")) is None
        True
        >>> batchable(RunConfig(strategy="a-gem")).split(" (batched:")[0]
        "strategy 'a-gem' is not batched yet"
    """
    if config.strategy not in BATCHABLE_STRATEGIES:
        return f"strategy {config.strategy!r} is not batched yet (batched: {', '.join(BATCHABLE_STRATEGIES)})"
    try:
        cfg = config.resolve(here=False)
    except ContinualError as exc:
        return f"the configuration is refused: {exc}"
    if cfg.model != "mlp":
        return f"model {cfg.model!r} is not batched (only 'mlp': no BatchNorm statistics or dropout randomness to stack)"
    if cfg.head not in BATCHABLE_HEADS:
        return f"head {cfg.head!r} is not batched (batched: {', '.join(BATCHABLE_HEADS)})"
    if cfg.class_order == "random":
        return "class_order='random' gives each seed its own classes per experience (and experience sizes); not batched"
    if cfg.classifier != "linear":
        return f"classifier {cfg.classifier!r} is not batched (only 'linear')"
    if cfg.feature_cache == "on":
        return "feature_cache='on' trains a head on cached features; not batched"
    if cfg.pretrained or cfg.adapt_first:
        return "pretrained weights and first-session adaptation are not batched yet"
    if cfg.validation:
        return (f"validation={cfg.validation} holds out other samples for each seed (each trains on its own subset "
                "and keeps its own validation matrix); not batched")
    if cfg.online or cfg.blurry:
        return "online and blurry streams are not batched (one seed at a time)"
    return None


def _name(plugin: object) -> str:
    return getattr(plugin, "name", type(plugin).__name__)


def _overrides(plugin: object, hook: str) -> bool:
    """True when ``plugin`` really implements ``hook`` (as the trainer decides which hooks to call)."""
    return getattr(plugin, hook, None) is not None and getattr(type(plugin), hook, None) is not getattr(Plugin, hook)


class _Seeds:
    """The N seeds' built runs, their stacked parameters and what the step needs."""

    def __init__(self, config: RunConfig, seeds: Sequence[int], *, forward: str = "auto") -> None:
        self.seeds = [int(s) for s in seeds]
        self.builts: list[Built] = []
        self.rng: list[Tensor] = []  # each seed's global RNG state, as its separate run has it now
        for s in self.seeds:
            built = build(dataclasses.replace(config, seed=s))
            self.rng.append(torch.get_rng_state())
            if built.trainer.model is not built.model or built.source is not built.stream:
                raise ContinualError("the run trains on cached features, which are not batched")
            self.builts.append(built)
        first = self.builts[0]
        self.cfg, self.trainer0, self.device = first.config, first.trainer, first.trainer.device
        self.template = first.model  # supplies the structure and the head masks (the same for every seed)
        self.models = [b.model for b in self.builts]
        self.plugins = [b.plugins for b in self.builts]
        for plugins in self.plugins:
            for p in plugins:
                bad = [h for h in ("batch", "before_step", "after_step", "experience_data") if _overrides(p, h)
                       and not (h == "after_step" and type(p) is SI)  # SI's path integral: _StackedPaths
                       and not (h == "batch" and type(p) in (ER, ERACE, DERpp))]  # replay: each seed's own plugin on its slice (join)
                criterion = callable(getattr(p, "criterion", None)) and type(p) is not ERACE  # ER-ACE's: delegated per seed
                if bad or criterion or getattr(p, "rebuilds_optimizer", False) \
                        or getattr(p, "skips_training", False) or getattr(p, "classifier", None):
                    raise ContinualError(f"plugin {_name(p)!r} is not batchable ({', '.join(bad) or 'it changes the loop'})")
                if _overrides(p, "penalty") and not (isinstance(p, QuadraticPenalty) or type(p) in (LwF, DERpp)):
                    raise ContinualError(f"plugin {_name(p)!r} has a penalty that is not batched "
                                         "(only quadratic penalties, LwF, DER++)")
        params, _ = stack_module_state(self.models)  # (S, ...) each, new leaf tensors
        # A stacked weight (S, out, in) is stored column-major per seed: the weight gradient of the
        # batched product comes in that layout, so autograd accumulates it without a copy.
        self.params = {k: (v.detach().to(self.device).transpose(1, 2).contiguous().transpose(1, 2) if v.dim() == 3
                           else v.detach().to(self.device)).requires_grad_(True) for k, v in params.items()}
        kind, lr, momentum, wd = self.cfg.optimizer, self.cfg.lr, self.cfg.momentum, self.cfg.weight_decay
        plist = list(self.params.values())
        self.optimizer = (torch.optim.SGD(plist, lr=lr, momentum=momentum, weight_decay=wd) if kind == "sgd"
                          else torch.optim.Adam(plist, lr=lr, weight_decay=wd))
        self.streams = [b.stream.to(self.device) for b in self.builts]
        self.penalties: list[dict[str, list[float]]] = [{} for _ in self.seeds]
        self.stacked: list[dict] = []  # per penalty plugin, in order: its stacked state (omega, anchor...; LwF's old parameters)
        self.joins = [[p for p in plugins if _overrides(p, "batch")] for plugins in self.plugins]  # per seed, in order
        self.paths: list[tuple[_StackedPaths, int]] = []  # per SI plugin: its stacked path integral, its penalty's index
        self.ignores = any(type(p) is DERpp for p in self.plugins[0])  # replayed rows joined with IGNORE_LABEL
        self.criteria = [next((p.criterion for p in plugins if type(p) is ERACE), None) for plugins in self.plugins]  # per seed
        self.train_time: list[float] = []
        self.eval_time: list[float] = []
        self.plugin_time: list[float] = []
        task = [s.task_class_mask().to(self.device) if s.scenario == "task" else None for s in self.streams]
        if any(m is not None and not torch.equal(m, task[0]) for m in task):
            raise ContinualError("the seeds' streams have different task masks; not batched")
        self.task_mask = task[0]
        self.layers = self._plain_mlp() if forward == "auto" else None  # the written-out forward, when it applies
        self.stack_penalties()

    # ------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        """Everything a resume between experiences needs (besides the matrices and the wall time):
        the stacked parameters and persistent buffers, the stacked optimizer's state, and per seed
        its trainer's generators, its global RNG state, its plugins' states (as the trainer's
        :meth:`~continual.trainer.Trainer.state_dict` collects them) and its penalties; the
        timings. The stacked per-step state (penalty tensors, LwF's old parameters, SI's path:
        empty between experiences) is rebuilt from the plugin states on load."""
        self.to_models()
        names = set(self.params)
        buffers = [{k: v for k, v in m.state_dict().items() if k not in names} for m in self.models]
        return {
            "params": {k: v.detach() for k, v in self.params.items()},
            "buffers": {k: torch.stack([b[k] for b in buffers]) for k in buffers[0]},
            "optimizer": self.optimizer.state_dict(),
            "per_seed": [{
                "generator": built.trainer.generator.get_state(),
                "augment_generator": built.trainer.augment_generator.get_state(),
                "torch_rng": rng,
                "plugins": [p.state_dict() if callable(getattr(p, "state_dict", None)) else None for p in plugins],
                "penalties": {k: list(v) for k, v in penalties.items()},
            } for built, rng, plugins, penalties in zip(self.builts, self.rng, self.plugins, self.penalties)],
            "timings": {"train": list(self.train_time), "eval": list(self.eval_time), "plugins": list(self.plugin_time)},
        }

    def state_problem(self, state: dict) -> str | None:
        """What makes ``state`` (a checksummed :meth:`state_dict` of this configuration) unusable here, or ``None``."""
        params, buffers = state.get("params"), state.get("buffers")
        if not (isinstance(params, dict) and set(params) == set(self.params)
                and all(isinstance(v, Tensor) and v.shape == self.params[k].shape for k, v in params.items())):
            return "stacked parameters of other names or shapes"
        own = {k: v for k, v in self.models[0].state_dict().items() if k not in self.params}
        if not (isinstance(buffers, dict) and set(buffers) == set(own)
                and all(isinstance(v, Tensor) and v.shape == (len(self.seeds), *own[k].shape) for k, v in buffers.items())):
            return "stacked buffers of other names or shapes"
        opt = state.get("optimizer")
        if not (isinstance(opt, dict) and isinstance(opt.get("state"), dict) and isinstance(opt.get("param_groups"), list)):
            return "no optimizer state dict"
        seeds = state.get("per_seed")
        if not (isinstance(seeds, list) and len(seeds) == len(self.seeds)):
            return "not one state per seed"
        gen = self.trainer0.generator.get_state().numel()
        for s in seeds:
            if not isinstance(s, dict):
                return "a seed's state that is not a dict"
            for key, size in (("generator", gen), ("augment_generator", None), ("torch_rng", torch.get_rng_state().numel())):
                v = s.get(key)
                if not (isinstance(v, Tensor) and v.dtype == torch.uint8 and v.dim() == 1 and (size is None or v.numel() == size)):
                    return f"no {key!r} of the right size in a seed's state"
            if not (isinstance(s.get("plugins"), list) and len(s["plugins"]) == len(self.plugins[0])):
                return f"a seed's plugin states are not {len(self.plugins[0])}"
            if not (isinstance(s.get("penalties"), dict) and all(isinstance(v, list) for v in s["penalties"].values())):
                return "a seed's penalties that are not lists"
        timings = state.get("timings")
        if not (isinstance(timings, dict) and set(timings) == {"train", "eval", "plugins"}
                and all(isinstance(v, list) for v in timings.values())):
            return "no timings"
        return None

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`: each seed's plugins first (a grown head regrows), then its
        module from its slices of the stack, then the stack, the optimizer, the generators and
        the RNG states; the stacked penalty state is rebuilt from the plugins."""
        for i, (built, model, plugins, s) in enumerate(zip(self.builts, self.models, self.plugins, state["per_seed"])):
            for plugin, plugin_state in zip(plugins, s["plugins"]):
                if plugin_state is not None:
                    load_plugin_state(plugin, plugin_state, model)
            model.load_state_dict({**{k: v[i] for k, v in state["params"].items()},
                                   **{k: v[i] for k, v in state["buffers"].items()}})
            for head in model.modules():
                if isinstance(head, IncrementalClassifier):
                    head.take_changes()  # the regrowth's rows are restored, with their optimizer state
            built.trainer.generator.set_state(s["generator"])
            built.trainer.augment_generator.set_state(s["augment_generator"])
            self.rng[i] = s["torch_rng"].clone()
            self.penalties[i] = {k: list(v) for k, v in s["penalties"].items()}
        for k, v in state["params"].items():
            self.params[k].copy_(v)
        self.optimizer.load_state_dict(state["optimizer"])
        self.train_time = list(state["timings"]["train"])
        self.eval_time = list(state["timings"]["eval"])
        self.plugin_time = list(state["timings"]["plugins"])
        self.stack_penalties()

    # ------------------------------------------------------------------ sync
    @torch.no_grad()
    def to_models(self) -> None:
        """Each seed's own module takes its slice of the stacked parameters."""
        for i, model in enumerate(self.models):
            for name, p in model.named_parameters():
                p.copy_(self.params[name][i])

    @torch.no_grad()
    def from_models(self) -> None:
        for i, model in enumerate(self.models):
            for name, p in model.named_parameters():
                self.params[name][i].copy_(p)

    # ------------------------------------------------------------- forward
    def logits(self, x: Tensor, t: Tensor) -> Tensor:
        """``(S, B, C)`` logits of each seed's model on its own batch ``x`` ``(S, B, ...)``, task-masked."""
        return self.task_masked(self.forward(x), t)

    def task_masked(self, out: Tensor, t: Tensor) -> Tensor:
        if self.task_mask is not None:
            out = out.masked_fill(~self.task_mask[t, : out.shape[2]], float("-inf"))
        return out

    def forward(self, x: Tensor, params: dict[str, Tensor] | None = None) -> Tensor:
        """``(S, B, C)`` raw logits (no task mask) of the stacked models, of ``params`` when given
        (LwF's old models), in the template's mode."""
        params = self.params if params is None else params
        return self._mlp(x, params) if self.layers is not None else self._vmap(x, params)  # (S, B, C)

    def _vmap(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        """The general path: ``functional_call`` of the template under ``vmap`` over the seed dimension."""
        def one(ps: dict[str, Tensor], xs: Tensor) -> Tensor:
            return functional_call(self.template, ps, (xs,))
        return torch.vmap(one)(params, x)  # (S, B, C)

    def _mlp(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        """The same for a plain MLP, written out: one ``baddbmm`` per layer (vmap's dispatch costs
        0.3-0.5 ms a step on CPU, as much as the whole step of a small MLP)."""
        h = x.reshape(x.shape[0], x.shape[1], -1)  # (S, B, in)
        for kind, name in self.layers:
            if kind == "linear":
                h = torch.baddbmm(params[f"{name}.bias"].unsqueeze(1), h, params[f"{name}.weight"].transpose(1, 2))
            else:
                h = torch.relu(h)
        head = self.template.head
        hide = getattr(head, "_hide_train" if head.training else "_hide", None)  # an incremental head's masked rows
        return h if hide is None else h.masked_fill(hide, float("-inf"))

    def _plain_mlp(self) -> list[tuple[str, str]] | None:
        """The template's layers as ``(kind, name)`` when it is a plain MLP (Flatten, Linear with
        bias, ReLU; a linear or incremental head without ``mask_past``), else ``None`` (vmap)."""
        model, layers = self.template, []
        if type(model) is not MLP:
            return None
        for i, m in enumerate(model.backbone):
            if isinstance(m, nn.Flatten):
                if i != 0:
                    return None
            elif type(m) is nn.Linear and m.bias is not None:
                layers.append(("linear", f"backbone.{i}"))
            elif type(m) is nn.ReLU:
                layers.append(("relu", ""))
            else:
                return None
        head = model.head
        if not ((type(head) is nn.Linear or (type(head) is IncrementalClassifier and not head.mask_past)) and head.bias is not None):
            return None
        return [*layers, ("linear", "head")]

    def penalty(self, raw: Tensor, out: Tensor, x: Tensor, y: Tensor, t: Tensor) -> list[Tensor | None]:
        """Each penalty plugin's value per seed, ``(S,)``, in the plugins' order; ``None`` for one
        with nothing consolidated yet (``raw``: the step's logits before the task mask, ``out``:
        after it, ``x``: its transformed batch, ``y``, ``t``: its labels and task ids)."""
        values: list[Tensor | None] = []
        for q in self.stacked:
            if q["kind"] == "none":
                values.append(None)
                continue
            if q["kind"] == "lwf":  # LwF: the distillation of the step's batch
                values.append(self.distill(q, raw, x))
                continue
            if q["kind"] == "delegate":  # DER++: each seed's own plugin on its slice (it fills its buffer; reads no parameters)
                own = [p.penalty(m, x=x[i], y=y[i], t=t[i], out=out[i])
                       for i, (p, m) in enumerate(zip(q["plugins"], self.models))]
                if any(v is None for v in own) and not all(v is None for v in own):
                    raise ContinualError(f"plugin {q['plugin']!r} gave a penalty for some seeds only; not batched")
                values.append(None if own[0] is None else torch.stack(own))
                continue
            names = q["names"]
            lows = [q[f"low.{n}"] for n in names] if names and f"low.{names[0]}" in q else None
            values.append(_StackedSquares.apply(q["k"], q["const"], [q[f"omega.{n}"] for n in names],
                                                [q[f"anchor.{n}"] for n in names], lows, *[self.params[n] for n in names]))
        return values

    def join(self, x: Tensor, y: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Each seed's ``batch`` hooks (replay) on its own slice of the batch, the joined batches
        stacked: each seed's own buffer draws its replay samples and takes in the batch with its
        own generator, exactly as in its separate run. The joined batches must have one size."""
        xs, ys, ts = [], [], []
        for i, hooks in enumerate(self.joins):
            xi, yi, ti = x[i], y[i], t[i]
            for p in hooks:
                joined = p.batch(xi, yi, ti)
                if joined is not None:
                    xi, yi, ti = joined
            xs.append(xi)
            ys.append(yi)
            ts.append(ti)
        if any(len(v) != len(ys[0]) for v in ys):
            raise ContinualError(f"the seeds' joined batches differ in size ({[len(v) for v in ys]}); not batched")
        return torch.stack(xs), torch.stack(ys), torch.stack(ts)

    def distill(self, q: dict, raw: Tensor, x: Tensor) -> Tensor:
        """:meth:`continual.regularizers.lwf.LwF.penalty` per seed, ``(S,)``: the old models' logits
        by the same stacked forward on the stacked old parameters (in eval mode, as LwF's frozen
        copy runs), the current ones before the task mask (the trainer's logits in the other
        scenarios, where there is no task mask; LwF's own second forward in the task scenario)."""
        with torch.no_grad():
            self.template.eval()
            try:
                old = self.forward(x, q["old"])  # (S, B, C)
            finally:
                self.template.train()
        T, B = q["temperature"], raw.shape[1]
        if "index" not in q:  # LwF._group_index: each group's classes the old and new logits both have
            width = min(old.shape[2], raw.shape[2])
            q["index"] = [torch.tensor([c for c in g if c < width], dtype=torch.long, device=raw.device) for g in q["groups"]]
        total = raw.new_zeros(raw.shape[0])
        for cols in q["index"]:
            if len(cols) == 0:
                continue
            log_p = F.log_softmax(raw[..., cols] / T, dim=2)
            p = F.softmax(old[..., cols] / T, dim=2)
            total = total + F.kl_div(log_p, p, reduction="none").sum((1, 2)) / B  # "batchmean", per seed
        return q["alpha"] * total

    @torch.no_grad()
    def stack_penalties(self) -> None:
        """Stack each seed's penalty state (after a consolidation) along the seed dimension."""
        self.stacked = []
        kinds = [[p for p in plugins if _overrides(p, "penalty")] for plugins in self.plugins]
        for j, first in enumerate(kinds[0]):
            ps = [k[j] for k in kinds]
            if type(first) is DERpp:
                self.stacked.append({"plugin": _name(first), "kind": "delegate", "plugins": ps})
                continue
            if (type(first) is LwF and first.old_model is None) or (type(first) is not LwF and not first.importances):
                self.stacked.append({"plugin": _name(first), "kind": "none"})  # nothing consolidated yet: no penalty
                continue
            if type(first) is LwF:
                if any(p.groups != first.groups or p.alpha != first.alpha or p.temperature != first.temperature for p in ps):
                    raise ContinualError("the seeds' LwF plugins have different classes or settings; not batched")
                olds = [dict(p.old_model.named_parameters()) for p in ps]
                self.stacked.append({
                    "plugin": _name(first), "kind": "lwf", "alpha": first.alpha, "temperature": first.temperature,
                    "old": {n: torch.empty_like(v).copy_(torch.stack([o[n].detach() for o in olds]))
                            for n, v in self.params.items()},  # each seed's frozen copy, in the parameters' layout
                    "groups": [list(g) for g in first.groups],
                })
                continue
            k = first.strength * first.scale
            q: dict = {"plugin": _name(first), "kind": "quadratic", "k": k, "names": [],
                       "const": torch.tensor([k * sum(p.consts.values()) if p.consts else 0.0 for p in ps], device=self.device)}
            for name in first.importances:
                if name not in self.params:
                    continue
                q["names"].append(name)
                like = self.params[name]  # stored in the parameter's layout: elementwise ops stay on contiguous memory
                q[f"omega.{name}"] = torch.empty_like(like).copy_(torch.stack([p.importances[name] for p in ps]))
                q[f"anchor.{name}"] = torch.empty_like(like).copy_(torch.stack([p.anchors[name] for p in ps]))
                if first.anchor_lows:
                    q[f"low.{name}"] = torch.empty_like(like).copy_(
                        torch.stack([p.anchor_lows.get(name, torch.zeros_like(p.anchors[name])) for p in ps]))
            self.stacked.append(q)

    # ---------------------------------------------------------- experience hooks
    def before_experience(self, experiences: list[Experience]) -> None:
        """Each seed's ``before_experience`` hooks on its own module, with its own global RNG state."""
        self.to_models()
        for i, (model, plugins, exp) in enumerate(zip(self.models, self.plugins, experiences)):
            torch.set_rng_state(self.rng[i])
            for p in plugins:
                if _overrides(p, "before_experience"):
                    new = p.before_experience(model, exp)
                    if new:
                        raise ContinualError(f"plugin {_name(p)!r} added parameters (a new task head); not batched")
            self.rng[i] = torch.get_rng_state()
        names = {i: {id(p): n for n, p in m.named_parameters()} for i, m in enumerate(self.models)}
        rows: set[tuple[str, int, int]] = set()
        for i, model in enumerate(self.models):
            for head in model.modules():
                if isinstance(head, IncrementalClassifier):
                    if not torch.equal(head.active, self.template.head.active):
                        raise ContinualError("the seeds' heads grew differently; not batched")
                    for change in head.take_changes():
                        if change.old is not None:
                            raise ContinualError("a head grew past its capacity (reallocated); not batched")
                        rows.add((names[i][id(change.param)], change.start, change.stop))
        self.from_models()
        self.paths = []
        penalties = [p for p in self.plugins[0] if _overrides(p, "penalty")]
        for j, first in enumerate(self.plugins[0]):
            if type(first) is SI:
                self.paths.append((_StackedPaths([plugins[j] for plugins in self.plugins], self.params), penalties.index(first)))
        for name, start, stop in rows:  # as sync_optimizer: the rows coming into use start with zero state
            state = self.optimizer.state.get(self.params[name])
            for v in (state or {}).values():
                if torch.is_tensor(v) and v.shape == self.params[name].shape:
                    v[:, start:stop] = 0

    def after_experience(self, experiences: list[Experience]) -> None:
        """Each seed's ``after_experience`` hooks (consolidation) on its own module, with its own global RNG state."""
        self.to_models()
        for paths, _ in self.paths:
            paths.unstack()
        self.paths = []
        for i, (model, plugins, exp) in enumerate(zip(self.models, self.plugins, experiences)):
            torch.set_rng_state(self.rng[i])
            for p in plugins:
                if _overrides(p, "after_experience"):
                    p.after_experience(model, exp)
            self.rng[i] = torch.get_rng_state()
        self.stack_penalties()

    # ------------------------------------------------------------------ fit
    def fit(self, experiences: list[Experience], on_step: StepHook | None, callbacks: Sequence[Callback]) -> None:
        """Train every seed on its experience (same size for all) for the configured epochs."""
        experiences = [e.to(self.device) for e in experiences]
        start = time.perf_counter()
        self.before_experience(experiences)
        plugin_time = time.perf_counter() - start
        n = experiences[0].num_train
        if any(e.num_train != n for e in experiences):
            raise ContinualError(f"the seeds' experiences differ in size ({[e.num_train for e in experiences]}); not batched")
        if n == 0:
            raise ContinualError(f"experience {experiences[0].index} has no training samples")
        transform = experiences[0].transform
        if any(e.transform != transform for e in experiences) or getattr(transform, "augment", None) is not None:
            raise ContinualError("the seeds' transforms differ or augment; not batched")
        S, bs, epochs = len(self.seeds), self.cfg.batch_size, self.cfg.epochs
        shared = all(torch.equal(e.x_train, experiences[0].x_train) and torch.equal(e.y_train, experiences[0].y_train)
                     for e in experiences[1:])
        if shared:  # the same data for every seed (split benchmarks): gather from one copy
            x_all, y_all, t_all = experiences[0].x_train, experiences[0].y_train, experiences[0].t_train
        else:  # each seed's own data (permuted benchmarks): (S, n, ...)
            x_all = torch.stack([e.x_train for e in experiences])
            y_all = torch.stack([e.y_train for e in experiences])
            t_all = torch.stack([e.t_train for e in experiences])
        rows = torch.arange(S, device=self.device)[:, None]  # (S, 1)
        names = [_name(p) for p in self.plugins[0] if _overrides(p, "penalty")]
        sums = {name: torch.zeros(S, device=self.device) for name in names}
        self.template.train()
        opt, steps = self.optimizer, -(-n // bs)
        for epoch in range(epochs):
            lr = self.cfg.lr * self.trainer0.lr_factor(epoch)
            for group in opt.param_groups:
                group["lr"] = lr
            order = torch.stack([torch.randperm(n, generator=b.trainer.generator)
                                 for b in self.builts]).to(self.device)  # (S, n): each seed's own draw
            loss_sum = torch.zeros(S, device=self.device)
            for s in range(0, n, bs):
                idx = order[:, s : s + bs]  # (S, B)
                if shared:
                    x, y, t = x_all[idx], y_all[idx], t_all[idx]  # (S, B, ...)
                else:
                    x, y, t = x_all[rows, idx], y_all[rows, idx], t_all[rows, idx]
                if self.joins[0]:
                    h0 = time.perf_counter()
                    x, y, t = self.join(x, y, t)  # (S, B + R, ...)
                    plugin_time += time.perf_counter() - h0
                B = y.shape[1]
                xb = transform(x.reshape(S * B, *x.shape[2:]), train=True).reshape(S, B, *x.shape[2:])
                raw = self.forward(xb)  # (S, B, C)
                out = self.task_masked(raw, t)
                if self.criteria[0] is not None:  # ER-ACE: each seed's own loss on its slice (delegated)
                    task = torch.stack([criterion(out[i], y[i]) for i, criterion in enumerate(self.criteria)])  # (S,)
                else:
                    ce = F.cross_entropy(out.reshape(S * B, -1), y.reshape(-1), reduction="none").view(S, B)  # (S, B)
                    if self.ignores:  # the mean over the rows not ignored, as F.cross_entropy's
                        task = ce.sum(1) / (y != IGNORE_LABEL).sum(1)  # (S,)
                    else:
                        task = ce.mean(1)  # (S,)
                loss = task
                if self.stacked:
                    h0 = time.perf_counter()
                    for q, value in zip(self.stacked, self.penalty(raw, out, xb, y, t)):
                        if value is not None:
                            loss = loss + value
                            sums[q["plugin"]] += value.detach()
                    plugin_time += time.perf_counter() - h0
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()  # seed i's slice of each gradient is seed i's own gradient
                opt.step()
                if self.paths:
                    h0 = time.perf_counter()
                    for paths, j in self.paths:
                        paths.after_step(self.params, self.stacked[j])
                    plugin_time += time.perf_counter() - h0
                loss_sum += loss.detach()
                if on_step is not None:
                    on_step(task.detach())
            means = (loss_sum / steps).tolist()  # one host sync per epoch
            for seed, mean in zip(self.seeds, means):
                if mean != mean or mean in (float("inf"), float("-inf")):
                    raise ContinualError(f"the training loss became {mean} in experience {experiences[0].index}, epoch {epoch}, "
                                         f"seed {seed} (lr={lr:g}): lower the learning rate (--lr) or the penalty's strength")
            for cb in callbacks:
                cb("epoch_end", {"experience": experiences[0].index, "epoch": epoch, "loss": means, "steps": steps,
                                 "seeds": list(self.seeds)})
        h0 = time.perf_counter()
        self.after_experience(experiences)
        end = time.perf_counter()
        plugin_time += end - h0
        for name, total in sums.items():
            for i, v in enumerate((total / max(1, epochs * steps)).tolist()):
                self.penalties[i].setdefault(name, []).append(v)
        self.train_time.append(end - start)
        self.plugin_time.append(plugin_time)

    # -------------------------------------------------------------- evaluate
    @torch.no_grad()
    def evaluate(self) -> list[list[float]]:
        """Each seed's accuracy on every experience's test split, ``[seed][experience]``."""
        self.template.eval()
        S, ebs = len(self.seeds), self.cfg.eval_batch_size
        rows: list[Tensor] = []
        totals = []
        for j in range(len(self.streams[0])):
            es = [stream[j] for stream in self.streams]
            n = es[0].num_test
            shared = all(torch.equal(e.x_test, es[0].x_test) for e in es[1:])
            hits = torch.zeros(S, dtype=torch.int64, device=self.device)
            for s in range(0, n, ebs):
                if shared:
                    x = es[0].x_test[s : s + ebs].unsqueeze(0).expand(S, *es[0].x_test[s : s + ebs].shape)
                else:
                    x = torch.stack([e.x_test[s : s + ebs] for e in es])
                y = torch.stack([e.y_test[s : s + ebs] for e in es])  # (S, B)
                t = torch.stack([e.t_test[s : s + ebs] for e in es])
                B = y.shape[1]
                xb = es[0].transform(x.reshape(S * B, *x.shape[2:])).reshape(S, B, *x.shape[2:])
                hits += (self.logits(xb, t).argmax(2) == y).sum(1)
            rows.append(hits)
            totals.append(max(n, 1))
        self.template.train()
        if not rows:
            return [[] for _ in self.seeds]
        acc = torch.stack(rows, 1).double().cpu() / torch.tensor(totals, dtype=torch.float64)  # (S, T)
        return acc.tolist()

    def evaluate_timed(self) -> list[list[float]]:
        t0 = time.perf_counter()
        rows = self.evaluate()
        self.eval_time.append(time.perf_counter() - t0)
        return rows


def run_batched(
    config: RunConfig,
    seeds: Sequence[int],
    *,
    callbacks: Sequence[Callback] = (),
    on_step: StepHook | None = None,
    forward: str = "auto",
    checkpoint_dir: str | Path | None = None,
    on_problem: Callable[[str], None] | None = None,
) -> list[Result]:
    """Train the seeds of ``config`` together; return each seed's :class:`Result`, in ``seeds``' order.

    Each result is what ``run(dataclasses.replace(config, seed=s))`` returns, to the rounding of
    batched matrix products (see the module docstring), with ``extra["batched"]`` added.

    Args:
        config: the configuration (its ``seed`` is replaced by each of ``seeds``).
        seeds: distinct seeds, at least one.
        callbacks: read-only observers ``callback(event, info)``: ``"experience_start"``,
            ``"epoch_end"`` (``info["loss"]``: each seed's mean loss, in ``seeds``' order) and
            ``"experience_end"`` (``info["rows"]``: each seed's row).
        on_step: called after each step with each seed's task loss (cross-entropy, before penalties),
            a detached ``(S,)`` tensor (no host sync unless the hook makes one).
        forward: ``"auto"``: a plain MLP's forward written out as one batched product per layer,
            any other model through ``functional_call`` under ``vmap``; ``"vmap"``: always the
            latter (the same numbers to rounding; for comparison).
        checkpoint_dir: if given, a checkpoint of every seed is written there after each
            experience (:func:`save_batched_checkpoint`, the last two kept), and a run started
            again with the same configuration and seeds resumes after the newest valid one, ending
            with the same results as an uninterrupted batched run on CPU. Locking the folder and
            removing it once the results are saved are the caller's part (``continual run`` does).
        on_problem: receives a message for each checkpoint that could not be used (corrupt, of
            another configuration or other seeds...), passed over for the one before it.

    Raises:
        ContinualError: with :func:`batchable`'s reason for a configuration it cannot batch,
            for repeated or no seeds, and for a loss that diverged in any seed.
    """
    reason = batchable(config)
    if reason is not None:
        raise ContinualError(reason)
    if forward not in FORWARDS:
        raise ContinualError(f"unknown forward {forward!r}; expected one of {', '.join(FORWARDS)}")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ContinualError(f"seeds={seeds} must be at least one seed, each once")
    caller_rng = torch.get_rng_state()
    try:
        return _run(config, seeds, callbacks, on_step, forward, checkpoint_dir, on_problem)
    finally:
        torch.set_rng_state(caller_rng)


CHECKPOINT_FORMAT = "continual.batched-checkpoint"
CHECKPOINT_VERSION = 1


def save_batched_checkpoint(folder: Path, index: int, b: _Seeds, mats: list[AccuracyMatrix], wall: float) -> Path:
    """Write the state of every seed after experience ``index`` atomically, with the SHA-256 digest
    of its content inside (as :func:`continual.experiment.save_checkpoint`), and keep only this
    checkpoint and the one before it.

    It holds the configuration (the first seed's, resolved) and the seeds, the accuracy matrices
    so far ``(S, T, T)`` and the random-init rows ``(S, T)``, the wall time so far, and
    :meth:`_Seeds.state_dict`: the stacked parameters and buffers, the stacked optimizer's state,
    each seed's generators, global RNG state, plugin states and penalties, and the timings."""
    state = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": _config_text(b.builts[0].config),
        "seeds": list(b.seeds), "index": index,
        "acc_matrix": torch.from_numpy(np.stack([m.values for m in mats])),
        "random_init": torch.from_numpy(np.stack([m.random_init for m in mats])),
        "wall": wall, "seeds_state": b.state_dict(),
    }
    path = atomic_torch_save(state, folder / f"batched-checkpoint-{index:04d}.pt", checksum=True)
    for old in sorted(folder.glob("batched-checkpoint-*.pt"))[:-2]:
        old.unlink(missing_ok=True)
    return path


def _checkpoint_problem(state: dict, b: _Seeds, T: int) -> str | None:
    S = len(b.seeds)
    acc, init, index = state.get("acc_matrix"), state.get("random_init"), state.get("index")
    if not (isinstance(acc, Tensor) and acc.shape == (S, T, T)):
        return f"no accuracy matrices of shape ({S}, {T}, {T})"
    if not (isinstance(init, Tensor) and init.shape == (S, T)):
        return f"no random-init rows of shape ({S}, {T})"
    if not (isinstance(index, int) and not isinstance(index, bool) and 0 <= index < T):
        return "no valid 'index'"
    if not isinstance(state.get("wall"), (int, float)) or isinstance(state.get("wall"), bool):
        return "no 'wall' time"
    if not isinstance(state.get("seeds_state"), dict):
        return "no seeds' state"
    return b.state_problem(state["seeds_state"])


def load_batched_checkpoint(folder: Path, b: _Seeds, on_problem: Callable[[str], None] | None = None) -> dict | None:
    """The newest valid checkpoint in ``folder`` for ``b``'s configuration and seeds, or ``None``.

    As :func:`continual.experiment.load_checkpoint` (the same scan,
    :func:`continual.experiment.newest_checkpoint`): a checkpoint is used only if it loads
    (``weights_only=True``), its checksum matches, it was written by this version for this
    configuration and these seeds, and it holds every entry a resume needs, sized for these
    seeds; any other is reported through ``on_problem`` and passed over for the one before it."""
    from .experiment import newest_checkpoint

    T = len(b.streams[0])
    return newest_checkpoint(
        folder, "batched-checkpoint-*.pt", format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION, what="batched checkpoint",
        required=(), ours=lambda state: state.get("config") == _config_text(b.builts[0].config) and state.get("seeds") == b.seeds,
        other="another configuration or other seeds", problem=lambda state: _checkpoint_problem(state, b, T), on_problem=on_problem)


def _run(config: RunConfig, seeds: list[int], callbacks: Sequence[Callback], on_step: StepHook | None, forward: str,
         checkpoint_dir: str | Path | None = None, on_problem: Callable[[str], None] | None = None) -> list[Result]:
    wall0 = time.perf_counter()
    b = _Seeds(config, seeds, forward=forward)
    S, T = len(seeds), len(b.streams[0])
    schedule = b.builts[0].strategy.schedule
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    state = load_batched_checkpoint(folder, b, on_problem) if folder is not None else None
    wall_before, start = 0.0, 0
    if state is not None:
        b.load_state_dict(state["seeds_state"])
        mats = [AccuracyMatrix.from_rows(a.numpy(), r.numpy()) for a, r in zip(state["acc_matrix"], state["random_init"])]
        wall_before, start = float(state["wall"]), state["index"] + 1
    else:
        mats = [AccuracyMatrix(T) for _ in seeds]
        for m, row in zip(mats, b.evaluate()):
            m.set_random_init(row)

    def checkpoint(index: int) -> None:
        if folder is not None:
            save_batched_checkpoint(folder, index, b, mats, wall_before + time.perf_counter() - wall0)

    def emit(event: str, **info) -> None:
        for cb in callbacks:
            cb(event, info)

    if schedule == "joint":
        if state is None:  # a joint run's one checkpoint is written when it is done
            emit("experience_start", index=0, num_experiences=1)
            b.fit([concat(list(stream), index=0) for stream in b.streams], on_step, callbacks)
            rows = b.evaluate_timed()
            for m, row in zip(mats, rows):
                for i in range(T):
                    m.set_row(i, row)
            emit("experience_end", index=0, num_experiences=1, rows=rows)
            checkpoint(T - 1)
    else:
        for i in range(start, T):
            emit("experience_start", index=i, num_experiences=T)
            exps = [concat(list(stream[: i + 1]), index=i) if schedule == "cumulative" else stream[i] for stream in b.streams]
            b.fit(exps, on_step, callbacks)
            rows = b.evaluate_timed()
            for m, row in zip(mats, rows):
                m.set_row(i, row)
            emit("experience_end", index=i, num_experiences=T, rows=rows)
            checkpoint(i)
    b.to_models()
    wall = wall_before + time.perf_counter() - wall0
    results = []
    for i, built in enumerate(b.builts):
        cfg, acc, plugins, stream = built.config, mats[i], b.plugins[i], b.streams[i]
        extra = {_name(p): p.report() for p in plugins if callable(getattr(p, "report", None))}
        timings = {"train": list(b.train_time), "eval": list(b.eval_time), "plugins": list(b.plugin_time),
                   "total_train": sum(b.train_time), "total_eval": sum(b.eval_time), "total_plugins": sum(b.plugin_time),
                   "wall": wall}
        test_sizes = [e.num_test for e in stream]
        extra["memory"] = memory_ledger(built.model, plugins)
        extra["by_step"] = by_step(acc.values, test_sizes)
        extra["batched"] = {"seeds": S, "timings": f"of the {S} seeds trained together"}
        if state is not None:
            extra["resumed"] = True
        env = environment(b.device)
        results.append(Result(
            config=cfg.to_dict(), seed=cfg.seed, acc_matrix=acc.tolist(), random_init=acc.random_init.tolist(),
            metrics=summary(acc.values, acc.random_init, test_sizes=test_sizes), timings=timings,
            penalties=b.penalties[i], extra=extra, environment=env,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"), test_sizes=test_sizes,
            classifiers={}, provenance=provenance(cfg.to_dict(), built.source, env) | {k: dict(v) if isinstance(v, dict) else v
                                                                                        for k, v in built.records.items()},
        ))
    return results


__all__ = ["BATCHABLE_STRATEGIES", "batchable", "load_batched_checkpoint", "run_batched", "save_batched_checkpoint"]
