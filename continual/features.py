"""Cached features of a frozen backbone: computed once per experience, the head trained on them.

A strategy that freezes the whole backbone (``transfer``, and the closed-form heads ``ncm``,
``slda``, ``ranpac``) trains at most the head, on features that do not change: recomputing them
every epoch, batch by batch, is the cost of a full forward pass for nothing. :func:`cache_features`
runs the backbone once over each experience's training and test inputs, in evaluation mode (the
state a frozen backbone is in during training too: its BatchNorm layers are frozen, see
:func:`continual.transfer.freeze`), in large batches on the training device, and returns a stream
of those features; :class:`HeadOnly` is the model the trainer then trains and evaluates: the same
head, reading the features directly.

What stays the same: the head's parameters (shared with the full model, so the full model is the
trained one afterwards), the batch order, the optimizer, every plugin (their ``model.features`` is
the identity on cached features), the evaluation. The accuracy matrix equals the recomputing run's
(tested) as long as the backbone's output on a sample does not depend on the batch it is computed
in, which holds for a frozen backbone in evaluation mode up to the float rounding of kernels chosen
per batch size.

When it does not apply: with training augmentation on, each epoch draws new augmented inputs
whose features no cache holds; cached features would be of unaugmented images, a different
experiment. :func:`cache_refusal` gives the one-line reason, and the run recomputes (``"auto"``)
or refuses (``"on"``) rather than mixing the two.
"""

from __future__ import annotations

import dataclasses
import time

import torch
from torch import Tensor, nn

from .data import Transform
from .errors import ContinualError
from .ledger import describe_augmentation
from .models import Backbone
from .streams import Experience, Stream

FEATURE_CACHE = ("auto", "on", "off")


class HeadOnly(Backbone):
    """The head of ``model``, reading features instead of inputs: ``features`` is the identity.

    The head module is ``model.head`` itself (not a copy): training this model trains ``model``'s
    head. The backbone is not part of this module (its frozen weights are no state to save).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.head = model.head
        self.num_features = int(model.num_features)

    def features(self, x: Tensor) -> Tensor:
        return x  # (B, num_features): already the backbone's features

    def blocks(self) -> list[nn.Module]:
        return []


@torch.no_grad()
def extract(model: nn.Module, x: Tensor, transform: Transform, *, batch_size: int = 1024) -> Tensor:
    """``model.features`` of every input of ``x`` (stored form; ``transform`` without augmentation),
    in evaluation mode, in chunks of ``batch_size``; ``(N, num_features)`` on ``x``'s device."""
    was_training = model.training
    model.eval()
    try:
        chunks = [model.features(transform(x[s : s + batch_size])).flatten(1) for s in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    if not chunks:
        return torch.zeros(0, int(model.num_features), device=x.device)
    return torch.cat(chunks)


def cache_refusal(stream: Stream) -> str | None:
    """Why the stream's features cannot be cached (training augmentation), or ``None``."""
    for e in stream:
        augment = getattr(e.transform, "augment", None)
        if augment is not None:
            return (f"training augmentation ({describe_augmentation(augment)}) draws new inputs every epoch, "
                    "and cached features would be of unaugmented ones")
    return None


def cache_features(model: nn.Module, stream: Stream, *, batch_size: int = 1024) -> tuple[Stream, dict]:
    """The stream with each experience's inputs replaced by ``model``'s features (computed once).

    Args:
        model: a model with ``features(x)`` whose backbone is frozen.
        stream: the run's stream (on the training device).
        batch_size: inputs per forward pass.

    Returns:
        ``(feature stream, record)``: the stream's experiences carry ``(N, D)`` float features and
        an identity transform; ``record`` says what was cached and how long it took.

    Raises:
        ContinualError: when the stream has training augmentation (see :func:`cache_refusal`).
    """
    reason = cache_refusal(stream)
    if reason is not None:
        raise ContinualError(f"cannot cache features: {reason}; use feature_cache='off' (recompute every batch)")
    identity = Transform()
    start = time.perf_counter()
    experiences: list[Experience] = []
    for e in stream:
        experiences.append(dataclasses.replace(
            e, x_train=extract(model, e.x_train, e.transform, batch_size=batch_size),
            x_test=extract(model, e.x_test, e.transform, batch_size=batch_size), transform=identity))
    if experiences and experiences[0].x_train.is_cuda:
        torch.cuda.synchronize(experiences[0].x_train.device)
    seconds = time.perf_counter() - start
    cached = stream.derive(experiences)
    dim = int(experiences[0].x_train.shape[1]) if experiences else 0
    samples = sum(e.num_train + e.num_test for e in experiences)
    return cached, {"cached": True, "dim": dim, "samples": samples, "seconds": seconds,
                    "how": "the frozen backbone's features, computed once per experience in evaluation mode"}


def frozen_backbone(model: nn.Module) -> bool:
    """True when the features do not change in training: no parameter outside ``model.head``
    trains, no BatchNorm outside it updates its statistics and no dropout outside it is active."""
    from .transfer import _FrozenBatchNorm, backbone_parameters

    if any(p.requires_grad for p in backbone_parameters(model)):
        return False
    head = model.head
    in_head = {id(m) for m in head.modules()}
    for m in model.modules():
        if id(m) in in_head:
            continue
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, _FrozenBatchNorm):
            return False
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return False
    return True


__all__ = ["FEATURE_CACHE", "HeadOnly", "cache_features", "cache_refusal", "extract", "frozen_backbone"]
