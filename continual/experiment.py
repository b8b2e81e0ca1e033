"""One run from a configuration: benchmark + strategy + model + hyperparameters + seed -> Result.

:class:`RunConfig` is the single place where run defaults live; fields left ``None`` take the
benchmark's defaults when the configuration is resolved, and the resolved configuration is what
a results file stores.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import torch

from . import __version__
from .benchmarks import get_benchmark, make_stream
from .errors import ContinualError
from .models import HEADS, HeadExpansion, build_model, grow_head
from .results import Result
from .strategies import Context, coerce, get_strategy
from .trainer import Callback, Trainer, resolve_device


@dataclass
class RunConfig:
    """A run's configuration. ``None`` means the benchmark's default.

    Attributes:
        benchmark: a registered benchmark name.
        strategy: a registered strategy name.
        scenario: ``"class"``, ``"task"`` or ``"domain"`` (default: the benchmark's first).
        num_experiences: default: the benchmark's.
        class_order: ``None`` (standard), ``"random"`` (seeded) or an explicit list.
        model: ``"mlp"``, ``"convnet"``, ``"resnet18"`` (reduced, nf=20), ``"resnet18-full"`` or
            ``"resnet18-torchvision"`` (default: the benchmark's).
        head: ``"fixed"``, ``"incremental"`` (grows with the classes seen),
            ``"incremental-mask-past"`` or ``"multi"`` (one head per task id); default:
            ``"incremental"`` in the class-incremental scenario, ``"fixed"`` otherwise.
        pretrained: a checkpoint whose backbone weights the model starts from (``continual pretrain``).
        epochs: passes over each experience (default: the benchmark's).
        lr: learning rate (default: the benchmark's).
        batch_size: training batch size (default: the benchmark's).
        optimizer: ``"sgd"`` or ``"adam"``.
        momentum: SGD momentum.
        weight_decay: optimizer weight decay.
        eval_batch_size: evaluation batch size.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        seed: seeds the model initialisation, the batch order and seeded stream choices.
        params: strategy hyperparameters overriding its defaults (e.g. ``{"lam": 100}``).
        label: the name the run is shown under in tables and plots (default: the strategy).
    """

    benchmark: str = "split-digits"
    strategy: str = "finetune"
    scenario: str | None = None
    num_experiences: int | None = None
    class_order: str | list[int] | None = None
    model: str | None = None
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    eval_batch_size: int = 1024
    device: str = "auto"
    seed: int = 0
    params: dict = field(default_factory=dict)
    label: str | None = None
    head: str | None = None
    pretrained: str | None = None

    def resolve(self) -> RunConfig:
        """A copy with every ``None`` default filled from the benchmark and the strategy's parameters checked."""
        bench = get_benchmark(self.benchmark)
        strategy = get_strategy(self.strategy)
        scenario = self.scenario or bench.default_scenario
        head = self.head or ("incremental" if scenario == "class" else "fixed")
        if head not in HEADS:
            raise ContinualError(f"unknown head {head!r}; expected one of {', '.join(HEADS)}")
        if strategy.needs_pretrained and not self.pretrained:
            raise ContinualError(f"strategy {strategy.name!r} needs pretrained weights: give --pretrained PATH "
                                 "(make one with 'continual pretrain --benchmark B --classes ... --out PATH')")
        return dataclasses.replace(
            self,
            scenario=scenario,
            head=head,
            num_experiences=self.num_experiences or bench.num_experiences,
            model=self.model or bench.model,
            epochs=self.epochs if self.epochs is not None else bench.epochs,
            lr=self.lr if self.lr is not None else bench.lr,
            batch_size=self.batch_size if self.batch_size is not None else bench.batch_size,
            params=strategy.params(self.params),
        )

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
                 "weight_decay": float, "eval_batch_size": int, "seed": int}
        texts = {"benchmark", "strategy", "scenario", "model", "optimizer", "device", "label", "head", "pretrained"}
        changes: dict[str, object] = {}
        for key, value in values.items():
            if key in kinds:
                changes[key] = coerce(value, kinds[key], key)
            elif key in texts:
                changes[key] = str(value)
        strategy = get_strategy(str(changes.get("strategy", self.strategy)))
        params = dict(self.params)
        for key, value in values.items():
            if key in kinds or key in texts:
                continue
            name = key[len("params."):] if key.startswith("params.") else key
            if name not in strategy.defaults:
                accepted = sorted(kinds) + sorted(texts) + sorted(strategy.defaults)
                raise ContinualError(f"unknown setting {key!r}; accepted: {', '.join(accepted)}")
            params[name] = coerce(value, type(strategy.defaults[name]), name)
        return dataclasses.replace(self, **changes, params=params)


def environment(device: torch.device) -> dict[str, object]:
    """Versions and hardware a result was produced with."""
    env: dict[str, object] = {
        "continual": __version__, "torch": torch.__version__, "python": sys.version.split()[0],
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(device),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def run(config: RunConfig, *, callbacks: Sequence[Callback] = ()) -> Result:
    """Run one configuration from scratch and return its :class:`Result`.

    Example:
        >>> r = run(RunConfig(benchmark="split-digits", strategy="finetune", epochs=1, device="cpu"))
        >>> len(r.acc_matrix), r.config["model"]
        (5, 'mlp')
    """
    wall0 = time.perf_counter()
    cfg = config.resolve()
    strategy = get_strategy(cfg.strategy)
    device = resolve_device(cfg.device)
    stream = make_stream(
        cfg.benchmark, scenario=cfg.scenario, num_experiences=cfg.num_experiences,
        seed=cfg.seed, class_order=cfg.class_order, device=device,
    )
    if not stream:
        raise ContinualError(f"benchmark {cfg.benchmark!r} produced an empty stream")
    first = stream[0]
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, tuple(first.x_train.shape[1:]), 0 if cfg.head != "fixed" else stream.num_classes, head=cfg.head)
    context = Context(stream=stream, device=device, seed=cfg.seed)
    plugins = strategy.make_plugins(dict(cfg.params), context)
    if cfg.head != "fixed":
        grow_head(model, first)  # the first experience's classes, before the random-init evaluation
        plugins = [HeadExpansion(model), *plugins]
    if cfg.pretrained:
        from .transfer import load_backbone

        load_backbone(model, cfg.pretrained, model_name=cfg.model)
    lr_groups = strategy.prepare_model(model, dict(cfg.params), context) if strategy.prepare_model else None
    trainer = Trainer(
        model, lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer=cfg.optimizer,
        momentum=cfg.momentum, weight_decay=cfg.weight_decay, eval_batch_size=cfg.eval_batch_size,
        device=device, seed=cfg.seed, plugins=plugins, callbacks=callbacks,
    )
    if lr_groups:
        from .transfer import scale_lr

        for params, scale in lr_groups:
            scale_lr(trainer.optimizer, params, scale)
    acc = trainer.run(stream, schedule=strategy.schedule)
    extra = {getattr(p, "name", type(p).__name__): p.report() for p in plugins if callable(getattr(p, "report", None))}
    timings = trainer.timings.as_dict()
    timings["wall"] = time.perf_counter() - wall0
    return Result(
        config=cfg.to_dict(), seed=cfg.seed, acc_matrix=acc.tolist(), random_init=acc.random_init.tolist(),
        metrics=acc.summary(), timings=timings, penalties=trainer.penalties, extra=extra,
        environment=environment(device), created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
