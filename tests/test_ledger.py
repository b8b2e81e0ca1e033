"""Memory ledger (model, exemplars, plugin state in bytes) and the provenance record."""

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from continual import MLP, Transform, split, synthetic
from continual.data import RandomCropFlip
from continual.ledger import describe_augmentation, describe_normalisation, memory_ledger, provenance, tensor_bytes
from continual.regularizers import EWC, LwF
from continual.replay import ER, ReservoirBuffer


def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_model_parameters_and_buffers_apart():
    ledger = memory_ledger(tiny())
    assert ledger["model_parameters"] == 4 * (3 * 4 + 4 + 4 + 4 + 4 * 2 + 2)  # float32
    assert ledger["model_buffers"] == 4 * (4 + 4) + 8  # running mean and var, int64 num_batches_tracked
    assert ledger["exemplars"] == ledger["num_exemplars"] == 0 and ledger["plugins"] == {}
    assert ledger["total"] == ledger["model_parameters"] + ledger["model_buffers"]


def test_tied_parameters_count_once():
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    model[1].weight = model[0].weight
    assert memory_ledger(model)["model_parameters"] == 4 * 16


class Declared:
    name = "declared"

    def memory_bytes(self):
        return 123

    def state_dict(self):  # not used: memory_bytes() wins
        return {"big": torch.zeros(1000)}


class Stateful:
    name = "stateful"

    def state_dict(self):
        return {"a": torch.zeros(10), "nested": {"b": torch.zeros(2, dtype=torch.float64)}, "n": 3}


class FakeBuffer:
    memory_bytes = 1000  # a property's value, as Buffer.memory_bytes is

    def __len__(self):
        return 5

    def state_dict(self):
        return {"x": torch.zeros(25, dtype=torch.uint8)}


class WithBuffer:
    name = "replayish"

    def __init__(self, buffer):
        self.buffer = buffer

    def state_dict(self):
        return {**self.buffer.state_dict(), "own": torch.zeros(4)}


def test_fake_plugins():
    shared = FakeBuffer()
    plugins = [Declared(), Stateful(), Stateful(), object(), WithBuffer(shared), WithBuffer(shared)]
    ledger = memory_ledger(tiny(), plugins)
    assert ledger["plugins"] == {"declared": 123, "stateful": 56, "stateful#2": 56, "object": 0,
                                 "replayish": 16, "replayish#2": 16}
    assert ledger["exemplars"] == 1000 and ledger["num_exemplars"] == 5  # a buffer shared by two plugins counts once
    parts = ledger["model_parameters"] + ledger["model_buffers"] + ledger["exemplars"] + sum(ledger["plugins"].values())
    assert ledger["total"] == parts
    json.dumps(ledger)


def test_replay_buffer_counts_as_exemplars():
    buffer = ReservoirBuffer(10, seed=0)
    er = ER(buffer)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(6, 5, generator=g)
        er.batch(x, torch.zeros(6, dtype=torch.long), torch.zeros(6, dtype=torch.long))
    ledger = memory_ledger(tiny(), [er])
    assert ledger["exemplars"] == buffer.memory_bytes == 10 * (5 * 4 + 8 + 8)  # capacity x (float x, label, task id)
    assert ledger["num_exemplars"] == len(buffer) == 10
    assert ledger["plugins"] == {"replay": 0}  # ER's state is its buffer's


def test_regularizers_state():
    stream = split(synthetic(num_classes=4, num_features=6, train_per_class=8, test_per_class=4), 2)
    torch.manual_seed(0)
    model = MLP(6, (5,), 4)
    params = sum(p.numel() * 4 for p in model.parameters())
    ewc, lwf = EWC(lam=1.0), LwF()
    ewc.consolidate(model, stream[0])
    lwf.consolidate(model, stream[0])
    ledger = memory_ledger(model, [ewc, lwf])
    assert ledger["plugins"]["ewc"] == tensor_bytes(ewc.state_dict())
    assert ledger["plugins"]["ewc"] >= 2 * params  # at least one importance and one anchor per parameter
    old_model = sum(t.numel() * t.element_size() for t in lwf.old_model.state_dict().values())
    assert ledger["plugins"]["lwf"] >= old_model >= params  # the frozen old model
    assert memory_ledger(model, [EWC(lam=1.0)])["plugins"]["ewc"] < params  # nothing stored before consolidation


def test_tensor_bytes():
    t = torch.zeros(8)
    assert tensor_bytes([t, t, {"again": t}, torch.zeros(2, dtype=torch.int64)]) == 32 + 16
    assert tensor_bytes(None) == 0 and tensor_bytes("text") == 0


# --------------------------------------------------------------------------- provenance
class FakeStream:
    def __init__(self, transform, class_order, classes):
        self.class_order = tuple(class_order)
        self._experiences = [SimpleNamespace(transform=transform, classes=c) for c in classes]

    def __iter__(self):
        return iter(self._experiences)


ENV = {"continual": "9.9", "torch": "2.x", "python": "3.x", "device": "cpu"}
CONFIG = {"benchmark": "b", "strategy": "replay", "epochs": 3, "lr": 0.1, "batch_size": 128, "optimizer": "sgd",
          "momentum": 0.9, "weight_decay": 5e-4, "seed": 4, "model": "resnet32", "head": "incremental",
          "class_order": "icarl", "params": {"mem": 2000, "buffer": "class-balanced", "selection": "herding",
                                             "replay_batch": 0}}


def test_provenance_of_a_cifar_like_run():
    t = Transform(mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2), scale=1 / 255, augment=RandomCropFlip(padding=4))
    stream = FakeStream(t, [2, 0, 3, 1], [(2, 0), (3, 1)])
    p = provenance(CONFIG, stream, ENV)
    assert p["augmentation"] == "random crop (padding 4) + horizontal flip"
    assert p["normalisation"] == "x * 0.003922, normalise(mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))"
    assert (p["batch_size"], p["epochs"], p["lr"], p["optimizer"], p["momentum"], p["weight_decay"]) == \
        (128, 3, 0.1, "sgd", 0.9, 5e-4)
    assert p["lr_schedule"] == "constant" and p["classifier"] == "linear"  # keys this config does not have
    assert p["class_order"] == {"name": "icarl", "seed": 1993, "order": [2, 0, 3, 1]}
    assert p["classes_per_experience"] == [2, 2] and p["seed"] == 4 and p["head"] == "incremental"
    assert p["memory"] == {"mem": 2000, "buffer": "class-balanced", "selection": "herding"}
    assert p["versions"]["continual"] == "9.9" and p["versions"]["torch"] == "2.x" and p["versions"]["numpy"]
    json.dumps(p)


@pytest.mark.parametrize("order, name, seed", [(None, "standard", None), ("random", "random", 4),
                                               ([1, 0, 2, 3], "explicit", None)])
def test_provenance_class_orders(order, name, seed):
    stream = FakeStream(Transform(), [0, 1, 2, 3], [(0, 1), (2, 3)])
    config = {**CONFIG, "class_order": order, "params": {}, "lr_schedule": "cosine", "classifier": "both"}
    p = provenance(config, stream, ENV)
    assert (p["class_order"]["name"], p["class_order"]["seed"]) == (name, seed)
    assert p["augmentation"] == "none" and p["normalisation"] == "identity" and p["memory"] == {}
    assert p["lr_schedule"] == "cosine" and p["classifier"] == "both"


def test_provenance_of_a_real_stream():
    stream = split(synthetic(num_classes=4, num_features=6, train_per_class=4, test_per_class=2), 2,
                   class_order="random", seed=7)
    p = provenance({**CONFIG, "class_order": "random", "seed": 7}, stream, ENV)
    assert p["class_order"]["order"] == list(stream.class_order) and p["class_order"]["seed"] == 7
    assert p["classes_per_experience"] == [2, 2]


def test_describe_other_augmentations():
    assert describe_augmentation(RandomCropFlip(padding=0, flip=True)) == "horizontal flip"
    assert describe_augmentation(RandomCropFlip(padding=2, flip=False)) == "random crop (padding 2)"
    assert describe_augmentation(SimpleNamespace(describe=lambda: "autoaugment")) == "autoaugment"
    assert describe_normalisation(None) == "identity"
