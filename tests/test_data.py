"""File-based datasets on tiny generated files: IDX and CIFAR binary formats, search order,
verified download from a local HTTP server, on-device augmentation, and the named benchmarks.

Nothing here needs the network or the real datasets; the one end-to-end test on the real
Fashion-MNIST files is skipped when Debian's dataset-fashion-mnist package is absent.
"""

import dataclasses
import gzip
import hashlib
import io
import struct
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from continual import BENCHMARKS, ContinualError, RunConfig, Trainer, build_model, make_stream, run
from continual import data
from continual.cli import build_parser, main
from continual.data import RandomCropFlip, cifar10, cifar100, fashion_mnist, mnist, read_idx
from continual.streams import permuted, rotate, rotated

REAL_URLOPEN = urllib.request.urlopen
IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# --------------------------------------------------------------------------- file makers
def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_mnist(folder: Path, *, gz: bool = True, n_train: int = 20, n_test: int = 10, seed: int = 0) -> dict:
    """Four IDX files of random 28x28 images, labels cycling 0..9; returns the arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for stem, arr in arrays.items():
        raw = idx_bytes(arr)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return arrays


def cifar_records(n: int, num_classes: int, *, coarse: bool = False, seed: int = 0) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = (np.arange(n) % num_classes).astype(np.uint8)
    cols = [labels[:, None] // 5, labels[:, None]] if coarse else [labels[:, None]]  # CIFAR-100: (coarse, fine)
    return np.concatenate(cols + [images], axis=1).tobytes(), images.reshape(n, 3, 32, 32), labels


def cifar10_files(n_train_per_batch: int = 4, n_test: int = 10) -> tuple[dict[str, bytes], np.ndarray]:
    files, first = {}, None
    for i in range(1, 6):
        raw, images, _ = cifar_records(n_train_per_batch if i > 1 else 10, 10, seed=i)
        files[f"data_batch_{i}.bin"] = raw
        first = images if first is None else first
    files["test_batch.bin"] = cifar_records(n_test, 10, seed=9)[0]
    files["batches.meta.txt"] = "\n".join(data.CIFAR10_CLASSES).encode() + b"\n\n"
    return files, first


def cifar100_files(n_train: int = 200, n_test: int = 100) -> dict[str, bytes]:
    return {"train.bin": cifar_records(n_train, 100, coarse=True, seed=1)[0],
            "test.bin": cifar_records(n_test, 100, coarse=True, seed=2)[0]}


def write_folder(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    return folder


def write_tar(path: Path, inner: str, files: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in files.items():
            info = tarfile.TarInfo(f"{inner}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No $CONTINUAL_DATA, a private cache folder, no system folders, and no network."""
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(data, "SYSTEM_DIRS", {})

    def no_network(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return tmp_path


# --------------------------------------------------------------------------- IDX
@pytest.mark.parametrize("gz", [True, False])
def test_idx_loads_gzipped_and_plain(isolated, gz):
    arrays = write_mnist(isolated / "d", gz=gz)
    ds = fashion_mnist(root=isolated / "d")
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)
    assert ds.x_train.dtype == torch.uint8 and ds.y_train.dtype == torch.int64
    assert np.array_equal(ds.x_train[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert ds.y_test.tolist() == list(range(10))
    assert ds.class_names[9] == "Ankle boot" and ds.name == "fashion-mnist"
    assert ds.transform.mean == data.FASHION_MNIST_MEAN
    assert mnist(root=isolated / "d").transform.mean == data.MNIST_MEAN


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    good = idx_bytes(np.zeros((3, 28, 28), np.uint8))
    cases = {
        "magic": b"\x00\x00\x09\x03" + good[4:],  # not unsigned bytes
        "short": good[:-5],  # truncated data
        "long": good + b"\x00",  # trailing bytes
        "header": good[:10],  # truncated header
        "gz": gzip.compress(good)[:-20],  # truncated gzip stream
    }
    for name, raw in cases.items():
        path = tmp_path / name
        path.write_bytes(raw)
        with pytest.raises(ContinualError, match=str(path)):
            read_idx(path, ndim=3)
    (tmp_path / "ok").write_bytes(good)
    with pytest.raises(ContinualError, match="expected 00 00 08 01"):
        read_idx(tmp_path / "ok", ndim=1)  # an image file where labels are expected
    assert read_idx(tmp_path / "ok").shape == (3, 28, 28)


def test_idx_images_and_labels_must_agree(isolated):
    write_mnist(isolated / "d", gz=False)
    (isolated / "d" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(7, np.uint8)))
    with pytest.raises(ContinualError, match="10 images but .*7 labels"):
        mnist(root=isolated / "d")
    (isolated / "d" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(10, 12, np.uint8)))
    with pytest.raises(ContinualError, match="label 12 out of range"):
        mnist(root=isolated / "d")


def test_search_order(isolated, monkeypatch):
    root, env, cache, system = (isolated / n for n in ("root", "env", "xdg/continual", "system"))
    write_mnist(system, seed=4)
    monkeypatch.setattr(data, "SYSTEM_DIRS", {"fashion-mnist": (str(system),)})
    expected = fashion_mnist().x_train  # only the system folder has files
    write_mnist(env, seed=5)  # files directly in $CONTINUAL_DATA are not read as any one dataset
    assert data.search_dirs("mnist")[0] == cache / "mnist"
    for folder, seed in ((cache / "fashion-mnist", 3), (env / "fashion-mnist", 2), (root / "fashion-mnist", 1)):
        write_mnist(folder, seed=seed)
    monkeypatch.setenv(data.ENV_VAR, str(env))
    assert not torch.equal(fashion_mnist().x_train, expected)
    assert env not in data.search_dirs("mnist") and env / "mnist" in data.search_dirs("mnist")
    with pytest.raises(ContinualError, match="MNIST not found"):
        mnist()  # Fashion-MNIST-named files lying in $CONTINUAL_DATA are not taken for MNIST
    loaded = {seed: torch.from_numpy(write_mnist(isolated / f"ref{seed}", seed=seed)["train-images-idx3-ubyte"])
              for seed in (1, 2, 3, 4)}
    assert torch.equal(fashion_mnist(root=root).x_train[:, 0], loaded[1])  # root/<name> first
    assert torch.equal(fashion_mnist().x_train[:, 0], loaded[2])  # then $CONTINUAL_DATA/fashion-mnist
    monkeypatch.delenv(data.ENV_VAR)
    assert torch.equal(fashion_mnist().x_train[:, 0], loaded[3])  # then the cache
    assert torch.equal(expected[:, 0], loaded[4])  # and the system folder last
    dirs = data.search_dirs("fashion-mnist", root)
    assert dirs[0] == root / "fashion-mnist" and root in dirs and dirs[-1] == system


def test_missing_files_error_lists_places_and_ways(isolated, monkeypatch):
    monkeypatch.setattr(data, "SYSTEM_DIRS", {"fashion-mnist": ("/nonexistent/fashion-mnist",)})
    (isolated / "nowhere").mkdir()  # an empty data root (a missing one is refused by itself)
    with pytest.raises(ContinualError) as err:
        fashion_mnist(root=isolated / "nowhere")
    msg = str(err.value)
    for place in data.search_dirs("fashion-mnist", isolated / "nowhere"):
        assert str(place) in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "--download" in msg and "--data-root" in msg
    with pytest.raises(ContinualError) as err:
        mnist()
    assert "apt-get" not in str(err.value) and "--download" in str(err.value)


@pytest.mark.parametrize("split", ["train", "t10k"])
def test_idx_files_with_no_samples_name_the_file(isolated, split):
    write_mnist(isolated / "d", gz=False)
    empty = isolated / "d" / f"{split}-images-idx3-ubyte"
    empty.write_bytes(idx_bytes(np.zeros((0, 28, 28), np.uint8)))  # a valid header, 0 images
    with pytest.raises(ContinualError, match=f"^{empty}: holds no samples \\(its header says 0x28x28\\)"):
        mnist(root=isolated / "d")
    (isolated / "d" / f"{split}-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(0, np.uint8)))
    with pytest.raises(ContinualError, match="holds no samples"):
        mnist(root=isolated / "d")


def test_a_data_root_that_is_missing_or_a_file_is_refused_not_passed_over(isolated, monkeypatch):
    write_mnist(isolated / "system", seed=4)
    monkeypatch.setattr(data, "SYSTEM_DIRS", {"fashion-mnist": (str(isolated / "system"),)})
    assert fashion_mnist().x_train.shape[0] == 20  # no root: the system folder is read
    (isolated / "afile").write_text("x")
    for loader in (fashion_mnist, mnist, cifar10):
        with pytest.raises(ContinualError, match=f"^data root '{isolated}/missing' does not exist; give an existing folder, or add --download"):
            loader(root=isolated / "missing")
    for loader in (fashion_mnist, mnist):
        with pytest.raises(ContinualError, match=f"^data root '{isolated}/afile' is a file; give a folder holding the dataset's files$"):
            loader(root=isolated / "afile")
    with pytest.raises(ContinualError, match="data root '' is empty"):
        fashion_mnist(root="")
    assert data.check_root(isolated / "new", download=True) == isolated / "new"  # a download creates it
    assert main(["run", "--benchmark", "split-fmnist", "--data-root", str(isolated / "afile"), "--out", str(isolated / "runs")]) == 2


# --------------------------------------------------------------------------- CIFAR
@pytest.mark.parametrize("packed", ["tar", "folder", "flat"])
def test_cifar10_binary_archive_and_folder(isolated, packed):
    files, first = cifar10_files()
    if packed == "tar":
        write_tar(isolated / "r" / "cifar-10-binary.tar.gz", "cifar-10-batches-bin", files)
    elif packed == "folder":
        write_folder(isolated / "r" / "cifar10" / "cifar-10-batches-bin", files)
    else:
        write_folder(isolated / "r", files)
    ds = cifar10(root=isolated / "r")
    assert ds.x_train.shape == (26, 3, 32, 32) and ds.x_test.shape == (10, 3, 32, 32)
    assert ds.x_train.dtype == torch.uint8 and ds.y_train.dtype == torch.int64
    assert np.array_equal(ds.x_train[:10].numpy(), first)  # channel-major: R plane, G plane, B plane
    assert ds.y_train[:10].tolist() == list(range(10)) and ds.num_classes == 10
    assert ds.class_names == data.CIFAR10_CLASSES
    assert isinstance(ds.transform.augment, RandomCropFlip) and ds.transform.mean == data.CIFAR10_MEAN
    assert cifar10(root=isolated / "r", augment=False).transform.augment is None


def test_cifar100_fine_and_coarse(isolated):
    write_tar(isolated / "r" / "cifar-100-binary.tar.gz", "cifar-100-binary", cifar100_files())
    fine = cifar100(root=isolated / "r")
    assert fine.x_train.shape == (200, 3, 32, 32) and fine.num_classes == 100
    assert fine.y_train[:3].tolist() == [0, 1, 2]
    coarse = cifar100(root=isolated / "r", labels="coarse")
    assert coarse.num_classes == 20 and coarse.y_train[:6].tolist() == [0, 0, 0, 0, 0, 1]
    with pytest.raises(ContinualError, match="'fine' or 'coarse'"):
        cifar100(root=isolated / "r", labels="medium")


def test_cifar_corrupt_files_name_the_file(isolated):
    files, _ = cifar10_files()
    tar = write_tar(isolated / "a" / "cifar-10-binary.tar.gz", "cifar-10-batches-bin", files)
    tar.write_bytes(tar.read_bytes()[: len(tar.read_bytes()) // 2])
    with pytest.raises(ContinualError, match=f"{tar}.*corrupt or truncated"):
        cifar10(root=isolated / "a")
    short = write_folder(isolated / "b", {**files, "data_batch_3.bin": files["data_batch_3.bin"][:-1]})
    with pytest.raises(ContinualError, match=f"{short / 'data_batch_3.bin'}.*whole number of 3073-byte records"):
        cifar10(root=short)
    bad_label = bytes([42]) + files["test_batch.bin"][1:]
    write_folder(isolated / "c", {**files, "test_batch.bin": bad_label})
    with pytest.raises(ContinualError, match="test_batch.bin.*label 42"):
        cifar10(root=isolated / "c")
    wrong = write_tar(isolated / "d" / "cifar-10-binary.tar.gz", "something-else", files)
    with pytest.raises(ContinualError, match=f"{wrong}: not the CIFAR-10 binary archive"):
        cifar10(root=isolated / "d")


def test_cifar_python_distribution_is_refused(isolated, monkeypatch):
    def no_unpickling(*args, **kwargs):
        raise AssertionError("something was unpickled")

    monkeypatch.setattr("pickle.load", no_unpickling)
    monkeypatch.setattr("pickle.loads", no_unpickling)
    (isolated / "p" / "cifar-10-batches-py").mkdir(parents=True)
    with pytest.raises(ContinualError, match="pickles.*binary distribution cifar-10-binary.tar.gz"):
        cifar10(root=isolated / "p")
    archive = write_tar(isolated / "q" / "renamed.tar.gz", "cifar-10-batches-py", {"data_batch_1": b"not read"})
    with pytest.raises(ContinualError, match="pickles"):
        cifar10(root=archive)
    py = write_tar(isolated / "q" / "cifar-100-python.tar.gz", "cifar-100-python", {"train": b"not read"})
    with pytest.raises(ContinualError, match="cifar-100-binary.tar.gz"):
        cifar100(root=py)


# --------------------------------------------------------------------------- download
def test_download_verifies_checksum_and_installs(isolated, http_server, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", REAL_URLOPEN)
    served, url = http_server
    write_mnist(served)
    sums = {f"{s}.gz": hashlib.sha256((served / f"{s}.gz").read_bytes()).hexdigest() for s in IDX_STEMS}
    monkeypatch.setattr(data, "SOURCES", {"mnist": data.Source(sums, (url + "missing/", url))})  # first mirror 404s
    ds = mnist(root=isolated / "dl", download=True)
    assert ds.x_train.shape == (20, 1, 28, 28)
    assert sorted(p.name for p in (isolated / "dl" / "mnist").iterdir()) == sorted(sums)  # no temporary files
    assert mnist(root=isolated / "dl", download=True).x_train.shape == (20, 1, 28, 28)  # found: no second download


def test_download_with_wrong_checksum_leaves_nothing(isolated, http_server, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", REAL_URLOPEN)
    served, url = http_server
    write_mnist(served)
    sums = {f"{s}.gz": "0" * 64 for s in IDX_STEMS}
    monkeypatch.setattr(data, "SOURCES", {"fashion-mnist": data.Source(sums, (url,))})
    with pytest.raises(ContinualError, match="SHA-256 .* does not match"):
        fashion_mnist(root=isolated / "dl", download=True)
    assert list((isolated / "dl" / "fashion-mnist").iterdir()) == []


def test_interrupted_download_leaves_nothing(isolated, monkeypatch):
    class Broken(io.BytesIO):
        def read(self, n=-1):
            if self.tell() > 10:
                raise ConnectionResetError("connection reset")
            return super().read(5)

    monkeypatch.setattr(data, "SOURCES", {"cifar10": data.Source({"cifar-10-binary.tar.gz": "0" * 64}, ("http://x/",))})
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Broken(b"x" * 100))
    with pytest.raises(ContinualError, match="connection reset"):
        cifar10(root=isolated / "dl", download=True)
    assert not any((isolated / "dl" / "cifar10").iterdir())
    with pytest.raises(ContinualError, match="connection reset"):
        data.download("cifar10", isolated / "dl", opener=lambda url, timeout: Broken(b"x" * 100))
    assert not any((isolated / "dl" / "cifar10").iterdir())


# --------------------------------------------------------------------------- augmentation
def test_crop_flip_keeps_shape_dtype_and_is_seeded():
    x = torch.randn(64, 3, 32, 32)
    aug = RandomCropFlip(padding=4, fill=(-1.0, -2.0, -3.0))
    out = aug(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, aug(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, aug(x, torch.Generator().manual_seed(1)))
    u8 = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    assert RandomCropFlip(fill=(0.0,))(u8, torch.Generator().manual_seed(0)).dtype == torch.uint8


def test_flip_is_an_exact_mirror():
    x = torch.arange(2 * 1 * 3 * 4, dtype=torch.float32).view(2, 1, 3, 4).repeat(32, 1, 1, 1)
    out = RandomCropFlip(padding=0, flip=True)(x, torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and same.any() and mirrored.any()


def test_crop_is_a_window_of_the_padded_image():
    h = w = 6
    x = (torch.arange(h * w, dtype=torch.float32) + 1).view(1, 1, h, w).repeat(40, 2, 1, 1)
    x[:, 1] *= -1
    out = RandomCropFlip(padding=2, flip=False, fill=(0.5, -0.5))(x, torch.Generator().manual_seed(3))
    padded = torch.stack([torch.nn.functional.pad(x[:, 0], (2, 2, 2, 2), value=0.5),
                          torch.nn.functional.pad(x[:, 1], (2, 2, 2, 2), value=-0.5)], 1)
    offsets = set()
    for i in range(len(x)):
        hits = [(a, b) for a in range(5) for b in range(5) if torch.equal(out[i], padded[i, :, a : a + h, b : b + w])]
        assert len(hits) == 1
        offsets.add(hits[0])
    assert len(offsets) > 5  # offsets vary over the batch
    with pytest.raises(ContinualError, match="needs images"):
        RandomCropFlip()(torch.zeros(4, 10))


@pytest.mark.gpu
def test_crop_flip_on_cuda_with_device_generator():
    x = torch.randn(16, 3, 32, 32, device="cuda")
    g = lambda: torch.Generator(device="cuda").manual_seed(0)  # noqa: E731
    aug = RandomCropFlip(fill=(-1.0, -1.0, -1.0))
    assert torch.equal(aug(x, g()), aug(x, g())) and aug(x, g()).device == x.device


# --------------------------------------------------------------------------- benchmarks
@pytest.fixture
def all_data(isolated):
    """Tiny files for every file-based dataset under one root."""
    root = isolated / "all"
    write_mnist(root / "mnist", n_train=30, n_test=20)
    write_mnist(root / "fashion-mnist", gz=False, n_train=30, n_test=20)
    write_tar(root / "cifar10" / "cifar-10-binary.tar.gz", "cifar-10-batches-bin", cifar10_files()[0])
    write_folder(root / "cifar100" / "cifar-100-binary", cifar100_files())
    return root


def test_every_named_benchmark_builds_from_generated_files(all_data):
    expected = {"split-mnist", "split-fmnist", "permuted-mnist", "permuted-fmnist", "rotated-mnist", "rotated-fmnist",
                "split-cifar10", "split-cifar100", "split-cifar100-20", "split-digits"}
    assert expected <= set(BENCHMARKS)
    for name, bench in BENCHMARKS.items():
        if name.endswith("digits"):
            continue
        stream = make_stream(name, root=str(all_data), num_experiences=3 if bench.kind != "split" else None)
        assert len(stream) == (3 if bench.kind != "split" else bench.num_experiences), name
        assert stream.scenario == bench.default_scenario
    cifar = make_stream("split-cifar100", root=str(all_data))
    assert len(cifar) == 10 and cifar[0].classes == tuple(range(10)) and cifar.num_classes == 100
    assert len(make_stream("split-cifar100", root=str(all_data), num_experiences=20)[0].classes) == 5
    assert make_stream("split-mnist", root=str(all_data), scenario="task")[4].task_id == 4


def _column_map(x: torch.Tensor, base: torch.Tensor) -> list[int]:
    """The permutation ``perm`` with ``x == base[:, perm]`` (columns of random images are unique)."""
    where = {bytes(col.tolist()): k for k, col in enumerate(base.T)}
    return [where[bytes(col.tolist())] for col in x.T]


def test_permuted_and_rotated_benchmarks(all_data):
    base = mnist(root=all_data)
    stream = make_stream("permuted-mnist", root=str(all_data), num_experiences=4, seed=1)
    assert len(stream) == 4
    perms = []
    for e in stream:  # one fixed permutation per experience, the same for train and test
        perm = _column_map(e.x_train.flatten(1), base.x_train.flatten(1))
        assert torch.equal(e.x_test.flatten(1), base.x_test.flatten(1)[:, perm])
        assert torch.equal(e.y_train, base.y_train) and e.scenario == "domain"
        perms.append(perm)
    assert len({tuple(p) for p in perms}) == 4 and perms[0] != list(range(784))
    again = make_stream("permuted-mnist", root=str(all_data), num_experiences=4, seed=1)
    assert all(torch.equal(a.x_train, b.x_train) for a, b in zip(stream, again))  # seeded
    first = permuted(base, 3, identity_first=True)
    assert torch.equal(first[0].x_train, base.x_train) and not torch.equal(first[1].x_train, base.x_train)
    rot = make_stream("rotated-fmnist", root=str(all_data), num_experiences=3)
    fm = fashion_mnist(root=all_data)
    for i, e in enumerate(rot):
        assert torch.equal(e.x_train, rotate(fm.x_train, 180.0 * i / 3))
        assert torch.equal(e.x_test, rotate(fm.x_test, 180.0 * i / 3))
    right = rotated(fm, 3, angles=[0, 90, 180])  # configured angles, checked against exact rotations
    assert torch.equal(right[0].x_train, fm.x_train)
    assert torch.equal(right[1].x_train, torch.rot90(fm.x_train, 1, (2, 3)))  # counter-clockwise
    assert torch.equal(right[2].x_test, fm.x_test.flip(2, 3))


def test_loader_options_through_make_stream(all_data):
    assert len(make_stream("split-digits", root=str(all_data))) == 5  # bundled data: root is ignored
    with pytest.raises(ContinualError, match="bundled data"):
        make_stream("split-digits", download=True)
    with pytest.raises(ContinualError, match="does not take colour"):
        make_stream("split-mnist", root=str(all_data), colour=True)
    assert make_stream("split-cifar10", root=str(all_data), augment=False)[0].transform.augment is None


def test_cifar_run_augments_training_batches_deterministically(all_data):
    cfg = RunConfig(benchmark="split-cifar10", epochs=1, batch_size=8, device="cpu", data_root=str(all_data))
    first, second = run(cfg), run(cfg)
    assert first.acc_matrix == second.acc_matrix and first.config["model"] == "convnet"
    calls = []
    experience = make_stream("split-cifar10", root=str(all_data))[0]
    crop = experience.transform.augment
    spy = dataclasses.replace(experience.transform, augment=lambda x, g: calls.append(g) or crop(x, g))
    trainer = Trainer(build_model("convnet", (3, 32, 32), 10), epochs=1, batch_size=8, device="cpu")
    trainer.fit(dataclasses.replace(experience, transform=spy))
    assert calls and all(g is trainer.augment_generator for g in calls)


def test_run_and_cli_with_data_root(all_data, tmp_path, capsys):
    result = run(RunConfig(benchmark="split-fmnist", epochs=1, batch_size=16, device="cpu", data_root=str(all_data)))
    assert len(result.acc_matrix) == 5 and result.config["data_root"] == str(all_data)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    help_text = capsys.readouterr().out
    assert "--data-root" in help_text and "--download" in help_text and "dataset-fashion-mnist" in help_text
    code = main(["run", "--benchmark", "split-mnist", "--data-root", str(all_data), "--batch-size", "16",
                 "--device", "cpu", "--quiet", "--out", str(tmp_path / "runs")])
    assert code == 0 and "split-mnist" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["run", "--benchmark", "split-cifar10", "--data-root", str(tmp_path / "empty"), "--quiet"]) == 2
    assert "CIFAR-10 not found" in capsys.readouterr().err


FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.mark.skipif(not FASHION.exists(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_split_fmnist_end_to_end_from_the_debian_package(monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: a second thread mostly adds contention
    try:
        result = run(RunConfig(benchmark="split-fmnist", epochs=1, batch_size=512, lr=0.2, device="cpu"))
    finally:
        torch.set_num_threads(threads)
    acc = np.array(result.acc_matrix)
    assert acc.shape == (5, 5)
    assert acc[np.arange(5), np.arange(5)].min() > 0.8  # each new pair of classes is learned
    assert result.metrics["final_average_accuracy"] < 0.5  # and the earlier ones forgotten
