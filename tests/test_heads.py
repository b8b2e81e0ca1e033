"""Growing heads: old logits bit-identical, optimizer state kept, multi-head routing, backbones."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from continual import ContinualError, RunConfig, Trainer, run, split, synthetic
from continual.models import (
    MLP, ConvNet, HeadExpansion, IncrementalClassifier, MultiHeadClassifier, ResNet18, build_model, grow_head, sync_optimizer,
    unused_rows,
)


@settings(max_examples=30, deadline=None)
@given(in_features=st.integers(1, 40), first=st.integers(1, 12), steps=st.lists(st.integers(1, 7), min_size=1, max_size=4),
       batch=st.integers(1, 33), seed=st.integers(0, 2**16), ahead=st.booleans())
def test_growth_keeps_old_logits_bit_identical_and_masks_unused_rows(in_features, first, steps, batch, seed, ahead):
    """With the capacity allocated ahead, old logits are bit-identical after a growth; past it
    (reallocation), equal up to the matmul's rounding. Unused rows are -inf in train and eval."""
    torch.manual_seed(seed)
    total = first + sum(steps)
    head = IncrementalClassifier(in_features, first, capacity=total if ahead else None)
    x = torch.randn(batch, in_features) * 3
    width = first
    for extra in steps:
        old = head(x)
        capacity = head.capacity
        assert head.grow(width + extra) == []
        width += extra
        for mode in (head.train, head.eval):
            out = mode()(x)
            assert out.shape == (batch, head.capacity) and head.num_classes == width
            assert torch.isinf(out[:, width:]).all() and torch.isfinite(out[:, :width]).all()
        if head.capacity == capacity:
            assert torch.equal(out[:, : width - extra], old[:, : width - extra])
        else:
            torch.testing.assert_close(out[:, : width - extra], old[:, : width - extra], rtol=1e-5, atol=1e-5)
    assert head.capacity == total if ahead else head.capacity >= total


def test_growth_is_a_no_op_when_wide_enough_names_and_shapes_are_static():
    head = IncrementalClassifier(4, 3, capacity=8)
    names = [(n, p.shape) for n, p in head.named_parameters()]
    weight = head.weight
    assert head.grow(3) == [] and head.grow(2) == [] and head.sizes == [3]
    head.grow(5)
    assert [(n, p.shape) for n, p in head.named_parameters()] == names == [("weight", (8, 4)), ("bias", (8,))]
    assert head.weight is weight and head.sizes == [3, 2] and head.num_classes == 5 and head.capacity == 8
    assert head.active.tolist() == [True] * 5 + [False] * 3
    head.grow(9)  # past the capacity: doubled, new parameter objects holding the old rows
    assert head.capacity == 16 and head.weight is not weight and torch.equal(head.weight[:5], weight[:5])


def test_rows_coming_into_use_start_as_a_fresh_layer():
    torch.manual_seed(7)
    head = IncrementalClassifier(6, 2, capacity=5)
    state = torch.get_rng_state()
    head.grow(5)
    torch.set_rng_state(state)
    fresh = nn.Linear(6, 3)  # the same draws a new layer of the new rows would take
    assert torch.equal(head.weight[2:5], fresh.weight) and torch.equal(head.bias[2:5], fresh.bias)


def test_a_masked_row_gets_no_gradient_and_never_wins_an_argmax():
    torch.manual_seed(0)
    head = IncrementalClassifier(4, 2, capacity=6)
    with torch.no_grad():
        head.weight[2:] = 100.0  # unused rows that would win every argmax if they were not masked
        head.bias[2:] = 100.0
    x = torch.randn(32, 4)
    out = head(x)
    assert (out.argmax(1) < 2).all() and (head.eval()(x).argmax(1) < 2).all()
    nn.functional.cross_entropy(head.train()(x), torch.randint(0, 2, (32,))).backward()
    assert (head.weight.grad[2:] == 0).all() and (head.bias.grad[2:] == 0).all()
    assert head.weight.grad[:2].abs().sum() > 0
    assert unused_rows(nn.Sequential(head))["0.weight"][2:].all() and not unused_rows(nn.Sequential(head))["0.weight"][:2].any()


def _train_steps(model, opt, x, y, n=3):
    for _ in range(n):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01),
], ids=["sgd-momentum", "adam"])
@pytest.mark.parametrize("ahead", [True, False], ids=["capacity-ahead", "reallocated"])
def test_optimizer_state_of_old_rows_survives_and_new_rows_start_fresh(make_opt, ahead):
    torch.manual_seed(0)
    model = MLP(6, (8,), 3)
    model.head = IncrementalClassifier(8, 3, capacity=5 if ahead else None)
    opt = make_opt(model.parameters())
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    _train_steps(model, opt, x, y)
    before = {n: {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[p].items()} for n, p in model.named_parameters()}
    assert grow_head(model, type("E", (), {"classes": (3, 4)})()) == []
    sync_optimizer(model, opt)
    params = dict(model.named_parameters())
    in_opt = [p for g in opt.param_groups for p in g["params"]]
    assert len(in_opt) == len(params) and all(any(p is q for q in in_opt) for p in params.values())
    for name, p in params.items():
        for k, v in before[name].items():
            now = opt.state[p][k]
            if not torch.is_tensor(v) or v.dim() == 0:
                assert torch.equal(now, v) if torch.is_tensor(v) else now == v  # Adam's step: one count per tensor
            elif name.startswith("head."):
                assert torch.equal(now[:3], v[:3]) and (now[3:5] == 0).all()  # old rows kept, new rows reset
            else:
                assert torch.equal(now, v)
    moved = {n: p.detach().clone() for n, p in model.named_parameters()}
    _train_steps(model, opt, x, torch.randint(0, 5, (16,)), n=1)
    for name, p in model.named_parameters():  # every parameter, old rows and new, moved
        rows = p[:5] if name.startswith("head.") else p
        assert not torch.equal(rows.detach(), moved[name][:5] if name.startswith("head.") else moved[name])


def test_trainer_grows_the_head_in_place_and_resets_the_new_rows_state():
    stream = split(synthetic(num_features=8, seed=1), 5)
    torch.manual_seed(0)
    model = build_model("mlp", (8,), 2, head="incremental", hidden=(16,), capacity=10)
    plugin = HeadExpansion()
    trainer = Trainer(model, lr=0.1, epochs=1, device="cpu", momentum=0.9, plugins=[plugin])
    weight = model.head.weight
    acc = trainer.run(stream)
    assert plugin.report() == {"sizes": [2, 4, 6, 8, 10]} and model.head.weight is weight
    assert len(trainer.optimizer.param_groups) == 1  # no parameter joined: the rows were there
    assert acc.values.shape == (5, 5)


def test_three_class_model_expanded_to_five_keeps_its_accuracy_on_old_classes():
    data = synthetic(num_features=8, num_classes=5, seed=3)
    old = data.y_test < 3
    x_tr, y_tr = data.x_train[data.y_train < 3], data.y_train[data.y_train < 3]
    torch.manual_seed(0)
    model = MLP(8, (32,), 3)
    model.head = IncrementalClassifier(32, 3, capacity=5)
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
    assert torch.equal(after[:, :3], before[:, :3])
    # accuracy over the 3 old classes' logits is exactly what it was
    assert torch.equal(after[:, :3].argmax(1), before.argmax(1))


def test_mask_past_masks_past_classes_in_training_only():
    head = IncrementalClassifier(4, 0, capacity=6, mask_past=True)
    head.adapt([0, 1])
    head.adapt([2, 3])
    x = torch.randn(5, 4)
    out = head.train()(x)
    assert torch.isinf(out[:, :2]).all() and torch.isfinite(out[:, 2:4]).all() and torch.isinf(out[:, 4:]).all()
    assert torch.isfinite(head.eval()(x)[:, :4]).all() and torch.isinf(head.eval()(x)[:, 4:]).all()
    assert head.training_mask().tolist() == [False, False, True, True, False, False]


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
        alone = model.head.heads[str(task)](model.features(x[sel]))[:, : len(cols)]
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
    model.head.grow(4)  # past its capacity (2): reallocated to 4
    torch.testing.assert_close(model(x)[:, :2], old, rtol=1e-5, atol=1e-5)
    assert model(x).shape == (3, 4)
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


def test_resnet32_has_pycils_parameter_count_and_shapes():
    from continual.models import ResNet32

    # G-U-N/PyCIL@87cc411:convs/cifar_resnet.py resnet32(): 463,504 parameters without its fc (the
    # class-incremental survey's "0.46M"); 470,004 with a 100-way linear head
    model = ResNet32(3, 100)
    assert sum(p.numel() for n, p in model.named_parameters() if not n.startswith("head.")) == 463_504
    assert sum(p.numel() for p in model.parameters()) == 470_004
    assert len(model.blocks()) == 4 and [len(s) for s in model.blocks()[1:]] == [5, 5, 5] and model.num_features == 64
    x = torch.randn(2, 3, 32, 32)
    assert model.features(x).shape == (2, 64) and model(x).shape == (2, 100)
    maps = model.stage3(model.stage2(model.stage1(model.stem(x))))
    assert maps.shape == (2, 64, 8, 8)  # strides 1, 2, 2
    grown = build_model("resnet32", (3, 32, 32), 10, head="incremental")
    assert type(grown).__name__ == "ResNet32" and grown(x).shape == (2, 10)
