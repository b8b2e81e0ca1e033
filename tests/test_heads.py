"""Growing heads: old logits bit-identical, optimizer state kept, multi-head routing, backbones."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from continual import ContinualError, RunConfig, Trainer, run, split, synthetic
from continual.models import (
    MLP, ConvNet, HeadExpansion, IncrementalClassifier, MultiHeadClassifier, ResNet18, build_model, grow_head,
)


@settings(max_examples=30, deadline=None)
@given(in_features=st.integers(1, 40), first=st.integers(1, 12), steps=st.lists(st.integers(1, 7), min_size=1, max_size=4),
       batch=st.integers(1, 33), seed=st.integers(0, 2**16))
def test_expansion_keeps_old_logits_bit_identical(in_features, first, steps, batch, seed):
    torch.manual_seed(seed)
    head = IncrementalClassifier(in_features, first)
    x = torch.randn(batch, in_features) * 3
    width = first
    for extra in steps:
        old = head(x)
        new_params = head.grow(width + extra)
        width += extra
        out = head(x)
        assert out.shape == (batch, width) and len(new_params) == 2
        assert torch.equal(out[:, : old.shape[1]], old)
        assert new_params[0].shape == (extra, in_features)


def test_growth_is_a_no_op_when_wide_enough_and_names_are_stable():
    head = IncrementalClassifier(4, 3)
    names = [n for n, _ in head.named_parameters()]
    assert head.grow(3) == [] and head.grow(2) == []
    head.grow(5)
    assert names == ["blocks.0.weight", "blocks.0.bias"]
    assert [n for n, _ in head.named_parameters()] == names + ["blocks.1.weight", "blocks.1.bias"]  # in the order added
    assert head.sizes == [3, 2] and head.num_classes == 5


def _train_steps(model, opt, x, y, n=3):
    for _ in range(n):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    lambda p: torch.optim.Adam(p, lr=0.01),
], ids=["sgd-momentum", "adam"])
def test_optimizer_state_of_old_parameters_survives_and_every_parameter_steps(make_opt):
    torch.manual_seed(0)
    model = MLP(6, (8,), 3)
    model.head = IncrementalClassifier(8, 3)
    opt = make_opt(model.parameters())
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    _train_steps(model, opt, x, y)
    old_params = list(model.parameters())
    state_before = {id(p): {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[p].items()} for p in old_params}
    new = grow_head(model, type("E", (), {"classes": (3, 4)})())
    opt.add_param_group({"params": new})
    for p in old_params:  # state untouched by the expansion
        for k, v in state_before[id(p)].items():
            assert torch.equal(opt.state[p][k], v) if torch.is_tensor(v) else opt.state[p][k] == v
    before = {id(p): p.detach().clone() for p in model.parameters()}
    y2 = torch.randint(0, 5, (16,))
    _train_steps(model, opt, x, y2, n=1)
    for p in model.parameters():  # every parameter, old and new, moved
        assert not torch.equal(p.detach(), before[id(p)])
    assert opt.state[new[0]]  # the new rows have optimizer state now


def test_trainer_adds_new_rows_to_its_optimizer():
    stream = split(synthetic(num_features=8, seed=1), 5)
    torch.manual_seed(0)
    model = build_model("mlp", (8,), 2, head="incremental", hidden=(16,))
    plugin = HeadExpansion()
    trainer = Trainer(model, lr=0.1, epochs=1, device="cpu", momentum=0.9, plugins=[plugin])
    acc = trainer.run(stream)
    assert plugin.report() == {"sizes": [2, 4, 6, 8, 10]}
    in_opt = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in in_opt for p in model.parameters())
    assert acc.values.shape == (5, 5)


def test_three_class_model_expanded_to_five_keeps_its_accuracy_on_old_classes():
    data = synthetic(num_features=8, num_classes=5, seed=3)
    old = data.y_test < 3
    x_tr, y_tr = data.x_train[data.y_train < 3], data.y_train[data.y_train < 3]
    torch.manual_seed(0)
    model = MLP(8, (32,), 3)
    model.head = IncrementalClassifier(32, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(30):
        _train_steps(model, opt, x_tr, y_tr, n=1)
    model.eval()
    with torch.no_grad():
        before = model(data.x_test[old])
        acc_before = (before.argmax(1) == data.y_test[old]).float().mean()
        model.head.grow(5)
        after = model(data.x_test[old])
    assert acc_before > 0.8
    assert torch.equal(after[:, :3], before)
    # accuracy over the 3 old classes' logits is exactly what it was
    assert torch.equal(after[:, :3].argmax(1), before.argmax(1))


def test_mask_past_masks_past_classes_in_training_only():
    head = IncrementalClassifier(4, 0, mask_past=True)
    head.adapt([0, 1])
    head.adapt([2, 3])
    x = torch.randn(5, 4)
    out = head.train()(x)
    assert torch.isinf(out[:, :2]).all() and torch.isfinite(out[:, 2:]).all()
    assert torch.isfinite(head.eval()(x)).all()


def test_multi_head_routing_of_a_mixed_batch_equals_per_task_passes():
    torch.manual_seed(0)
    model = build_model("mlp", (6,), 0, head="multi", hidden=(16,))
    assert model.takes_task_id
    model.head.adapt([(0, 0), (0, 1), (1, 2), (1, 3), (2, 4), (2, 5), (2, 6)])
    assert model.head.sizes == {0: 2, 1: 2, 2: 3}
    x = torch.randn(24, 6)
    t = torch.randint(0, 3, (24,))
    out = model(x, t)
    assert out.shape == (24, 7)
    classes = {0: [0, 1], 1: [2, 3], 2: [4, 5, 6]}
    for task, cols in classes.items():
        sel = t == task
        alone = model.head.heads[str(task)](model.features(x[sel]))
        # the same rows through a matmul over another batch size: float32 rounding may differ
        torch.testing.assert_close(out[sel][:, cols], alone, rtol=1e-5, atol=1e-6)
        others = [c for c in range(7) if c not in cols]
        assert torch.isinf(out[sel][:, others]).all()


def test_multi_head_grows_per_task_and_joins_the_optimizer():
    stream = split(synthetic(num_features=8, seed=1), 5, scenario="task")
    torch.manual_seed(0)
    model = build_model("mlp", (8,), 0, head="multi", hidden=(16,))
    grow_head(model, stream[0])
    plugin = HeadExpansion()
    trainer = Trainer(model, lr=0.1, epochs=2, device="cpu", plugins=[plugin])
    acc = trainer.run(stream)
    assert plugin.report()["sizes"][-1] == {str(k): 2 for k in range(5)}
    assert acc.values.diagonal().min() > 0.6  # each task's head learns its 2 classes


def test_run_records_head_sizes_and_defaults_to_an_expanding_head():
    r = run(RunConfig(strategy="finetune", epochs=1, device="cpu", num_experiences=2))
    assert r.config["head"] == "incremental"
    assert r.extra["head"] == {"sizes": [5, 10]}
    r = run(RunConfig(strategy="joint", epochs=1, device="cpu", num_experiences=2))
    assert r.extra["head"] == {"sizes": [10]}
    r = run(RunConfig(strategy="finetune", scenario="task", head="multi", epochs=1, device="cpu", num_experiences=2))
    assert r.extra["head"]["sizes"][-1] == {"0": 5, "1": 5} and r.metrics["final_average_accuracy"] > 0.5
    r = run(RunConfig(strategy="finetune", scenario="task", epochs=1, device="cpu", num_experiences=2))
    assert r.config["head"] == "fixed" and "head" not in r.extra


@pytest.mark.parametrize("nf, params", [(20, 1_109_240), (64, 11_220_132)])
def test_resnet18_reduced_and_full(nf, params):
    model = ResNet18(3, 100, nf=nf)
    # 100 classes: 1.11M parameters reduced (GEM), 11.22M full width (the usual CIFAR ResNet-18)
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.blocks()) == 5 and model.num_features == 8 * nf


def test_resnet18_on_tiny_inputs_with_an_expanding_head():
    torch.manual_seed(0)
    model = build_model("resnet18", (1, 8, 8), 2, head="incremental", nf=4)
    x = torch.randn(3, 1, 8, 8)
    old = model.eval()(x)
    model.head.grow(4)
    assert torch.equal(model(x)[:, :2], old) and model(x).shape == (3, 4)
    assert build_model("resnet18-full", (3, 8, 8), 2).num_features == 512


def test_build_model_errors():
    with pytest.raises(ContinualError, match="unknown model 'vit'; expected one of mlp, convnet, resnet18"):
        build_model("vit", (1, 8, 8), 10)
    with pytest.raises(ContinualError, match="unknown head 'wide'; expected one of fixed, incremental"):
        build_model("mlp", (1, 8, 8), 10, head="wide")
    with pytest.raises(ContinualError, match="needs image inputs"):
        build_model("resnet18", (64,), 10)
    with pytest.raises(ContinualError, match="unknown head 'wide'"):
        RunConfig(head="wide").resolve()


def test_torchvision_resnet18_absent_is_a_clear_error():
    try:
        import torchvision  # noqa: F401
    except Exception:
        with pytest.raises(ContinualError, match="model 'resnet18-torchvision' needs torchvision.*use --model resnet18"):
            build_model("resnet18-torchvision", (3, 32, 32), 10)
    else:
        model = build_model("resnet18-torchvision", (3, 32, 32), 10)
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_convnet_and_mlp_keep_their_interface():
    for model in (MLP(64, (32,), 10), ConvNet(1, 10, channels=(8, 16))):
        x = torch.randn(2, 1, 8, 8)
        assert model(x).shape == (2, 10) and not model.takes_task_id
        assert model.features(x).shape == (2, model.num_features)


@settings(max_examples=20, deadline=None)
@given(in_features=st.integers(1, 40), steps=st.lists(st.integers(1, 7), min_size=2, max_size=4), seed=st.integers(0, 2**16))
def test_fused_head_matches_the_blockwise_head(in_features, steps, seed):
    torch.manual_seed(seed)
    head = IncrementalClassifier(in_features, 0)
    for s in steps:
        head.grow(head.num_classes + s)
    fused = IncrementalClassifier(in_features, 0, fused=True)
    fused.blocks = head.blocks
    x = torch.randn(9, in_features)
    torch.testing.assert_close(fused(x), head(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scenario, head", [("class", "incremental"), ("task", "multi")])
def test_plugin_state_regrows_the_heads_of_a_fresh_model(scenario, head):
    stream = split(synthetic(num_features=8, seed=1), 5, scenario=scenario)

    def fresh():
        torch.manual_seed(0)
        model = build_model("mlp", (8,), 0, head=head, hidden=(16,))
        grow_head(model, stream[0])
        return model

    model = fresh()
    plugin = HeadExpansion(model)
    trainer = Trainer(model, lr=0.1, epochs=1, momentum=0.9, device="cpu", plugins=[plugin])
    trainer.run(stream[:3])
    state = plugin.state_dict()
    other = fresh()
    again = HeadExpansion(other)
    again.load_state_dict(state)
    assert again.report() == plugin.report()
    other.load_state_dict(model.state_dict())  # same keys and shapes
    assert [n for n, _ in other.named_parameters()] == [n for n, _ in model.named_parameters()]
    x, t = stream[2].transform(stream[2].x_test), stream[2].t_test
    assert torch.equal(other.eval()(x, t) if head == "multi" else other.eval()(x), model.eval()(x, t) if head == "multi" else model.eval()(x))
    # the optimizer's groups, rebuilt one per growth step in parameter order, take the saved state
    params = list(other.parameters())
    opt = torch.optim.SGD(params[: len(trainer.optimizer.param_groups[0]["params"])], lr=0.1, momentum=0.9)
    rest = params[len(opt.param_groups[0]["params"]):]
    for g in trainer.optimizer.param_groups[1:]:
        opt.add_param_group({"params": rest[: len(g["params"])]})
        rest = rest[len(g["params"]):]
    opt.load_state_dict(trainer.optimizer.state_dict())
    for p, q in zip(other.parameters(), model.parameters()):
        assert p.shape == q.shape and torch.equal(opt.state[p]["momentum_buffer"], trainer.optimizer.state[q]["momentum_buffer"])
