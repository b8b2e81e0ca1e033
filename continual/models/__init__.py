"""Models: backbones with a linear head, built by name."""

from .backbones import MLP, MODELS, ConvNet, build_model, forward

__all__ = ["MLP", "ConvNet", "MODELS", "build_model", "forward"]
