"""Nearest-mean-of-exemplars classification: Rebuffi et al., "iCaRL: Incremental Classifier and
Representation Learning", CVPR 2017 (Algorithm 1).

Each class is represented by the mean of the L2-normalised features of its exemplars, itself
re-normalised ("All feature vectors are L2-normalized, and the results of any operation on
feature vectors, e.g. averages, are also re-normalized", Sec. 2.1); a sample is assigned the
class whose mean is nearest to its L2-normalised feature. The class means are recomputed after
every experience with the current feature extractor, so they follow its drift.

Choices, against the paper's code and G-U-N/PyCIL ``models/base.py`` (``_construct_exemplar``,
``_reduce_exemplar``, ``_extract_vectors``, ``_eval_nme``), also mmasana/FACIL
``src/approach/icarl.py`` (``compute_mean_of_exemplars``, ``classify``):

- Features are ``model.features`` in eval mode (the logits for a model without ``features``), on
  the stored inputs with the experience's evaluation transform (no augmentation). iCaRL's own
  code also averages the features of horizontally flipped exemplars into each mean; PyCIL and
  FACIL do not, and neither does this plugin (it knows nothing of the inputs' layout).
- Prediction is the argmax of the cosine similarity between the normalised feature and the
  normalised means, ``(B, D) @ (D, C)``: for unit vectors ``||f - m||^2 = 2 - 2 f.m``, so it is
  the same nearest mean as PyCIL's ``cdist(..., 'sqeuclidean')`` with one matrix product instead
  of a distance matrix (ties and last-bit rounding aside). Normalisation divides by
  ``max(||f||, 1e-12)`` (``F.normalize``); PyCIL adds ``1e-8`` to the norm.
- Where the means come from: with a replay buffer (``NearestMeanClassifier(buffer=...)``), the
  buffer's stored samples after the experience (list this plugin after the replay plugin, whose
  ``after_experience`` fills a class-balanced buffer); every class present in the buffer gets a
  fresh mean, and a class absent from it keeps its last mean. Without a buffer (strategies with
  no memory), the experience's training data: a class's mean is computed when its data is seen
  and kept afterwards, so old classes' means go stale as the features drift.
- Classes without a mean never win. Before any mean exists, :meth:`predict` returns the model's
  own argmax, so a run can evaluate it from the start.
- The means of classes of every experience live in one ``(C, D)`` tensor on the model's device,
  ``C`` the largest class with a mean plus one; prediction covers all of them (class-incremental
  use; the task scenario's per-task masking is not applied).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ContinualError
from ..models import forward
from ..replay import Buffer, embed
from ..streams import Experience
from ..trainer import Plugin

Source = Literal["exemplars", "training data"]


def class_means(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Re-normalised means of the L2-normalised ``features`` per class, and which classes have one.

    Args:
        features: ``(N, D)``.
        labels: ``(N,)`` int64 in ``[0, num_classes)``.
        num_classes: rows of the result.

    Returns:
        ``(means, present)``: ``(num_classes, D)`` unit rows (zero for an absent class) and
        ``(num_classes,)`` bool.

    >>> m, present = class_means(torch.tensor([[2.0, 0.0], [0.0, 5.0], [3.0, 4.0]]), torch.tensor([0, 0, 2]), 3)
    >>> m.tolist(), present.tolist()
    ([[0.7071067690849304, 0.7071067690849304], [0.0, 0.0], [0.6000000238418579, 0.800000011920929]], [True, False, True])
    """
    phi = F.normalize(features.float(), dim=1)  # (N, D)
    sums = phi.new_zeros(num_classes, phi.shape[1]).index_add_(0, labels, phi)  # (C, D)
    counts = torch.bincount(labels, minlength=num_classes)[:num_classes]  # (C,)
    return F.normalize(sums, dim=1), counts > 0


class NearestMeanClassifier(Plugin):
    """iCaRL's nearest-mean-of-exemplars classifier, evaluated beside the model's own head.

    The trainer calls :meth:`predict` on each test batch; the plugin changes nothing in training.

    Args:
        buffer: the replay buffer whose exemplars give the class means; ``None`` to use each
            experience's training data.

    Example:
        >>> from continual.streams import split
        >>> from continual.data import synthetic
        >>> stream = split(synthetic(num_features=4, seed=0), 2)
        >>> model = nn.Sequential(nn.Identity()); model.features = nn.Identity()
        >>> nme = NearestMeanClassifier()
        >>> nme.after_experience(model, stream[0])
        >>> nme.report()
        {'classes_with_mean': 5, 'source': 'training data'}
    """

    name = "nme"
    classifier = "nme"

    def __init__(self, *, buffer: Buffer | None = None) -> None:
        self.buffer = buffer
        self.means: Tensor | None = None  # (C, D) unit rows
        self.present: Tensor | None = None  # (C,) bool: the class has a mean

    @property
    def source(self) -> Source:
        return "exemplars" if self.buffer is not None else "training data"

    @torch.no_grad()
    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        """Recompute the class means (see the module docstring for where they come from)."""
        if self.buffer is not None:
            if len(self.buffer) == 0:
                return
            stored = self.buffer.stored()
            x, y, t = stored.x, stored.y, stored.t
        else:
            x, y, t = experience.x_train, experience.y_train, experience.t_train
        if len(y) == 0:
            return
        feats = embed(model, x, t, experience.transform)  # (N, D), eval mode
        if self.means is not None and self.means.shape[1] != feats.shape[1]:
            self.means = self.present = None  # the features widened (DER's new extractor): old means are of another space
        width = int(y.max()) + 1  # one host sync per experience
        if self.means is not None:
            width = max(width, self.means.shape[0])
        means, present = class_means(feats, y.to(feats.device), width)
        if self.means is not None:  # classes absent here keep their mean
            old = self.means.shape[0]
            keep = torch.zeros(width, dtype=torch.bool, device=means.device)
            keep[:old] = self.present.to(means.device) & ~present[:old]
            means[:old] = torch.where(keep[:old, None], self.means.to(means.device), means[:old])
            present = present | keep
        self.means, self.present = means, present

    @torch.no_grad()
    def predict(self, model: nn.Module, x: Tensor, t: Tensor | None = None) -> Tensor:
        """The nearest class mean of each sample of ``x`` (a transformed batch), ``(B,)`` int64.

        Before any mean exists: the model's own argmax.
        """
        was_training = model.training
        model.eval()
        try:
            if self.means is None:
                return forward(model, x, t).argmax(1)
            f = model.features(x) if callable(getattr(model, "features", None)) else forward(model, x, t)
            f = F.normalize(f.flatten(1).float(), dim=1)  # (B, D)
            means = self.means.to(f.device)
            if means.shape[1] != f.shape[1]:
                raise ContinualError(f"nearest-mean classifier: the model gives {f.shape[1]} features, the class means have {means.shape[1]}")
            scores = (f @ means.T).masked_fill(~self.present.to(f.device), float("-inf"))  # (B, C) cosine similarity
            return scores.argmax(1)
        finally:
            model.train(was_training)

    def memory_bytes(self) -> int:
        """Bytes of the class means (and their presence mask)."""
        return sum(v.numel() * v.element_size() for v in (self.means, self.present) if v is not None)

    def state_dict(self) -> dict[str, Tensor]:
        """The class means and which classes have one (empty before the first experience)."""
        if self.means is None:
            return {}
        return {"means": self.means.clone(), "present": self.present.clone()}

    def load_state_dict(self, state: Mapping[str, Tensor], *, model: nn.Module | None = None) -> None:
        """Restore :meth:`state_dict`; the means go to ``model``'s device when it is given."""
        if "means" not in state:
            self.means = self.present = None
            return
        device = next((p.device for p in model.parameters()), None) if model is not None else None
        self.means = state["means"].to(device or state["means"].device).clone()
        self.present = state["present"].to(self.means.device).bool().clone()

    def report(self) -> dict:
        """How many classes have a mean and where the means came from."""
        count = 0 if self.present is None else int(self.present.sum())
        return {"classes_with_mean": count, "source": self.source}
