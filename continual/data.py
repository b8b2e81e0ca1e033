"""Datasets as in-memory tensors, and the per-batch transform that turns stored inputs into model inputs.

A :class:`Dataset` is a train and a test pair of tensors (inputs as stored, uint8 images or float
features; labels as int64) plus the :class:`Transform` that converts and normalises a batch on the
device. Inputs stay in their stored dtype until a batch is drawn, so a whole benchmark fits on the
device and replay buffers keep samples in the compact form.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .errors import ContinualError


@dataclass(frozen=True)
class Transform:
    """Convert a batch of stored inputs to normalised float model inputs, on the batch's device.

    ``x_float = (x * scale - mean) / std`` with ``mean``/``std`` per channel (one value each for
    flat features). ``augment`` (optional) is applied to training batches only, after
    normalisation; it receives the batch and a ``torch.Generator`` on the batch's device.

    Example:
        >>> t = Transform(mean=(0.5,), std=(0.5,), scale=1 / 255)
        >>> t(torch.tensor([[[[0, 255]]]], dtype=torch.uint8)).flatten().tolist()
        [-1.0, 1.0]
    """

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1.0
    augment: object = None  # Callable[[Tensor, torch.Generator | None], Tensor] | None

    def __call__(self, x: Tensor, *, train: bool = False, generator: torch.Generator | None = None) -> Tensor:
        x = x.float()
        if self.scale != 1.0:
            x = x * self.scale
        if len(self.mean) == 1 and len(self.std) == 1:
            x = (x - self.mean[0]) / self.std[0]
        else:
            mean, std = self._per_channel(x.device, x.dim())
            x = (x - mean) / std
        if train and self.augment is not None:
            x = self.augment(x, generator)
        return x

    def _per_channel(self, device: torch.device, dim: int) -> tuple[Tensor, Tensor]:
        """Per-channel constants on ``device``, made once (no host-to-device copy per batch)."""
        cache = self.__dict__.setdefault("_cache", {})
        key = (str(device), dim)
        if key not in cache:
            shape = (1, -1) + (1,) * (dim - 2)  # broadcast over (B, C, ...) or (B, D)
            cache[key] = (
                torch.tensor(self.mean, device=device).view(shape),
                torch.tensor(self.std, device=device).view(shape),
            )
        return cache[key]


@dataclass
class Dataset:
    """A classification dataset held as tensors.

    Attributes:
        name: short name, e.g. ``"digits"``.
        x_train, y_train, x_test, y_test: inputs as stored (uint8 images ``(N, C, H, W)`` or float
            features ``(N, D)``) and int64 labels in ``[0, num_classes)``.
        transform: the per-batch conversion to model inputs.
        class_names: optional human-readable names, indexed by label.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    transform: Transform = field(default_factory=Transform)
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if len(x) != len(y):
                raise ContinualError(f"dataset {self.name!r}: {split} has {len(x)} inputs but {len(y)} labels")
            if y.dtype != torch.int64:
                raise ContinualError(f"dataset {self.name!r}: {split} labels must be int64, got {y.dtype}")

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a per-class split, sorted, reproducible for a seed."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def digits(*, test_fraction: float = 0.2) -> Dataset:
    """Load scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes; no network).

    Pixels (0..16 in the source) are stored as uint8 0..255, shape ``(N, 1, 8, 8)``. The
    train/test split is stratified and fixed (seed 0): 1438 train and 359 test images with the
    default ``test_fraction``. Normalisation constants are the train set's mean and std.
    """
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = np.rint(raw.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    labels = raw.target.astype(np.int64)
    tr, te = _stratified_split(labels, test_fraction, seed=0)
    x_train = torch.from_numpy(images[tr])
    scaled = x_train.float() / 255.0
    transform = Transform(mean=(float(scaled.mean()),), std=(float(scaled.std()),), scale=1 / 255)
    return Dataset(
        name="digits",
        x_train=x_train,
        y_train=torch.from_numpy(labels[tr]),
        x_test=torch.from_numpy(images[te]),
        y_test=torch.from_numpy(labels[te]),
        transform=transform,
        class_names=tuple(str(i) for i in range(10)),
    )


def synthetic(
    *,
    num_classes: int = 10,
    num_features: int = 20,
    train_per_class: int = 60,
    test_per_class: int = 20,
    noise: float = 1.0,
    seed: int = 0,
) -> Dataset:
    """A seeded Gaussian-blob dataset of float features, for fast tests.

    Each class is a Gaussian with unit-variance noise around a random centre of norm about 3, so
    an MLP separates the classes within a few epochs.
    """
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, num_features, generator=g)
    centres = 3.0 * centres / centres.norm(dim=1, keepdim=True)

    def sample(n: int) -> tuple[Tensor, Tensor]:
        y = torch.arange(num_classes).repeat_interleave(n)
        x = centres[y] + noise * torch.randn(len(y), num_features, generator=g)
        return x, y

    x_train, y_train = sample(train_per_class)
    x_test, y_test = sample(test_per_class)
    return Dataset("synthetic", x_train, y_train, x_test, y_test, transform=Transform())
