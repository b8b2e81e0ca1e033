"""What a run held in memory and what a reader needs to compare its numbers: the memory ledger
and the provenance record stored in each result.

References:
    Zhou et al., "Class-Incremental Learning: A Survey" (TPAMI 2024, arXiv:2302.03648), the
    memory-aligned comparison: methods that store models (DER, MEMO, the old model of
    distillation) must count them against the memory budget beside the exemplars, and the
    ranking changes when they do. The ledger gives each part in bytes so that a table can align.
    The same survey (and FOSTER's repository, which adds AutoAugment and Cutout) notes that the
    augmentation moves results by several points: the provenance records it.

Conventions:
    - Bytes are ``numel * element_size`` of the tensors held, on whatever device they live;
      a tensor reached twice (the same storage and shape) is counted once within each part.
    - Exemplars are the allocated storage of the replay buffers (``plugin.buffer.memory_bytes``:
      the whole capacity once the first sample arrives, as a preallocated buffer holds it).
    - A plugin's own state is ``plugin.memory_bytes()`` where it defines one (what it holds
      besides its ``buffer``, which is counted under exemplars); otherwise the bytes
      of the tensors in its ``state_dict()`` (LwF: the frozen old model; EWC, SI, MAS, L2: the
      importances and anchors), less its buffer's ``state_dict()`` for a plugin that has a buffer
      (counted under exemplars; DER++'s stored logits live in its buffer, so they count there too).
      The fallback counts what a checkpoint saves, so tensors a plugin
      derives again on load (separate-mode EWC's float64 anchor low halves) are not in it.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn


# --------------------------------------------------------------------------- memory
def tensor_bytes(obj: object) -> int:
    """Bytes of the tensors in ``obj`` (a tensor, or dicts, lists and tuples holding tensors; other
    values count 0), each distinct tensor once.

    >>> tensor_bytes({"w": torch.zeros(3, 4), "b": torch.zeros(4, dtype=torch.float64), "n": 7})
    80
    """
    seen: set[tuple[str, int, tuple[int, ...], torch.dtype]] = set()

    def walk(value: object) -> int:
        if isinstance(value, Tensor):
            key = (str(value.device), value.data_ptr(), tuple(value.shape), value.dtype)
            if value.data_ptr() and key in seen:  # no storage (meta, empty): never taken as a repeat
                return 0
            seen.add(key)
            return value.numel() * value.element_size()
        if isinstance(value, Mapping):
            return sum(walk(v) for v in value.values())
        if isinstance(value, (list, tuple)):
            return sum(walk(v) for v in value)
        return 0

    return walk(obj)


def _count(value: object) -> int:
    """``value()`` for a method, ``value`` for a property's int."""
    value = value() if callable(value) else value
    return int(value)


def _plugin_names(plugins: Sequence[object]) -> list[str]:
    """Each plugin's ``name`` (else its class name), made unique with ``#2``, ``#3``..."""
    names, used = [], {}
    for p in plugins:
        base = str(getattr(p, "name", None) or type(p).__name__)
        used[base] = used.get(base, 0) + 1
        names.append(base if used[base] == 1 else f"{base}#{used[base]}")
    return names


def _state_bytes(plugin: object) -> int:
    state_dict = getattr(plugin, "state_dict", None)
    return tensor_bytes(state_dict()) if callable(state_dict) else 0


def memory_ledger(model: nn.Module, plugins: Iterable[object] = ()) -> dict[str, object]:
    """Bytes a run holds beside its code: the model, the exemplars, and each plugin's stored state.

    Args:
        model: the trained model (parameters and buffers, e.g. BatchNorm statistics, counted apart).
        plugins: the run's plugins; see the module docstring for what is counted for each.

    Returns:
        ``{"model_parameters": int, "model_buffers": int, "exemplars": int, "num_exemplars": int,
        "plugins": {name: int}, "total": int}``, JSON-able; ``total`` is the sum of the parts.
        ``num_exemplars`` is the number of samples stored in the buffers. Plugins are named by
        their ``name`` (else their class name), repeats numbered ``name#2``...

    The fallback calls ``state_dict()``, which may copy (a replay buffer's state clones its
    storage); each copy is measured and dropped before the next.

    Example:
        >>> ledger = memory_ledger(nn.Linear(3, 2))
        >>> ledger["model_parameters"], ledger["exemplars"], ledger["total"]  # (2 x 3 + 2) float32
        (32, 0, 32)
    """
    plugins = list(plugins)
    out: dict[str, object] = {
        "model_parameters": tensor_bytes(list(model.parameters())),
        "model_buffers": tensor_bytes(list(model.buffers())),
    }
    exemplars = stored = 0
    buffers_seen: set[int] = set()
    own: dict[str, int] = {}
    for name, p in zip(_plugin_names(plugins), plugins):
        buffer = getattr(p, "buffer", None)
        has_buffer = buffer is not None and hasattr(buffer, "memory_bytes")
        if has_buffer and id(buffer) not in buffers_seen:  # two plugins sharing one buffer count it once
            buffers_seen.add(id(buffer))
            exemplars += _count(buffer.memory_bytes)
            stored += int(len(buffer)) if hasattr(buffer, "__len__") else 0
        if hasattr(p, "memory_bytes"):
            own[name] = _count(p.memory_bytes)
        elif has_buffer:
            own[name] = max(0, _state_bytes(p) - _state_bytes(buffer))
        else:
            own[name] = _state_bytes(p)
    out["exemplars"] = exemplars
    out["num_exemplars"] = stored
    out["plugins"] = own
    out["total"] = out["model_parameters"] + out["model_buffers"] + exemplars + sum(own.values())
    return out


# --------------------------------------------------------------------------- provenance
def _numbers(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def describe_augmentation(augment: object) -> str:
    """A short description of a training augmentation: ``"none"``, ``"random crop (padding 4) +
    horizontal flip"`` for :class:`continual.data.RandomCropFlip`, else the object's ``repr``.

    >>> from continual.data import RandomCropFlip
    >>> describe_augmentation(RandomCropFlip(padding=4)), describe_augmentation(None)
    ('random crop (padding 4) + horizontal flip', 'none')
    """
    if augment is None:
        return "none"
    if type(augment).__name__ == "RandomCropFlip" and hasattr(augment, "padding"):
        parts = [f"random crop (padding {augment.padding})"] if augment.padding else []
        if getattr(augment, "flip", False):
            parts.append("horizontal flip")
        return " + ".join(parts) or "none"
    describe = getattr(augment, "describe", None)
    return str(describe()) if callable(describe) else repr(augment)


def describe_normalisation(transform: object) -> str:
    """How stored inputs become model inputs, from a :class:`continual.data.Transform`:
    ``"x * 0.003922, normalise(mean=(...), std=(...))"``, ``"identity"`` when nothing changes.

    >>> from continual.data import Transform
    >>> describe_normalisation(Transform(mean=(0.5,), std=(0.25,), scale=1 / 255))
    'x * 0.003922, normalise(mean=(0.5), std=(0.25))'
    """
    if transform is None:
        return "identity"
    parts = []
    scale = getattr(transform, "scale", 1.0)
    if scale != 1.0:
        parts.append(f"x * {scale:.4g}")
    mean, std = tuple(getattr(transform, "mean", (0.0,))), tuple(getattr(transform, "std", (1.0,)))
    if any(m != 0 for m in mean) or any(s != 1 for s in std):
        parts.append(f"normalise(mean={_numbers(mean)}, std={_numbers(std)})")
    return ", ".join(parts) or "identity"


def _class_order(config: Mapping[str, object], stream: object) -> dict[str, object]:
    from .streams import NAMED_ORDERS

    order = config.get("class_order")
    if order is None:
        name, seed = "standard", None
    elif isinstance(order, str):
        name = order
        seed = NAMED_ORDERS.get(order, config.get("seed") if order == "random" else None)
    else:
        name, seed = "explicit", None
    resolved = getattr(stream, "class_order", None)
    return {"name": name, "seed": seed, "order": [int(c) for c in resolved] if resolved is not None else None}


MEMORY_PARAMS = ("mem", "mem_per_class", "buffer", "selection")
"""Strategy hyperparameters that describe the exemplar memory, recorded when the strategy has them."""


def provenance(config: Mapping[str, object], stream: object, environment: Mapping[str, object]) -> dict[str, object]:
    """What a reader needs to compare a run's numbers with another's, in one JSON-able dict.

    Args:
        config: the resolved run configuration (``RunConfig.to_dict()``); keys a configuration
            of this version may lack (``lr_schedule``, ``classifier``) take their meaning today
            (a constant learning rate, the linear head).
        stream: the run's stream (its first experience's transform and its class order are read).
        environment: :func:`continual.experiment.environment` (library, torch and python versions).

    Returns:
        ``{"augmentation", "normalisation", "batch_size", "epochs", "lr", "optimizer", "momentum",
        "weight_decay", "lr_schedule", "class_order": {"name", "seed", "order"}, "classes_per_experience",
        "seed", "model", "head", "classifier", "memory": {mem, mem_per_class, buffer, selection
        present in the strategy's parameters}, "versions": {"continual", "torch", "python", "numpy"}}``;
        when the dataset names its classes (class and task scenarios), also ``"experience_classes"``:
        each experience's class names (:meth:`continual.streams.Stream.experience_class_names`);
        for a benchmark on the user's data (``split:PATH``...) also ``"dataset"``: its path,
        content fingerprint, class names and how it was read (:func:`continual.user_data.record`).
        ``class_order.name`` is ``"standard"`` (0..C-1), ``"random"`` (seed: the run's seed), a
        named order such as ``"icarl"`` (seed: its own, :data:`continual.streams.NAMED_ORDERS`)
        or ``"explicit"`` (a list given; seed ``None``); ``order`` is the resolved list.
    """
    import numpy as np

    from .user_data import record

    experiences = list(stream) if stream is not None else []
    transform = getattr(experiences[0], "transform", None) if experiences else None
    params = config.get("params") or {}
    schedule = config.get("lr_schedule")
    dataset = record(config.get("benchmark"))  # the user's own data: its path, fingerprint and how it was read
    names = stream.experience_class_names() if callable(getattr(stream, "experience_class_names", None)) else None
    return ({"dataset": dataset} if dataset else {}) | ({"experience_classes": names} if names else {}) | {
        "augmentation": describe_augmentation(getattr(transform, "augment", None)),
        "normalisation": describe_normalisation(transform),
        "batch_size": config.get("batch_size"),
        "epochs": config.get("epochs"),
        "lr": config.get("lr"),
        "optimizer": config.get("optimizer"),
        "momentum": config.get("momentum"),
        "weight_decay": config.get("weight_decay"),
        "lr_schedule": schedule if schedule is not None else "constant",
        "class_order": _class_order(config, stream),
        "classes_per_experience": [len(getattr(e, "classes", ())) for e in experiences],
        "seed": config.get("seed"),
        "model": config.get("model"),
        "head": config.get("head"),
        "classifier": config.get("classifier") or "linear",
        "memory": {k: params[k] for k in MEMORY_PARAMS if k in params},
        "versions": {
            "continual": environment.get("continual"),
            "torch": environment.get("torch", torch.__version__),
            "python": environment.get("python", platform.python_version()),
            "numpy": np.__version__,
        },
    }


__all__ = ["MEMORY_PARAMS", "describe_augmentation", "describe_normalisation", "memory_ledger", "provenance", "tensor_bytes"]
