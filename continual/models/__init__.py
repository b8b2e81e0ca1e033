"""Models: backbones (MLP, ConvNet, ResNet-18, ResNet-32; torchvision's ResNet-18/50 and ViT-B/16) with a fixed, incremental or multi-head classifier, built by name."""

from .backbones import HEADS, MLP, MODELS, Backbone, ConvNet, ResNet18, ResNet32, build_model, forward
from .heads import (
    CosineIncrementalClassifier, HeadExpansion, IncrementalClassifier, MultiHeadClassifier, RowChange, grow_head, growing_heads, head_size, sync_optimizer,
    training_mask, unused_rows,
)
from .torchvision_models import (
    TORCHVISION_MODELS, InputAdapter, TorchvisionBackbone, TorchvisionResNet18, is_weights_spec, load_weights, resolve_weights, weights_file,
)

__all__ = [
    "Backbone", "ConvNet", "HEADS", "HeadExpansion", "IncrementalClassifier", "MLP", "MODELS", "MultiHeadClassifier",
    "ResNet18", "ResNet32", "TorchvisionResNet18", "build_model", "forward", "grow_head", "growing_heads", "head_size",
    "CosineIncrementalClassifier", "RowChange", "sync_optimizer", "training_mask", "unused_rows",
    "TORCHVISION_MODELS", "InputAdapter", "TorchvisionBackbone", "is_weights_spec", "load_weights", "resolve_weights", "weights_file",
]
