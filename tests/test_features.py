"""Cached features of a frozen backbone (continual.features) and first-session adaptation.

A frozen backbone's features are computed once per experience; the head trains on them. The run
must be the one that recomputes them every batch: the same accuracy matrices. The head sees the
same numbers in the same order, up to the backbone's rounding for a batch size (1024 against 10:
none with the kernels of the build these were written on, where the matrices are identical; a
matrix-product or convolution kernel chosen per batch size may round the last bit differently on
another build), so each entry may differ by at most one test sample.
"""

import dataclasses

import pytest
import torch

from continual import benchmarks as bench_mod
from continual.benchmarks import Benchmark
from continual.data import RandomCropFlip, digits
from continual.errors import ContinualError
from continual.experiment import RunConfig, build, run
from continual.features import HeadOnly, cache_features, cache_refusal, extract, frozen_backbone
from continual.models import build_model
from continual.transfer import freeze_backbone, pretrain


@pytest.fixture(scope="module")
def mlp01(tmp_path_factory):
    path = tmp_path_factory.mktemp("pre") / "mlp01.pt"
    pretrain("split-digits", path, classes=[0, 1], epochs=3, device="cpu")
    return str(path)


@pytest.fixture(scope="module")
def convnet01(tmp_path_factory):
    path = tmp_path_factory.mktemp("pre") / "convnet01.pt"
    pretrain("split-digits", path, classes=[0, 1], model="convnet", epochs=2, device="cpu")
    return str(path)


def _pair(**settings):
    cached = run(RunConfig(device="cpu", **settings))
    recomputed = run(RunConfig(device="cpu", feature_cache="off", **settings))
    return cached, recomputed


def same_matrix(a, b) -> bool:
    """Equal accuracy matrices, each entry to one test sample of its experience (see the module docstring)."""
    return all(abs(x - y) <= 1.0 / n + 1e-12 for ra, rb in zip(a.acc_matrix, b.acc_matrix) for x, y, n in zip(ra, rb, a.test_sizes))


def test_transfer_on_cached_features_is_the_recomputing_run(mlp01):
    cached, recomputed = _pair(strategy="transfer", pretrained=mlp01, epochs=3)
    assert same_matrix(cached, recomputed) and cached.random_init == recomputed.random_init
    assert cached.provenance["features"]["cached"] is True and cached.provenance["features"]["dim"] == 400
    assert recomputed.provenance["features"] == {"cached": False, "why": "feature_cache='off'"}
    assert cached.timings["features"] > 0 and "features" not in recomputed.timings
    assert cached.extra["memory"] == recomputed.extra["memory"]  # the ledger counts the whole model


def test_convnet_with_frozen_batchnorm_caches_to_the_same_matrix(convnet01):
    cached, recomputed = _pair(strategy="transfer", pretrained=convnet01, model="convnet", epochs=2, num_experiences=3)
    assert same_matrix(cached, recomputed)
    assert cached.provenance["features"]["dim"] == 128


@pytest.mark.parametrize("strategy", ["ncm", "slda", "ranpac"])
def test_closed_form_heads_on_cached_features(strategy, mlp01):
    settings = {"ranpac": {"params": {"ranpac_m": 200}}}.get(strategy, {})
    cached, recomputed = _pair(strategy=strategy, pretrained=mlp01, **settings)
    assert same_matrix(cached, recomputed)
    assert cached.provenance["features"]["cached"] is True


def test_the_head_trained_on_features_is_the_models_head(mlp01):
    built = build(RunConfig(strategy="transfer", pretrained=mlp01, device="cpu"))
    assert isinstance(built.trainer.model, HeadOnly) and built.trainer.model.head is built.model.head
    assert built.stream[0].x_train.shape == (built.source[0].num_train, 400)
    assert set(built.trainer.model.state_dict()) == {f"head.{k}" for k in built.model.head.state_dict()}
    expected = built.model.features(built.source[1].transform(built.source[1].x_test))
    torch.testing.assert_close(built.stream[1].x_test, expected, rtol=1e-6, atol=1e-6)  # batch 1024 vs one batch


def test_strategies_that_train_the_backbone_are_not_cached(mlp01):
    built = build(RunConfig(strategy="finetune-pretrained", pretrained=mlp01, device="cpu"))
    assert built.stream is built.source and "features" not in built.records
    with pytest.raises(ContinualError, match=r"feature_cache='on' cannot apply: strategy 'finetune' trains the backbone"):
        build(RunConfig(strategy="finetune", feature_cache="on", device="cpu"))
    frozen = build(RunConfig(strategy="finetune-pretrained", pretrained=mlp01, params={"freeze_blocks": 2}, device="cpu"))
    assert isinstance(frozen.trainer.model, HeadOnly)  # every block frozen: only the head trains


def test_a_wrong_feature_cache_value_is_one_line():
    with pytest.raises(ContinualError, match=r"^feature_cache='yes' is not accepted; expected one of auto, on, off$"):
        RunConfig(feature_cache="yes").resolve()


def _augmented_digits(**kwargs):
    data = digits(**kwargs)
    return dataclasses.replace(data, transform=dataclasses.replace(data.transform, augment=RandomCropFlip(padding=1)))


@pytest.fixture
def augmented(monkeypatch):
    bench = Benchmark("aug-digits", "digits with a crop+flip augmentation", _augmented_digits, "split", ("class", "task"), 5,
                      epochs=2, lr=0.05, num_classes=10)
    monkeypatch.setitem(bench_mod.BENCHMARKS, bench.name, bench)
    return bench.name


def test_training_augmentation_recomputes_or_refuses(augmented, convnet01):
    settings = dict(benchmark=augmented, strategy="transfer", pretrained=convnet01, model="convnet", device="cpu")
    built = build(RunConfig(**settings))
    assert built.stream is built.source  # recomputed every batch, never mixed
    why = built.records["features"]
    assert why["cached"] is False and why["why"].startswith("training augmentation (random crop")
    with pytest.raises(ContinualError, match=r"^feature_cache='on' cannot apply: training augmentation .*; use 'auto' or 'off'$"):
        build(RunConfig(feature_cache="on", **settings))
    assert cache_refusal(built.source) == why["why"]
    with pytest.raises(ContinualError, match="cannot cache features: training augmentation"):
        cache_features(built.model, built.source)


def test_frozen_backbone_needs_frozen_batchnorm_and_no_dropout():
    net = build_model("convnet", (1, 8, 8), 3)
    for p in net.backbone.parameters():
        p.requires_grad_(False)
    assert not frozen_backbone(net)  # BatchNorm would still update its statistics in training
    assert frozen_backbone(freeze_backbone(net))
    mlp = freeze_backbone(build_model("mlp", (64,), 3, dropout=0.5))
    assert not frozen_backbone(mlp)  # dropout makes training-mode features random


def test_extract_matches_the_model_in_eval_mode():
    torch.manual_seed(0)
    net = build_model("convnet", (1, 8, 8), 3)
    net.train()
    x = torch.randint(0, 17, (50, 1, 8, 8), dtype=torch.uint8)
    data = digits()
    f = extract(net, x, data.transform, batch_size=7)
    assert net.training  # restored
    net.eval()
    torch.testing.assert_close(f, net.features(data.transform(x)), rtol=1e-5, atol=1e-6)


# -------------------------------------------------------------------------------- first-session adaptation
def test_adapt_first_stands_in_for_pretrained_weights():
    with pytest.raises(ContinualError, match="needs pretrained weights: give --pretrained PATH .* or --adapt-first"):
        RunConfig(strategy="ncm").resolve()
    r = run(RunConfig(strategy="ncm", adapt_first=True, epochs=3, device="cpu"))
    record = r.provenance["adapt_first"]
    assert record["classes"] == [0, 1] and record["epochs"] == 3 and record["test_accuracy"] > 0.9
    scratch = build(RunConfig(strategy="finetune", device="cpu")).model
    adapted = build(RunConfig(strategy="ncm", adapt_first=True, epochs=3, device="cpu")).model
    assert not torch.equal(scratch.backbone[1].weight, adapted.backbone[1].weight)  # trained, from the same initialisation
    assert r.acc_matrix == run(RunConfig(strategy="ncm", adapt_first=True, epochs=3, device="cpu")).acc_matrix  # deterministic


def test_adapt_first_starts_from_the_pretrained_weights_and_keeps_the_head(mlp01):
    plain = build(RunConfig(strategy="transfer", pretrained=mlp01, device="cpu")).model
    adapted = build(RunConfig(strategy="transfer", pretrained=mlp01, adapt_first=True, epochs=1, device="cpu")).model
    assert not torch.equal(plain.backbone[1].weight, adapted.backbone[1].weight)
    torch.testing.assert_close(plain.backbone[1].weight, adapted.backbone[1].weight, rtol=0, atol=0.05)  # one epoch from them
    assert torch.equal(plain.head.weight, adapted.head.weight)  # the run's own head is untouched
