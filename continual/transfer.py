"""Transfer baselines: pretraining a backbone, checkpoints, freezing, and two strategies.

- ``transfer`` (feature extraction): a pretrained backbone, frozen (no gradient, BatchNorm
  statistics frozen: its BatchNorm layers stay in evaluation mode even while the model trains),
  with only the head (an expanding head in the class-incremental scenario) trained.
- ``finetune-pretrained``: every layer trains from the pretrained weights, with an optional
  smaller learning rate for the backbone (``backbone_lr_scale``) and the first ``freeze_blocks``
  blocks frozen (see ``Backbone.blocks()``).

These are the two ways of reusing a pretrained network of Yosinski et al. 2014 ("How
transferable are features in deep neural networks?") and of the CL surveys' transfer baselines.
Both need pretrained weights: ``--pretrained PATH``, a checkpoint written by :func:`pretrain`
(``continual pretrain``) or a plain ``state_dict`` (e.g. torchvision's ResNet-18 weights saved
locally). Checkpoints are read with ``torch.load(..., weights_only=True)``; only the backbone is
loaded (the head of the pretraining classes is dropped).

Where pretrained weights come from matters for honest results: pretraining on the test classes
of the stream leaks them. ``continual demo`` pretrains on the first experience's classes of
split-digits (0 and 1, training split only): the stream's own first experience, no future class.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .errors import ContinualError, ContinualWarning, one_line
from .files import atomic_torch_save, checksum_problem
from .models.backbones import check_fits
from .strategies import Context, Range, Strategy, register

CHECKPOINT_FORMAT = "continual.pretrained"
CHECKPOINT_VERSION = 1


# ------------------------------------------------------------------------------------------ freezing
class _FrozenBatchNorm:
    """Mixin: a BatchNorm layer that stays in evaluation mode (running statistics fixed, used in training)."""

    def train(self, mode: bool = True):
        return super().train(False)  # type: ignore[misc]


class FrozenBatchNorm1d(_FrozenBatchNorm, nn.BatchNorm1d):
    """An ``nn.BatchNorm1d`` whose statistics never update (same parameters and buffers, same names)."""


class FrozenBatchNorm2d(_FrozenBatchNorm, nn.BatchNorm2d):
    """An ``nn.BatchNorm2d`` whose statistics never update (same parameters and buffers, same names)."""


_FROZEN = {nn.BatchNorm1d: FrozenBatchNorm1d, nn.BatchNorm2d: FrozenBatchNorm2d}


def freeze(module: nn.Module) -> nn.Module:
    """Freeze ``module`` in place: no gradient for its parameters, BatchNorm statistics fixed.

    BatchNorm layers are switched to a frozen class (same state-dict keys) and put in evaluation
    mode, which ``model.train()`` no longer undoes, so training neither updates their running
    statistics nor normalises with batch statistics.
    """
    for p in module.parameters():
        p.requires_grad_(False)
    for m in module.modules():
        frozen = _FROZEN.get(type(m))
        if frozen is not None:
            m.__class__ = frozen
        if isinstance(m, _FrozenBatchNorm):
            m.train(False)
    return module


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter of ``model`` outside its ``head``."""
    head = _head(model)
    in_head = {id(p) for p in head.parameters()}
    return [p for p in model.parameters() if id(p) not in in_head]


def _head(model: nn.Module) -> nn.Module:
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise ContinualError(f"{type(model).__name__} has no 'head' module; transfer needs a backbone + head model")
    return head


def freeze_backbone(model: nn.Module) -> nn.Module:
    """Freeze everything but ``model.head`` (feature extraction)."""
    head = _head(model)
    for name, child in model.named_children():
        if child is not head:
            freeze(child)
    return model


def freeze_blocks(model: nn.Module, k: int) -> nn.Module:
    """Freeze the first ``k`` of ``model.blocks()`` (0 freezes nothing)."""
    blocks = model.blocks() if callable(getattr(model, "blocks", None)) else None
    if blocks is None:
        raise ContinualError(f"{type(model).__name__} has no blocks(); freeze_blocks needs a continual backbone")
    if not 0 <= k <= len(blocks):
        raise ContinualError(f"freeze_blocks={k}: {type(model).__name__} has {len(blocks)} blocks; expected 0..{len(blocks)}")
    for block in blocks[:k]:
        freeze(block)
    return model


def scale_lr(optimizer: torch.optim.Optimizer, params: Sequence[nn.Parameter], scale: float) -> None:
    """Move ``params`` into their own parameter group with the learning rate times ``scale``.

    Call it before the first step (the optimizer holds no state for them yet).
    """
    ids = {id(p) for p in params}
    moved = []
    for group in optimizer.param_groups:
        keep = [p for p in group["params"] if id(p) not in ids]
        moved += [p for p in group["params"] if id(p) in ids]
        group["params"] = keep
    if moved:
        base = optimizer.param_groups[0]
        optimizer.add_param_group({"params": moved, "lr": base["lr"] * scale})
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]


# ----------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(model: nn.Module, path: str | Path, *, model_name: str, input_shape: Sequence[int], source: dict | None = None) -> Path:
    """Write ``model``'s backbone weights (not its head) with what it was trained on; atomic.

    The file holds ``{"format", "version", "model", "input_shape", "source", "state_dict",
    "sha256"}`` (tensors, strings and numbers only, so it loads with ``weights_only=True``);
    ``sha256`` is the digest of the rest's content (:func:`continual.files.with_checksum`),
    verified by :func:`read_checkpoint`.
    """
    path = Path(path)
    head_keys = {f"head.{k}" for k in _head(model).state_dict()}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if k not in head_keys}
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model": model_name,
               "input_shape": [int(s) for s in input_shape], "source": dict(source or {}), "state_dict": state}
    return atomic_torch_save(payload, path, checksum=True)


def read_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint (ours, or a plain state dict) with ``weights_only=True``.

    A file written by :func:`save_checkpoint` carries the SHA-256 digest of its content, checked
    here: a file that fails (a flipped bit, a changed value) is refused. One written by continual
    before checksums were stored is accepted with a :class:`~continual.errors.ContinualWarning`
    saying so (re-create it with ``continual pretrain`` to have it verified); a plain state dict
    cannot carry a checksum and is accepted unverified.

    Returns:
        ``{"model": name or None, "input_shape": list or None, "source": dict, "state_dict": dict}``.

    Raises:
        ContinualError: for a missing or unreadable file, one that fails its checksum, or one
            that holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ContinualError(f"pretrained checkpoint {str(path)!r} does not exist; make one with 'continual pretrain --out PATH'")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, not a torch file, or not weights-only
        raise ContinualError(f"cannot read checkpoint {str(path)!r} ({one_line(exc)}); expected a file written by 'continual pretrain' or torch.save(state_dict)") from None
    if isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT:
        if data.get("version") != CHECKPOINT_VERSION:
            raise ContinualError(f"checkpoint {str(path)!r} has version {data.get('version')!r}; this continual reads version {CHECKPOINT_VERSION}")
        problem = checksum_problem(data)
        if problem == "no checksum":
            warnings.warn(f"pretrained checkpoint {str(path)!r} has no checksum (written before checksums were stored), "
                          "so it is not verified; re-create it with 'continual pretrain' to have it verified",
                          ContinualWarning, stacklevel=2)
        elif problem:
            raise ContinualError(f"pretrained checkpoint {str(path)!r} fails its checksum (the file changed after it was "
                                 "written); re-create it with 'continual pretrain ... --out PATH'")
        if not isinstance(data.get("state_dict"), dict):
            raise ContinualError(f"checkpoint {str(path)!r} has no 'state_dict'; expected a file written by 'continual pretrain'")
        return {"model": data.get("model"), "input_shape": data.get("input_shape"), "source": data.get("source", {}), "state_dict": data["state_dict"]}
    if isinstance(data, dict) and data and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()):
        return {"model": None, "input_shape": None, "source": {}, "state_dict": data}
    raise ContinualError(f"checkpoint {str(path)!r} holds a {type(data).__name__}, not a state dict; expected a file written by 'continual pretrain' or torch.save(state_dict)")


def load_backbone(model: nn.Module, path: str | Path, *, model_name: str | None = None) -> dict:
    """Load the backbone weights of a checkpoint into ``model`` (its head is left as it is).

    Every backbone entry of the model must be in the checkpoint with the same shape; entries of a
    head (``head.*``, or torchvision's ``fc.*``) are ignored. A plain torchvision state dict
    (``conv1.weight``...) is matched to ``backbone.conv1.weight``....

    Returns:
        The checkpoint's metadata (``model``, ``input_shape``, ``source``).

    Raises:
        ContinualError: for a missing or corrupt file (or one that fails its checksum, see
            :func:`read_checkpoint`), another architecture, or mismatched shapes; the message
            lists the offending keys.
    """
    ckpt = read_checkpoint(path)
    where = f"checkpoint {str(path)!r}"
    if model_name is not None and ckpt["model"] not in (None, model_name):
        raise ContinualError(f"{where} was made for model {ckpt['model']!r} but this run uses {model_name!r}; pass --model {ckpt['model']} or another checkpoint")
    head_keys = {f"head.{k}" for k in _head(model).state_dict()}
    own = {k: v for k, v in model.state_dict().items() if k not in head_keys}
    state = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("head.")}
    if not set(state) & set(own) and any(k.startswith("backbone.") for k in own):  # a plain torchvision state dict
        state = {f"backbone.{k}": v for k, v in state.items() if not k.startswith(("fc.", "heads."))}  # ResNet's or ViT's classifier
    check_fits(own, state, where, model_name or type(model).__name__)
    model.load_state_dict(state, strict=False)
    return {k: ckpt[k] for k in ("model", "input_shape", "source")}


# -------------------------------------------------------------------------------------------- pretrain
def pretrain(
    benchmark: str,
    out: str | Path,
    *,
    classes: Sequence[int] | None = None,
    model: str | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    seed: int = 0,
    device: str = "auto",
    **load_kwargs,
) -> dict:
    """Train a backbone on some classes of a benchmark's dataset (training split) and save it.

    The model (``model``, default: the benchmark's) gets a fixed head over ``classes`` (all by
    default), is trained jointly on those classes' training images, and its backbone is written
    to ``out`` with :func:`save_checkpoint`. Hyperparameters default to the benchmark's.

    Args:
        benchmark: a registered benchmark; its dataset (original labels) is the source.
        out: the checkpoint path.
        classes: the source classes (original labels of the dataset), e.g. ones held out of the stream.
        **load_kwargs: passed to the dataset loader (e.g. ``root``).

    Returns:
        The checkpoint's ``source`` record, with ``test_accuracy`` on the source classes' test split.

    Raises:
        ContinualError: for an unknown benchmark, model or class.
    """
    from .benchmarks import get_benchmark
    from .models import build_model
    from .streams import Experience
    from .trainer import Trainer, resolve_device

    bench = get_benchmark(benchmark)
    data = bench.load(**load_kwargs)
    num_classes = data.num_classes
    chosen = sorted({int(c) for c in classes}) if classes is not None else list(range(num_classes))
    bad = [c for c in chosen if not 0 <= c < num_classes]
    if not chosen or bad:
        raise ContinualError(f"pretrain classes {bad or chosen}: expected labels of {benchmark!r} in 0..{num_classes - 1}")
    model = model or bench.model
    dev = resolve_device(device)
    relabel = torch.full((num_classes,), -1, dtype=torch.int64)
    relabel[chosen] = torch.arange(len(chosen))
    tr, te = relabel[data.y_train] >= 0, relabel[data.y_test] >= 0
    exp = Experience(
        index=0, classes=tuple(range(len(chosen))), task_id=0,
        x_train=data.x_train[tr].to(dev), y_train=relabel[data.y_train[tr]].to(dev), t_train=torch.zeros(int(tr.sum()), dtype=torch.int64, device=dev),
        x_test=data.x_test[te].to(dev), y_test=relabel[data.y_test[te]].to(dev), t_test=torch.zeros(int(te.sum()), dtype=torch.int64, device=dev),
        transform=data.transform,
    )
    torch.manual_seed(seed)
    net = build_model(model, data.input_shape, len(chosen))
    trainer = Trainer(net, lr=lr if lr is not None else bench.lr, epochs=epochs if epochs is not None else bench.epochs,
                      batch_size=batch_size if batch_size is not None else bench.batch_size, optimizer=optimizer,
                      momentum=momentum, device=dev, seed=seed)
    trainer.fit(exp)
    accuracy = trainer.evaluate([exp])[0]
    source = {"benchmark": benchmark, "dataset": data.name, "classes": chosen, "split": "train", "epochs": trainer.epochs,
              "lr": trainer.optimizer.param_groups[0]["lr"], "batch_size": trainer.batch_size, "seed": seed,
              "num_train": exp.num_train, "test_accuracy": accuracy}
    save_checkpoint(net, out, model_name=model, input_shape=data.input_shape, source=source)
    return source


def adapt_first(model: nn.Module, experience, *, lr: float, epochs: int, batch_size: int, optimizer: str = "sgd",
                momentum: float = 0.0, weight_decay: float = 0.0, seed: int = 0, device: str | torch.device = "cpu") -> dict:
    """First-session adaptation: train ``model``'s backbone on the first experience only, in place.

    The protocol of the pretrained-model CIL methods (RanPAC's Phase 1, SimpleCIL's APER: adapt on
    the first session, then freeze) and of "a backbone trained on the first experience" when no
    pretrained weights are given. A copy of the model with a new linear head over the
    experience's classes (relabelled ``0..k-1``) is trained jointly on its training data (every
    layer, from the model's current weights: pretrained ones when loaded); its backbone is then
    copied into ``model``, whose own head is left as it is. Call it before the strategy freezes
    the backbone.

    Deviation from RanPAC: the paper adapts with parameter-efficient modules (adapters, SSF, VPT)
    on a ViT; here every backbone parameter trains (the full fine-tuning variant of SimpleCIL's
    APER paper, Zhou et al. 2023, Sec. 4).

    Returns:
        ``{"classes", "epochs", "lr", "num_train", "test_accuracy"}`` (accuracy of the adapted copy
        on the experience's test split, its own head).
    """
    import copy

    from .streams import Experience
    from .trainer import Trainer

    classes = sorted({int(c) for c in experience.classes})
    relabel = torch.full((max(classes) + 1,), -1, dtype=torch.int64, device=experience.y_train.device)
    relabel[classes] = torch.arange(len(classes), device=relabel.device)
    local = Experience(index=0, classes=tuple(range(len(classes))), task_id=0,
                       x_train=experience.x_train, y_train=relabel[experience.y_train], t_train=torch.zeros_like(experience.t_train),
                       x_test=experience.x_test, y_test=relabel[experience.y_test], t_test=torch.zeros_like(experience.t_test),
                       transform=experience.transform)
    net = copy.deepcopy(model)
    net.head = nn.Linear(int(model.num_features), len(classes)).to(next(model.parameters()).device)
    trainer = Trainer(net, lr=lr, epochs=epochs, batch_size=batch_size, optimizer=optimizer, momentum=momentum,
                      weight_decay=weight_decay, device=device, seed=seed)
    trainer.fit(local)
    accuracy = trainer.evaluate([local])[0]
    head_keys = {f"head.{k}" for k in _head(model).state_dict()}
    model.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("head.")}
                          | {k: v for k, v in model.state_dict().items() if k in head_keys})
    return {"classes": classes, "epochs": epochs, "lr": lr, "num_train": local.num_train, "test_accuracy": accuracy}


# ------------------------------------------------------------------------------------------ strategies
def _prepare_transfer(model: nn.Module, params: dict, context: Context) -> None:
    freeze_backbone(model)


def _prepare_finetune(model: nn.Module, params: dict, context: Context) -> list[tuple[list[nn.Parameter], float]]:
    scale = float(params["backbone_lr_scale"])
    if not scale > 0:
        raise ContinualError(f"finetune-pretrained.backbone_lr_scale={scale} must be positive (1.0: same learning rate as the head)")
    freeze_blocks(model, int(params["freeze_blocks"]))
    if scale == 1.0:
        return []
    return [([p for p in backbone_parameters(model) if p.requires_grad], scale)]


register(Strategy(
    "transfer", "feature extraction: pretrained backbone frozen (BatchNorm too), only the head trains (needs --pretrained)",
    prepare_model=_prepare_transfer, needs_pretrained=True,
))
register(Strategy(
    "finetune-pretrained", "every layer fine-tuned from pretrained weights (needs --pretrained)",
    defaults={"backbone_lr_scale": 1.0, "freeze_blocks": 0},  # backbone lr = lr * scale; first k blocks frozen
    prepare_model=_prepare_finetune, needs_pretrained=True,
    limits={"backbone_lr_scale": Range(0, low_open=True), "freeze_blocks": Range(0)},
))
