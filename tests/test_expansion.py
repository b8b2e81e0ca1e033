"""DER (continual/expansion.py): growth of the extractors and the head, frozen parts, the
auxiliary head's targets, masking, resume, and a small split-digits run against fine-tuning."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import continual.expansion  # noqa: F401  (registers "der")
from continual import ContinualError, RunConfig, run, split, synthetic
from continual.benchmarks import make_stream
from continual.expansion import DER, DERNet, as_dernet, widen
from continual.models import HeadExpansion, build_model, grow_head
from continual.replay import ClassBalancedBuffer
from continual.strategies import STRATEGIES
from continual.trainer import Trainer


def der_trainer(model, stream, *, mem=40, epochs=1, **kwargs):
    grow_head(model, stream[0])
    plugin = DER(ClassBalancedBuffer(mem, selection="herding") if mem else None, **kwargs)
    trainer = Trainer(model, lr=0.05, epochs=epochs, batch_size=16, device="cpu", seed=0, plugins=[HeadExpansion(model), plugin])
    return trainer, plugin


def test_extractors_and_feature_width_grow_one_per_experience():
    torch.manual_seed(0)
    stream = split(synthetic(num_features=8, train_per_class=20, test_per_class=5), 3)
    model = build_model("mlp", (8,), 0, head="incremental", capacity=10, hidden=(16,))
    trainer, plugin = der_trainer(model, stream)
    counts = []
    trainer.callbacks.append(lambda event, info: counts.append(model.num_extractors) if event == "experience_end" else None)
    trainer.run(stream)
    assert isinstance(model, DERNet) and type(model).__name__ == "DERMLP"
    assert counts == [1, 2, 3] and model.num_extractors == 3
    assert plugin.report()["feature_width"] == [16, 32, 48] and model.num_features == 48
    assert model.features(stream[0].x_test).shape == (len(stream[0].y_test), 48)
    assert model.head.weight.shape == (10, 48) and model.head.in_features == 48
    assert model.der_aux is None  # the auxiliary head lives only while its experience trains
    params = plugin.report()["parameters"]
    assert params == sorted(params) and params[0] < params[1] < params[2]
    assert params[-1] == sum(p.numel() for p in model.parameters())
    # Only the newest extractor and the head train.
    trainable = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("der_extractors") else "")
                 for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head", "der_extractors.1"}


def test_old_extractors_parameters_and_batchnorm_statistics_are_bit_identical_across_an_experience():
    torch.manual_seed(0)
    stream = make_stream("split-digits", num_experiences=3)
    model = build_model("convnet", (1, 8, 8), 0, head="incremental", capacity=10, channels=(4, 8))
    trainer, plugin = der_trainer(model, stream, mem=20)
    trainer.fit(stream[0])
    trainer.fit(stream[1])
    old = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(("head", "der_extractors.0"))}
    newest = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("der_extractors.0")}
    assert any("running_mean" in k for k in old) and any("num_batches_tracked" in k for k in old)
    trainer.fit(stream[2])
    now = model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in old.items())  # extractor 0, frozen in experience 1 and 2
    assert all(torch.equal(now[k], v) for k, v in newest.items())  # extractor 1, frozen in experience 2
    assert not torch.equal(now["der_extractors.1.backbone.0.0.weight"], newest["der_extractors.0.backbone.0.0.weight"])
    model.train()
    assert not model.backbone.training and not model.der_extractors[0].training and model.der_extractors[1].training


def test_a_new_extractor_starts_from_the_previous_one_and_old_logits_keep_their_columns():
    torch.manual_seed(0)
    model = as_dernet(build_model("mlp", (4,), 0, head="incremental", capacity=6, hidden=(5,)))
    model.head.grow(2)
    w_old = model.head.weight.detach().clone()
    x = torch.randn(3, 4)
    f0 = model.features(x)
    model.add_extractor()
    assert torch.equal(model.features(x), torch.cat([f0, f0], 1))  # the copy has the previous extractor's weights
    assert torch.equal(model.head.weight[:, :5], w_old)
    assert model.der_extractors[0].head.__class__ is nn.Identity
    with pytest.raises(ContinualError, match="widen"):
        widen(model.head, 3)


def test_auxiliary_targets_map_every_old_class_to_one_class_on_a_hand_example():
    torch.manual_seed(0)
    stream = split(synthetic(num_features=6, num_classes=6, train_per_class=4, test_per_class=2), 3)
    model = build_model("mlp", (6,), 0, head="incremental", capacity=6, hidden=(8,))
    trainer, plugin = der_trainer(model, stream, mem=0, aux_weight=0.5)
    trainer.fit(stream[0])  # classes 0, 1
    trainer.fit(stream[1])  # classes 2, 3
    plugin.before_experience(model, stream[2])  # classes 4, 5 new; 0..3 old
    assert model.der_aux.out_features == 3
    model.train()
    x = torch.randn(6, 6)
    y = torch.tensor([0, 3, 4, 5, 1, -100])  # -100: a label the loss ignores (DER++'s replayed part)
    out = model(x)
    aux = model.der_aux(model._der_new)
    expected = 0.5 * F.cross_entropy(aux, torch.tensor([0, 0, 1, 2, 0, -100]))
    assert torch.allclose(plugin.penalty(model, x=x, y=y, t=torch.zeros(6, dtype=torch.long), out=out), expected)
    assert model._der_new is None  # taken by the penalty


def test_no_auxiliary_head_in_the_first_experience():
    stream = split(synthetic(num_features=6, num_classes=4, train_per_class=4, test_per_class=2), 2)
    model = build_model("mlp", (6,), 0, head="incremental", capacity=4, hidden=(8,))
    trainer, plugin = der_trainer(model, stream, mem=0)
    plugin.before_experience(model, stream[0])
    assert model.der_aux is None and plugin.penalty(model, x=None, y=None, t=None, out=None) is None


def test_logits_of_classes_not_seen_are_minus_infinity():
    torch.manual_seed(0)
    stream = split(synthetic(num_features=8, train_per_class=10, test_per_class=5), 5)
    model = build_model("mlp", (8,), 0, head="incremental", capacity=10, hidden=(16,))
    trainer, plugin = der_trainer(model, stream)
    trainer.fit(stream[0])
    trainer.fit(stream[1])
    for mode in (True, False):
        model.train(mode)
        out = model(stream[0].x_test)
        assert out.shape[1] == 10 and out[:, 4:].isneginf().all() and out[:, :4].isfinite().all()
    model.der_aux = None  # (after_experience drops it; train mode with an aux head stashes features)


def test_exemplars_join_the_training_data_and_after_experience_uses_the_experience_itself():
    torch.manual_seed(0)
    stream = split(synthetic(num_features=8, train_per_class=10, test_per_class=5), 5)
    model = build_model("mlp", (8,), 0, head="incremental", capacity=10, hidden=(16,))
    trainer, plugin = der_trainer(model, stream, mem=8)
    trainer.fit(stream[0])
    assert len(plugin.buffer) == 8
    joined = plugin.experience_data(stream[1])
    assert joined.num_train == stream[1].num_train + 8 and set(joined.y_train[-8:].tolist()) == {0, 1}
    plugin._original = None
    trainer.fit(stream[1])
    assert plugin.buffer.group_counts() == {0: 2, 1: 2, 2: 2, 3: 2}  # herding over the experience, not over the join


def test_strategy_defaults_have_limits_and_sources():
    s = STRATEGIES["der"]
    assert s.defaults == {"mem": 2000, "aux_weight": 1.0, "weight_align": True}
    assert set(s.limits) == set(s.defaults) and s.past_classes
    with pytest.raises(ContinualError, match="aux_weight"):
        s.params({"aux_weight": -1.0})
    with pytest.raises(ContinualError, match="multi-head"):
        as_dernet(build_model("mlp", (4,), 0, head="multi"))


def test_a_dernet_deep_copies_and_its_state_dict_loads_into_a_regrown_model():
    torch.manual_seed(0)
    stream = split(synthetic(num_features=8, train_per_class=10, test_per_class=5), 3)
    model = build_model("mlp", (8,), 0, head="incremental", capacity=10, hidden=(16,))
    trainer, plugin = der_trainer(model, stream)
    trainer.fit(stream[0])
    trainer.fit(stream[1])
    twin = copy.deepcopy(model)  # LwF's frozen copy, for instance
    assert type(twin) is type(model) and torch.equal(twin(stream[0].x_test), model(stream[0].x_test))
    fresh = build_model("mlp", (8,), 0, head="incremental", capacity=10, hidden=(16,))
    grow_head(fresh, stream[0])
    HeadExpansion(fresh).load_state_dict(trainer.plugins[0].state_dict())
    DER(ClassBalancedBuffer(40, selection="herding")).load_state_dict(plugin.state_dict(), model=fresh)
    fresh.load_state_dict(model.state_dict())
    model.eval(), fresh.eval()
    assert torch.equal(fresh(stream[2].x_test), model(stream[2].x_test))
    assert [p.requires_grad for p in fresh.parameters()] == [p.requires_grad for p in model.parameters()]


@pytest.mark.parametrize("model", ["mlp", "convnet"])
def test_der_records_its_growth(model):
    """(Its resume, MLP and ConvNet, is checked in tests/test_resume.py.)"""
    whole = run(RunConfig(strategy="der", model=model, epochs=1, num_experiences=4, device="cpu", seed=1, params={"mem": 40}))
    assert whole.extra["der"]["feature_width"][-1] == 4 * whole.extra["der"]["feature_width"][0]
    assert whole.extra["memory"]["model_parameters"] == 4 * whole.extra["der"]["parameters"][-1]  # float32
    der = whole.extra["der"]
    assert der["gamma"][0] is None and all(isinstance(g, float) and g > 0 for g in der["gamma"][1:])  # PyCIL aligns from task 2
    assert der["trainable_parameters"][0] == der["parameters"][0]
    assert all(t < p for t, p in zip(der["trainable_parameters"][1:], der["parameters"][1:]))


def test_der_with_the_nme_classifier_uses_its_exemplars():
    r = run(RunConfig(strategy="der", epochs=1, num_experiences=3, device="cpu", seed=0, classifier="both",
                      params={"mem": 30}))
    assert list(r.classifiers) == ["nme"] and r.extra["memory"]["num_exemplars"] == 30
    assert r.extra["nme"]["classes_with_mean"] == 10  # every class has a mean, in the widest feature space


def test_der_beats_finetune_on_split_digits():
    results = {name: run(RunConfig(strategy=name, epochs=3, device="cpu", seed=0, params=params))
               for name, params in (("finetune", {}), ("der", {"mem": 200}))}
    acc = {name: r.metrics["final_average_accuracy"] for name, r in results.items()}
    assert acc["der"] > acc["finetune"] + 0.3, acc
