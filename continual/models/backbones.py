"""Backbones with a fixed linear head: an MLP and a small ConvNet.

Each model takes normalised float inputs (see :class:`continual.data.Transform`). The classifier
is the attribute ``head`` (an ``nn.Linear``) on top of ``features(x)``, so a head can be replaced
or grown without touching the backbone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class MLP(nn.Module):
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

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, num_classes)


class ConvNet(nn.Module):
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
            blocks += [nn.Conv2d(width, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
            width = c
        self.backbone = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = width
        self.head = nn.Linear(width, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x)  # (B, num_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, num_classes)


MODELS = ("mlp", "convnet")


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **kwargs) -> nn.Module:
    """Build a model by name for inputs of ``input_shape`` (without the batch dimension)."""
    from ..errors import ContinualError

    if name == "mlp":
        return MLP(math.prod(input_shape), num_classes=num_classes, **kwargs)
    if name == "convnet":
        if len(input_shape) != 3:
            raise ContinualError(f"model 'convnet' needs image inputs (C, H, W); got inputs of shape {tuple(input_shape)}")
        return ConvNet(input_shape[0], num_classes, **kwargs)
    raise ContinualError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")


def forward(model: nn.Module, x: Tensor, t: Tensor | None = None) -> Tensor:
    """Call ``model`` on a batch, passing per-sample task ids to models that route by task.

    A model that declares ``takes_task_id = True`` (e.g. a multi-head model) is called as
    ``model(x, t)``; any other model as ``model(x)``.
    """
    if getattr(model, "takes_task_id", False):
        return model(x, t)
    return model(x)
