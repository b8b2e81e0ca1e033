"""Your own data as a :class:`~continual.data.Dataset` and as a benchmark: an image folder, an ``.npz``, or tensors.

Three loaders return the same in-memory :class:`~continual.data.Dataset` the built-in ones do
(uint8 images ``(N, C, H, W)``, or float inputs; int64 labels; a :class:`~continual.data.Transform`
normalising per channel with the training inputs' mean and std), as a :class:`UserDataset`
whose ``source`` records where the data came from, a content fingerprint and every choice made
on the way (resize, colour, test split):

- :func:`image_folder`: ``root/<class name>/<image>`` (a seeded, class-stratified test split), or
  torchvision ``ImageFolder``'s ``root/train/<class>/...`` and ``root/test/<class>/...``;
- :func:`npz`: an ``.npz`` holding ``x_train, y_train, x_test, y_test`` (optional ``class_names``);
- :func:`from_tensors`: the same four arrays from Python.

On the command line, and wherever a benchmark name is taken (``RunConfig``, sweeps),
``split:PATH``, ``permuted:PATH`` and ``rotated:PATH`` name a benchmark on the folder or ``.npz``
at ``PATH`` (:func:`benchmark`); options follow the path after commas, e.g.
``split:/data/flowers,size=32,test_fraction=0.25``. Its defaults are split-digits' (10 epochs,
lr 0.05, batch 32, 5 experiences, or one per class when there are fewer than 5), with the
ConvNet for colour images and the MLP for grey images and flat inputs, as the registered
benchmarks use them (CIFAR: ConvNet; digits, MNIST: MLP).

Files are read once per process: a dataset is cached under its path, its files' sizes and
modification times, and the options, so the seeds of a sweep share one read. A changed file
(size or time) is read again.

Example:
    >>> import torch
    >>> ds = from_tensors(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]),
    ...                   torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1]), class_names=["cat", "dog"])
    >>> ds.input_shape, ds.num_classes, ds.class_names
    ((1, 2, 2), 2, ('cat', 'dog'))
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data import Dataset, Transform
from .errors import ContinualError

# The extensions torchvision's ImageFolder reads (``IMG_EXTENSIONS``), in any case; other files are ignored.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
KINDS = {"split": ("class", "task"), "permuted": ("domain",), "rotated": ("domain",)}
"""Benchmark forms on the user's data: ``KIND:PATH`` -> the scenarios it supports (the first is the default)."""
OPTIONS = ("size", "test_fraction", "seed", "grey")
FORMS = ("split:PATH, permuted:PATH or rotated:PATH (PATH an image folder or an .npz file; options after commas: "
         "size=N, test_fraction=F, seed=S, grey=yes|no, e.g. split:/data/flowers,size=32)")
LAYOUT = "root/<class name>/<image>, or root/train/<class name>/<image> and root/test/<class name>/<image>"
RESAMPLING = "Pillow's bilinear filter (antialiased when shrinking, as torchvision's Resize); aspect ratio not kept"
# Defaults of a benchmark on the user's data: split-digits' hyperparameters.
DEFAULT_EXPERIENCES, DEFAULT_EPOCHS, DEFAULT_LR, DEFAULT_BATCH_SIZE = 5, 10, 0.05, 32
_CACHE_SIZE = 4  # datasets kept in memory (most recently used)
READ_THREADS = 8  # at most, to decode a folder's images (no more than the CPUs)


@dataclass
class UserDataset(Dataset):
    """A :class:`~continual.data.Dataset` read from the user's data, with where it came from.

    Attributes:
        source: a JSON-able record: ``format``, ``path``, ``fingerprint`` (``sha256:...`` of the
            content), ``classes``, ``class_names``, ``train``/``test`` sizes, ``input_shape``,
            ``normalisation`` and the choices made while reading (``layout``, ``split``,
            ``colour``, ``resize``, ``ignored`` files). Results store it in their provenance.
    """

    source: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- shared checks
def _normalisation(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], float]:
    """(mean, std, scale) of the training inputs as the :class:`Transform` uses them.

    uint8 inputs: per channel of images ``(N, C, H, W)`` (one value for flat ``(N, D)``), in
    [0, 1] (scale 1/255), exact, from a histogram of the pixel values (no float copy of the
    data). Float inputs: per channel of images, one value for flat inputs, scale 1. A
    standard deviation of 0 (constant inputs) is taken as 1.
    """
    channels = [x[:, c] for c in range(x.shape[1])] if x.ndim == 4 else [x]
    means, stds = [], []
    for part in channels:
        if x.dtype == np.uint8:
            counts = np.bincount(part.reshape(-1), minlength=256).astype(np.float64)
            values = np.arange(256) / 255.0
            n = counts.sum()
            mean = float((counts * values).sum() / n)
            var = float((counts * (values - mean) ** 2).sum() / n)
        else:
            flat = part.reshape(-1).astype(np.float64)
            mean, var = float(flat.mean()), float(flat.var())
        means.append(mean)
        stds.append(var ** 0.5 if var > 0 else 1.0)
    return tuple(means), tuple(stds), (1 / 255 if x.dtype == np.uint8 else 1.0)


def _describe(mean: Sequence[float], std: Sequence[float], scale: float) -> str:
    numbers = lambda v: "(" + ", ".join(f"{a:.4g}" for a in v) + ")"  # noqa: E731
    pixels = "pixels / 255, " if scale != 1.0 else ""
    return f"{pixels}minus mean {numbers(mean)}, divided by std {numbers(std)} (of the training inputs)"


def _make(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
          class_names: Sequence[str], source: dict) -> UserDataset:
    mean, std, scale = _normalisation(x_train)
    source = dict(source, classes=len(class_names), class_names=list(class_names), train=int(len(y_train)),
                  test=int(len(y_test)), input_shape=list(x_train.shape[1:]), dtype=str(x_train.dtype),
                  normalisation=_describe(mean, std, scale))
    return UserDataset(
        name=name, x_train=torch.from_numpy(np.ascontiguousarray(x_train)), y_train=torch.from_numpy(y_train.astype(np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test)), y_test=torch.from_numpy(y_test.astype(np.int64)),
        transform=Transform(mean=mean, std=std, scale=scale), class_names=tuple(class_names), source=source,
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# --------------------------------------------------------------------------- image folders
def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _visible(folder: Path) -> list[os.DirEntry]:
    """The entries of ``folder`` not starting with a dot, sorted by name."""
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        raise ContinualError(f"{folder}: cannot be read ({exc.strerror or exc})") from None


def _class_folders(folder: Path, root: Path) -> tuple[list[Path], int]:
    """The class folders of ``folder`` and how many other files lie beside them (ignored); an
    image lying beside them, or no class folder, is an error."""
    entries = _visible(folder)
    for e in entries:
        if e.is_file() and _is_image(e.name):
            raise ContinualError(f"{folder / e.name}: an image outside any class folder; expected the layout {LAYOUT}")
    dirs = [Path(e.path) for e in entries if e.is_dir()]
    if not dirs:
        what = "is an empty folder" if not entries else f"holds no class folders (only {entries[0].name!r}{' and more' if len(entries) > 1 else ''})"
        raise ContinualError(f"{folder} {what}; expected the layout {LAYOUT}" if folder == root else
                             f"{folder} {what}; expected class folders {folder}/<class name>/<image>")
    return dirs, sum(1 for e in entries if not e.is_dir())


def _images_of(class_dir: Path) -> tuple[list[Path], int]:
    """The images under ``class_dir`` (sub-folders too, as ImageFolder), sorted; and how many other files were ignored."""
    found, ignored = [], 0
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            if _is_image(f):
                found.append(Path(dirpath) / f)
            else:
                ignored += 1
    if not found:
        raise ContinualError(f"{class_dir}: class {class_dir.name!r} has no images (readable extensions: {' '.join(IMAGE_EXTENSIONS)})")
    return found, ignored


def _scan(root: Path) -> tuple[str, dict[str, list[tuple[str, list[Path]]]], int]:
    """``(layout, {split: [(class name, images)]}, files ignored)`` of an image folder, checked."""
    if not root.is_dir():
        raise ContinualError(f"{root}: no such folder; expected an image folder ({LAYOUT})")
    top, ignored = _class_folders(root, root)
    names = {p.name for p in top}
    if "train" in names or "test" in names:
        if names != {"train", "test"}:
            if {"train", "test"} <= names:
                other = sorted(names - {"train", "test"})[0]
                raise ContinualError(f"{root} holds train/ and test/ and also {other}/; the train/test layout holds those two only ({LAYOUT})")
            there, missing = ("train", "test") if "train" in names else ("test", "train")
            raise ContinualError(f"{root} has a {there}/ folder but no {missing}/ folder; the train/test layout needs both ({LAYOUT})")
        splits = {}
        for s in ("train", "test"):
            splits[s], n = _class_folders(root / s, root)
            ignored += n
        layout = "train/ and test/ folders"
        train_names, test_names = [p.name for p in splits["train"]], {p.name for p in splits["test"]}
        for c in train_names:
            if c not in test_names:
                raise ContinualError(f"{root / 'test'} has no folder for class {c!r}, which {root / 'train'} has; "
                                     "both splits need the same class folders")
        for c in sorted(test_names - set(train_names)):
            raise ContinualError(f"{root / 'test' / c}: class {c!r} is not in {root / 'train'}; both splits need the same class folders")
    else:
        splits = {"all": top}
        layout = "class folders"
    out = {}
    for s, dirs in splits.items():
        out[s] = []
        for d in dirs:
            images, n = _images_of(d)
            out[s].append((d.name, images))
            ignored += n
    return layout, out, ignored


def _signature(root: Path, splits: dict[str, list[tuple[str, list[Path]]]]) -> str:
    """A digest of every image's relative path, size and modification time: the cache key (no file is read)."""
    h = hashlib.sha256()
    for s in splits.values():
        for _, images in s:
            for p in images:
                st = p.stat()
                h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "La")


def _decode(path: Path, raw: bytes, grey: bool | None, size: tuple[int, int] | None) -> np.ndarray:
    """One image as a uint8 array ``(H, W)`` (grey) or ``(H, W, 3)``."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as im:
            im.load()  # decode now: a truncated file fails here, not later
            if im.mode == "F":
                raise ContinualError(f"{path}: a 32-bit float image (mode F); save it as an 8-bit image")
            if im.mode.startswith("I"):  # 16-bit grey: scaled to 8 bits
                a = np.asarray(im).astype(np.float64)
                im = Image.fromarray(np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8), "L")
            is_grey = im.mode in _GREY_MODES
            im = im.convert("L" if (grey if grey is not None else is_grey) else "RGB")
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except ContinualError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise ContinualError(f"{path}: not a readable image ({_one_line(exc)})") from None


def _split_per_class(labels: np.ndarray, num_classes: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices: per class (of at least 2 samples), a seeded permutation,
    ``round(n * test_fraction)`` samples to the test split, but at least one to each split."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = min(max(int(round(len(idx) * test_fraction)), 1), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _check_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) and not isinstance(size, bool) else tuple(size) if isinstance(size, (tuple, list)) else None
    if pair is None or len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise ContinualError(f"size={size!r} is not accepted; expected a positive number of pixels N (NxN) or (height, width)")
    return pair


def _check_fraction(test_fraction) -> float:
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ContinualError(f"test_fraction={test_fraction!r} is not accepted; expected a number strictly between 0 and 1, e.g. 0.2")
    return float(test_fraction)


_CACHE: OrderedDict[tuple, UserDataset] = OrderedDict()
_RECORDS: dict[str, dict] = {}  # benchmark name -> provenance of the data it last read (see record)


def _cached(key: tuple, load) -> UserDataset:
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    dataset = load()
    _CACHE[key] = dataset
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return dataset


def clear_cache() -> None:
    """Forget the datasets read so far (the next call reads the files again)."""
    _CACHE.clear()
    _RECORDS.clear()


def image_folder(root: str | os.PathLike, *, size: int | tuple[int, int] | None = None, test_fraction: float = 0.2,
                 seed: int = 0, grey: bool | None = None) -> UserDataset:
    """Read a folder of images into a dataset of uint8 images ``(N, C, H, W)``, one class per folder.

    Layouts:

    - ``root/<class name>/<image>``: the test split is drawn per class with ``seed``:
      ``round(n * test_fraction)`` of a class's ``n`` images, but at least one image in each
      split (a class needs 2 images);
    - ``root/train/<class name>/<image>`` and ``root/test/<class name>/<image>`` (torchvision
      ``ImageFolder``'s, one per split): the splits as given; both need the same class folders.

    Classes are the folder names sorted (as torchvision sorts them), labels ``0..C-1`` in that
    order, and ``class_names`` keeps the names. Images may lie in sub-folders of a class folder.
    Files are read in sorted order with Pillow; only the extensions of torchvision's ImageFolder
    count as images (``.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp``, any case): other files
    and names starting with a dot are ignored (their number is in ``source["ignored"]``), but an
    image lying directly in ``root`` (outside a class folder) is an error. EXIF orientation is not
    applied (as torchvision). Alpha channels are dropped; 16-bit grey images are scaled to 8 bits.

    Args:
        root: the folder.
        size: resize every image to ``size x size`` (or ``(height, width)``) with Pillow's bilinear
            filter, antialiased when shrinking (torchvision's ``Resize`` default); the aspect ratio
            is not kept. ``None`` (default): images are kept as they are, and must all have one
            size (differing sizes are an error naming two files: choose ``size``).
        test_fraction: the share of each class's images in the test split (layout 1 only).
        seed: seeds the test split (layout 1 only); fixed, not the run's seed, so every seed of a
            sweep is tested on the same images.
        grey: ``True``: every image converted to grey (``L``, 1 channel); ``False``: to RGB
            (3 channels); ``None`` (default): grey when every image is grey, else RGB.

    Returns:
        A :class:`UserDataset`, normalised with the training pixels' per-channel mean and std.
        ``source`` records the folder, its ``fingerprint`` (a SHA-256 over every image's relative
        path and the SHA-256 of its bytes, in sorted order), the layout, split, colour and resize.

    Raises:
        ContinualError: one line naming the folder or file: a missing or empty folder, no class
            folders, an image outside a class folder, a class with no images (or 1, in layout 1),
            a train/ without test/, differing class folders in train/ and test/, a file that is
            not a readable image, images of differing sizes without ``size``.
    """
    pair = _check_size(size)
    test_fraction = _check_fraction(test_fraction)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ContinualError(f"seed={seed!r} is not accepted; expected an integer >= 0")
    if grey not in (None, True, False):
        raise ContinualError(f"grey={grey!r} is not accepted; expected True, False or None (grey when every image is)")
    root = Path(root).expanduser()
    layout, splits, ignored = _scan(root)
    key = ("folder", str(root.resolve()), _signature(root, splits), pair, test_fraction if layout == "class folders" else None,
           seed if layout == "class folders" else None, grey)
    return _cached(key, lambda: _read_folder(root, layout, splits, ignored, pair, test_fraction, seed, grey))


def _read_one(path: Path, grey, size) -> tuple[str, np.ndarray]:
    """(SHA-256 of the file's bytes, the decoded image) of one file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ContinualError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return hashlib.sha256(raw).hexdigest(), _decode(path, raw, grey, size)


def _read_folder(root: Path, layout: str, splits, ignored: int, size, test_fraction: float, seed: int, grey) -> UserDataset:
    from concurrent.futures import ThreadPoolExecutor

    names = [c for c, _ in next(iter(splits.values()))]
    if len(names) < 2:
        raise ContinualError(f"{root} holds one class folder ({names[0]!r}); a classification benchmark needs at least 2 classes")
    for c, images in splits.get("all", ()):
        if len(images) < 2:
            raise ContinualError(f"{root / c}: class {c!r} has 1 image; a train and a test split need at least 2 per class "
                                 "(or use the train/ and test/ folder layout)")
    digest = hashlib.sha256()
    arrays: dict[str, list[np.ndarray]] = {s: [] for s in splits}
    labels: dict[str, list[int]] = {s: [] for s in splits}
    jobs = [(s, label, path) for s, classes in splits.items() for label, (_, images) in enumerate(classes) for path in images]
    first: tuple[Path, tuple[int, int]] | None = None
    # Pillow releases the GIL while it decodes and resizes: a few threads read a large folder faster.
    pool = ThreadPoolExecutor(max_workers=min(READ_THREADS, os.cpu_count() or 1))
    try:
        for (s, label, path), (sha, a) in zip(jobs, pool.map(lambda job: _read_one(job[2], grey, size), jobs)):
            digest.update(f"{path.relative_to(root).as_posix()}\0{sha}\n".encode())
            if first is None:
                first = (path, a.shape[:2])
            elif a.shape[:2] != first[1]:
                (h0, w0), (h, w) = first[1], a.shape[:2]
                raise ContinualError(f"{path}: {w}x{h} pixels, but {first[0]} is {w0}x{h0}; images of differing sizes need "
                                     f"size=N to resize them all to NxN (--benchmark split:{root},size=N)")
            arrays[s].append(a)
            labels[s].append(label)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after an error, the files not yet read are not read
    colour = any(a.ndim == 3 for s in arrays.values() for a in s)

    def stack(items: list[np.ndarray]) -> np.ndarray:
        if colour:
            items = [a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in items]  # grey as RGB (Pillow's L -> RGB)
            return np.stack(items).transpose(0, 3, 1, 2)  # (N, 3, H, W)
        return np.stack(items)[:, None]  # (N, 1, H, W)

    if layout == "class folders":
        y = np.asarray(labels["all"], dtype=np.int64)
        tr, te = _split_per_class(y, len(names), test_fraction, seed)
        x_train, x_test = stack([arrays["all"][i] for i in tr]), stack([arrays["all"][i] for i in te])  # one copy of the pixels
        y_train, y_test = y[tr], y[te]
        split = f"per class, seeded: round(n * {test_fraction:g}) of each class's n images to test (at least one in each split), seed {seed}"
    else:
        x_train, y_train = stack(arrays["train"]), np.asarray(labels["train"], dtype=np.int64)
        x_test, y_test = stack(arrays["test"]), np.asarray(labels["test"], dtype=np.int64)
        split = "as the train/ and test/ folders give it"
    h, w = x_train.shape[2:]
    chosen = {None: "grey when every image is", True: "grey=True", False: "grey=False"}[grey]
    source = {
        "format": "image folder", "path": str(root.resolve()), "fingerprint": f"sha256:{digest.hexdigest()}",
        "layout": layout, "split": split, "files": sum(len(v) for v in arrays.values()), "ignored": ignored,
        "colour": f"{'RGB' if colour else 'grey (L)'} ({chosen})",
        "resize": f"to {h}x{w} (height x width) with {RESAMPLING}" if size is not None else f"none (every image {h}x{w})",
    }
    return _make(root.name or "images", x_train, y_train, x_test, y_test, names, source)


# --------------------------------------------------------------------------- arrays: .npz and tensors
_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _inputs(x: np.ndarray, key: str, where: str) -> tuple[np.ndarray, str]:
    """Inputs as stored: uint8 or float32, ``(N, D)`` or ``(N, C, H, W)``; and how their layout was read."""
    if x.dtype == np.bool_ or x.dtype.kind not in "uif":
        raise ContinualError(f"{where}: {key} has dtype {x.dtype}; expected uint8 images (0..255) or float inputs")
    if x.ndim == 2:
        layout = "flat (N, D)"
    elif x.ndim == 3:
        x, layout = x[:, None], "grey images (N, H, W)"
    elif x.ndim == 4 and x.shape[1] in (1, 3):
        layout = "images (N, C, H, W)"  # channels first also when the last axis could be channels too (PyTorch's order)
    elif x.ndim == 4 and x.shape[3] in (1, 3):
        x, layout = x.transpose(0, 3, 1, 2), "images (N, H, W, C)"
    else:
        raise ContinualError(f"{where}: {key} has shape {tuple(x.shape)}; expected flat inputs (N, D), grey images (N, H, W), "
                             "or images (N, C, H, W) or (N, H, W, C) with C 1 or 3")
    if len(x) == 0:
        raise ContinualError(f"{where}: {key} holds no samples")
    if x.dtype.kind in "iu" and x.dtype != np.uint8:
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise ContinualError(f"{where}: {key} holds integers from {lo} to {hi}; expected uint8 pixels 0..255, or floats")
        x = x.astype(np.uint8)
    elif x.dtype.kind == "f":
        x = x.astype(np.float32)
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if bad.any():
            raise ContinualError(f"{where}: {key}[{int(np.argmax(bad))}] holds NaN or infinity; every input must be finite")
    return np.ascontiguousarray(x), layout


def _labels(y: np.ndarray, key: str, where: str, n: int) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.dtype == np.bool_ or y.dtype.kind not in "iu":
        raise ContinualError(f"{where}: {key} has dtype {y.dtype} and shape {tuple(y.shape)}; expected integer class labels (N,)")
    if len(y) != n:
        x_key = key.replace("y_", "x_")
        raise ContinualError(f"{where}: {x_key} has {n} samples but {key} has {len(y)} labels")
    return y.astype(np.int64)


def _from_arrays(arrays: dict[str, np.ndarray], names: Sequence[str] | None, *, where: str, name: str, source: dict) -> UserDataset:
    x_train, layout = _inputs(arrays["x_train"], "x_train", where)
    x_test, _ = _inputs(arrays["x_test"], "x_test", where)
    if x_test.shape[1:] != x_train.shape[1:] or x_test.dtype != x_train.dtype:
        raise ContinualError(f"{where}: x_test holds {x_test.dtype} inputs of shape {tuple(x_test.shape[1:])} but x_train "
                             f"{x_train.dtype} of shape {tuple(x_train.shape[1:])}; both must match")
    y_train = _labels(arrays["y_train"], "y_train", where, len(x_train))
    y_test = _labels(arrays["y_test"], "y_test", where, len(x_test))
    unseen = np.setdiff1d(y_test, y_train)
    if len(unseen):
        raise ContinualError(f"{where}: y_test has label {int(unseen[0])}, which y_train has not; every test class needs training samples")
    found = np.unique(y_train)
    if names is not None:
        names = [str(c) for c in names]
        if found[0] < 0 or found[-1] >= len(names):
            raise ContinualError(f"{where}: label {int(found[-1] if found[-1] >= len(names) else found[0])} has no class name; "
                                 f"class_names holds {len(names)}, for labels 0..{len(names) - 1}")
        if len(found) != len(names):
            missing = sorted(set(range(len(names))) - set(found.tolist()))[0]
            raise ContinualError(f"{where}: class {missing} ({names[missing]!r}) has no training samples; "
                                 "every named class needs some")
        labels = "as given, named by class_names"
    elif np.array_equal(found, np.arange(len(found))):
        names, labels = [str(c) for c in found], "as given (0..C-1)"
    else:  # arbitrary integers: renumbered in sorted order, the originals kept as names
        names = [str(int(c)) for c in found]
        y_train, y_test = np.searchsorted(found, y_train), np.searchsorted(found, y_test)
        labels = f"renumbered 0..{len(found) - 1} in sorted order of the original labels (class_names holds them)"
    if len(names) < 2:
        raise ContinualError(f"{where}: y_train holds one class ({names[0]!r}); a classification benchmark needs at least 2 classes")
    kept = "uint8, as given" if x_train.dtype == np.uint8 else "float32, as given (no uint8 conversion)"
    return _make(name, x_train, y_train, x_test, y_test, names, dict(source, inputs=f"{layout}, {kept}", labels=labels))


def npz(path: str | os.PathLike) -> UserDataset:
    """Read an ``.npz`` with ``x_train, y_train, x_test, y_test`` (and optionally ``class_names``).

    Inputs:

    - uint8 images ``(N, H, W)`` (grey), ``(N, C, H, W)`` or ``(N, H, W, C)`` with ``C`` 1 or 3:
      channels first when axis 1 has 1 or 3 entries (PyTorch's order, also when the last axis
      could be channels too), else channels last when the last axis has; other integer arrays
      with values in 0..255 are cast to uint8;
    - float arrays (images of those shapes, or flat features ``(N, D)``): kept as float32, not
      converted to uint8 (normalised per channel, one mean and std for flat features);
    - uint8 flat inputs ``(N, D)`` stay uint8 (e.g. flattened images).

    Labels are integers ``(N,)`` (or ``(N, 1)``). Labels ``0..C-1`` are kept; other integers are
    renumbered in sorted order and their original values become the class names, unless
    ``class_names`` (an array of strings indexed by label) names them. Every test label needs
    training samples. Arrays are loaded with ``allow_pickle=False``: object arrays are refused.

    Raises:
        ContinualError: one line naming the file: missing, not an .npz or corrupt, a missing
            key, mismatched lengths, a wrong dtype or shape, x_train and x_test of different
            shapes, NaN or infinity, labels outside ``class_names``.
    """
    path = Path(path).expanduser()
    try:
        st = path.stat()
    except OSError:
        raise ContinualError(f"{path}: no such file; expected an .npz holding {', '.join(_KEYS)}") from None
    if not path.is_file():
        raise ContinualError(f"{path}: not a file; expected an .npz holding {', '.join(_KEYS)}")
    key = ("npz", str(path.resolve()), st.st_size, st.st_mtime_ns)
    return _cached(key, lambda: _read_npz(path))


def _read_npz(path: Path) -> UserDataset:
    import zipfile
    import zlib

    raw = path.read_bytes()
    if raw[:4] != b"PK\x03\x04" and raw[:4] != b"PK\x05\x06":
        what = "a single .npy array" if raw[:6] == b"\x93NUMPY" else "not a zip archive"
        raise ContinualError(f"{path}: not an .npz file ({what}); expected np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as f:
            missing = [k for k in _KEYS if k not in f.files]
            if missing:
                held = ", ".join(f.files[:5]) + (f" and {len(f.files) - 5} more" if len(f.files) > 5 else "") or "nothing"
                raise ContinualError(f"{path}: no array {missing[0]!r} (it holds {held}); "
                                     f"expected {', '.join(_KEYS)} and optionally class_names")
            arrays = {k: f[k] for k in _KEYS}
            names = f["class_names"] if "class_names" in f.files else None
    except ContinualError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, zlib.error) as exc:
        if "allow_pickle" in str(exc):
            raise ContinualError(f"{path}: holds object arrays (pickles), which are not read (unpickling can run code); "
                                 "save numeric arrays, and class_names as strings") from None
        raise ContinualError(f"{path}: corrupt or unreadable .npz ({_one_line(exc)})") from None
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise ContinualError(f"{path}: class_names has dtype {names.dtype} and shape {tuple(names.shape)}; expected a 1-D array of strings")
        names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names.tolist()]
    source = {"format": "npz", "path": str(path.resolve()), "fingerprint": f"sha256:{hashlib.sha256(raw).hexdigest()}"}
    return _from_arrays(arrays, names, where=str(path), name=path.stem, source=source)


def from_tensors(x_train, y_train, x_test, y_test, *, class_names: Sequence[str] | None = None, name: str = "tensors") -> UserDataset:
    """A dataset from four tensors or numpy arrays, checked and stored as :func:`npz` stores them.

    Args:
        x_train, x_test: inputs: uint8 images ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)``,
            or float inputs (see :func:`npz` for how the layout is read).
        y_train, y_test: integer labels ``(N,)``.
        class_names: names indexed by label (default: the labels; arbitrary integers are
            renumbered in sorted order).
        name: the dataset's name.

    Raises:
        ContinualError: one line naming the array at fault (see :func:`npz`).
    """
    def as_numpy(v, key):
        if isinstance(v, torch.Tensor):
            return v.detach().cpu().numpy()
        try:
            return np.asarray(v)
        except Exception as exc:
            raise ContinualError(f"from_tensors: {key} is not an array ({_one_line(exc)})") from None

    arrays = {k: as_numpy(v, k) for k, v in zip(_KEYS, (x_train, y_train, x_test, y_test))}
    digest = hashlib.sha256()
    for k in _KEYS:
        a = np.ascontiguousarray(arrays[k])
        digest.update(f"{k}\0{a.dtype}\0{a.shape}\0".encode())
        if a.dtype.kind in "biuf":
            digest.update(a.tobytes())
    source = {"format": "tensors", "path": None, "fingerprint": f"sha256:{digest.hexdigest()}"}
    return _from_arrays(arrays, class_names, where=f"from_tensors({name!r})", name=name, source=source)


# --------------------------------------------------------------------------- benchmarks on the user's data
def is_spec(name: object) -> bool:
    """Whether ``name`` looks like ``KIND:PATH`` (any prefix: an unknown one is :func:`parse_spec`'s error to give)."""
    return isinstance(name, str) and ":" in name


def _option(key: str, value: str, name: str):
    try:
        if key in ("size", "seed"):
            return int(value)
        if key == "test_fraction":
            return float(value)
    except ValueError:
        raise ContinualError(f"benchmark {name!r}: option {key}={value!r} is not a number") from None
    truth = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}
    if value.lower() not in truth:
        raise ContinualError(f"benchmark {name!r}: option grey={value!r} is not accepted; expected yes or no")
    return truth[value.lower()]


def parse_spec(name: str) -> tuple[str, Path, dict]:
    """``"split:/data/flowers,size=32"`` -> ``("split", Path("/data/flowers"), {"size": 32})``.

    The path is taken whole when it exists (so a comma in a folder's name is kept); otherwise
    trailing ``,key=value`` parts with a known key (``size``, ``test_fraction``, ``seed``,
    ``grey``) are options.

    >>> parse_spec("split:/tmp,size=32,grey=no")
    ('split', PosixPath('/tmp'), {'size': 32, 'grey': False})

    Raises:
        ContinualError: an unknown prefix, an empty or missing path, an unknown option; one line
            listing the accepted forms.
    """
    kind, _, rest = name.partition(":")
    if kind not in KINDS:
        raise ContinualError(f"unknown benchmark {name!r}: {kind!r} is not a form of your own data; expected {FORMS}")
    options: dict = {}
    parts = rest.split(",")
    if not Path(rest).expanduser().exists():
        while len(parts) > 1 and "=" in parts[-1]:
            key, _, value = parts[-1].partition("=")
            key = key.strip()
            if key not in OPTIONS:
                if Path(",".join(parts[:-1])).expanduser().exists():
                    raise ContinualError(f"benchmark {name!r}: unknown option {key!r}; expected {', '.join(OPTIONS)}")
                break
            if key in options:
                raise ContinualError(f"benchmark {name!r}: option {key!r} given twice")
            options[key] = _option(key, value.strip(), name)
            parts.pop()
        rest = ",".join(parts)
        options = dict(reversed(options.items()))  # in the order given
    if not rest.strip():
        raise ContinualError(f"benchmark {name!r} names no path; expected {FORMS}")
    path = Path(rest).expanduser()
    if not path.exists():
        raise ContinualError(f"benchmark {name!r}: {rest!r} does not exist; expected {FORMS}")
    return kind, path, options


def load(path: str | os.PathLike, **options) -> UserDataset:
    """:func:`image_folder` for a folder, :func:`npz` for a file (which takes no options)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return image_folder(path, **options)
    if options:
        raise ContinualError(f"{path}: option {', '.join(options)} applies to image folders; an .npz is read as it is")
    return npz(path)


def benchmark(name: str):
    """The :class:`~continual.benchmarks.Benchmark` that ``split:PATH``, ``permuted:PATH`` or
    ``rotated:PATH`` names (see :func:`parse_spec`); the data is read here (once per process).

    Defaults: split-digits' hyperparameters (10 epochs, lr 0.05, batch 32); 5 experiences (a
    split stream: one per class when there are fewer than 5); model ``convnet`` for colour images,
    ``mlp`` for grey images and flat inputs. ``rotated`` needs images.

    Raises:
        ContinualError: for a bad name (see :func:`parse_spec`), unreadable data (see the
            loaders), or ``rotated`` on flat inputs.
    """
    from .benchmarks import Benchmark

    kind, path, options = parse_spec(name)
    dataset = load(path, **options)
    _RECORDS[name] = {"benchmark": kind, "given": str(path), **({"options": options} if options else {}), **dataset.source}
    images = dataset.x_train.dim() == 4
    if kind == "rotated" and not images:
        raise ContinualError(f"benchmark {name!r}: rotated needs images, but {path} holds flat inputs of shape "
                             f"{dataset.input_shape}; use split: or permuted:")
    colour = images and dataset.x_train.shape[1] == 3
    num_classes = dataset.num_classes

    def load_data(*, download: bool = False) -> UserDataset:
        return dataset  # nothing to download; ``download`` may be on for pretrained weights

    shape = "x".join(map(str, dataset.input_shape))
    return Benchmark(
        name, f"your data: {dataset.source['path']} ({dataset.source['format']}, {num_classes} classes, inputs {shape})",
        load=load_data, kind=kind, scenarios=KINDS[kind],
        num_experiences=min(DEFAULT_EXPERIENCES, num_classes) if kind == "split" else DEFAULT_EXPERIENCES,
        model="convnet" if colour else "mlp", epochs=DEFAULT_EPOCHS, lr=DEFAULT_LR, batch_size=DEFAULT_BATCH_SIZE,
        num_classes=num_classes,
    )


def record(benchmark_name: object) -> dict | None:
    """The provenance of a benchmark on the user's data: the form (``benchmark``: split, permuted
    or rotated), the path as given, the options, and its dataset's ``source``; ``None`` for other
    names. It describes the data as this process last read it for that name (what a run built
    from it trained on, even if the files changed since), and reads the data only if never read.
    """
    from .benchmarks import BENCHMARKS

    if not is_spec(benchmark_name) or benchmark_name in BENCHMARKS:
        return None
    if benchmark_name not in _RECORDS:
        benchmark(str(benchmark_name))
    return dict(_RECORDS[benchmark_name])


__all__ = ["FORMS", "IMAGE_EXTENSIONS", "KINDS", "UserDataset", "benchmark", "clear_cache", "from_tensors", "image_folder",
           "is_spec", "load", "npz", "parse_spec", "record"]
