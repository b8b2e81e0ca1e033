"""Datasets as in-memory tensors, and the per-batch transform that turns stored inputs into model inputs.

A :class:`Dataset` is a train and a test pair of tensors (inputs as stored, uint8 images or float
features; labels as int64) plus the :class:`Transform` that converts and normalises a batch on the
device. Inputs stay in their stored dtype until a batch is drawn, so a whole benchmark fits on the
device and replay buffers keep samples in the compact form.

File-based datasets are read from their standard distributions, with numpy (no per-sample Python):

- :func:`mnist`, :func:`fashion_mnist`: the four IDX files (LeCun et al. 1998; Xiao et al. 2017),
  gzipped or not;
- :func:`cifar10`, :func:`cifar100`: the *binary* distributions (Krizhevsky 2009), as the
  ``.tar.gz`` archive or its extracted folder. The "python" distributions are pickles and are
  refused: unpickling a downloaded file can run code.

Where files are looked for, in order: ``root=`` (``--data-root``), ``$CONTINUAL_DATA``, the user
cache ``~/.cache/continual`` (``$XDG_CACHE_HOME/continual``), then system dataset folders
(Debian's ``dataset-fashion-mnist`` package installs Fashion-MNIST under
``/usr/share/datasets/fashion-mnist``). In each of the first three the dataset's folder
``<base>/<dataset>`` is tried (``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``; also
torchvision's ``MNIST/raw`` and ``FashionMNIST/raw``), and ``root`` itself as well: MNIST and
Fashion-MNIST files have the same names, so only a folder named for one dataset is read as it. Nothing is downloaded unless ``download=True``; a download is
verified against its SHA-256 before it is renamed into place.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

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

    The file is read as ``sklearn.datasets.load_digits`` reads it (``digits.csv.gz`` in
    scikit-learn's package data) but without importing scikit-learn, which costs about 2 s of a
    process's start.
    """
    raw = _digits_table()  # (1797, 65): 64 pixels, then the label
    images = np.rint(raw[:, :64].reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    labels = raw[:, 64].astype(np.int64)
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


def _digits_table() -> np.ndarray:
    """scikit-learn's ``digits.csv.gz``, located without importing scikit-learn (``find_spec``
    only finds the package); through ``load_digits`` if the file is not where it was."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ContinualError("the bundled digits come with scikit-learn, which is not installed: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():  # a scikit-learn that keeps it elsewhere
        from sklearn.datasets import load_digits

        raw = load_digits()
        return np.concatenate([raw.data, raw.target[:, None]], axis=1)
    with gzip.open(path, "rt") as f:
        return np.loadtxt(f, delimiter=",")


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


# --------------------------------------------------------------------------- augmentation
@dataclass(frozen=True)
class RandomCropFlip:
    """Random crop after padding, and random horizontal flip, as batched tensor ops on the batch's device.

    The CIFAR training augmentation of He et al. 2016 (``RandomCrop(32, padding=4)`` and
    ``RandomHorizontalFlip()`` in torchvision), for a whole batch at once: one crop offset and one
    flip decision per sample drawn from ``generator`` (same seed, same batch), then a single
    ``gather``. No per-sample Python.

    Args:
        padding: pixels added on each side before cropping back to the input size.
        flip: also flip each sample left-right with probability 1/2.
        fill: the padding value, one per channel (or one for all). :class:`Transform` applies the
            augmentation after normalisation, so the CIFAR loaders pass ``-mean/std`` here: the
            value of a black pixel, which is what torchvision pads with on raw images.

    Example:
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> torch.equal(RandomCropFlip(padding=0, flip=False)(x), x)
        True
    """

    padding: int = 4
    flip: bool = True
    fill: tuple[float, ...] = (0.0,)

    def __post_init__(self) -> None:
        if self.padding < 0:
            raise ContinualError(f"padding={self.padding} must be 0 or more")

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.dim() != 4:
            raise ContinualError(f"RandomCropFlip needs images (B, C, H, W); got a batch of shape {tuple(x.shape)}")
        B, C, H, W = x.shape
        p, dev = self.padding, x.device
        Hp, Wp = H + 2 * p, W + 2 * p
        if p > 0:
            padded = x.new_empty((B, C, Hp, Wp))
            padded[:] = self._fill(x, C).view(1, -1, 1, 1)
            padded[:, :, p : p + H, p : p + W] = x
        else:
            padded = x
        oy = torch.randint(0, 2 * p + 1, (B,), device=dev, generator=generator)  # crop offsets
        ox = torch.randint(0, 2 * p + 1, (B,), device=dev, generator=generator)
        cols = torch.arange(W, device=dev).expand(B, W)  # (B, W)
        if self.flip:
            flipped = torch.rand(B, device=dev, generator=generator) < 0.5
            cols = torch.where(flipped[:, None], W - 1 - cols, cols)
        rows = oy[:, None] + torch.arange(H, device=dev)  # (B, H)
        index = (rows[:, :, None] * Wp + (ox[:, None] + cols)[:, None, :]).view(B, 1, H * W).expand(B, C, H * W)
        return padded.reshape(B, C, Hp * Wp).gather(2, index).view(B, C, H, W)

    def _fill(self, x: Tensor, channels: int) -> Tensor:
        if len(self.fill) not in (1, channels):
            raise ContinualError(f"fill has {len(self.fill)} values for {channels} channels; give one, or one per channel")
        cache = self.__dict__.setdefault("_cache", {})
        key = (str(x.device), x.dtype, channels)
        if key not in cache:
            cache[key] = torch.tensor(self.fill, dtype=x.dtype, device=x.device).expand(channels).contiguous()
        return cache[key]


# --------------------------------------------------------------------------- where files are
ENV_VAR = "CONTINUAL_DATA"

# Sub-folders of a base folder tried for each dataset (ours first, then torchvision's layout).
_FOLDERS: dict[str, tuple[str, ...]] = {
    "mnist": ("mnist", "MNIST/raw"),
    "fashion-mnist": ("fashion-mnist", "FashionMNIST/raw"),
    "cifar10": ("cifar10",),
    "cifar100": ("cifar100",),
}
# System dataset folders (searched last). Debian/Ubuntu: `apt-get install dataset-fashion-mnist`.
SYSTEM_DIRS: dict[str, tuple[str, ...]] = {
    "fashion-mnist": ("/usr/share/datasets/fashion-mnist",),
}
_APT = {"fashion-mnist": "dataset-fashion-mnist"}


def cache_dir() -> Path:
    """The user cache folder: ``$XDG_CACHE_HOME/continual``, by default ``~/.cache/continual``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "continual"


def _bases(root: str | os.PathLike | None) -> list[Path]:
    bases = []
    if root is not None:
        bases.append(Path(root).expanduser())
    if os.environ.get(ENV_VAR):
        bases.append(Path(os.environ[ENV_VAR]).expanduser())
    bases.append(cache_dir())
    return bases


def check_root(root: str | os.PathLike | None, *, download: bool = False, archive: bool = False) -> Path | None:
    """``root`` (``--data-root``) as a path, once it is known to name a folder; ``None`` stays ``None``.

    A data root that is missing or a file is refused rather than passed over for the other
    places searched, which would silently read another copy of the data.

    Args:
        root: the folder the user named.
        download: a missing folder is accepted (the download creates it).
        archive: a file is accepted too (CIFAR's ``.tar.gz`` archive may be named directly).

    Raises:
        ContinualError: for an empty name, a missing folder (without ``download``) or a file
            (without ``archive``), naming the path and what is accepted.
    """
    if root is None:
        return None
    if not str(root).strip():
        raise ContinualError("data root '' is empty; give a folder holding the dataset's files, or leave it out")
    path = Path(root).expanduser()
    try:
        is_dir, is_file, exists = path.is_dir(), path.is_file(), path.exists() or path.is_symlink()
    except (OSError, ValueError) as exc:  # a name too long, a loop of links, an embedded NUL
        raise ContinualError(f"data root {str(root)[:80]!r} cannot be used ({exc}); give an existing folder") from None
    if is_dir or (archive and is_file):
        return path
    if exists:
        what = "a file" if is_file else "not a folder"
        also = " (or a CIFAR .tar.gz archive)" if archive else ""
        raise ContinualError(f"data root {str(root)!r} is {what}; give a folder holding the dataset's files{also}")
    if download:
        return path
    raise ContinualError(f"data root {str(root)!r} does not exist; give an existing folder, or add --download "
                         "(download=True) to fetch the files into it")


def search_dirs(name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for dataset ``name``, in order (see the module docstring)."""
    if name not in _FOLDERS:
        raise ContinualError(f"unknown dataset {name!r}; expected one of {', '.join(_FOLDERS)}")
    dirs: list[Path] = []
    for base in _bases(root):
        dirs += [base / sub for sub in _FOLDERS[name]]
        if root is not None and base == Path(root).expanduser():
            dirs.append(base)  # only the folder the user named: MNIST and Fashion-MNIST files have the same names
    dirs += [Path(d) for d in SYSTEM_DIRS.get(name, ())]
    return list(dict.fromkeys(dirs))  # in order, without repeats


def download_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """Where a download of ``name`` goes: ``<root or $CONTINUAL_DATA or the cache>/<name>``."""
    return _bases(root)[0] / _FOLDERS[name][0]


def _missing(name: str, title: str, wanted: str, root, extra: str = "") -> ContinualError:
    places = ", ".join(str(d) for d in search_dirs(name, root))
    ways = []
    if name in _APT:
        ways.append(f"install it (Debian/Ubuntu: apt-get install {_APT[name]})")
    ways.append(f"download it (download=True, --download; into {download_dir(name, root)})")
    ways.append(f"or point root= / --data-root (or ${ENV_VAR}) at a folder holding the files")
    return ContinualError(f"{title} not found: looked for {wanted} in {places}.{extra} To get it: {'; '.join(ways)}")


# --------------------------------------------------------------------------- verified download
@dataclass(frozen=True)
class Source:
    """Where a dataset's files are downloaded from: file name -> SHA-256, and base URLs tried in order."""

    files: dict[str, str]
    mirrors: tuple[str, ...]


# SHA-256 values are those of tensorflow/datasets' `tensorflow_datasets/url_checksums/{mnist,
# fashion_mnist,cifar10,cifar100}.txt` for the same URLs (file sizes there: MNIST train images
# 9912422 bytes, Fashion-MNIST 26421880, CIFAR-10 binary 170052171, CIFAR-100 binary 168513733).
# Debian's dataset-fashion-mnist files are re-compressed (different gzip bytes, same images), so
# their checksums differ from these and were not used.
SOURCES: dict[str, Source] = {
    "mnist": Source(
        files={
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        # tensorflow/datasets' mirror, then torchvision's; both serve the original files.
        mirrors=("https://storage.googleapis.com/cvdf-datasets/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    ),
    "fashion-mnist": Source(
        files={
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
    "cifar10": Source(
        files={"cifar-10-binary.tar.gz": "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"},
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
    ),
    "cifar100": Source(
        files={"cifar-100-binary.tar.gz": "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec"},
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
    ),
}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _fetch(url: str, target: Path, sha256: str, opener: Callable) -> None:
    """Download ``url`` to a temporary file beside ``target``; rename it to ``target`` only when its SHA-256 matches."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, opener(url, timeout=60) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise ContinualError(f"{url}: SHA-256 {digest.hexdigest()} does not match the expected {sha256}; nothing was kept")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def download(name: str, root: str | os.PathLike | None = None, *, opener: Callable | None = None) -> Path:
    """Download dataset ``name``'s files into :func:`download_dir`, each verified by SHA-256.

    A file already there with the right checksum is kept. Each file is written to a temporary
    file in the same folder and renamed only once verified, so an interrupted or bad download
    leaves nothing behind. Mirrors are tried in order.

    Args:
        name: ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"`` or ``"cifar100"``.
        root: the base folder (default ``$CONTINUAL_DATA``, else the user cache).
        opener: ``urllib.request.urlopen`` by default (tests pass their own).

    Returns:
        The folder holding the files.

    Raises:
        ContinualError: when no mirror gives a file with the expected checksum.
    """
    if name not in SOURCES:
        raise ContinualError(f"no download known for dataset {name!r}; expected one of {', '.join(SOURCES)}")
    source, opener = SOURCES[name], opener or urllib.request.urlopen
    dest = download_dir(name, root)
    dest.mkdir(parents=True, exist_ok=True)
    for filename, sha256 in source.files.items():
        target = dest / filename
        if target.is_file() and _sha256(target) == sha256:
            continue
        failures = []
        for base in source.mirrors:
            try:
                _fetch(base + filename, target, sha256, opener)
                break
            except ContinualError as exc:
                failures.append(str(exc))
            except OSError as exc:  # URLError, HTTPError, timeouts, refused connections
                failures.append(f"{base + filename}: {exc}")
        else:
            raise ContinualError(f"could not download {filename} for {name}: " + "; ".join(failures))
    return dest


_download = download  # the loaders' ``download`` argument shadows the function's name


# --------------------------------------------------------------------------- file formats
def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is a gzip file (detected by its magic number, not its name)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ContinualError(f"{path}: corrupt or truncated gzip file ({exc})") from None
    return raw


def read_idx(path: str | os.PathLike, *, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes (the MNIST format), gzipped or not, into a uint8 array.

    Args:
        path: the file.
        ndim: the expected number of dimensions (1 for labels, 3 for images), checked if given.

    Raises:
        ContinualError: naming the file, for a bad magic number or a length that does not match
            the header (truncated or padded file).
    """
    path = Path(path)
    raw = _read_bytes(path)
    expected = f"00 00 08 {ndim:02x}" if ndim else "00 00 08 NN"
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] == 0 or (ndim and raw[3] != ndim):
        raise ContinualError(f"{path}: not an IDX file of unsigned bytes (magic number {raw[:4].hex(' ') or 'empty'}; expected {expected})")
    dims_end = 4 + 4 * raw[3]
    if len(raw) < dims_end:
        raise ContinualError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=raw[3], offset=4))
    if len(raw) - dims_end != int(np.prod(dims)):
        raise ContinualError(
            f"{path}: truncated or corrupt IDX file: its header says {'x'.join(map(str, dims))} "
            f"({int(np.prod(dims))} bytes of data) but it holds {len(raw) - dims_end}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=dims_end).reshape(dims)


# --------------------------------------------------------------------------- MNIST, Fashion-MNIST
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# Normalisation constants: mean and std of the training pixels in [0, 1]. MNIST: the customary
# values (PyTorch examples); Fashion-MNIST: computed from the 60,000 training images.
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def _find_idx(name: str, root) -> dict[str, Path] | None:
    for d in search_dirs(name, root):
        found = {}
        for stem in _IDX_FILES:
            for candidate in (d / stem, d / f"{stem}.gz"):
                if candidate.is_file():
                    found[stem] = candidate
                    break
        if len(found) == len(_IDX_FILES):
            return found
    return None


def _idx_dataset(name: str, title: str, *, root, download: bool, mean, std, class_names) -> Dataset:
    check_root(root, download=download)
    files = _find_idx(name, root)
    if files is None and download:
        _download(name, root)
        files = _find_idx(name, root)
    if files is None:
        raise _missing(name, title, ", ".join(f"{s}[.gz]" for s in _IDX_FILES), root)
    arrays = {stem: read_idx(path, ndim=3 if "images" in stem else 1) for stem, path in files.items()}
    splits = []
    for split in ("train", "t10k"):
        x, y = arrays[f"{split}-images-idx3-ubyte"], arrays[f"{split}-labels-idx1-ubyte"]
        for stem, a in ((f"{split}-images-idx3-ubyte", x), (f"{split}-labels-idx1-ubyte", y)):
            if len(a) == 0:
                raise ContinualError(f"{files[stem]}: holds no samples (its header says {'x'.join(map(str, a.shape))}); "
                                     f"the {'training' if split == 'train' else 'test'} split needs at least one")
        if len(x) != len(y):
            raise ContinualError(f"{files[f'{split}-images-idx3-ubyte']} holds {len(x)} images but "
                                 f"{files[f'{split}-labels-idx1-ubyte']} holds {len(y)} labels")
        if len(y) and y.max() >= 10:
            raise ContinualError(f"{files[f'{split}-labels-idx1-ubyte']}: label {int(y.max())} out of range 0..9")
        splits += [torch.from_numpy(x[:, None].copy()), torch.from_numpy(y.astype(np.int64))]  # (N, 1, 28, 28)
    return Dataset(name, *splits, transform=Transform(mean=mean, std=std, scale=1 / 255), class_names=class_names)


def mnist(*, root: str | os.PathLike | None = None, download: bool = False) -> Dataset:
    """Load MNIST (LeCun et al. 1998) from its four IDX files: 60,000 train and 10,000 test images ``(N, 1, 28, 28)`` uint8.

    Args:
        root: a folder to search first (see the module docstring for the whole search order).
        download: download (verified) when the files are not found.

    Raises:
        ContinualError: files not found (listing every place searched), or a corrupt file.
    """
    return _idx_dataset("mnist", "MNIST", root=root, download=download, mean=MNIST_MEAN, std=MNIST_STD,
                        class_names=tuple(str(i) for i in range(10)))


def fashion_mnist(*, root: str | os.PathLike | None = None, download: bool = False) -> Dataset:
    """Load Fashion-MNIST (Xiao et al. 2017) from its four IDX files, like :func:`mnist`.

    On Debian/Ubuntu, ``apt-get install dataset-fashion-mnist`` puts the files in
    ``/usr/share/datasets/fashion-mnist``, which is searched: no download needed.
    """
    return _idx_dataset("fashion-mnist", "Fashion-MNIST", root=root, download=download, mean=FASHION_MNIST_MEAN,
                        std=FASHION_MNIST_STD, class_names=FASHION_MNIST_CLASSES)


# --------------------------------------------------------------------------- CIFAR-10, CIFAR-100
# Per-channel mean and std of the training pixels in [0, 1] (the customary values).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class _CifarFormat:
    name: str
    title: str
    archive: str  # the binary distribution
    folder: str  # the folder inside it
    train: tuple[str, ...]
    test: tuple[str, ...]
    names_file: str
    label_bytes: int  # 1 (label) or 2 (coarse, fine)
    python: tuple[str, ...]  # names of the pickle distribution, refused

    def wanted(self) -> str:
        return f"{self.archive} or its extracted folder {self.folder}/"


_CIFAR10 = _CifarFormat(
    "cifar10", "CIFAR-10", "cifar-10-binary.tar.gz", "cifar-10-batches-bin",
    tuple(f"data_batch_{i}.bin" for i in range(1, 6)), ("test_batch.bin",), "batches.meta.txt", 1,
    ("cifar-10-python.tar.gz", "cifar-10-batches-py"),
)
_CIFAR100 = _CifarFormat(
    "cifar100", "CIFAR-100", "cifar-100-binary.tar.gz", "cifar-100-binary", ("train.bin",), ("test.bin",),
    "fine_label_names.txt", 2, ("cifar-100-python.tar.gz", "cifar-100-python"),
)
_IMAGE_BYTES = 3 * 32 * 32


def _find_cifar(fmt: _CifarFormat, root) -> tuple[Path | None, list[Path]]:
    """(the archive or folder holding the binary files, or None; pickle distributions seen on the way)."""
    seen_python = []
    if root is not None and Path(root).is_file():
        if Path(root).name in fmt.python:
            seen_python.append(Path(root))
        else:
            return Path(root), seen_python
    needed = fmt.train + fmt.test
    for d in search_dirs(fmt.name, root):
        if (d / fmt.archive).is_file():
            return d / fmt.archive, seen_python
        for folder in (d / fmt.folder, d):
            if all((folder / f).is_file() for f in needed):
                return folder, seen_python
        seen_python += [d / p for p in fmt.python if (d / p).exists()]
    return None, seen_python


def _cifar_files(fmt: _CifarFormat, where: Path) -> dict[str, tuple[str, bytes]]:
    """``file name -> (where it was read from, bytes)`` for the data files and (if present) the names file."""
    wanted = fmt.train + fmt.test + (fmt.names_file,)
    if where.is_dir():
        return {f: (str(where / f), (where / f).read_bytes()) for f in wanted if (where / f).is_file()}
    if where.name in fmt.python or where.name.endswith("-python.tar.gz"):
        raise ContinualError(_python_refusal(fmt, [where]))
    try:
        with tarfile.open(where, "r:*") as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
            found = {}
            for f in wanted:
                member = members.get(f"{fmt.folder}/{f}")
                if member is not None:
                    found[f] = (f"{where}:{member.name}", tar.extractfile(member).read())
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise ContinualError(f"{where}: corrupt or truncated archive ({exc})") from None
    missing = [f for f in fmt.train + fmt.test if f not in found]
    if missing:
        if any(m.startswith(fmt.python[1] + "/") for m in members):
            raise ContinualError(_python_refusal(fmt, [where]))
        raise ContinualError(f"{where}: not the {fmt.title} binary archive: it has no {fmt.folder}/{missing[0]}")
    return found


def _python_refusal(fmt: _CifarFormat, paths: Sequence[Path]) -> str:
    return (f"{', '.join(map(str, paths))}: the {fmt.title} python distribution holds pickles, which are not read "
            f"(unpickling can run code); use the binary distribution {fmt.archive} "
            f"({SOURCES[fmt.name].mirrors[0]}{fmt.archive}, or download=True / --download)")


def _cifar_records(source: str, raw: bytes, fmt: _CifarFormat, label_index: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    record = fmt.label_bytes + _IMAGE_BYTES
    if not raw or len(raw) % record:
        raise ContinualError(f"{source}: truncated or not a {fmt.title} binary file: {len(raw)} bytes is not a "
                             f"whole number of {record}-byte records")
    table = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)  # (N, record)
    labels = table[:, label_index].astype(np.int64)
    if labels.max() >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise ContinualError(f"{source}: not a {fmt.title} binary file: record {bad} has label {labels[bad]} "
                             f"(expected 0..{num_classes - 1})")
    return table[:, fmt.label_bytes :].reshape(-1, 3, 32, 32), labels  # (N, 3, 32, 32)


def _cifar_dataset(fmt: _CifarFormat, *, root, download: bool, label_index: int, num_classes: int,
                   mean, std, augment: bool, default_names) -> Dataset:
    check_root(root, download=download, archive=True)
    where, seen_python = _find_cifar(fmt, root)
    if where is None and download:
        _download(fmt.name, root)
        where, seen_python = _find_cifar(fmt, root)
    if where is None:
        if seen_python:
            raise ContinualError(_python_refusal(fmt, seen_python))
        raise _missing(fmt.name, fmt.title, fmt.wanted(), root)
    files = _cifar_files(fmt, where)
    tensors = []
    for names in (fmt.train, fmt.test):
        parts = [_cifar_records(*files[f], fmt, label_index, num_classes) for f in names]
        tensors += [torch.from_numpy(np.concatenate([p[0] for p in parts])), torch.from_numpy(np.concatenate([p[1] for p in parts]))]
    class_names = default_names
    if fmt.names_file in files:
        names = tuple(n.strip() for n in files[fmt.names_file][1].decode("utf-8", "replace").splitlines() if n.strip())
        class_names = names if len(names) == num_classes else class_names
    crop = RandomCropFlip(padding=4, flip=True, fill=tuple(-m / s for m, s in zip(mean, std))) if augment else None
    return Dataset(fmt.name, *tensors, transform=Transform(mean=mean, std=std, scale=1 / 255, augment=crop),
                   class_names=class_names)


def cifar10(*, root: str | os.PathLike | None = None, download: bool = False, augment: bool = True) -> Dataset:
    """Load CIFAR-10 (Krizhevsky 2009) from the binary distribution: 50,000 train and 10,000 test images ``(N, 3, 32, 32)`` uint8.

    Reads ``cifar-10-binary.tar.gz`` in memory (nothing is extracted to disk) or its extracted
    folder ``cifar-10-batches-bin/``. The python (pickle) distribution is refused.

    Args:
        root: a folder (or the archive itself) to search first.
        download: download (verified) when the files are not found.
        augment: training batches get a random 32x32 crop of the image padded by 4 pixels and a
            random horizontal flip (:class:`RandomCropFlip`), on the device.
    """
    return _cifar_dataset(_CIFAR10, root=root, download=download, label_index=0, num_classes=10, mean=CIFAR10_MEAN,
                          std=CIFAR10_STD, augment=augment, default_names=CIFAR10_CLASSES)


def cifar100(*, root: str | os.PathLike | None = None, download: bool = False, augment: bool = True,
             labels: str = "fine") -> Dataset:
    """Load CIFAR-100 from the binary distribution (``cifar-100-binary.tar.gz`` or ``cifar-100-binary/``), like :func:`cifar10`.

    Args:
        labels: ``"fine"`` (100 classes, the default) or ``"coarse"`` (20 superclasses).
    """
    if labels not in ("fine", "coarse"):
        raise ContinualError(f"labels={labels!r} is not accepted; expected 'fine' or 'coarse'")
    fmt = _CIFAR100 if labels == "fine" else replace(_CIFAR100, names_file="coarse_label_names.txt")
    return _cifar_dataset(fmt, root=root, download=download, label_index=1 if labels == "fine" else 0,
                          num_classes=100 if labels == "fine" else 20, mean=CIFAR100_MEAN, std=CIFAR100_STD,
                          augment=augment, default_names=None)
