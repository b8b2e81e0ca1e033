"""Tests for continual.user_data: image folders, .npz files and tensors as datasets and benchmarks."""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from continual import user_data
from continual.benchmarks import get_benchmark, make_stream
from continual.errors import ContinualError
from continual.experiment import RunConfig
from continual.user_data import from_tensors, image_folder, npz, parse_spec


@pytest.fixture(autouse=True)
def fresh_cache():
    user_data.clear_cache()
    yield
    user_data.clear_cache()


def _image(path: Path, value: int, *, size=(8, 8), mode="RGB", fmt=None) -> None:
    """A small image whose pixels are ``value`` plus a little seeded noise (so classes differ)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([value, zlib.crc32(str(path).encode())])
    h, w = size
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    a = np.clip(value + rng.integers(0, 20, shape), 0, 255).astype(np.uint8)
    Image.fromarray(a, mode).save(path, format=fmt)


def _folder(root: Path, classes=("cat", "dog", "emu"), per_class=5, **kw) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            _image(root / name / f"{i}.png", 40 + 80 * c, **kw)
    return root


def _error(match: str):
    return pytest.raises(ContinualError, match=match)


def _one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


# --------------------------------------------------------------------------- image folders
def test_class_folders_rgb(tmp_path):
    root = _folder(tmp_path / "pets", classes=("dog", "cat", "emu"))  # created out of order: sorted by name
    ds = image_folder(root)
    assert ds.class_names == ("cat", "dog", "emu")
    assert ds.x_train.dtype == torch.uint8 and ds.x_train.shape[1:] == (3, 8, 8)
    assert len(ds.x_train) + len(ds.x_test) == 15
    # round(5 * 0.2) = 1 test image per class
    assert torch.bincount(ds.y_test).tolist() == [1, 1, 1] and torch.bincount(ds.y_train).tolist() == [4, 4, 4]
    # labels follow the sorted names: class "cat" (label 0) was drawn around pixel value 40 + 80 * 1
    assert 115 < ds.x_train[ds.y_train == 0].float().mean() < 150
    # normalisation: the training pixels' per-channel mean and std in [0, 1]
    scaled = ds.x_train.double() / 255
    assert np.allclose(ds.transform.mean, scaled.mean(dim=(0, 2, 3)).tolist())
    assert np.allclose(ds.transform.std, scaled.std(dim=(0, 2, 3), unbiased=False).tolist())
    assert ds.transform.scale == pytest.approx(1 / 255)
    src = ds.source
    assert src["path"] == str(root.resolve()) and src["layout"] == "class folders" and src["files"] == 15
    assert src["fingerprint"].startswith("sha256:") and src["resize"] == "none (every image 8x8)"
    assert src["class_names"] == ["cat", "dog", "emu"] and "RGB" in src["colour"] and "seed 0" in src["split"]


def test_split_is_seeded_and_fraction_applies(tmp_path):
    root = _folder(tmp_path / "d", per_class=10)
    a, b = image_folder(root), image_folder(root, seed=1)
    user_data.clear_cache()
    again = image_folder(root)
    assert torch.equal(a.x_test, again.x_test) and not torch.equal(a.x_test, b.x_test)
    half = image_folder(root, test_fraction=0.5)
    assert torch.bincount(half.y_test).tolist() == [5, 5, 5]


def test_train_test_layout_grey_jpeg(tmp_path):
    root = tmp_path / "digits"
    for split, n in (("train", 3), ("test", 2)):
        for c, name in enumerate(("one", "zero")):
            for i in range(n):
                _image(root / split / name / f"{i}.jpg", 30 + 150 * c, mode="L", fmt="JPEG")
    ds = image_folder(root)
    assert ds.x_train.shape == (6, 1, 8, 8) and ds.x_test.shape == (4, 1, 8, 8)
    assert ds.class_names == ("one", "zero") and ds.y_test.tolist() == [0, 0, 1, 1]
    assert ds.source["layout"] == "train/ and test/ folders" and "grey" in ds.source["colour"]
    assert len(ds.transform.mean) == 1


def test_mixed_colour_is_rgb_and_grey_option(tmp_path):
    root = _folder(tmp_path / "m", classes=("a", "b"), per_class=3)
    _image(root / "a" / "grey.png", 100, mode="L")
    ds = image_folder(root)
    assert ds.x_train.shape[1] == 3
    grey_img = np.array(Image.open(root / "a" / "grey.png"))
    stored = torch.cat([ds.x_train, ds.x_test])
    # the grey image became three equal channels
    assert any(torch.equal(x, torch.from_numpy(grey_img)[None].expand(3, 8, 8)) for x in stored)
    forced = image_folder(root, grey=True)
    assert forced.x_train.shape[1] == 1 and "grey=True" in forced.source["colour"]
    rgb = image_folder(_folder(tmp_path / "g", classes=("a", "b"), per_class=2, mode="L"), grey=False)
    assert rgb.x_train.shape[1] == 3


def test_resize(tmp_path):
    root = _folder(tmp_path / "r", classes=("a", "b"), per_class=3)
    _image(root / "b" / "big.png", 200, size=(12, 10))
    with _error(r"big\.png: 10x12 pixels, but .*0\.png is 8x8; images of differing sizes need size=N") as e:
        image_folder(root)
    _one_line(e)
    ds = image_folder(root, size=6)
    assert ds.x_train.shape[1:] == (3, 6, 6)
    assert "to 6x6" in ds.source["resize"] and "bilinear" in ds.source["resize"]
    assert image_folder(root, size=(4, 5)).x_train.shape[2:] == (4, 5)
    with _error("size=0 is not accepted"):
        image_folder(root, size=0)
    with _error("test_fraction=1.5 is not accepted"):
        image_folder(root, size=6, test_fraction=1.5)


def test_unknown_extensions_are_ignored(tmp_path):
    root = _folder(tmp_path / "x", classes=("a", "b"), per_class=2)
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "LICENSE").write_text("top-level files that are not images are ignored")
    (root / "a" / ".DS_Store").write_bytes(b"\0\1")
    ds = image_folder(root)
    assert ds.source["files"] == 4 and ds.source["ignored"] == 2


def test_unreadable_image_is_named(tmp_path):
    root = _folder(tmp_path / "u", classes=("a", "b"), per_class=2)
    (root / "b" / "broken.png").write_bytes(b"this is not a png")
    with _error(r"b/broken\.png: not a readable image \(UnidentifiedImageError") as e:
        image_folder(root)
    _one_line(e)


def test_truncated_image_is_named(tmp_path):
    root = _folder(tmp_path / "t", classes=("a", "b"), per_class=2)
    good = (root / "a" / "0.png").read_bytes()
    (root / "a" / "0.png").write_bytes(good[: len(good) // 2])
    with _error(r"a/0\.png: not a readable image"):
        image_folder(root)


@pytest.mark.parametrize("make, match", [
    (lambda r: r.mkdir(), r"is an empty folder; expected the layout root/<class name>/<image>"),
    (lambda r: (r.mkdir(), (r / "notes.txt").write_text("x")), r"holds no class folders \(only 'notes.txt'\)"),
    (lambda r: (_folder(r, classes=("a", "b"), per_class=2), (r / "c").mkdir()), r"/c: class 'c' has no images"),
    (lambda r: (_folder(r, classes=("a", "b"), per_class=2), _image(r / "stray.png", 10)),
     r"stray\.png: an image outside any class folder"),
    (lambda r: _folder(r / "train", classes=("a", "b"), per_class=2), r"has a train/ folder but no test/ folder"),
    (lambda r: (_folder(r / "train", classes=("a", "b"), per_class=2), _folder(r / "test", classes=("a",), per_class=2)),
     r"test has no folder for class 'b'"),
    (lambda r: (_folder(r / "train", classes=("a", "b"), per_class=2), _folder(r / "test", classes=("a", "b"), per_class=2),
                (r / "extra").mkdir()), r"holds train/ and test/ and also extra/"),
    (lambda r: (_folder(r, classes=("a",), per_class=3), _image(r / "b" / "0.png", 9)), r"/b: class 'b' has 1 image"),
    (lambda r: _folder(r, classes=("only",), per_class=3), r"holds one class folder \('only'\)"),
])
def test_broken_folders(tmp_path, make, match):
    root = tmp_path / "data"
    make(root)
    with _error(match) as e:
        image_folder(root)
    _one_line(e)


def test_missing_folder(tmp_path):
    with _error(r"nope: no such folder"):
        image_folder(tmp_path / "nope")


def test_cache_reads_once_and_sees_changes(tmp_path, monkeypatch):
    root = _folder(tmp_path / "c", classes=("a", "b"), per_class=2)
    reads = []
    real = user_data._read_folder
    monkeypatch.setattr(user_data, "_read_folder", lambda *a, **k: reads.append(1) or real(*a, **k))
    first = image_folder(root)
    assert image_folder(root) is first and len(reads) == 1
    assert image_folder(root, size=4) is not first and len(reads) == 2  # other options: another dataset
    os.utime(root / "a" / "0.png", ns=(1, 1))  # the same bytes, another modification time: read again
    touched = image_folder(root)
    assert touched is not first and len(reads) == 3 and touched.source["fingerprint"] == first.source["fingerprint"]
    _image(root / "a" / "0.png", 250, size=(8, 8))  # new content
    changed = image_folder(root)
    assert changed is not touched and len(reads) == 4
    assert changed.source["fingerprint"] != first.source["fingerprint"]
    assert image_folder(root) is changed and len(reads) == 4


# --------------------------------------------------------------------------- .npz
def _arrays(n_train=12, n_test=6, shape=(8, 8), dtype=np.uint8, labels=(0, 1, 2)):
    rng = np.random.default_rng(0)
    y_train = np.resize(np.asarray(labels), n_train)
    y_test = np.resize(np.asarray(labels), n_test)
    if np.dtype(dtype).kind == "f":
        x_train, x_test = rng.normal(size=(n_train, *shape)).astype(dtype), rng.normal(size=(n_test, *shape)).astype(dtype)
    else:
        x_train, x_test = rng.integers(0, 256, (n_train, *shape)).astype(dtype), rng.integers(0, 256, (n_test, *shape)).astype(dtype)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


@pytest.mark.parametrize("shape, expected, how", [
    ((8, 8), (1, 8, 8), "grey images (N, H, W)"),
    ((3, 8, 8), (3, 8, 8), "images (N, C, H, W)"),
    ((8, 8, 3), (3, 8, 8), "images (N, H, W, C)"),
    ((1, 8, 8), (1, 8, 8), "images (N, C, H, W)"),
    ((64,), (64,), "flat (N, D)"),
])
def test_npz_layouts(tmp_path, shape, expected, how):
    arrays = _arrays(shape=shape)
    np.savez(tmp_path / "d.npz", **arrays)
    ds = npz(tmp_path / "d.npz")
    assert ds.input_shape == expected and ds.x_train.dtype == torch.uint8
    assert ds.source["inputs"].startswith(how) and ds.name == "d"
    if shape == (8, 8, 3):  # channels last moved first, pixel for pixel
        assert torch.equal(ds.x_train[2, :, 1, 5], torch.from_numpy(arrays["x_train"][2, 1, 5]))
    assert ds.class_names == ("0", "1", "2") and ds.source["labels"] == "as given (0..C-1)"


def test_npz_float_features_and_names(tmp_path):
    arrays = _arrays(shape=(5,), dtype=np.float64, labels=(10, 3, 7))
    np.savez(tmp_path / "f.npz", **arrays)
    ds = npz(tmp_path / "f.npz")
    assert ds.x_train.dtype == torch.float32 and ds.input_shape == (5,) and ds.transform.scale == 1.0
    assert "no uint8 conversion" in ds.source["inputs"]
    assert ds.class_names == ("3", "7", "10")  # renumbered in sorted order, originals kept as names
    assert ds.y_train[:3].tolist() == [2, 0, 1]
    named = dict(_arrays(), class_names=np.array(["ant", "bee", "cow"]))
    np.savez(tmp_path / "n.npz", **named)
    assert npz(tmp_path / "n.npz").class_names == ("ant", "bee", "cow")
    assert npz(tmp_path / "n.npz").source["fingerprint"].startswith("sha256:")


def _broken(tmp_path, **changes):
    arrays = _arrays()
    for k, v in changes.items():
        if v is None:
            del arrays[k]
        else:
            arrays[k] = v
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("changes, match", [
    ({"y_test": None}, r"bad\.npz: no array 'y_test' \(it holds x_train, y_train, x_test\)"),
    ({"y_train": np.zeros(11, dtype=np.int64)}, r"bad\.npz: x_train has 12 samples but y_train has 11 labels"),
    ({"x_train": np.full((12, 4), np.nan)}, r"bad\.npz: x_train\[0\] holds NaN or infinity"),
    ({"y_train": np.zeros(12) + 0.5}, r"y_train has dtype float64 .* expected integer class labels"),
    ({"x_train": np.zeros((12, 8, 8), dtype=np.complex64)}, r"x_train has dtype complex64"),
    ({"x_train": np.zeros((12, 8, 8), dtype=bool)}, r"x_train has dtype bool"),
    ({"x_train": np.full((12, 8, 8), 300, dtype=np.int32)}, r"x_train holds integers from 300 to 300"),
    ({"x_test": np.zeros((6, 7, 8), dtype=np.uint8)}, r"x_test holds uint8 inputs of shape \(1, 7, 8\) but x_train"),
    ({"x_train": np.zeros((12, 2, 5, 5), dtype=np.uint8)}, r"x_train has shape \(12, 2, 5, 5\); expected"),
    ({"y_test": np.full(6, 9)}, r"y_test has label 9, which y_train has not"),
    ({"class_names": np.array(["a", "b"])}, r"label 2 has no class name"),
    ({"class_names": np.array(["a", 1, None], dtype=object)}, r"bad\.npz: holds object arrays \(pickles\), which are not read"),
])
def test_npz_broken(tmp_path, changes, match):
    path = _broken(tmp_path, **changes)
    with _error(match) as e:
        npz(path)
    _one_line(e)


def test_npz_corrupt_files(tmp_path):
    good = _broken(tmp_path)
    raw = good.read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with _error(r"cut\.npz: corrupt or unreadable \.npz"):
        npz(tmp_path / "cut.npz")
    (tmp_path / "junk.npz").write_bytes(b"\x00garbage" * 10)
    with _error(r"junk\.npz: not an \.npz file \(not a zip archive\)"):
        npz(tmp_path / "junk.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with _error(r"one\.npy: not an \.npz file \(a single \.npy array\)"):
        npz(tmp_path / "one.npy")
    with zipfile.ZipFile(tmp_path / "flipped.npz", "w") as z:  # a member whose bytes are not an array
        for k in ("x_train", "y_train", "x_test", "y_test"):
            z.writestr(f"{k}.npy", b"\x93NUMPY garbage")
    with _error(r"flipped\.npz: corrupt or unreadable \.npz"):
        npz(tmp_path / "flipped.npz")
    with _error(r"missing\.npz: no such file"):
        npz(tmp_path / "missing.npz")


# --------------------------------------------------------------------------- tensors
def test_from_tensors():
    x_train = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    y_train = torch.tensor([0, 1] * 5)
    ds = from_tensors(x_train, y_train, x_train[:4], y_train[:4], class_names=["no", "yes"], name="mine")
    assert ds.name == "mine" and ds.class_names == ("no", "yes") and torch.equal(ds.x_train, x_train)
    assert ds.source["format"] == "tensors" and len(ds.transform.mean) == 3
    with _error(r"from_tensors\('mine'\): x_train has 10 samples but y_train has 3 labels"):
        from_tensors(x_train, y_train[:3], x_train, y_train, name="mine")
    with _error(r"class 1 \('yes'\) has no training samples"):
        from_tensors(x_train, torch.zeros(10, dtype=torch.int64), x_train, torch.zeros(10, dtype=torch.int64),
                     class_names=["no", "yes"])


# --------------------------------------------------------------------------- benchmark names
def test_parse_spec(tmp_path):
    root = _folder(tmp_path / "a,b", classes=("a", "b"), per_class=2)
    assert parse_spec(f"split:{root}") == ("split", root, {})  # a comma in an existing path is kept
    assert parse_spec(f"rotated:{root},size=4,grey=no,test_fraction=0.5") == ("rotated", root, {"size": 4, "grey": False,
                                                                                               "test_fraction": 0.5})
    with _error(r"unknown benchmark 'fold:.*': 'fold' is not a form of your own data; expected split:PATH, permuted:PATH or rotated:PATH"):
        parse_spec(f"fold:{root}")
    with _error(r"does not exist; expected split:PATH"):
        parse_spec(f"split:{tmp_path / 'missing'}")
    with _error(r"unknown option 'colour'; expected size, test_fraction, seed, grey"):
        parse_spec(f"split:{root},colour=red")
    with _error(r"option size='x' is not a number"):
        parse_spec(f"split:{root},size=x")
    with _error(r"names no path"):
        parse_spec("split:")


def test_get_benchmark_defaults(tmp_path):
    rgb = _folder(tmp_path / "rgb", classes=("a", "b", "c"), per_class=3)
    grey = _folder(tmp_path / "grey", classes=tuple("abcdefg"), per_class=2, mode="L")
    b = get_benchmark(f"split:{rgb}")
    assert (b.model, b.num_classes, b.num_experiences, b.scenarios) == ("convnet", 3, 3, ("class", "task"))
    assert (b.epochs, b.lr, b.batch_size) == (10, 0.05, 32)  # split-digits'
    g = get_benchmark(f"permuted:{grey}")
    assert (g.model, g.num_classes, g.num_experiences, g.scenarios) == ("mlp", 7, 5, ("domain",))
    arrays = _arrays(shape=(6,), dtype=np.float32)
    np.savez(tmp_path / "feat.npz", **arrays)
    with _error(r"rotated needs images, but .*feat\.npz holds flat inputs"):
        get_benchmark(f"rotated:{tmp_path / 'feat.npz'}")
    with _error(r"option size applies to image folders"):
        get_benchmark(f"split:{tmp_path / 'feat.npz'},size=3")
    with _error(r"unknown benchmark 'split-nope'; expected one of split-digits.*, or split:PATH, permuted:PATH or rotated:PATH"):
        get_benchmark("split-nope")


def test_streams_on_user_data(tmp_path):
    root = _folder(tmp_path / "s", classes=("a", "b", "c", "d"), per_class=3, mode="L")
    s = make_stream(f"split:{root}", num_experiences=2)
    assert len(s) == 2 and s.num_classes == 4 and s.name == f"split:{root}"
    assert make_stream(f"permuted:{root}", num_experiences=2)[1].x_train.shape[1:] == (1, 8, 8)
    rot = make_stream(f"rotated:{root}", num_experiences=3)
    assert len(rot) == 3 and not torch.equal(rot[0].x_train, rot[1].x_train)
    assert len(make_stream(f"split:{root}", download=True)) == 4  # --download is for pretrained weights: nothing to fetch here
    with _error(r"does not take augment"):
        make_stream(f"split:{root}", augment=False)


def test_run_config_checks_against_the_data(tmp_path):
    root = _folder(tmp_path / "r", classes=("a", "b", "c"), per_class=2)
    cfg = RunConfig(benchmark=f"split:{root}", device="cpu").resolve()
    assert (cfg.model, cfg.num_experiences, cfg.epochs) == ("convnet", 3, 10)
    with _error(r"num_experiences=4 is out of range: benchmark 'split:.*' has 3 classes"):
        RunConfig(benchmark=f"split:{root}", num_experiences=4, device="cpu").resolve()


# --------------------------------------------------------------------------- the command line, end to end
def test_cli_run_on_an_image_folder(tmp_path, capsys, monkeypatch):
    from continual.cli import main

    root = _folder(tmp_path / "flowers", classes=("daisy", "rose", "tulip", "iris"), per_class=4)
    out = tmp_path / "runs"
    reads = []
    real = user_data._read_folder
    monkeypatch.setattr(user_data, "_read_folder", lambda *a, **k: reads.append(1) or real(*a, **k))
    rc = main(["run", "--benchmark", f"split:{root}", "--num-experiences", "2", "--epochs", "1", "--out", str(out),
               "--device", "cpu", "--quiet", "--seeds", "2", "--batched", "off"])
    assert rc == 0 and len(reads) == 1  # both seeds' runs share one read of the folder
    path, _ = sorted(out.glob("*.json"))
    assert path.name.startswith("split_") and path.name.endswith("_seed0.json")
    result = json.loads(path.read_text())
    assert np.asarray(result["acc_matrix"]).shape == (2, 2)
    assert result["config"]["benchmark"] == f"split:{root}" and result["config"]["model"] == "convnet"
    dataset = result["provenance"]["dataset"]
    assert dataset["path"] == str(root.resolve()) and dataset["benchmark"] == "split"
    assert dataset["class_names"] == ["daisy", "iris", "rose", "tulip"]
    assert dataset["fingerprint"] == image_folder(root).source["fingerprint"]
    capsys.readouterr()
    rc = main(["run", "--benchmark", f"shuffled:{root}", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "expected split:PATH, permuted:PATH or rotated:PATH" in err


def test_cli_list_names_the_forms(capsys):
    from continual.cli import main

    assert main(["list"]) == 0
    assert "split:PATH, permuted:PATH or rotated:PATH" in capsys.readouterr().out


def test_npz_missing_key_lists_a_few(tmp_path):
    np.savez(tmp_path / "many.npz", **{f"a{i}": np.zeros(1) for i in range(8)})
    with _error(r"many\.npz: no array 'x_train' \(it holds a0, a1, a2, a3, a4 and 3 more\)"):
        npz(tmp_path / "many.npz")


def test_record_describes_the_data_a_run_read(tmp_path):
    root = _folder(tmp_path / "p", classes=("a", "b"), per_class=2)
    name = f"split:{root},size=4"
    assert user_data.record("split-digits") is None
    get_benchmark(name)
    before = user_data.record(name)
    assert before["benchmark"] == "split" and before["options"] == {"size": 4} and before["path"] == str(root.resolve())
    _image(root / "a" / "0.png", 250)  # the files change after the run read them
    assert user_data.record(name) == before
    assert get_benchmark(name) and user_data.record(name)["fingerprint"] != before["fingerprint"]  # read again: the new data
