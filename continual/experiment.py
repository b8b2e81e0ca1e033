"""One run from a configuration: benchmark + strategy + model + hyperparameters + seed -> Result.

:class:`RunConfig` is the single place where run defaults live; fields left ``None`` take the
benchmark's defaults when the configuration is resolved, and the resolved configuration is what
a results file stores.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import __version__
from .benchmarks import get_benchmark, make_stream
from .errors import ContinualError
from .features import FEATURE_CACHE
from .data import check_root
from .metrics import AccuracyMatrix
from .models import HEADS, MODELS, HeadExpansion, build_model, grow_head
from .models.torchvision_models import TORCHVISION_MODELS, InputAdapter, is_weights_spec, load_weights, resolve_weights
from .ledger import memory_ledger, provenance
from .metrics import summary
from .results import Result, atomic_torch_save, by_step, classifier_record
from .streams import CLASS_ORDERS, class_increments, parse_split
from .strategies import Context, Range, coerce, get_strategy
from .trainer import LR_SCHEDULES, OPTIMIZERS, Callback, Trainer, resolve_device
from .validation import ValidationMatrix, check_fraction, split_stream
from .validation import checkpoint_problem as validation_problem


@dataclass
class RunConfig:
    """A run's configuration. ``None`` means the benchmark's default.

    Attributes:
        benchmark: a registered benchmark name.
        strategy: a registered strategy name.
        scenario: ``"class"``, ``"task"`` or ``"domain"`` (default: the benchmark's first).
        num_experiences: default: the benchmark's (with ``split`` or ``increments``: their length).
        split: ``"B<first>-Inc<increment>"`` (split benchmarks): ``first`` classes, then
            ``increment`` per experience; B0 is an equal split (PyCIL's cut).
        increments: classes per experience (split benchmarks), e.g. ``[50, 10, 10, 10, 10, 10]``.
        classes: the dataset labels the stream uses (split benchmarks; default: all of them).
        class_order: ``None`` (standard), ``"random"`` (from ``seed``), ``"icarl"`` (its own seed, 1993) or an explicit list.
        model: ``"mlp"``, ``"convnet"``, ``"resnet18"`` (reduced, nf=20), ``"resnet18-full"``,
            ``"resnet32"`` (PyCIL's CIFAR ResNet-32), or torchvision's ``"resnet18-torchvision"``,
            ``"resnet50-torchvision"`` or ``"vit-b16-torchvision"`` (default: the benchmark's).
        head: ``"fixed"``, ``"incremental"`` (grows with the classes seen),
            ``"incremental-mask-past"`` or ``"multi"`` (one head per task id); default:
            ``"incremental"`` in the class-incremental scenario, ``"fixed"`` otherwise.
        pretrained: the weights the model's backbone starts from: a checkpoint file (``continual
            pretrain``, or a plain state dict), or, for a torchvision model, ``"imagenet"`` (the
            architecture's default ImageNet weights) or ``"torchvision:ENUM"`` (e.g.
            ``"torchvision:ResNet50_Weights.IMAGENET1K_V2"``), read from torch's cache
            (``$TORCH_HOME``) and downloaded only with ``download``
            (:mod:`continual.models.torchvision_models`). A file called ``imagenet`` is
            ``./imagenet``.
        hidden: the MLP's hidden widths (default ``[400, 400]``), e.g. ``[256, 256]`` (Mammoth's
            ``MNISTMLP``); ``mlp`` only.
        normalise: ``False`` feeds pixels scaled to [0, 1] without the dataset's mean/std
            normalisation (as papers that use ``ToTensor()`` alone); not with training augmentation.
        resize: torchvision models: resize inputs to ``resize x resize`` inside the model (ViT-B/16
            works at 224 only and resizes by itself); the provenance says how inputs were adapted.
        adapt_first: first-session adaptation: before the strategy starts, train the backbone on
            the first experience alone (from ``pretrained`` when given, from scratch otherwise);
            the strategies that need pretrained weights then accept it in their place
            (:func:`continual.transfer.adapt_first`).
        compile: train through ``torch.compile`` of the model (see :class:`~continual.trainer.Trainer`;
            ``benchmarks/compile.py`` measures whether it pays).
        feature_cache: ``"auto"`` (default): when the strategy freezes the whole backbone, its
            features are computed once per experience and the head trains on them, unless
            training augmentation is on (then they are recomputed every batch, and the
            provenance says why); ``"on"`` refuses a run where it cannot apply; ``"off"``
            recomputes every batch (:mod:`continual.features`).
        epochs: passes over each experience (default: the benchmark's).
        lr: learning rate (default: the benchmark's).
        batch_size: training batch size (default: the benchmark's).
        optimizer: ``"sgd"`` or ``"adam"``.
        momentum: SGD momentum.
        weight_decay: optimizer weight decay.
        lr_schedule: ``"constant"``, ``"step"`` (``lr_decay`` at each of ``milestones``) or
            ``"cosine"``, over the epochs of each experience (see :class:`continual.trainer.Trainer`).
        milestones: epochs of a ``"step"`` schedule, e.g. ``[80, 120]``.
        lr_decay: the factor of each ``"step"`` milestone.
        classifier: the evaluation classifier: ``"linear"`` (the model's argmax), ``"nme"``
            (nearest mean of exemplars, class-incremental only) or ``"both"`` (the result records
            both matrices, the linear one first); default: the strategy's (``"nme"`` for iCaRL,
            ``"linear"`` otherwise). A strategy whose plugin is its own evaluation classifier
            (a closed-form head) also accepts that classifier's name.
        eval_batch_size: evaluation batch size.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        seed: seeds the model initialisation, the batch order and seeded stream choices.
        params: strategy hyperparameters overriding its defaults (e.g. ``{"lam": 100}``).
        label: the name the run is shown under in tables and plots (default: the strategy).
        data_root: a folder searched first for dataset files (file-based benchmarks).
        download: download missing dataset files and pretrained torchvision weights (both
            SHA-256 verified); never otherwise.
        validation: hold out this fraction of each experience's training data (class-stratified,
            seeded by ``seed``), never train on it, and record the accuracy matrix on it beside the
            test matrix, for choosing hyperparameters without the test set; 0 (default) is off,
            else 0 < F < 1 (:mod:`continual.validation`).
        online: a single pass over the stream in small batches, task boundaries hidden from the
            methods, anytime evaluation (:mod:`continual.online`); ``epochs`` defaults to 1 and
            ``batch_size`` to 10. Each experience's samples come in one order drawn from ``seed``
            (:func:`continual.online.shuffled`), or the blurry protocol's.
        eval_every: online: evaluate every this many training samples on the classes seen so far
            (``None``: at each experience's end only).
        train_passes: online: updates per incoming batch.
        boundaries: online: tell the methods where experiences begin and end (regularizers
            that consolidate per experience then run).
        blurry: cut the stream again by a blurry protocol: ``"i-blurry-N-M"`` (e.g.
            ``"i-blurry-50-10"``), ``"si-blurry"`` or ``"si-blurry-N-M"`` (class-incremental
            split benchmarks; :func:`continual.online.make_blurry`, seeded with ``seed``).
    """

    benchmark: str = "split-digits"
    strategy: str = "finetune"
    scenario: str | None = None
    num_experiences: int | None = None
    class_order: str | list[int] | None = None
    split: str | None = None
    increments: list[int] | None = None
    classes: list[int] | None = None
    model: str | None = None
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    milestones: list[int] = field(default_factory=list)
    lr_decay: float = 0.1
    classifier: str | None = None
    eval_batch_size: int = 1024
    device: str = "auto"
    seed: int = 0
    params: dict = field(default_factory=dict)
    label: str | None = None
    data_root: str | None = None
    download: bool = False
    head: str | None = None
    pretrained: str | None = None
    adapt_first: bool = False
    feature_cache: str = "auto"
    resize: int | None = None
    hidden: list[int] | None = None
    normalise: bool = True
    compile: bool = False
    validation: float = 0.0
    online: bool = False
    eval_every: int | None = None
    train_passes: int = 1
    boundaries: bool = False
    blurry: str | None = None

    def resolve(self, *, here: bool = True) -> RunConfig:
        """A copy with every ``None`` default filled from the benchmark, every value checked.

        This is the one place a configuration is validated, before anything runs: names against
        their registries, numbers against their ranges (:data:`LIMITS`), the strategy's
        hyperparameters against its limits, the head against the strategy, the data root and
        the device. An empty name is refused, not taken as the default.

        Args:
            here: also check what depends on this machine: that it can use the device and that
                the data root exists; ``False`` checks the device's name only (for Ray tasks,
                which run elsewhere).

        Raises:
            ContinualError: one line naming the bad value and what would be accepted.
        """
        bench = get_benchmark(self.benchmark)
        strategy = get_strategy(self.strategy)
        scenario = self.scenario if self.scenario is not None else bench.default_scenario
        if scenario not in bench.scenarios:
            raise ContinualError(f"benchmark {bench.name!r} has no scenario {scenario!r}; expected one of {', '.join(bench.scenarios)}")
        head = self.head if self.head is not None else ("incremental" if scenario == "class" else "fixed")
        if head not in HEADS:
            raise ContinualError(f"unknown head {head!r}; expected one of {', '.join(HEADS)}")
        if head == "incremental-mask-past" and strategy.past_classes:
            raise ContinualError(f"head {head!r} masks past classes' logits in training, but strategy {strategy.name!r} trains "
                                 "on past classes (replay, distillation or cumulative data); use head 'incremental'")
        model = self.model if self.model is not None else bench.model
        if model not in MODELS:
            raise ContinualError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ContinualError(f"unknown optimizer {self.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        for key in ("label", "pretrained"):
            if getattr(self, key) is not None and not str(getattr(self, key)).strip():
                raise ContinualError(f"{key}='' is empty; give a value or leave it out for the default")
        if strategy.needs_pretrained and not self.pretrained and not self.adapt_first:
            raise ContinualError(f"strategy {strategy.name!r} needs pretrained weights: give --pretrained PATH "
                                 "(make one with 'continual pretrain --benchmark B --classes ... --out PATH'), "
                                 "--pretrained imagenet with a torchvision model, "
                                 "or --adapt-first (a backbone trained on the first experience only)")
        if self.pretrained and is_weights_spec(self.pretrained):
            resolve_weights(model, self.pretrained)  # a wrong name lists the accepted ones
        if self.hidden is not None:
            if model != "mlp":
                raise ContinualError(f"hidden={self.hidden} sets the widths of model 'mlp'; model {model!r} has no hidden widths")
            if not self.hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden):
                raise ContinualError(f"hidden={self.hidden} must be a non-empty list of positive widths, e.g. [256, 256]")
        if self.resize is not None:
            if isinstance(self.resize, bool) or not isinstance(self.resize, int) or self.resize < 1:
                raise ContinualError(f"resize={self.resize!r} must be a positive image size in pixels, e.g. 224")
            if model not in TORCHVISION_MODELS:
                raise ContinualError(f"resize={self.resize} applies to the torchvision models ({', '.join(TORCHVISION_MODELS)}); "
                                     f"model {model!r} takes the benchmark's images as they are")
        check_fraction(self.validation)
        _check_online(self, bench, scenario, head, strategy)
        if self.feature_cache not in FEATURE_CACHE:
            raise ContinualError(f"feature_cache={self.feature_cache!r} is not accepted; expected one of {', '.join(FEATURE_CACHE)}")
        resolved = dataclasses.replace(
            self,
            scenario=scenario,
            head=head,
            num_experiences=self.num_experiences if self.num_experiences is not None else bench.num_experiences,
            model=model,
            epochs=self.epochs if self.epochs is not None else (1 if self.online else bench.epochs),
            lr=self.lr if self.lr is not None else bench.lr,
            batch_size=self.batch_size if self.batch_size is not None else (ONLINE_BATCH_SIZE if self.online else bench.batch_size),
            params=strategy.params(self.params),
            classifier=self.classifier if self.classifier is not None else strategy.classifier,
        )
        for key, limit in LIMITS.items():
            value = getattr(resolved, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (key in _INTS and not isinstance(value, int)):
                raise ContinualError(f"{key}={value!r} is not a valid {'int' if key in _INTS else 'float'}")
            limit.check(value, key)
        most = bench.max_experiences
        if most is not None and resolved.num_experiences > most:
            raise ContinualError(f"num_experiences={resolved.num_experiences} is out of range: benchmark {bench.name!r} "
                                 f"has {most} classes, so expected 1..{most}")
        _check_class_order(resolved.class_order, bench)
        resolved = _resolve_cut(resolved, bench, num_experiences_given=self.num_experiences is not None)
        if resolved.lr_schedule not in LR_SCHEDULES:
            raise ContinualError(f"lr_schedule={resolved.lr_schedule!r} is not accepted; expected one of {', '.join(LR_SCHEDULES)}")
        if resolved.lr_schedule == "step" and not resolved.milestones:
            raise ContinualError("lr_schedule='step' needs milestones, e.g. --milestones 80,120 (epochs within each experience)")
        if resolved.milestones and (resolved.lr_schedule != "step" or any(not isinstance(m, int) or isinstance(m, bool) or not 1 <= m < resolved.epochs
                                                                          for m in resolved.milestones)):
            raise ContinualError(f"milestones={resolved.milestones} need lr_schedule='step' and must be epochs in 1..{resolved.epochs - 1} "
                                 f"(epochs={resolved.epochs})")
        accepted = CLASSIFIERS + ((strategy.classifier,) if strategy.classifier not in CLASSIFIERS else ())
        if resolved.classifier not in accepted:
            raise ContinualError(f"classifier={resolved.classifier!r} is not accepted; expected one of {', '.join(accepted)}")
        if strategy.classifier not in CLASSIFIERS and resolved.classifier in ("linear", "both"):
            raise ContinualError(f"strategy {strategy.name!r} trains no head and predicts with its own classifier "
                                 f"{strategy.classifier!r}; classifier={resolved.classifier!r} would evaluate the untrained head: "
                                 f"use {strategy.classifier!r} or 'nme'")
        if resolved.classifier != "linear" and (scenario != "class" or head not in ("incremental", "incremental-mask-past", "fixed")):
            raise ContinualError(f"classifier={resolved.classifier!r} needs the class-incremental scenario with one head "
                                 f"(got scenario {scenario!r}, head {head!r}); use classifier='linear'")
        if here:
            check_root(self.data_root, download=self.download, archive="cifar" in bench.name)  # as its loader will
        resolve_device(self.device, here=here)
        return resolved
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def override(self, values: Mapping[str, object]) -> RunConfig:
        """A copy with ``values`` applied; strings are parsed to each field's type.

        A key is a configuration field (``epochs``, ``lr``...) or one of the strategy's
        hyperparameters (``lam``..., also spelt ``params.lam``).

        Raises:
            ContinualError: for an unknown key (naming the accepted ones) or a badly typed value.
        """
        kinds = {"epochs": int, "lr": float, "batch_size": int, "num_experiences": int, "momentum": float,
                 "weight_decay": float, "eval_batch_size": int, "seed": int, "lr_decay": float, "resize": int,
                 "validation": float, "eval_every": int, "train_passes": int}
        texts = {"benchmark", "strategy", "scenario", "model", "optimizer", "device", "label", "data_root", "head", "pretrained",
                 "split", "lr_schedule", "classifier", "feature_cache", "blurry"}
        lists = {"increments", "classes", "milestones", "hidden"}
        changes: dict[str, object] = {}
        for key, value in values.items():
            if key in kinds:
                changes[key] = coerce(value, kinds[key], key)
            elif key in texts:
                changes[key] = str(value)
            elif key == "class_order":
                changes[key] = parse_class_order(value)
            elif key in lists:
                changes[key] = parse_ints(value, key)
            elif key in _BOOLS:
                changes[key] = coerce(value, bool, key)
        strategy = get_strategy(str(changes.get("strategy", self.strategy)))
        params = dict(self.params)
        for key, value in values.items():
            if key in kinds or key in texts or key in lists or key == "class_order" or key in _BOOLS:
                continue
            name = key[len("params."):] if key.startswith("params.") else key
            if name not in strategy.defaults:
                accepted = sorted(kinds) + sorted(texts) + sorted(lists) + sorted(_BOOLS + ("class_order",)) + sorted(strategy.defaults)
                raise ContinualError(f"unknown setting {key!r}; accepted: {', '.join(accepted)}")
            params[name] = coerce(value, type(strategy.defaults[name]), name)
        return dataclasses.replace(self, **changes, params=params)


_BOOLS = ("adapt_first", "compile", "download", "normalise", "online", "boundaries")  # RunConfig's yes/no settings
SEED_MAX = 2**63 - 1  # seeds are 0..2**63-1: PyTorch and NumPy take them, and seed + k stays in an int64
MAX_SEEDS = 10_000  # seeds per command or sweep: more would take weeks; a larger number is a typo
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)  # lr and weight decay scale float32 tensors
_LR_MAX = _FLOAT32_MAX / 10  # Adam's first step divides lr by 1 - beta1 = 0.1, in float32
_INTS = {"epochs", "batch_size", "eval_batch_size", "num_experiences", "seed"}
LIMITS: dict[str, Range] = {
    "epochs": Range(1),
    "batch_size": Range(1),
    "eval_batch_size": Range(1),
    "num_experiences": Range(1),  # and at most the classes of a split benchmark
    "lr": Range(0, _LR_MAX, low_open=True),
    "momentum": Range(0, 1, high_open=True),
    "weight_decay": Range(0, _FLOAT32_MAX),
    "seed": Range(0, SEED_MAX),
    "lr_decay": Range(0, 1, low_open=True),
}
"""The accepted range of each numeric :class:`RunConfig` field, checked by :meth:`RunConfig.resolve`."""
CLASSIFIERS = ("linear", "nme", "both")


ONLINE_BATCH_SIZE = 10  # an online run's default batch (i-Blurry; ER-ACE's AML main.py)


def _check_online(cfg: RunConfig, bench, scenario: str, head: str, strategy) -> None:
    """The online settings (``online``, ``eval_every``, ``train_passes``, ``boundaries``,
    ``blurry``), each refused in one line where it cannot apply. Plugins that need experience
    boundaries are refused by the trainer, naming the plugin."""
    from .online import parse_protocol

    for key in ("eval_every", "train_passes"):
        value = getattr(cfg, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ContinualError(f"{key}={value!r} must be a positive whole number" + (" of samples" if key == "eval_every" else ""))
    if not cfg.online and (cfg.eval_every is not None or cfg.train_passes != 1 or cfg.boundaries):
        raise ContinualError("eval_every, train_passes and boundaries apply to online runs; add --online (online=True)")
    if cfg.blurry is not None:
        parse_protocol(cfg.blurry)
        if bench.kind != "split" or scenario != "class":
            raise ContinualError(f"blurry={cfg.blurry!r} cuts a class-incremental split benchmark; {bench.name!r} in scenario "
                                 f"{scenario!r} is not one")
    if not cfg.online:
        return
    if strategy.schedule != "sequential":
        raise ContinualError(f"strategy {strategy.name!r} trains on several experiences at once ({strategy.schedule}); "
                             "an online run is one pass over the stream: use finetune, replay, er-ace or der++")
    if cfg.epochs is not None and cfg.epochs != 1:
        raise ContinualError(f"epochs={cfg.epochs}: an online run is a single pass; use --train-passes for repeated updates per batch")
    if head not in ("incremental", "fixed"):
        raise ContinualError(f"head {head!r} grows per experience; an online run grows head 'incremental' as classes "
                             "arrive (or use 'fixed')")
    if cfg.classifier not in (None, "linear"):
        raise ContinualError(f"classifier={cfg.classifier!r}: an online run evaluates the model's argmax ('linear') at every point")
    if cfg.adapt_first:
        raise ContinualError("adapt_first trains on the first experience before the stream starts; not in an online run")


def _resolve_cut(cfg: RunConfig, bench, *, num_experiences_given: bool) -> RunConfig:
    """Check ``split``/``increments``/``classes`` against the benchmark and set ``num_experiences`` from them."""
    given = [k for k in ("split", "increments", "classes") if getattr(cfg, k) is not None]
    if not given:
        return cfg
    if bench.kind != "split":
        raise ContinualError(f"{', '.join(given)} applies to split benchmarks only; {bench.name!r} is {bench.kind}")
    if cfg.split is not None and cfg.increments is not None:
        raise ContinualError(f"give split={cfg.split!r} or increments={cfg.increments}, not both")
    n = bench.num_classes
    classes = cfg.classes
    if classes is not None:
        if not classes or len(set(classes)) != len(classes) or any(not isinstance(c, int) or isinstance(c, bool) or not 0 <= c < n for c in classes):
            raise ContinualError(f"classes={classes!r} must be distinct labels of {bench.name!r} in 0..{n - 1}")
        n = len(classes)
    if cfg.split is None and cfg.increments is None:
        sizes = class_increments(n, num_experiences=cfg.num_experiences if num_experiences_given else min(cfg.num_experiences, n))
    elif cfg.split is not None:
        first, increment = parse_split(cfg.split)
        sizes = class_increments(n, first=first, increment=increment)
    else:
        if any(not isinstance(k, int) or isinstance(k, bool) for k in cfg.increments):
            raise ContinualError(f"increments={cfg.increments!r} must be whole class counts, e.g. 50,10,10")
        sizes = class_increments(n, increments=cfg.increments)
    if num_experiences_given and (cfg.split is not None or cfg.increments is not None) and cfg.num_experiences != len(sizes):
        raise ContinualError(f"num_experiences={cfg.num_experiences} does not match the cut into {len(sizes)} experiences "
                             f"({sizes}); leave num_experiences out")
    return dataclasses.replace(cfg, num_experiences=len(sizes))


def _check_class_order(order: object, bench) -> None:
    if order is None:
        return
    if bench.kind != "split":
        raise ContinualError(f"class_order applies to split benchmarks only; {bench.name!r} is {bench.kind}")
    if order in CLASS_ORDERS:
        return
    n = bench.num_classes
    labels = isinstance(order, (list, tuple)) and all(isinstance(c, int) and not isinstance(c, bool) for c in order)
    if not labels or (n is not None and sorted(order) != list(range(n))):
        expected = f"a permutation of 0..{n - 1} (each label exactly once)" if n is not None else "a list of labels"
        raise ContinualError(f"class_order={order!r} is not accepted; expected {' or '.join(repr(o) for o in CLASS_ORDERS)} "
                             f"or {expected}")


def parse_class_order(value: object) -> str | list[int] | None:
    """``None``, ``"random"``, a list of labels, or text like ``"3,1,0,2"`` -> a class order.

    >>> parse_class_order("2,0,1"), parse_class_order("random"), parse_class_order([1, 0])
    ([2, 0, 1], 'random', [1, 0])
    """
    if value is None or value in CLASS_ORDERS:
        return value
    try:
        if isinstance(value, str):
            return [int(c) for c in value.split(",")]
        if isinstance(value, (list, tuple)):
            return [int(c) for c in value]
    except (TypeError, ValueError):
        pass
    raise ContinualError(f"class_order={value!r}: expected {', '.join(repr(o) for o in CLASS_ORDERS)} or a list of labels like 1,0,3,2")


def parse_ints(value: object, label: str) -> list[int] | None:
    """``None``, a list of whole numbers, or text like ``"50,10,10"`` -> a list of ints.

    >>> parse_ints("50,10,10", "increments"), parse_ints([3, 2], "increments")
    ([50, 10, 10], [3, 2])
    """
    if value is None:
        return None
    try:
        if isinstance(value, str):
            return [int(v) for v in value.split(",") if v.strip()] if value.strip() else []
        if isinstance(value, (list, tuple)) and all(not isinstance(v, bool) and float(v).is_integer() for v in value):
            return [int(v) for v in value]
    except (TypeError, ValueError):
        pass
    raise ContinualError(f"{label}={value!r}: expected whole numbers separated by commas, like 50,10,10")


def environment(device: torch.device) -> dict[str, object]:
    """Versions and hardware a result was produced with."""
    env: dict[str, object] = {
        "continual": __version__, "torch": torch.__version__, "python": sys.version.split()[0],
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(device),
    }
    cpu = _cpu_model()
    if cpu:
        env["cpu"] = cpu
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _cpu_model() -> str | None:
    """The CPU's model name (Linux: /proc/cpuinfo), or ``None``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# Threads a CPU run uses by default, per model (benchmarks/threads.py; figures in
# benchmarks/README.md). The MLPs' small matrix products gain 18-30% from a second core on a quiet
# 2-core machine but run 3-6x slower with two threads beside one busy process (spinning OpenMP
# threads fight over the cores), so they take one. Convolutional models gain 1.5-1.7x from every
# core and lose about 2x beside a busy process: they take the cores that are idle when the run
# starts (the cores minus the 1-minute load average). A model not listed does the same.
THREADS: dict[str, int] = {"mlp": 1}


def idle_cores(cores: int) -> int:
    """``cores`` minus the machine's 1-minute load average (rounded), at least 1."""
    try:
        busy = os.getloadavg()[0]
    except (OSError, AttributeError):  # no load average on this platform
        return cores
    return max(1, min(cores, round(available_cores() - busy)))


def choose_threads(model: str | None, *, requested: int | None = None, workers: int = 1) -> int:
    """The number of CPU threads for a run of ``model``: ``requested`` if given, else the
    model's entry in :data:`THREADS`, else the idle cores (:func:`idle_cores`); never more than
    this process's share of the cores (``cores // workers`` when ``workers`` processes run side by
    side, at least 1).

    Raises:
        ContinualError: for a ``requested`` count below 1.

    >>> choose_threads("mlp", requested=3)
    3
    """
    if requested is not None:
        if requested < 1:
            raise ContinualError(f"--threads {requested} must be at least 1 (or left out for the default per model)")
        return requested
    share = max(1, available_cores() // max(1, workers))
    return min(share, THREADS.get(model or "") or idle_cores(share))


def set_threads(n: int) -> None:
    """``torch.set_num_threads(n)`` (intra-op threads: matrix products, convolutions)."""
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


RESERVED_EXTRA = {"memory", "by_step", "resumed", "anytime"}  # keys of Result.extra the run writes itself
CHECKPOINT_FORMAT = "continual.checkpoint"
CHECKPOINT_VERSION = 2  # 2: the fixed-capacity incremental head (version 1 held one block of rows per growth)


def _config_text(cfg: RunConfig) -> str:
    return json.dumps(cfg.to_dict(), sort_keys=True)


def save_checkpoint(folder: Path, index: int, cfg: RunConfig, acc, trainer: Trainer, wall: float, *,
                    validation: ValidationMatrix | None = None) -> Path:
    """Write the state after experience ``index`` atomically (temporary file, then rename), with
    the SHA-256 digest of its content inside (:func:`continual.files.with_checksum`), and keep
    only this checkpoint and the one before it. ``validation``: the validation matrix so far
    (a run with ``cfg.validation``)."""
    state = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": _config_text(cfg), "index": index,
        "acc_matrix": torch.from_numpy(acc.values.copy()), "random_init": torch.from_numpy(acc.random_init.copy()),
        "trainer": trainer.state_dict(), "wall": wall, **(validation.state_dict() if validation is not None else {}),
    }
    path = atomic_torch_save(state, folder / f"checkpoint-{index:04d}.pt", checksum=True)
    for old in sorted(folder.glob("checkpoint-*.pt"))[:-2]:
        old.unlink(missing_ok=True)
    return path


def _is_tensor(value: object, *, dim: int | None = None, dtype: torch.dtype | None = None) -> bool:
    return isinstance(value, torch.Tensor) and (dim is None or value.dim() == dim) and (dtype is None or value.dtype == dtype)


def _checkpoint_problem(state: dict, trainer: Trainer | None) -> str | None:
    """What makes a checksummed checkpoint of this configuration unusable, or ``None``.

    Checked: every entry :meth:`Trainer.load_state_dict` and the resume read, with its type
    (the accuracy matrix square, ``random_init`` and ``index`` fitting it; generator states byte
    tensors); with ``trainer``, also the number of plugin states, the generator state sizes and
    the timing names. Not checked: the model's and the plugins' own entries (their
    ``load_state_dict`` does), which the checksum guarantees are what this configuration wrote.
    """
    acc, init, index = state.get("acc_matrix"), state.get("random_init"), state.get("index")
    if not (_is_tensor(acc, dim=2) and acc.shape[0] == acc.shape[1] and acc.shape[0] > 0):
        return "no square 'acc_matrix'"
    if not (_is_tensor(init, dim=1) and init.shape[0] == acc.shape[0]):
        return "no 'random_init' of one entry per experience"
    if not (isinstance(index, int) and 0 <= index < acc.shape[0]):
        return "no valid 'index'"
    if not isinstance(state.get("wall"), (int, float)) or isinstance(state.get("wall"), bool):
        return "no 'wall' time"
    ts = state.get("trainer")
    if not isinstance(ts, dict):
        return "no 'trainer' state"
    kinds = {"model": dict, "optimizer": dict, "plugins": list, "timings": dict, "penalties": dict, "added_groups": list}
    for key, kind in kinds.items():
        if not isinstance(ts.get(key), kind):
            return f"no {key!r} in the trainer state"
    for key in ("generator", "augment_generator", "torch_rng"):
        if not _is_tensor(ts.get(key), dim=1, dtype=torch.uint8):
            return f"no {key!r} in the trainer state"
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ts["model"].items()):
        return "a trainer 'model' state that is not a state dict"
    opt = ts["optimizer"]
    if not (isinstance(opt.get("state"), dict) and isinstance(opt.get("param_groups"), list)
            and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in opt["param_groups"])):
        return "a trainer 'optimizer' state that is not an optimizer state dict"
    if not all(isinstance(names, list) and all(isinstance(n, str) for n in names) for names in ts["added_groups"]):
        return "a trainer 'added_groups' entry that is not a list of parameter names"
    if not all(isinstance(v, list) for v in list(ts["timings"].values()) + list(ts["penalties"].values())):
        return "trainer 'timings' or 'penalties' that are not lists"
    if trainer is not None:
        if len(ts["plugins"]) != len(trainer.plugins):
            return f"{len(ts['plugins'])} plugin states for {len(trainer.plugins)} plugins"
        if set(ts["timings"]) != set(trainer.timings.lists()):
            return "trainer 'timings' of other phases"
        for key, gen in (("generator", trainer.generator), ("augment_generator", trainer.augment_generator)):
            if ts[key].numel() != gen.get_state().numel():
                return f"a trainer {key!r} state of another size"
        if ts["torch_rng"].numel() != torch.get_rng_state().numel():
            return "a trainer 'torch_rng' state of another size"
    return None


def load_checkpoint(folder: Path, cfg: RunConfig, on_problem: Callable[[str], None] | None = None, *,
                    trainer: Trainer | None = None) -> dict | None:
    """The newest valid checkpoint in ``folder`` for this configuration, or ``None``.

    A checkpoint is used only if it loads (``weights_only=True``), its SHA-256 content digest
    matches (:func:`continual.files.checksum_problem`), it was written for this configuration, and
    it holds every entry a resume needs, each of the right type (see :func:`_checkpoint_problem`;
    with ``trainer``, also sized for it; with ``cfg.validation``, the validation matrix,
    :func:`continual.validation.checkpoint_problem`). Any other checkpoint (corrupt, truncated, changed after
    it was written, without a checksum as written before checksums were stored, incomplete, or of
    another configuration) is reported through ``on_problem`` and passed over for the one before
    it, so the run repeats at most the experiences whose checkpoints were lost.
    """
    return newest_checkpoint(
        folder, "checkpoint-*.pt", format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION, what="checkpoint",
        required=("trainer",), ours=lambda state: state.get("config") == _config_text(cfg), other="another configuration",
        problem=lambda state: _checkpoint_problem(state, trainer) or (validation_problem(state) if cfg.validation else None),
        on_problem=on_problem)


def newest_checkpoint(folder: Path, pattern: str, *, format: str, version: int, what: str, required: Sequence[str],
                      ours: Callable[[dict], bool], other: str, problem: Callable[[dict], str | None],
                      on_problem: Callable[[str], None] | None = None) -> dict | None:
    """The newest checkpoint of ``folder`` matching ``pattern`` that loads, passes its checksum, is
    of ``format`` and ``version``, is ``ours`` (else: "written for {other}, ignored") and has no
    ``problem`` (an entry a resume needs missing or mis-sized); every other is reported through
    ``on_problem`` and passed over for the one before it. One scan for single and batched runs.
    """
    from .files import checksum_problem

    for path in sorted(folder.glob(pattern), reverse=True):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or state.get("format") != format or any(k not in state for k in required):
                raise ValueError(f"not a continual {what}")
        except Exception as exc:  # unpickling errors of every kind: the file is unusable
            if on_problem:
                on_problem(f"{path}: unreadable checkpoint ({type(exc).__name__}), using the one before")
            continue
        found = checksum_problem(state)
        if found == "no checksum":
            found = "no checksum (written before checksums were stored)"
        elif found and found != "no checksum":
            found = "checksum mismatch (the file changed after it was written)"
        elif state.get("version") != version:
            found = f"written by another version of continual ({what} version {state.get('version')!r}, expected {version})"
        elif not ours(state):
            if on_problem:
                on_problem(f"{path}: written for {other}, ignored")
            continue
        else:
            found = problem(state)
            found = found and f"incomplete checkpoint ({found})"
        if found:
            if on_problem:
                on_problem(f"{path}: {found}, using the one before")
            continue
        return state
    return None


@dataclass
class Built:
    """What a run trains: the resolved configuration, its strategy, stream, model, plugins and trainer."""

    config: RunConfig
    strategy: object
    stream: object
    model: torch.nn.Module
    plugins: list
    trainer: Trainer
    source: object = None  # the stream as loaded, when ``stream`` holds cached features (else the same)
    records: dict = field(default_factory=dict)  # provenance of the weights, adaptation and features
    validation: object = None  # with ``config.validation``: the held-out validation stream (as ``stream``: features when cached)


def build(config: RunConfig, *, callbacks: Sequence[Callback] = ()) -> Built:
    """Everything :func:`run` builds before it trains, built the same way: the stream, the model
    (its class-incremental head grown for the first experience), the strategy's plugins (and the
    NME classifier when asked for) and the trainer. Benchmarks use it to time exactly what a run
    trains.

    Raises:
        ContinualError: for a configuration :meth:`RunConfig.resolve` refuses, an empty stream or
            a plugin named like a run record.
    """
    cfg = config.resolve()
    strategy = get_strategy(cfg.strategy)
    device = resolve_device(cfg.device)
    stream = make_stream(
        cfg.benchmark, scenario=cfg.scenario, num_experiences=cfg.num_experiences,
        seed=cfg.seed, class_order=cfg.class_order, increments=cfg.increments, split=cfg.split, classes=cfg.classes,
        device=device, root=cfg.data_root, download=cfg.download,
    )
    if not stream:
        raise ContinualError(f"benchmark {cfg.benchmark!r} produced an empty stream")
    if not cfg.normalise:
        stream = _unnormalised(stream)
    if cfg.blurry:
        from .online import make_blurry

        stream = make_blurry(stream, cfg.blurry, seed=cfg.seed)  # its own order within each experience
    elif cfg.online:
        from .online import shuffled

        stream = shuffled(stream, seed=cfg.seed)  # one seeded order for the single pass
    validation = None
    if cfg.validation:  # held out before anything sees the stream: nothing trains on it
        stream, validation = split_stream(stream, cfg.validation, seed=cfg.seed)
    first = stream[0]
    weights = resolve_weights(cfg.model, cfg.pretrained) if cfg.pretrained and is_weights_spec(cfg.pretrained) else None
    model_args: dict = {"hidden": tuple(cfg.hidden)} if cfg.hidden else {}
    # torchvision models adapt the inputs to what their weights expect, inside the model
    if cfg.model in TORCHVISION_MODELS:
        model_args = {"source_mean": first.transform.mean, "source_std": first.transform.std, "weights": weights, "resize": cfg.resize}
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, tuple(first.x_train.shape[1:]), 0 if cfg.head != "fixed" else stream.num_classes, head=cfg.head,
                        capacity=stream.num_classes, **model_args)  # an incremental head allocates every class's row ahead
    context = Context(stream=stream, device=device, seed=cfg.seed)
    plugins = strategy.make_plugins(dict(cfg.params), context)
    if cfg.head != "fixed":
        if not cfg.online or cfg.boundaries:  # online: the head grows as classes arrive, from the first batch on
            grow_head(model, first)  # the first experience's classes, before the random-init evaluation
        plugins = [HeadExpansion(model), *plugins]
    if cfg.classifier in ("nme", "both"):
        from .classifiers import NearestMeanClassifier

        buffers = [p.buffer for p in plugins if getattr(p, "buffer", None) is not None]
        plugins = [*plugins, NearestMeanClassifier(buffer=buffers[0] if buffers else None)]  # after the buffer is filled
    records: dict = {}
    if weights is not None:
        records["pretrained"] = load_weights(model, weights, download=cfg.download)
    elif cfg.pretrained:
        from .transfer import load_backbone

        records["pretrained"] = {"file": cfg.pretrained, **load_backbone(model, cfg.pretrained, model_name=cfg.model)}
    if isinstance(getattr(model, "adapt", None), InputAdapter):
        records["input"] = model.adapt.describe()
    if cfg.adapt_first:
        from .transfer import adapt_first

        records["adapt_first"] = adapt_first(model, first, lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size,
                                             optimizer=cfg.optimizer, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                             seed=cfg.seed, device=device)
    clash = sorted({getattr(p, "name", type(p).__name__) for p in plugins} & RESERVED_EXTRA)
    if clash:
        raise ContinualError(f"a plugin named {clash[0]!r} would overwrite the run's own record in the result; rename the "
                             f"plugin (reserved: {', '.join(sorted(RESERVED_EXTRA))})")
    lr_groups = strategy.prepare_model(model, dict(cfg.params), context) if strategy.prepare_model else None
    source, trained = stream, model
    problem = _feature_cache_problem(cfg, model, plugins, stream)
    if problem is None:
        from .features import HeadOnly, cache_features

        stream, records["features"] = cache_features(model, stream, batch_size=cfg.eval_batch_size)
        if validation is not None:  # the validation inputs through the same backbone, once
            validation, more = cache_features(model, validation, batch_size=cfg.eval_batch_size)
            records["features"]["samples"] += more["samples"]
            records["features"]["seconds"] += more["seconds"]
        trained = HeadOnly(model)  # the same head, trained on the cached features
    elif cfg.feature_cache == "on":
        raise ContinualError(f"feature_cache='on' cannot apply: {problem}; use 'auto' or 'off'")
    elif problem.startswith("training augmentation") or cfg.feature_cache == "off":
        records["features"] = {"cached": False, "why": problem}  # a frozen backbone's features, recomputed every batch
    trainer = Trainer(
        trained, lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer=cfg.optimizer,
        momentum=cfg.momentum, weight_decay=cfg.weight_decay, eval_batch_size=cfg.eval_batch_size,
        device=device, seed=cfg.seed, plugins=plugins, callbacks=callbacks, lr_schedule=cfg.lr_schedule,
        milestones=cfg.milestones, lr_decay=cfg.lr_decay, classifier="linear" if cfg.classifier == "both" else cfg.classifier,
        compile=cfg.compile, online=cfg.online, eval_every=cfg.eval_every, train_passes=cfg.train_passes, boundaries=cfg.boundaries,
    )
    if lr_groups:
        from .transfer import scale_lr

        for params, scale in lr_groups:
            scale_lr(trainer.optimizer, params, scale)
    return Built(cfg, strategy, stream, model, plugins, trainer, source, records, validation)


def _unnormalised(stream):
    """``stream`` with each transform's mean/std normalisation removed (pixels scaled to [0, 1] only)."""
    experiences = []
    for e in stream:
        t = e.transform
        if getattr(t, "augment", None) is not None:
            raise ContinualError(f"normalise=False with benchmark {stream.name!r}: its training augmentation pads with "
                                 "the normalised black; keep normalise=True")
        experiences.append(dataclasses.replace(e, transform=dataclasses.replace(t, mean=(0.0,) * len(t.mean), std=(1.0,) * len(t.std))))
    return stream.derive(experiences)


def _feature_cache_problem(cfg: RunConfig, model: torch.nn.Module, plugins: Sequence[object], stream) -> str | None:
    """Why the run cannot train on cached features (``None``: it can, see :mod:`continual.features`)."""
    from .features import cache_refusal, frozen_backbone

    if cfg.feature_cache == "off":
        return "feature_cache='off'"
    if not callable(getattr(model, "features", None)) or not isinstance(getattr(model, "head", None), torch.nn.Module):
        return f"model {cfg.model!r} is not a backbone with a head"
    if not frozen_backbone(model):
        return f"strategy {cfg.strategy!r} trains the backbone (only a frozen backbone's features can be cached)"
    rebuilds = [getattr(p, "name", type(p).__name__) for p in plugins if getattr(p, "rebuilds_optimizer", False)]
    if rebuilds:
        return f"plugin {rebuilds[0]!r} changes the model during the run"
    return cache_refusal(stream)


def run(
    config: RunConfig,
    *,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: str | Path | None = None,
    on_problem: Callable[[str], None] | None = None,
) -> Result:
    """Run one configuration and return its :class:`Result`.

    Args:
        config: the run's configuration (defaults are filled in here).
        callbacks: read-only trainer callbacks (progress).
        checkpoint_dir: if given, a checkpoint is written there after each experience, and a
            run started again with the same configuration resumes after the last experience
            with a valid checkpoint, ending with the same accuracy matrix as an uninterrupted
            run on CPU. Checkpoints carry a checksum and are verified before use (see
            :func:`load_checkpoint`). The folder is left in place; remove it once the result is
            saved. Locking the folder against a second process is the caller's part
            (``continual run`` and ``continual sweep`` do, see :class:`continual.files.FolderLock`).
        on_problem: receives a message for each checkpoint that could not be used.

    With ``config.validation``, the validation experiences (:mod:`continual.validation`) are
    evaluated with the run's classifier after each experience (and once before training); their
    matrix is kept in the checkpoints and stored as :attr:`Result.validation`.

    Example:
        >>> r = run(RunConfig(benchmark="split-digits", strategy="finetune", epochs=1, device="cpu"))
        >>> len(r.acc_matrix), r.config["model"]
        (5, 'mlp')
    """
    wall0 = time.perf_counter()
    built = build(config, callbacks=callbacks)
    cfg, strategy, stream, model, plugins, trainer = (built.config, built.strategy, built.stream, built.model, built.plugins,
                                                      built.trainer)
    device = trainer.device
    validation = None
    if built.validation is not None:
        validation = ValidationMatrix(built.validation, trainer, fraction=cfg.validation, schedule=strategy.schedule)
        trainer.callbacks.append(validation.observe)  # its random-init row, where the trainer records its own
    resume, wall_before = None, 0.0
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if folder is not None:
        state = load_checkpoint(folder, cfg, on_problem, trainer=trainer)
        if state is not None:
            trainer.load_state_dict(state["trainer"])
            resume = AccuracyMatrix.from_rows(state["acc_matrix"].numpy(), state["random_init"].numpy())
            wall_before = float(state["wall"])
            if validation is not None:
                validation.load_state_dict(state)

    def checkpoint(index: int, acc: AccuracyMatrix) -> None:
        if validation is not None:
            validation.after_experience(index)  # before the checkpoint, which keeps it
        if folder is not None:
            save_checkpoint(folder, index, cfg, acc, trainer, wall_before + time.perf_counter() - wall0, validation=validation)

    acc = trainer.run(stream, schedule=strategy.schedule, resume=resume, on_experience_end=checkpoint)
    extra = {getattr(p, "name", type(p).__name__): p.report() for p in plugins if callable(getattr(p, "report", None))}
    timings = trainer.timings.as_dict()
    timings["wall"] = wall_before + time.perf_counter() - wall0
    records = {k: dict(v) if isinstance(v, dict) else v for k, v in built.records.items()}
    if validation is not None:
        timings["validation_eval"] = validation.seconds  # evaluating the validation split (not in total_eval)
    if "seconds" in records.get("features", {}):
        timings["features"] = records["features"].pop("seconds")  # computing the cached features, once
    if resume is not None:
        extra["resumed"] = True
    test_sizes = [e.num_test for e in stream]
    classifiers = {name: classifier_record(m, test_sizes) for name, m in trainer.matrices.items()}  # those besides acc's
    extra["memory"] = memory_ledger(model, plugins)
    extra["by_step"] = by_step(acc.values, test_sizes)  # seen / old / new classes' accuracy after each step
    metrics = summary(acc.values, acc.random_init, test_sizes=test_sizes)
    if cfg.online:
        from .metrics import anytime_summary

        extra["anytime"] = trainer.anytime  # the evaluation points (continual.online)
        metrics |= anytime_summary(trainer.anytime)
    env = environment(device)
    return Result(
        config=cfg.to_dict(), seed=cfg.seed, acc_matrix=acc.tolist(), random_init=acc.random_init.tolist(),
        metrics=metrics, timings=timings,
        penalties=trainer.penalties, extra=extra, environment=env,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), test_sizes=test_sizes,
        classifiers=classifiers, provenance=provenance(cfg.to_dict(), built.source, env) | records,
        validation=validation.record() if validation is not None else {},
    )
