"""Models: backbones (MLP, ConvNet, ResNet-18) with a fixed, incremental or multi-head classifier, built by name."""

from .backbones import HEADS, MLP, MODELS, Backbone, ConvNet, ResNet18, TorchvisionResNet18, build_model, forward
from .heads import (
    CosineIncrementalClassifier, HeadExpansion, IncrementalClassifier, MultiHeadClassifier, RowChange, grow_head, growing_heads, head_size, sync_optimizer,
    training_mask, unused_rows,
)

__all__ = [
    "Backbone", "ConvNet", "HEADS", "HeadExpansion", "IncrementalClassifier", "MLP", "MODELS", "MultiHeadClassifier",
    "ResNet18", "TorchvisionResNet18", "build_model", "forward", "grow_head", "growing_heads", "head_size",
    "CosineIncrementalClassifier", "RowChange", "sync_optimizer", "training_mask", "unused_rows",
]
