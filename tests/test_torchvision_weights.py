"""torchvision backbones with pretrained weights: naming, the cache, a verified download, the input adapter.

Nothing here reaches the network. Weights files are state dicts of the right architecture made
here (seeded, untrained) and written under the exact file name torchvision's weights use, in
``$TORCH_HOME/hub/checkpoints`` with ``$TORCH_HOME`` set to a temporary folder. Downloads come
from a local HTTP server on 127.0.0.1 through ``$CONTINUAL_WEIGHTS_MIRROR``.

The successful download patches :func:`continual.models.torchvision_models.hash_prefix`: the file
name (``resnet18-f37072fd.pth``) carries the first hex digits of the SHA-256 of torchvision's real
file, which a file made here cannot match (forging a prefix of a SHA-256 is the point of the
check). So that test serves its own file under that name and makes the expected prefix the served
file's real one; the refused download uses the real prefix, unpatched.
"""

import hashlib
import shutil

import pytest
import torch

from continual.errors import ContinualError
from continual.models import build_model, is_weights_spec, load_weights, resolve_weights, weights_file
from continual.models import torchvision_models as tvm
from continual.models.torchvision_models import InputAdapter, TorchvisionBackbone
from continual.transfer import freeze_blocks

MODELS = list(tvm.TORCHVISION_MODELS)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def torchvision_state(torchvision, builder, seed=0):
    """A state dict of torchvision's ``builder`` architecture, made without weights from a fixed seed."""
    torch.manual_seed(seed)
    return getattr(torchvision.models, builder)(weights=None).state_dict()


def write_weights(torchvision, model_name, home):
    """Write a state dict of ``model_name``'s architecture where its ImageNet weights are cached under ``home``."""
    weights = resolve_weights(model_name, "imagenet")
    path = home / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    state = torchvision_state(torchvision, tvm.TORCHVISION_MODELS[model_name])
    torch.save(state, path)
    return weights, path, state


@pytest.fixture(scope="module")
def vit_home(torchvision, tmp_path_factory):
    """ViT-B/16's weights file (~330 MB), written once for the module and deleted after."""
    home = tmp_path_factory.mktemp("vit_home")
    weights, path, state = write_weights(torchvision, "vit-b16-torchvision", home)
    yield home, state
    shutil.rmtree(home)


def one_line(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------ architectures
@pytest.mark.parametrize("name", MODELS)
def test_cached_weights_load_into_each_architecture(torchvision, name, tmp_path, monkeypatch, request):
    if name == "vit-b16-torchvision":
        home, state = request.getfixturevalue("vit_home")
        weights = resolve_weights(name, "imagenet")
    else:
        home = tmp_path
        weights, _, state = write_weights(torchvision, name, home)
    monkeypatch.setenv("TORCH_HOME", str(home))
    path = weights_file(weights)
    assert path == home / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1] and path.is_file()
    torch.manual_seed(1)  # other initial values than the file's
    model = build_model(name, (1, 8, 8), 4, weights=weights, source_mean=(0.5,), source_std=(0.25,))
    record = load_weights(model, weights)
    own = model.backbone.state_dict()
    classifier = tvm.CLASSIFIER_PREFIXES[model.builder]
    assert sorted(own) == sorted(k for k in state if not k.startswith(classifier))
    for k, v in own.items():
        assert torch.equal(v, state[k]), k
    assert record == {"weights": f"{type(weights).__name__}.{weights.name}", "url": weights.url, "file": str(path),
                      "sha256_prefix": tvm.hash_prefix(path.name), "downloaded": False, "input": model.adapt.describe(),
                      "recipe": weights.meta["recipe"]}
    assert record["sha256_prefix"] and record["sha256_prefix"] in path.name
    assert model.num_features == {"resnet18": 512, "resnet50": 2048, "vit_b_16": 768}[model.builder]
    batch = 2 if name == "vit-b16-torchvision" else 3  # ViT resizes to 224x224: keep it to two images
    with torch.no_grad():
        logits = model.eval()(torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(2)))
    assert logits.shape == (batch, 4) and torch.isfinite(logits).all()
    if name == "vit-b16-torchvision":
        assert "resized 8x8 -> 224x224 (bilinear, antialiased; ViT-B/16 takes 224x224 only)" in record["input"]
        assert len(model.blocks()) == 13  # the patch embedding and 12 encoder layers
        freeze_blocks(model, 1)  # the embedding block holds the class token and position embedding too
        assert not any(p.requires_grad for p in (model.backbone.class_token, model.backbone.encoder.pos_embedding, *model.backbone.conv_proj.parameters()))
        assert all(p.requires_grad for p in model.backbone.encoder.layers[0].parameters())


def test_a_file_of_another_architecture_or_a_corrupt_one_is_one_line(torchvision, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = resolve_weights("resnet50-torchvision", "imagenet")
    path = weights_file(weights)
    path.parent.mkdir(parents=True)
    torch.save(torchvision_state(torchvision, "resnet18"), path)
    model = build_model("resnet50-torchvision", (3, 8, 8), 2, weights=weights)
    with pytest.raises(ContinualError) as excinfo:
        load_weights(model, weights)
    message = one_line(excinfo)
    assert str(path) in message and "does not fit model 'resnet50-torchvision'" in message and "missing" in message
    path.write_bytes(b"not a torch file")
    with pytest.raises(ContinualError) as excinfo:
        load_weights(model, weights)
    assert str(path) in one_line(excinfo) and "delete it and re-run with --download" in one_line(excinfo)


def test_not_cached_without_download_says_how_to_get_them_and_writes_nothing(torchvision, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = resolve_weights("resnet18-torchvision", "imagenet")
    model = build_model("resnet18-torchvision", (1, 8, 8), 2, weights=weights)
    with pytest.raises(ContinualError) as excinfo:
        load_weights(model, weights)
    message = one_line(excinfo)
    path = weights_file(weights)
    assert "--download" in message and path.name in message and str(path.parent) in message and "MB" in message
    assert list(tmp_path.rglob("*")) == []


# ------------------------------------------------------------------------------------------ naming
def test_resolve_weights(torchvision):
    for name, builder in tvm.TORCHVISION_MODELS.items():
        assert resolve_weights(name, "imagenet") is torchvision.models.get_model_weights(builder).DEFAULT
    assert resolve_weights("resnet50-torchvision", "torchvision:ResNet50_Weights.IMAGENET1K_V2") is torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    assert is_weights_spec("imagenet") and is_weights_spec("torchvision:X") and not is_weights_spec("runs/p.pt")
    accepted = "imagenet, torchvision:ResNet50_Weights.IMAGENET1K_V1, torchvision:ResNet50_Weights.IMAGENET1K_V2"
    for spec in ("torchvision:ResNet50_Weights.IMAGENET1K_V9", "torchvision:Nope.V1", "torchvision:ResNet18_Weights.IMAGENET1K_V1", "imagenet1k"):
        with pytest.raises(ContinualError) as excinfo:
            resolve_weights("resnet50-torchvision", spec)
        assert accepted in one_line(excinfo) and repr(spec) in one_line(excinfo)
    with pytest.raises(ContinualError) as excinfo:
        resolve_weights("resnet18", "imagenet")
    assert "resnet18-torchvision, resnet50-torchvision, vit-b16-torchvision" in one_line(excinfo)


def test_build_errors_are_one_line(torchvision):
    cases = [
        (lambda: build_model("resnet18-torchvision", (2, 8, 8), 3), "1 (grey) or 3 (colour) input channels; got 2"),
        (lambda: build_model("vit-b16-torchvision", (3, 8, 8), 3, resize=32), "takes 224x224 images; got resize=32"),
        (lambda: build_model("mlp", (1, 8, 8), 3, resize=32), "model 'mlp' takes no resize"),
        (lambda: build_model("resnet18", (3, 8, 8), 3, weights=resolve_weights("resnet18-torchvision", "imagenet")), "takes no weights"),
        (lambda: build_model("resnet18-torchvision", (3, 8, 8), 3, weights=resolve_weights("resnet50-torchvision", "imagenet")),
         "do not fit model 'resnet18-torchvision'; expected imagenet, torchvision:ResNet18_Weights.IMAGENET1K_V1"),
    ]
    for make, expected in cases:
        with pytest.raises(ContinualError) as excinfo:
            make()
        assert expected in one_line(excinfo)
    assert isinstance(build_model("mlp", (1, 8, 8), 3, resize=None, weights=None), torch.nn.Module)  # None: not given
    model = build_model("resnet18-torchvision", (3, 8, 8), 3)  # built without weights: loading some is refused
    with pytest.raises(ContinualError, match="built for no weights, not ResNet18_Weights.IMAGENET1K_V1"):
        load_weights(model, resolve_weights("resnet18-torchvision", "imagenet"))


# ----------------------------------------------------------------------------------------- download
def serve_as(served, weights, content):
    (served / weights_file(weights).name).write_bytes(content)


def test_a_download_whose_hash_does_not_match_is_refused_and_leaves_nothing(torchvision, tmp_path, monkeypatch, http_server):
    served, url = http_server
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(tvm.MIRROR_ENV, url)
    weights = resolve_weights("resnet18-torchvision", "imagenet")
    serve_as(served, weights, b"not the weights")
    model = build_model("resnet18-torchvision", (1, 8, 8), 2, weights=weights)
    with pytest.raises(ContinualError) as excinfo:
        load_weights(model, weights, download=True)
    message = one_line(excinfo)
    assert f"cannot download {url}{weights_file(weights).name}" in message
    assert f"SHA-256 does not start with '{tvm.hash_prefix(weights_file(weights).name)}'" in message
    assert list(weights_file(weights).parent.iterdir()) == []  # neither the temporary nor the final file
    monkeypatch.setenv(tvm.MIRROR_ENV, url + "missing")  # a mirror without the file: an HTTP error, nothing kept
    with pytest.raises(ContinualError) as excinfo:
        load_weights(model, weights, download=True)
    assert "network error (HTTPError: HTTP Error 404" in one_line(excinfo)
    assert list(weights_file(weights).parent.iterdir()) == []


def test_a_verified_download_lands_in_the_cache_and_loads(torchvision, tmp_path, monkeypatch, http_server):
    served, url = http_server
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(tvm.MIRROR_ENV, url.rstrip("/"))  # with or without the final slash
    weights = resolve_weights("resnet18-torchvision", "imagenet")
    state = torchvision_state(torchvision, "resnet18")
    torch.save(state, tmp_path / "made.pth")
    content = (tmp_path / "made.pth").read_bytes()
    serve_as(served, weights, content)
    prefix = hashlib.sha256(content).hexdigest()[:8]
    monkeypatch.setattr(tvm, "hash_prefix", lambda name: prefix)  # see the module docstring
    model = build_model("resnet18-torchvision", (1, 8, 8), 2, weights=weights)
    record = load_weights(model, weights, download=True)
    path = weights_file(weights)
    assert record["downloaded"] and record["url"] == url + path.name and record["sha256_prefix"] == prefix
    assert list(path.parent.iterdir()) == [path] and path.read_bytes() == content
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, state[k]), k
    (served / path.name).unlink()  # found in the cache: no second download
    assert load_weights(model, weights, download=True)["downloaded"] is False


# ------------------------------------------------------------------------------------------ adapter
def test_adapter_undoes_the_dataset_normalisation_and_applies_the_weights(torchvision):
    adapter = InputAdapter(1, source_mean=0.5, source_std=0.25, target_mean=IMAGENET_MEAN, target_std=IMAGENET_STD)
    x = torch.tensor([[[[-2.0, -1.0], [1.0, 2.0]]]])  # pixels 0, 0.25, 0.75, 1 (exact in float32)
    pixels = [[0.0, 0.25], [0.75, 1.0]]
    expected = torch.tensor([[[[(p - m) / s for p in row] for row in pixels] for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]])
    # float32 rounding of the constants and of one subtraction and one division: a few times 6e-8
    # relative to values whose distance to the means is at least 0.235 (so under 4e-7 in all).
    torch.testing.assert_close(adapter(x), expected, rtol=1e-6, atol=0)
    assert adapter(x).shape == (1, 3, 2, 2)
    assert adapter.state_dict() == {} and len(list(adapter.buffers())) == 4
    assert adapter.describe() == "grey -> 3 channels, normalised with mean (0.485, 0.456, 0.406) std (0.229, 0.224, 0.225)"
    rgb = InputAdapter(3, source_mean=(0.5, 0.25, 0.0), source_std=(0.5, 0.25, 1.0), target_mean=0.5, target_std=0.5)
    y = torch.tensor([1.0, -1.0, 0.5]).view(1, 3, 1, 1)  # pixels 1, 0, 0.5 -> (p - 0.5) / 0.5, all exact
    torch.testing.assert_close(rgb(y), torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1), rtol=0, atol=0)


def test_adapter_without_weights_only_repeats_and_resizes(torchvision):
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(InputAdapter(1)(x), x.expand(-1, 3, -1, -1))  # the dataset's normalisation is kept
    resized = InputAdapter(1, resize=20, input_size=(8, 8))
    assert resized(x).shape == (2, 3, 20, 20)
    assert resized.describe() == "grey -> 3 channels, resized 8x8 -> 20x20 (bilinear, antialiased)"
    torch.testing.assert_close(resized(torch.full((1, 1, 8, 8), 0.3)), torch.full((1, 3, 20, 20), 0.3))  # weights sum to one
    model = build_model("resnet18-torchvision", (1, 8, 8), 3, source_mean=0.5, source_std=0.25, resize=16)
    assert not any(k.startswith("adapt.") for k in model.state_dict())
    assert model.double()(x.double()).dtype == torch.float64  # the adapter's constants follow the model
    with pytest.raises(ContinualError, match="source_mean=.* must have 1 or 3 values"):
        InputAdapter(3, source_mean=(0.1, 0.2))


def test_torchvision_backbone_without_torchvision_is_the_known_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torchvision(name, *args, **kwargs):
        if name == "torchvision":
            raise ImportError("No module named 'torchvision'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchvision)
    with pytest.raises(ContinualError, match="model 'resnet50-torchvision' needs torchvision.*use --model resnet18 or install torchvision"):
        TorchvisionBackbone("resnet50-torchvision", 3, 2)


# ------------------------------------------------------------------------- the run configuration and CLI
def test_a_run_with_imagenet_weights_from_the_cache(torchvision, tmp_path, monkeypatch, capsys):
    """`continual run --model resnet18-torchvision --pretrained imagenet` offline, the file in the cache;
    the result records the weights and how the inputs were adapted; without the file, one line."""
    from continual.cli import main
    from continual.results import load_result

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    args = ["run", "--strategy", "ncm", "--model", "resnet18-torchvision", "--pretrained", "imagenet", "--classes", "0,1,2",
            "--increments", "2,1", "--resize", "32", "--device", "cpu", "--quiet", "--out", str(tmp_path / "runs")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "are not cached: re-run with --download" in err and "resnet18-f37072fd.pth" in err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
    _, path, state = write_weights(torchvision, "resnet18-torchvision", tmp_path / "home")
    assert main(args) == 0
    result = load_result(next((tmp_path / "runs").glob("*.json")))
    record = result.provenance["pretrained"]
    assert record["weights"] == "ResNet18_Weights.IMAGENET1K_V1" and record["file"] == str(path) and not record["downloaded"]
    assert result.provenance["input"].startswith("grey -> 3 channels, resized 8x8 -> 32x32")
    assert "normalised with mean (0.485, 0.456, 0.406)" in result.provenance["input"]
    assert result.provenance["features"]["cached"] is True and result.provenance["features"]["dim"] == 512
    assert len(result.acc_matrix) == 2


def test_wrong_weights_and_resize_are_one_line_errors(torchvision):
    from continual.experiment import RunConfig

    with pytest.raises(ContinualError, match=r"^weights 'torchvision:ResNet50_Weights.IMAGENET1K_V2' are for another .*"
                                             r"expected for model 'resnet18-torchvision': imagenet, torchvision:ResNet18_Weights.IMAGENET1K_V1$"):
        RunConfig(strategy="transfer", model="resnet18-torchvision", pretrained="torchvision:ResNet50_Weights.IMAGENET1K_V2").resolve()
    with pytest.raises(ContinualError, match=r"^weights 'imagenet' need a torchvision model \(resnet18-torchvision, "):
        RunConfig(strategy="transfer", pretrained="imagenet").resolve()
    with pytest.raises(ContinualError, match=r"^resize=32 applies to the torchvision models"):
        RunConfig(resize=32).resolve()
    with pytest.raises(ContinualError, match=r"^resize=0 must be a positive image size"):
        RunConfig(model="resnet18-torchvision", resize=0).resolve()
