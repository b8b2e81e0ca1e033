"""Backbones with a linear head: an MLP, a small ConvNet, ResNet-18 (reduced and full width), ResNet-32 and torchvision's.

Each model takes normalised float inputs (see :class:`continual.data.Transform`). A model is a
backbone, ``features(x) -> (B, num_features)``, and a classifier in the attribute ``head``: an
``nn.Linear`` by default, or a growing head from :mod:`continual.models.heads`
(``IncrementalClassifier``, ``MultiHeadClassifier``), so a head can be replaced or grown without
touching the backbone. A model whose head routes by task id declares ``takes_task_id`` and is
called as ``model(x, t)``.

``blocks()`` lists the backbone's stages in input-to-output order (used to freeze the first k).

ResNet-18: He et al. 2016, "Deep Residual Learning for Image Recognition". The reduced form
(``nf=20``) is the one of Lopez-Paz & Ranzato 2017 (GEM, ``model/common.py`` of their code), also
used by A-GEM (Chaudhry et al. 2019) and ER ("On Tiny Episodic Memories", Chaudhry et al. 2019)
for Split CIFAR-100: a 3x3 stride-1 stem without max-pooling and four stages of two basic
blocks with ``nf, 2nf, 4nf, 8nf`` channels. Deviation: the final 4x4 average pool of the GEM code
is a global average pool here, identical on 32x32 inputs and also defined for other sizes.

ResNet-32: He et al. 2016, Sec. 4.2 (the CIFAR-10 ResNets, 6n+2 layers with n=5), the backbone of
the class-incremental literature on CIFAR-100 (iCaRL, PyCIL and the class-incremental survey of
Zhou et al. 2024), as G-U-N/PyCIL@87cc411:convs/cifar_resnet.py ``resnet32()`` defines it: see
:class:`ResNet32`.

torchvision's ResNet-18, ResNet-50 and ViT-B/16, optionally with ImageNet weights, are in
:mod:`continual.models.torchvision_models`; :func:`build_model` builds them by name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ContinualError


class Backbone(nn.Module):
    """Base class: ``forward`` is ``head(features(x))``, passing task ids to a head that routes by them.

    Subclasses set ``num_features``, ``head`` and implement :meth:`features` and :meth:`blocks`.
    """

    num_features: int
    head: nn.Module

    @property
    def takes_task_id(self) -> bool:
        """True when the head routes samples by task id (a multi-head model)."""
        return bool(getattr(self.head, "takes_task_id", False))

    def features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def blocks(self) -> list[nn.Module]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        f = self.features(x)  # (B, num_features)
        if self.takes_task_id:
            return self.head(f, t)  # (B, num_classes)
        return self.head(f)  # (B, num_classes)


def check_fits(own: Mapping[str, Tensor], state: Mapping[str, Tensor], where: str, model: str) -> None:
    """Refuse ``state`` unless it has exactly ``own``'s keys with the same shapes (one line naming the offenders).

    Args:
        own: the state dict of the module to load into.
        state: the state dict to load.
        where: the file, for the message (e.g. ``"checkpoint 'p.pt'"``).
        model: the model's name, for the message.
    """
    missing, unexpected = [k for k in own if k not in state], [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in state and state[k].shape != v.shape]
    parts = ([f"missing {_keys(missing)}"] if missing else []) + ([f"unexpected {_keys(unexpected)}"] if unexpected else []) \
        + ([f"shapes (file vs model) {_keys(shapes, 4)}"] if shapes else [])
    if parts:
        raise ContinualError(f"{where} does not fit model {model}: {'; '.join(parts)}")


def _keys(keys: Sequence[str], limit: int = 6) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


class MLP(Backbone):
    """Fully connected network: flatten, ``hidden`` ReLU layers, a linear head.

    Args:
        in_features: size of the flattened input (e.g. 784 for 28x28 images, 64 for 8x8 digits).
        hidden: widths of the hidden layers; ``(400, 400)`` as in the EWC/SI/GEM Split and
            Permuted MNIST experiments.
        num_classes: outputs of the head.
        dropout: dropout probability after each hidden layer (0 disables it).
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (400, 400), num_classes: int = 10, *, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        self.backbone = nn.Sequential(*layers)
        self.num_features = width
        self.head = nn.Linear(width, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x)  # (B, num_features)

    def blocks(self) -> list[nn.Module]:
        """The hidden linear layers, in order."""
        return [m for m in self.backbone if isinstance(m, nn.Linear)]


class ConvNet(Backbone):
    """A small CNN: ``len(channels)`` blocks of conv3x3-BN-ReLU-maxpool2, global average pool, linear head.

    Works for any input size (8x8 digits, 28x28 MNIST, 32x32 CIFAR): blocks stop pooling once the
    feature map is 1 pixel wide.

    Args:
        in_channels: input channels (1 for grey images, 3 for colour).
        num_classes: outputs of the head.
        channels: output channels of each block.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, *, channels: Sequence[int] = (32, 64, 128)) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_channels
        for c in channels:
            blocks.append(nn.Sequential(nn.Conv2d(width, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)))
            width = c
        self.backbone = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = width
        self.head = nn.Linear(width, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x)  # (B, num_features)

    def blocks(self) -> list[nn.Module]:
        """The conv blocks, in order."""
        return list(self.backbone)[:-2]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut (a 1x1 conv-BN when the shape changes); He et al. 2016."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(Backbone):
    """ResNet-18 for small images: the reduced form of GEM/A-GEM/ER (``nf=20``) or full width (``nf=64``).

    Reference: He et al. 2016; the reduced ResNet-18 of Lopez-Paz & Ranzato 2017 (GEM code,
    ``ResNet18(nclasses, nf=20)``), 1.11M parameters with ``nf=20`` and 100 classes (11.22M with ``nf=64``).

    Args:
        in_channels: input channels (3 for CIFAR; 1 for grey images).
        num_classes: outputs of the head.
        nf: channels of the first stage (stages have ``nf, 2nf, 4nf, 8nf``); 20 in GEM, 64 in He et al.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, *, nf: int = 20) -> None:
        super().__init__()
        if nf < 1:
            raise ContinualError(f"ResNet18 nf={nf} must be a positive number of channels (20 reduced, 64 full)")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, nf, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(nf), nn.ReLU())
        stages, width = [], nf
        for i, stride in enumerate((1, 2, 2, 2)):
            planes = nf * 2**i
            stages.append(nn.Sequential(BasicBlock(width, planes, stride), BasicBlock(planes, planes, 1)))
            width = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.num_features = width
        self.head = nn.Linear(width, num_classes)

    def features(self, x: Tensor) -> Tensor:
        out = self.stem(x)  # (B, nf, H, W)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))  # (B, 8nf, H/8, W/8)
        return F.adaptive_avg_pool2d(out, 1).flatten(1)  # (B, 8nf)

    def blocks(self) -> list[nn.Module]:
        """The stem and the four stages, in order."""
        return [self.stem, self.layer1, self.layer2, self.layer3, self.layer4]


class ShortcutA(nn.Module):
    """The parameter-free "option A" shortcut of He et al. 2016 (Sec. 4.2): subsample by 2, pad channels with zeros.

    As PyCIL's ``DownsampleA`` (``AvgPool2d(kernel_size=1, stride=2)`` then ``cat((x, x * 0), 1)``):
    keeps every other pixel and doubles the channels.
    """

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, ::2, ::2]  # (B, C, H/2, W/2)
        return torch.cat((x, torch.zeros_like(x)), 1)  # (B, 2C, H/2, W/2)


class CifarBasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the identity (or option-A shortcut), then ReLU; PyCIL's ``ResNetBasicblock``."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride == 1 and in_planes == planes:
            self.shortcut: nn.Module = nn.Identity()
        elif stride == 2 and planes == 2 * in_planes:
            self.shortcut = ShortcutA()
        else:
            raise ContinualError(f"option-A shortcut needs stride 2 and twice the channels; got {in_planes}->{planes}, stride {stride}")

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet32(Backbone):
    """ResNet-32 for CIFAR: a 3x3 stem of 16 channels and three stages of five basic blocks (16, 32, 64 channels).

    Reference: He et al. 2016, "Deep Residual Learning for Image Recognition", Sec. 4.2 (6n+2
    layers, n=5; option-A shortcuts, which add no parameters). Follows
    G-U-N/PyCIL@87cc411:convs/cifar_resnet.py (``resnet32() = CifarResNet(ResNetBasicblock, 32)``):
    stem conv3x3 (no bias)-BN-ReLU, stages of strides 1, 2, 2 whose first block downsamples with
    ``DownsampleA`` (option A), 64 features after an average pool; convolutions initialised
    N(0, 2 / (k * k * out_channels)) and BatchNorm to (1, 0) as there. 463,504 parameters
    without the head (the survey's "0.46M"), 470,004 with a 100-way linear head.

    Deviation: PyCIL's ``AvgPool2d(8)`` is a global average pool here, identical on 32x32 inputs
    (8x8 maps) and defined for other sizes. The head is ``nn.Linear``'s default initialisation
    (PyCIL replaces its ``fc`` by its own incremental ``SimpleLinear``).

    Args:
        in_channels: input channels (3 for CIFAR; 1 for grey images, as PyCIL's ``resnet32mnist``).
        num_classes: outputs of the head.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        stages, width = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            stages.append(nn.Sequential(CifarBasicBlock(width, planes, stride), *(CifarBasicBlock(planes, planes) for _ in range(4))))
            width = planes
        self.stage1, self.stage2, self.stage3 = stages
        self.num_features = width
        self.head = nn.Linear(width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # PyCIL: normal_(0, sqrt(2 / (k * k * out_channels)))
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: Tensor) -> Tensor:
        out = self.stem(x)  # (B, 16, H, W)
        out = self.stage3(self.stage2(self.stage1(out)))  # (B, 64, H/4, W/4)
        return F.adaptive_avg_pool2d(out, 1).flatten(1)  # (B, 64)

    def blocks(self) -> list[nn.Module]:
        """The stem and the three stages, in order."""
        return [self.stem, self.stage1, self.stage2, self.stage3]


MODELS = ("mlp", "convnet", "resnet18", "resnet18-full", "resnet32", "resnet18-torchvision", "resnet50-torchvision", "vit-b16-torchvision")
TORCHVISION_KWARGS = ("source_mean", "source_std", "weights", "resize")  # only torchvision models take these
HEADS = ("fixed", "incremental", "incremental-mask-past", "multi")


def build_model(name: str, input_shape: Sequence[int], num_classes: int, *, head: str = "fixed", capacity: int | None = None,
                **kwargs) -> nn.Module:
    """Build a model by name for inputs of ``input_shape`` (without the batch dimension).

    Args:
        name: ``"mlp"``, ``"convnet"``, ``"resnet18"`` (reduced, nf=20), ``"resnet18-full"``
            (nf=64), ``"resnet32"`` (the CIFAR ResNet-32 of PyCIL), or torchvision's ``"resnet18-torchvision"``, ``"resnet50-torchvision"`` or
            ``"vit-b16-torchvision"`` (need torchvision; see :mod:`continual.models.torchvision_models`).
        input_shape: e.g. ``(1, 8, 8)`` or ``(3, 32, 32)``.
        num_classes: outputs of a ``"fixed"`` head; growing heads start with ``num_classes`` outputs
            (``"incremental"``) or with no task head (``"multi"``) and grow with
            :func:`continual.models.heads.grow_head`.
        head: ``"fixed"`` (an ``nn.Linear``), ``"incremental"`` (an ``IncrementalClassifier``),
            ``"incremental-mask-past"`` (the same, masking past classes' logits in training) or
            ``"multi"`` (a ``MultiHeadClassifier``, one head per task id).
        capacity: rows an incremental head allocates ahead (the stream's number of classes, when
            known; default ``num_classes``, doubling as it grows past it).
        **kwargs: passed to the model class (e.g. ``hidden=(100,)``, ``nf=32``); torchvision models
            take ``source_mean``, ``source_std``, ``weights`` and ``resize``
            (:class:`~continual.models.torchvision_models.TorchvisionBackbone`), the others refuse them
            unless None (so a caller may pass them for every model).

    Raises:
        ContinualError: for an unknown name or head, inputs the model cannot take, or a
            torchvision-only argument for another model.
    """
    from .heads import IncrementalClassifier, MultiHeadClassifier

    if head not in HEADS:
        raise ContinualError(f"unknown head {head!r}; expected one of {', '.join(HEADS)}")
    if head != "fixed":  # the fixed head built by the class is replaced below
        num_classes, initial = 1, num_classes
    if not name.endswith("-torchvision"):
        given = [k for k in TORCHVISION_KWARGS if kwargs.get(k) is not None]  # None: not given
        if given and name in MODELS:
            raise ContinualError(f"model {name!r} takes no {', '.join(given)} (only the torchvision models "
                                 f"{', '.join(m for m in MODELS if m.endswith('-torchvision'))} do)")
        kwargs = {k: v for k, v in kwargs.items() if k not in TORCHVISION_KWARGS}
    if name == "mlp":
        model: Backbone = MLP(math.prod(input_shape), num_classes=num_classes, **kwargs)
    elif name in MODELS:
        if len(input_shape) != 3:
            raise ContinualError(f"model {name!r} needs image inputs (C, H, W); got inputs of shape {tuple(input_shape)}")
        if name == "convnet":
            model = ConvNet(input_shape[0], num_classes, **kwargs)
        elif name == "resnet32":
            model = ResNet32(input_shape[0], num_classes, **kwargs)
        elif name.endswith("-torchvision"):
            from .torchvision_models import TorchvisionBackbone

            model = TorchvisionBackbone(name, input_shape[0], num_classes, input_size=tuple(input_shape[1:]), **kwargs)
        else:
            model = ResNet18(input_shape[0], num_classes, **{"nf": 20 if name == "resnet18" else 64, **kwargs})
    else:
        raise ContinualError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    if head.startswith("incremental"):
        model.head = IncrementalClassifier(model.num_features, initial, capacity=max(initial, capacity or 0),
                                           mask_past=head == "incremental-mask-past")
    elif head == "multi":
        model.head = MultiHeadClassifier(model.num_features)
    return model


def __getattr__(name: str):
    """``TorchvisionResNet18`` (now in :mod:`.torchvision_models`), imported on first use: that module imports this one."""
    if name == "TorchvisionResNet18":
        from .torchvision_models import TorchvisionResNet18

        return TorchvisionResNet18
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def forward(model: nn.Module, x: Tensor, t: Tensor | None = None) -> Tensor:
    """Call ``model`` on a batch, passing per-sample task ids to models that route by task.

    A model that declares ``takes_task_id = True`` (e.g. a multi-head model) is called as
    ``model(x, t)``; any other model as ``model(x)``.
    """
    if getattr(model, "takes_task_id", False):
        return model(x, t)
    return model(x)
