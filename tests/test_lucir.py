"""LUCIR (Hou et al. 2019): the cosine head, each loss term against a hand computation, the
adaptive lambda, the frozen old rows, imprinting, the exemplars joined to the data, and resume."""

import doctest
import math

import pytest
import torch
import torch.nn.functional as F

import continual.models.heads as heads_module
import continual.regularizers.lucir as lucir_module  # registers "lucir"
from continual import MLP, RunConfig, run
from continual.errors import ContinualError
from continual.models import HeadExpansion, IncrementalClassifier, grow_head, sync_optimizer, unused_rows
from continual.models.heads import CosineIncrementalClassifier
from continual.regularizers.lucir import (
    LUCIR, ExemplarReplay, adaptive_lambda, less_forget_loss, margin_ranking_loss, use_cosine_head,
)
from continual.replay.buffers import ClassBalancedBuffer
from continual.data import synthetic
from continual.streams import split
from continual.strategies import Context, get_strategy
from continual.trainer import Trainer


def test_doctests():
    for module in (lucir_module,):
        assert doctest.testmod(module).failed == 0
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner()
    for test in finder.find(CosineIncrementalClassifier, "CosineIncrementalClassifier", globs=vars(heads_module)):
        runner.run(test)
    assert runner.failures == 0


# ---------------------------------------------------------------------------- the cosine head
def test_cosine_head_logits_by_hand():
    head = CosineIncrementalClassifier(2, 2, capacity=3, sigma=2.0)
    with torch.no_grad():
        head.weight[:2] = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    x = torch.tensor([[3.0, 4.0], [0.0, -2.0]])
    out = head(x)  # sigma * cos: (3/5, 4/5) and (0, -1), times 2
    assert torch.allclose(out[:, :2], torch.tensor([[1.2, 1.6], [0.0, -2.0]]))
    assert out[:, 2].isinf().all() and (out[:, 2] < 0).all()
    assert torch.allclose(head.cosine(x)[:, :2], torch.tensor([[0.6, 0.8], [0.0, -1.0]]))
    assert head.bias is None and head.sigma.shape == (1,) and head.sigma.requires_grad
    assert [n for n, _ in head.named_parameters()] == ["weight", "sigma"]
    out[:, :2].sum().backward()  # the scale learns: d/dsigma = sum of the cosines
    assert torch.allclose(head.sigma.grad, torch.tensor([0.6 + 0.8 + 0.0 - 1.0]))
    assert head.weight.grad[2].abs().sum() == 0  # an unused row gets no gradient


def test_cosine_head_initialises_as_the_reference():
    head = CosineIncrementalClassifier(16, 200)
    assert head.sigma.item() == 1.0  # CosineLinear.reset_parameters: sigma.fill_(1)
    bound = 1 / math.sqrt(16)  # weight.uniform_(-1/sqrt(in), 1/sqrt(in))
    assert head.weight.abs().max() <= bound and head.weight.abs().max() > 0.9 * bound


def test_cosine_head_keeps_old_logits_after_growth_and_masks_unused_rows():
    torch.manual_seed(0)
    head = CosineIncrementalClassifier(4, 2, capacity=6)
    opt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(5, 4)
    head(x)[:, :2].logsumexp(1).sum().backward()
    opt.step()
    before = head(x)
    assert before[:, 2:].isinf().all()
    head.grow(4)
    sync_optimizer(head, opt)
    after = head(x)
    assert torch.equal(after[:, :2], before[:, :2])  # bit for bit
    assert torch.isfinite(after[:, :4]).all() and after[:, 4:].isinf().all()
    assert head.sizes == [2, 2] and head.training_mask().tolist() == [True] * 4 + [False] * 2
    assert opt.state[head.weight]["momentum_buffer"][2:4].abs().sum() == 0  # new rows start with no momentum
    assert opt.state[head.weight]["momentum_buffer"][:2].abs().sum() > 0
    head.grow(9)  # past the capacity: reallocated, old logits equal up to rounding
    sync_optimizer(head, opt)
    assert head.capacity == 12 and torch.allclose(head(x)[:, :2], before[:, :2]) and head(x)[:, 9:].isinf().all()
    assert set(unused_rows(torch.nn.Sequential(head))) == {"0.weight"}  # the scale is not a per-row parameter


def test_use_cosine_head_keeps_capacity_classes_and_history():
    torch.manual_seed(0)
    model = MLP(6, (8,), 1)
    model.head = IncrementalClassifier(8, 0, capacity=10)
    model.head.grow(2)
    model.head.grow(4)
    old_weight = model.head.weight.detach().clone()
    head = use_cosine_head(model)
    assert model.head is head and isinstance(head, CosineIncrementalClassifier)
    assert (head.capacity, head.num_classes, head.sizes) == (10, 4, [2, 2])
    assert torch.equal(head.weight.detach(), old_weight) and head.active.tolist() == [True] * 4 + [False] * 6
    assert use_cosine_head(model) is head  # a no-op the second time
    head.grow(6)  # keeps growing as HeadExpansion grows it
    assert head.num_classes == 6 and head(torch.randn(3, 8))[:, 6:].isinf().all()
    fixed = MLP(6, (8,), 3)
    with pytest.raises(ContinualError, match="class-incremental head"):
        use_cosine_head(fixed)


# ---------------------------------------------------------------------------- the loss terms
def test_less_forget_loss_by_hand():
    new = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]], requires_grad=True)
    old = torch.tensor([[1.0, 1.0], [0.0, 1.0], [-3.0, -4.0]])
    expected = ((1 - 1 / math.sqrt(2)) + 0.0 + 2.0) / 3  # cosines 1/sqrt(2), 1, -1
    loss = less_forget_loss(new, old)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    reference = torch.nn.CosineEmbeddingLoss()(new, old, torch.ones(3))  # what A and F call
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    loss.backward()
    assert new.grad[1].abs().sum() < 1e-6  # already aligned: no gradient
    assert adaptive_lambda(5.0, 50, 10) == pytest.approx(5 * math.sqrt(5))
    assert adaptive_lambda(5.0, 4, 2) == pytest.approx(5 * math.sqrt(2)) and adaptive_lambda(5.0, 3, 0) == 5.0


def test_margin_ranking_loss_by_hand():
    cos = torch.tensor([
        [0.6, 0.1, 0.9, 0.3, 0.0],  # old class 0: negatives 0.9, 0.3 -> 0.8 + 0.2
        [0.2, 0.7, 0.1, 0.0, 0.2],  # old class 1: negatives 0.2, 0.1 -> 0.0 + 0.0
        [0.5, 0.5, 0.9, 0.9, 0.9],  # new class 2: not a hard sample
        [0.9, 0.9, 0.9, 0.9, 0.9],  # ignored label (-100): not a hard sample
    ], requires_grad=True)
    y = torch.tensor([0, 1, 2, -100])
    old = torch.tensor([True, True, False, False, False])
    new = torch.tensor([False, False, True, True, True])
    loss = margin_ranking_loss(cos, y, old, new, margin=0.5, k=2)
    assert loss.item() == pytest.approx((0.8 + 0.2 + 0.0 + 0.0) / 4)
    gt = torch.tensor([[0.6], [0.7]]).repeat(1, 2).view(-1, 1)  # the reference's call, on the two hard samples
    neg = torch.tensor([[0.9, 0.3], [0.2, 0.1]]).view(-1, 1)
    assert loss.item() == pytest.approx(torch.nn.MarginRankingLoss(margin=0.5)(gt, neg, torch.ones(4, 1)).item())
    loss.backward()
    assert cos.grad[0].tolist() == pytest.approx([-0.5, 0, 0.25, 0.25, 0])  # pushes gt up, negatives down
    assert cos.grad[2:].abs().sum() == 0
    assert margin_ranking_loss(cos, torch.tensor([2, 3, 4, 2]), old, new).item() == 0.0  # no old-class sample
    assert margin_ranking_loss(cos, y, old, new, margin=0.5, k=1).item() == pytest.approx((0.8 + 0.0) / 2)


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    stream = split(synthetic(num_features=6, num_classes=6, train_per_class=20, test_per_class=5, seed=seed), 3)
    model = MLP(6, (16,), 1)
    model.head = IncrementalClassifier(16, 0, capacity=6)
    grow_head(model, stream[0])
    use_cosine_head(model)
    return stream, model


def test_the_plugin_penalty_is_the_weighted_sum_of_the_terms():
    stream, model = _tiny()
    lucir = LUCIR(5.0, margin=0.5, K=2, margin_weight=0.7, imprint=False)
    lucir.before_experience(model, stream[0])
    x = stream[0].transform(stream[0].x_train[:8])
    model(x)
    assert lucir.penalty(model, x=x, y=stream[0].y_train[:8]) is None  # nothing old yet
    lucir.consolidate(model, stream[0])
    assert lucir.old_classes == sorted(stream[0].classes)
    grow_head(model, stream[1])
    lucir.before_experience(model, stream[1])
    assert lucir.lam == pytest.approx(5.0 * math.sqrt(2 / 2))
    with torch.no_grad():  # move the model away from the frozen copy
        for p in model.backbone.parameters():
            p.add_(0.3 * torch.randn_like(p))
    xs = torch.cat([stream[1].x_train[:6], stream[0].x_train[:4]])  # new samples and "exemplars"
    y = torch.cat([stream[1].y_train[:6], stream[0].y_train[:4]])
    x = stream[1].transform(xs)
    model.train()
    out = model(x)
    value = lucir.penalty(model, x=x, y=y, out=out)  # reads the features of this forward pass
    f, f_old = model.features(x), lucir.old_model.features(x)
    old = torch.zeros(6, dtype=torch.bool)
    old[list(stream[0].classes)] = True
    new = torch.zeros(6, dtype=torch.bool)
    new[list(stream[1].classes)] = True
    expected = 5.0 * less_forget_loss(f, f_old) + 0.7 * margin_ranking_loss(model.head.cosine(f), y, old, new, margin=0.5, k=2)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6) and value.item() > 0
    assert lucir.penalty(model, x=x, y=y).item() == pytest.approx(value.item(), rel=1e-6)  # without a forward: computed
    value.backward()
    assert model.head.sigma.grad is None or model.head.sigma.grad.abs().sum() == 0  # the terms do not use the scale
    with torch.no_grad():
        lucir.old_model.train()(x)
    assert lucir._features is None and not lucir.old_model.head._forward_hooks  # the frozen copy is not watched


def test_adaptive_lambda_and_k_follow_the_experiences():
    stream, model = _tiny()
    lucir = LUCIR(5.0, K=3, imprint=False)
    lucir.before_experience(model, stream[0])
    lucir.consolidate(model, stream[0])
    grow_head(model, stream[1])
    lucir.before_experience(model, stream[1])
    assert lucir.lam == pytest.approx(5.0) and lucir._k == 2  # 2 old / 2 new; K capped by the new classes
    lucir.consolidate(model, stream[1])
    grow_head(model, stream[2])
    lucir.before_experience(model, stream[2])
    assert lucir.lam == pytest.approx(5.0 * math.sqrt(4 / 2))
    fixed = LUCIR(5.0, adapt_lambda=False, imprint=False)
    fixed.old_classes = [0, 1, 2, 3]
    fixed.before_experience(model, stream[2])
    assert fixed.lam == 5.0


def test_old_rows_stay_fixed_and_new_rows_are_imprinted():
    stream, model = _tiny()
    lucir = LUCIR(5.0)
    trainer = Trainer(model, lr=0.1, momentum=0.9, weight_decay=1e-3, epochs=2, batch_size=8, device="cpu",
                      plugins=[HeadExpansion(model), lucir])
    trainer.fit(stream[0])
    first = model.head.weight.detach().clone()
    new = list(stream[1].classes)
    grow_head(model, stream[1])
    lucir.before_experience(model, stream[1])  # imprinting, by hand
    feats = F.normalize(model.features(stream[1].transform(stream[1].x_train)).detach(), dim=1)
    for c in new:
        direction = F.normalize(feats[stream[1].y_train == c].mean(0), dim=0)
        row = model.head.weight[c].detach()
        assert torch.allclose(F.normalize(row, dim=0), direction, atol=1e-5)
        assert row.norm().item() == pytest.approx(first[:2].norm(dim=1).mean().item(), rel=1e-5)
    trainer.fit(stream[1])
    w = model.head.weight.detach()
    assert torch.equal(w[:2], first[:2])  # old rows fixed despite momentum and weight decay
    assert not torch.equal(w[2:4], first[2:4])
    free = LUCIR(5.0, freeze_old=False, imprint=False)
    stream, model = _tiny()
    trainer = Trainer(model, lr=0.1, epochs=1, batch_size=8, device="cpu", plugins=[HeadExpansion(model), free])
    trainer.fit(stream[0])
    first = model.head.weight.detach().clone()
    trainer.fit(stream[1])
    assert not torch.equal(model.head.weight.detach()[:2], first[:2])


def test_exemplars_join_the_training_data_and_the_buffer_refills_from_the_experience():
    stream, model = _tiny()
    buffer = ClassBalancedBuffer(24, selection="herding", per_class=4)  # 4 per class, 6 classes allocated
    plugin = ExemplarReplay(buffer)
    assert plugin.experience_data(stream[0]) is None  # nothing stored yet
    plugin.after_experience(model, stream[0])
    assert buffer.group_counts() == {0: 4, 1: 4}
    joined = plugin.experience_data(stream[1])
    assert joined.num_train == stream[1].num_train + 8 and joined.classes == stream[1].classes
    assert torch.equal(joined.y_train[-8:], buffer.stored().y)
    plugin.after_experience(model, joined)  # refilled from stream[1] alone: no exemplar taken twice
    counts = buffer.group_counts()
    assert counts == {0: 4, 1: 4, 2: 4, 3: 4}
    x = buffer.stored().x
    assert len(torch.unique(x, dim=0)) == len(x)


# ---------------------------------------------------------------------------- the strategy
def test_the_strategy_swaps_the_head_and_exposes_its_buffer():
    strategy = get_strategy("lucir")
    params = strategy.params()
    assert params == {"mem_per_class": 20, "mem": 2000, "lambda_base": 5.0, "adapt_lambda": True, "margin": 0.5, "K": 2,
                      "margin_weight": 1.0, "freeze_old": True, "imprint": True}
    assert set(strategy.limits) == set(params) and strategy.past_classes
    stream, _ = _tiny()
    plugins = strategy.make_plugins(params, Context(stream=stream, device=torch.device("cpu"), seed=0))
    assert [type(p).__name__ for p in plugins] == ["ExemplarReplay", "LUCIR"]
    assert plugins[0].buffer.capacity == 20 * 6 and plugins[0].buffer.selection == "herding"
    with pytest.raises(ContinualError, match="lucir.K=0 is out of range"):
        strategy.params({"K": 0})


def test_a_run_learns_and_records_its_terms():
    r = run(RunConfig(strategy="lucir", epochs=1, device="cpu", seed=0, classifier="both"))
    extra = r.extra["lucir"]
    assert extra["lambdas"][0] == 0.0 and extra["lambdas"][1] == pytest.approx(5.0)  # split-digits: 2 classes per step
    assert extra["lambdas"][4] == pytest.approx(5.0 * math.sqrt(8 / 2))
    assert all(v > 0 for v in extra["terms"]["margin"][1:]) and r.penalties["lucir"][0] == 0.0
    assert r.extra["exemplars"]["size"] == 200 and list(r.classifiers) == ["nme"]
    assert r.metrics["final_average_accuracy"] > 0.5  # fine-tuning ends near 1/5 here
    assert r.extra["memory"]["exemplars"] > 0 and r.extra["memory"]["plugins"]["lucir"] > 0  # the frozen copy counts


def test_the_head_must_grow_before_lucir_and_copies_share_the_hook():
    import copy

    stream, model = _tiny()
    lucir = LUCIR(imprint=False)
    lucir.before_experience(model, stream[0])
    lucir.consolidate(model, stream[0])
    with pytest.raises(ContinualError, match="grow the head first"):
        lucir.before_experience(model, stream[1])  # HeadExpansion has not grown it for classes 2, 3
    twin = copy.deepcopy(model)  # e.g. LwF's frozen copy: the hook is shared, the plugin not copied
    assert list(twin.head._forward_hooks.values()) == list(model.head._forward_hooks.values())
    twin.train()(stream[0].transform(stream[0].x_train[:3]))
    assert lucir._features is None  # only the watched head records
