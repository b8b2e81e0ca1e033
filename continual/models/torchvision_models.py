"""torchvision backbones (ResNet-18, ResNet-50, ViT-B/16), optionally with ImageNet-pretrained weights.

A :class:`TorchvisionBackbone` is torchvision's network with its classifier removed (``fc`` or
``heads`` replaced by ``nn.Identity``) in the attribute ``backbone``, our linear ``head`` on top,
and an :class:`InputAdapter` in front that turns our normalised inputs into what the weights
expect, on the device, inside the model: it undoes the dataset's normalisation, repeats a grey
channel three times, resizes when asked (ViT-B/16 always works at its image size) and normalises
with the weights' mean and standard deviation. The adapter's constants are non-persistent
buffers, so a state dict holds the network's weights only.

Pretrained weights are named by a *weights spec*: ``"imagenet"`` (the architecture's default
weights in torchvision, ``get_model_weights(builder).DEFAULT``) or ``"torchvision:ENUM"``, e.g.
``"torchvision:ResNet50_Weights.IMAGENET1K_V2"`` (:func:`resolve_weights`). They are read from
torch.hub's cache, ``$TORCH_HOME/hub/checkpoints/<file name of the URL>`` (:func:`weights_file`),
the file torchvision itself would use, and downloaded only when asked (``--download``,
:func:`load_weights` with ``download=True``). A download is checked against the SHA-256 prefix in
the file's name (as ``torch.hub``'s ``check_hash`` does) and written to a temporary file in the
cache folder, renamed into place only once complete and verified. A file found in the cache is
not re-hashed (as ``torch.hub.load_state_dict_from_url``), but it must load and fit exactly.

``$CONTINUAL_WEIGHTS_MIRROR``: where set, a download comes from ``$CONTINUAL_WEIGHTS_MIRROR/<file
name>`` instead of ``https://download.pytorch.org/models/<file name>`` (for clusters that reach an
internal server only). The file name, and so its hash check, is unchanged.

ResNet: He et al. 2016, "Deep Residual Learning for Image Recognition". ViT-B/16: Dosovitskiy et
al. 2021, "An Image is Worth 16x16 Words". Deviation from torchvision's evaluation transforms
(resize to 256 or 232, centre crop to 224, bilinear or bicubic by weights): the adapter resizes
the whole image to ``resize x resize`` with antialiased bilinear interpolation and crops nothing;
small benchmark images (8x8, 28x28, 32x32) have no border to crop.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ContinualError, one_line
from .backbones import Backbone, check_fits

TORCHVISION_MODELS: dict[str, str] = {  # our model name -> torchvision builder
    "resnet18-torchvision": "resnet18",
    "resnet50-torchvision": "resnet50",
    "vit-b16-torchvision": "vit_b_16",
}
NUM_FEATURES = {"resnet18": 512, "resnet50": 2048, "vit_b_16": 768}
CLASSIFIER_PREFIXES = {"resnet18": ("fc.",), "resnet50": ("fc.",), "vit_b_16": ("heads.",)}
VIT_IMAGE_SIZE = 224  # torchvision's vit_b_16 without weights
MIRROR_ENV = "CONTINUAL_WEIGHTS_MIRROR"
HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")  # torch.hub's: the SHA-256 prefix in "resnet18-f37072fd.pth"


def _torchvision(model_name: str):
    """torchvision, or the one-line error that says what to do without it."""
    try:
        import torchvision
    except Exception as exc:  # ImportError, or a torchvision built for another torch
        raise ContinualError(
            f"model {model_name!r} needs torchvision, which cannot be imported here "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); use --model resnet18 or install torchvision"
        ) from None
    return torchvision


def _floats(values: float | Sequence[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in values) if isinstance(values, Sequence) else (float(values),)


def _show(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


# ------------------------------------------------------------------------------------------- adapter
class InputAdapter(nn.Module):
    """Adapt normalised inputs to what a pretrained network expects: renormalise, grey to RGB, resize.

    ``forward`` computes, in order: ``x * source_std + source_mean`` (undo the dataset's
    normalisation), a grey channel repeated to 3, a resize to ``resize x resize`` (bilinear,
    antialiased, ``align_corners=False``: torchvision's ``Resize`` on tensors), then
    ``(x - target_mean) / target_std``. Without a target (``target_mean=None``) the inputs keep
    the dataset's normalisation and only the channels and the size change. Means and standard
    deviations are per channel or one value for all.

    Args:
        in_channels: 1 (grey, repeated to 3) or 3.
        source_mean, source_std: the dataset's normalisation (:class:`continual.data.Transform`).
        target_mean, target_std: the normalisation the weights expect (3 values or one), or None.
        resize: the output's height and width, or None to keep the input's size.
        input_size: the expected input (H, W), only for :meth:`describe`.
        resize_note: why the inputs are resized, only for :meth:`describe` (e.g. "ViT-B/16's image size").

    Raises:
        ContinualError: for other channel counts, or a mean or std of the wrong length or not positive.
    """

    def __init__(self, in_channels: int, *, source_mean: float | Sequence[float] = (0.0,), source_std: float | Sequence[float] = (1.0,),
                 target_mean: float | Sequence[float] | None = None, target_std: float | Sequence[float] | None = None,
                 resize: int | None = None, input_size: Sequence[int] | None = None, resize_note: str | None = None) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ContinualError(f"torchvision backbones take 1 (grey) or 3 (colour) input channels; got {in_channels}")
        if (target_mean is None) != (target_std is None):
            raise ContinualError("InputAdapter: give both target_mean and target_std, or neither")
        if resize is not None and not resize >= 1:
            raise ContinualError(f"resize={resize} must be a positive image size (e.g. 224)")
        self.in_channels, self.resize, self.resize_note = in_channels, resize, resize_note
        self.input_size = tuple(int(s) for s in input_size) if input_size is not None else None
        self.renormalise = target_mean is not None
        self.source = (_floats(source_mean), _floats(source_std))
        self.target = (_floats(target_mean), _floats(target_std)) if target_mean is not None else None
        for name, values, channels in (("source_mean", self.source[0], in_channels), ("source_std", self.source[1], in_channels),
                                       *((("target_mean", self.target[0], 3), ("target_std", self.target[1], 3)) if self.target else ())):
            if len(values) not in (1, channels):
                raise ContinualError(f"{name}={values} must have 1 or {channels} values")
            if name.endswith("std") and not all(v > 0 for v in values):
                raise ContinualError(f"{name}={values} must be positive")
        for name, values in zip(("source_mean", "source_std"), self.source):
            self.register_buffer(name, torch.tensor(values).view(1, -1, 1, 1), persistent=False)
        if self.target:
            for name, values in zip(("target_mean", "target_std"), self.target):
                self.register_buffer(name, torch.tensor(values).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.renormalise:
            x = x * self.source_std + self.source_mean  # (B, C, H, W), the dataset's [0, 1] pixels
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)  # (B, 3, H, W)
        if self.resize is not None and tuple(x.shape[-2:]) != (self.resize, self.resize):
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False, antialias=True)
        if self.renormalise:
            x = (x - self.target_mean) / self.target_std
        return x

    def describe(self) -> str:
        """What the adapter does, in a short line for provenance records."""
        parts = ["grey -> 3 channels"] if self.in_channels == 1 else []
        if self.resize is not None:
            size = f"{self.input_size[0]}x{self.input_size[1]} -> " if self.input_size else ""
            note = f"; {self.resize_note}" if self.resize_note else ""
            parts.append(f"resized {size}{self.resize}x{self.resize} (bilinear, antialiased{note})")
        if self.target:
            parts.append(f"normalised with mean {_show(self.target[0])} std {_show(self.target[1])}")
        return ", ".join(parts) or "unchanged"


# ------------------------------------------------------------------------------------------ backbone
class TorchvisionBackbone(Backbone):
    """A torchvision network without its classifier, behind an :class:`InputAdapter`, with our ``head``.

    Built without weights (nothing is downloaded here); load pretrained ones with
    :func:`load_weights`, or a local state dict with ``--pretrained PATH``. ``weights`` sets the
    adapter's target normalisation (and ViT-B/16's image size), so pass the weights the model
    will be loaded with.

    Args:
        model_name: a key of :data:`TORCHVISION_MODELS`.
        in_channels: 1 (grey, repeated to 3 channels) or 3.
        num_classes: outputs of the head.
        source_mean, source_std: the dataset's normalisation, undone by the adapter when
            ``weights`` is given (per channel or one value).
        weights: a torchvision ``WeightsEnum`` member (:func:`resolve_weights`), or None.
        resize: resize inputs to ``resize x resize``; ViT-B/16 resizes to its image size
            (224, or the weights' crop size) by default and takes no other.
        input_size: the inputs' (H, W), only to describe the adapter.

    Raises:
        ContinualError: when torchvision cannot be imported, for an unknown model name, for
            other than 1 or 3 channels, or for weights of another architecture or a ViT resize
            that is not its image size.
    """

    def __init__(self, model_name: str, in_channels: int, num_classes: int, *, source_mean: float | Sequence[float] = (0.0,),
                 source_std: float | Sequence[float] = (1.0,), weights=None, resize: int | None = None,
                 input_size: Sequence[int] | None = None) -> None:
        super().__init__()
        if model_name not in TORCHVISION_MODELS:
            raise ContinualError(f"unknown torchvision model {model_name!r}; expected one of {', '.join(TORCHVISION_MODELS)}")
        torchvision = _torchvision(model_name)
        builder = TORCHVISION_MODELS[model_name]
        if in_channels not in (1, 3):
            raise ContinualError(f"model {model_name!r} takes 1 (grey) or 3 (colour) input channels; got {in_channels}")
        if weights is not None and type(weights) is not torchvision.models.get_model_weights(builder):
            raise ContinualError(f"weights {type(weights).__name__}.{weights.name} do not fit model {model_name!r}; "
                                 f"expected {_accepted(model_name)}")
        self.model_name, self.builder, self.weights = model_name, builder, weights
        kwargs, note = {}, None
        if builder == "vit_b_16":
            image_size = weights.transforms().crop_size[0] if weights is not None else VIT_IMAGE_SIZE
            if resize is not None and resize != image_size:
                raise ContinualError(f"model {model_name!r} takes {image_size}x{image_size} images; got resize={resize} (leave it unset or give {image_size})")
            if resize is None:
                note = f"ViT-B/16 takes {image_size}x{image_size} only"
            resize, kwargs = image_size, {"image_size": image_size}
        net = getattr(torchvision.models, builder)(weights=None, **kwargs)
        if builder == "vit_b_16":
            net.heads = nn.Identity()
        else:
            net.fc = nn.Identity()
        target = weights.transforms() if weights is not None else None
        self.adapt = InputAdapter(in_channels, source_mean=source_mean, source_std=source_std,
                                  target_mean=target.mean if target else None, target_std=target.std if target else None,
                                  resize=resize, input_size=input_size, resize_note=note)
        self.backbone = net
        self.num_features = NUM_FEATURES[builder]
        self.head = nn.Linear(self.num_features, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(self.adapt(x))  # (B, num_features)

    def blocks(self) -> list[nn.Module]:
        """ResNet: the stem (conv1, bn1) and the four stages; ViT: the patch embedding and each encoder layer.

        ViT's embedding block holds ``conv_proj``, the class token and the position embedding;
        its final LayerNorm (``encoder.ln``) is in no block.
        """
        n = self.backbone
        if self.builder == "vit_b_16":
            embedding = nn.Module()
            embedding.conv_proj = n.conv_proj
            embedding.class_token = n.class_token
            embedding.pos_embedding = n.encoder.pos_embedding
            return [embedding, *n.encoder.layers]
        return [nn.ModuleList([n.conv1, n.bn1]), n.layer1, n.layer2, n.layer3, n.layer4]


# ------------------------------------------------------------------------------------------- weights
def is_weights_spec(spec: str) -> bool:
    """True for a pretrained-weights spec (``"imagenet"`` or ``"torchvision:ENUM"``), not a file path.

    >>> is_weights_spec("imagenet"), is_weights_spec("torchvision:ResNet18_Weights.IMAGENET1K_V1"), is_weights_spec("runs/p.pt")
    (True, True, False)
    """
    return spec == "imagenet" or spec.startswith("torchvision:")


def _accepted(model_name: str) -> str:
    """The weights specs accepted for ``model_name``, comma-separated."""
    enum = _torchvision(model_name).models.get_model_weights(TORCHVISION_MODELS[model_name])
    return ", ".join(["imagenet"] + [f"torchvision:{enum.__name__}.{w.name}" for w in enum])


def resolve_weights(model_name: str, spec: str):
    """The torchvision ``WeightsEnum`` member that ``spec`` names for ``model_name``.

    Args:
        model_name: a key of :data:`TORCHVISION_MODELS`.
        spec: ``"imagenet"`` (the architecture's ``DEFAULT`` weights) or ``"torchvision:ENUM"``
            (e.g. ``"torchvision:ResNet50_Weights.IMAGENET1K_V2"``).

    Raises:
        ContinualError: for a model without torchvision weights, an unknown spec or enum name,
            or weights of another architecture; the message lists what is accepted.
    """
    if model_name not in TORCHVISION_MODELS:
        raise ContinualError(f"weights {spec!r} need a torchvision model ({', '.join(TORCHVISION_MODELS)}); "
                             f"model {model_name!r} has no pretrained weights to download (give --pretrained PATH for a checkpoint of it)")
    torchvision = _torchvision(model_name)
    enum = torchvision.models.get_model_weights(TORCHVISION_MODELS[model_name])
    if spec == "imagenet":
        return enum.DEFAULT
    if spec.startswith("torchvision:"):
        try:
            weights = torchvision.models.get_weight(spec[len("torchvision:"):])
        except (KeyError, ValueError):
            weights = None
        if weights is not None and type(weights) is enum:
            return weights
        why = "are not torchvision weights" if weights is None else f"are for another architecture than {model_name!r}"
    else:
        why = "are not a weights spec"
    raise ContinualError(f"weights {spec!r} {why}; expected for model {model_name!r}: {_accepted(model_name)}")


def weights_file(weights) -> Path:
    """The cached file of ``weights``: ``torch.hub.get_dir()/checkpoints/<file name of its URL>`` (honours ``$TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def hash_prefix(file_name: str) -> str | None:
    """The SHA-256 prefix in a torchvision weights file's name, as ``torch.hub``'s ``check_hash`` reads it.

    >>> hash_prefix("resnet18-f37072fd.pth")
    'f37072fd'
    """
    found = HASH_REGEX.search(file_name)
    return found.group(1) if found else None


def download_url(weights) -> str:
    """Where ``weights`` are downloaded from: their URL, or ``$CONTINUAL_WEIGHTS_MIRROR/<file name>`` when that is set."""
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror:
        return weights.url
    return mirror.rstrip("/") + "/" + weights_file(weights).name


def _download(url: str, target: Path, prefix: str | None) -> None:
    """Download ``url`` into a temporary file beside ``target``, renamed to ``target`` once complete and verified."""
    from ..files import write_error

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise write_error(exc, target) from None
    try:
        torch.hub.download_url_to_file(url, tmp, hash_prefix=prefix, progress=False)
        os.replace(tmp, target)
    except Exception as exc:
        if isinstance(exc, RuntimeError) and "invalid hash value" in str(exc):
            why = f"its SHA-256 does not start with {prefix!r}, the hash prefix in the file name (a wrong or damaged file)"
        elif isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):  # URLError, HTTPError, timeouts
            why = f"network error ({one_line(exc)})"
        else:
            why = one_line(exc)
        mirror = f" (from ${MIRROR_ENV})" if os.environ.get(MIRROR_ENV) else ""
        raise ContinualError(f"cannot download {url}{mirror}: {why}; nothing was kept in {target.parent}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_weights(model: TorchvisionBackbone, weights, *, download: bool = False) -> dict:
    """Load pretrained ``weights`` into ``model.backbone`` from torch.hub's cache, downloading them if asked.

    The file's classifier (``fc.*`` or ``heads.*``) is dropped; every other entry must fit the
    backbone exactly. ``model`` must have been built with the same ``weights`` (they set its
    input normalisation).

    Args:
        model: a :class:`TorchvisionBackbone` built with ``weights=weights``.
        weights: a torchvision ``WeightsEnum`` member (:func:`resolve_weights`).
        download: fetch the file when it is not in the cache (from its URL, or
            ``$CONTINUAL_WEIGHTS_MIRROR``), verified against the hash prefix in its name.

    Returns:
        The provenance record: ``weights`` (enum name), ``url``, ``file``, ``sha256_prefix`` (the
        one in the file name, checked when downloaded), ``downloaded``, ``input`` (what the
        adapter does) and ``recipe`` (the weights' training recipe).

    Raises:
        ContinualError: when the file is not cached and ``download`` is False (saying how to get
            it), when a download fails (nothing is kept), or for a file that does not load (delete
            it and download again) or does not fit the architecture.
    """
    name = f"{type(weights).__name__}.{weights.name}"
    if not isinstance(model, TorchvisionBackbone):
        raise ContinualError(f"weights {name} load into a torchvision model ({', '.join(TORCHVISION_MODELS)}); got {type(model).__name__}")
    if model.weights != weights:
        built = "no weights" if model.weights is None else f"{type(model.weights).__name__}.{model.weights.name}"
        raise ContinualError(f"model {model.model_name!r} was built for {built}, not {name} (they set its input normalisation); "
                             f"build it with weights={name}")
    path = weights_file(weights)
    prefix = hash_prefix(path.name)
    url = download_url(weights)
    downloaded = False
    if not path.is_file():
        if not download:
            size = weights.meta.get("_file_size")
            size = f", {size:.1f} MB" if size else ""
            raise ContinualError(f"pretrained weights {name} are not cached: re-run with --download to fetch them ({url}{size}), "
                                 f"or place the file {path.name} in {path.parent}")
        _download(url, path, prefix)
        downloaded = True
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or not weights-only
        raise ContinualError(f"cannot read cached weights {str(path)!r} ({one_line(exc)}); delete it and re-run with --download") from None
    if not (isinstance(state, dict) and state and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items())):
        raise ContinualError(f"cached weights {str(path)!r} hold a {type(state).__name__}, not a state dict; delete it and re-run with --download")
    state = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES[model.builder])}
    check_fits(model.backbone.state_dict(), state, f"weights file {str(path)!r}", repr(model.model_name))
    model.backbone.load_state_dict(state, strict=True)
    return {"weights": name, "url": url, "file": str(path), "sha256_prefix": prefix, "downloaded": downloaded,
            "input": model.adapt.describe(), "recipe": weights.meta.get("recipe")}


class TorchvisionResNet18(TorchvisionBackbone):
    """torchvision's ResNet-18, ``TorchvisionBackbone("resnet18-torchvision", ...)``; kept for backwards compatibility.

    Grey inputs are repeated to 3 channels (before: ``conv1`` was replaced), so ImageNet weights fit.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, **kwargs) -> None:
        super().__init__("resnet18-torchvision", in_channels, num_classes, **kwargs)
