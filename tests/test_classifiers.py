"""WA, BiC and NME: the formulas on hand-written tensors, what they change and what they leave
bit-identical, the held-out validation split, state round trips and the registered strategies."""

import copy
import io
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from continual.classifiers import DEFAULTS, BiasCorrection, NearestMeanClassifier, WeightAligning, class_means
from continual.classifiers.bic import MILESTONES, MOMENTUM, correct
from continual.data import Transform, synthetic
from continual.errors import ContinualError
from continual.models import HeadExpansion, IncrementalClassifier, MultiHeadClassifier, build_model
from continual.replay import ER, ClassBalancedBuffer, ReservoirBuffer
from continual.strategies import Context, get_strategy
from continual.streams import Experience, split
from continual.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ helpers
class Tiny(nn.Module):
    """features: a linear layer with batch norm (its running statistics must not move in BiC's
    stage 2); the real fixed-capacity class-incremental head."""

    def __init__(self, in_features: int, capacity: int, *, width: int = 16, num_classes: int = 0) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_features, width), nn.BatchNorm1d(width), nn.ReLU())
        self.head = IncrementalClassifier(width, num_classes, capacity=capacity)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


class Identity(nn.Module):
    """features = the input itself; a linear head over them."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.head = nn.Linear(dim, num_classes)

    def features(self, x):
        return x

    def forward(self, x):
        return self.head(x)


def experience(x, y, *, index=0, x_test=None, y_test=None):
    y = torch.as_tensor(y)
    x_test = x if x_test is None else x_test
    y_test = y if y_test is None else torch.as_tensor(y_test)
    zeros = torch.zeros(len(y), dtype=torch.long)
    return Experience(index, tuple(sorted(set(y.tolist()))), index, x, y, zeros, x_test, y_test,
                      torch.zeros(len(y_test), dtype=torch.long), Transform())


def roundtrip(state):
    """Through torch.save and torch.load(weights_only=True), as a checkpoint is read back."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def stream(num_experiences=3, *, seed=0, train_per_class=60):
    return split(synthetic(num_classes=6, num_features=8, train_per_class=train_per_class, seed=seed), num_experiences)


def same_rows(a, b):
    """(len(a),) bool: each row of ``a`` appears in ``b`` (exact equality)."""
    return (a[:, None] == b[None]).flatten(2).all(2).any(1)


# ------------------------------------------------------------------ WA
def wa_model(capacity=8, num_classes=5, scale_new=(3, 5), factor=4.0):
    torch.manual_seed(0)
    model = Tiny(4, capacity, width=6, num_classes=num_classes)
    with torch.no_grad():
        model.head.weight[scale_new[0] : scale_new[1]] *= factor  # new classes' rows biased large
        model.head.weight[num_classes:] = torch.randn(capacity - num_classes, 6)  # rows not in use: not zero, to see a change
        model.head.bias[num_classes:] = torch.randn(capacity - num_classes)
    return model


def test_wa_aligns_the_mean_norm_of_the_new_rows_to_the_old_rows():
    model = wa_model()
    before_w, before_b = model.head.weight.detach().clone(), model.head.bias.detach().clone()
    wa = WeightAligning()
    wa.after_experience(model, SimpleNamespace(classes=(3, 4)))
    w = model.head.weight.detach()
    old_norm, new_norm = w[:3].norm(dim=1).mean(), w[3:5].norm(dim=1).mean()
    assert new_norm.item() == pytest.approx(old_norm.item(), rel=1e-6)
    assert torch.equal(w[:3], before_w[:3])  # old rows bit-identical
    assert torch.equal(w[5:], before_w[5:])  # rows not in use untouched
    assert torch.equal(model.head.bias.detach(), before_b)  # biases untouched (PyCIL)
    gamma = before_w[:3].norm(dim=1).mean() / before_w[3:5].norm(dim=1).mean()
    assert torch.equal(w[3:5], before_w[3:5] * gamma)  # a single factor for every new row
    assert wa.report()["gamma"] == [pytest.approx(gamma.item())]
    assert wa.report()["gamma"][0] == pytest.approx(0.25, rel=0.5)  # the rows were made 4x larger


def test_wa_leaves_the_first_experience_unchanged():
    model = wa_model(num_classes=3, scale_new=(0, 3))
    before = copy.deepcopy(model.state_dict())
    wa = WeightAligning()
    wa.after_experience(model, SimpleNamespace(classes=(0, 1, 2)))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert wa.report() == {"gamma": [None], "clip": False}


def test_wa_new_rows_are_the_experiences_classes_with_a_fixed_linear_head():
    """A fixed nn.Linear head (all classes from the start): rows of later classes are not touched either."""
    torch.manual_seed(1)
    model = Identity(3, 6)
    before = model.head.weight.detach().clone()
    WeightAligning().after_experience(model, SimpleNamespace(classes=(2, 3)))
    w = model.head.weight.detach()
    assert torch.equal(w[:2], before[:2]) and torch.equal(w[4:], before[4:])
    assert w[2:4].norm(dim=1).mean().item() == pytest.approx(w[:2].norm(dim=1).mean().item(), rel=1e-6)


def test_wa_state_round_trip_keeps_every_gamma():
    model = wa_model()
    wa = WeightAligning()
    wa.after_experience(model, SimpleNamespace(classes=(0, 1, 2)))
    wa.after_experience(model, SimpleNamespace(classes=(3, 4)))
    fresh = WeightAligning()
    fresh.load_state_dict(roundtrip(wa.state_dict()))
    assert fresh.report() == wa.report() and fresh.gammas[0] is None


def test_wa_clip_clamps_the_head_weight_after_each_step_only_when_asked():
    model = wa_model()
    assert (model.head.weight < 0).any()
    bias = model.head.bias.detach().clone()
    WeightAligning().after_step(model)
    assert (model.head.weight < 0).any()
    WeightAligning(clip=True).after_step(model)
    assert (model.head.weight >= 0).all() and torch.equal(model.head.bias.detach(), bias)


def test_wa_refuses_a_multi_head_model():
    model = nn.Module()
    model.head = MultiHeadClassifier(4)
    with pytest.raises(ContinualError, match="multi-head"):
        WeightAligning().after_experience(model, SimpleNamespace(classes=(2, 3)))


# ------------------------------------------------------------------ BiC: the correction
def test_bic_correction_formula_on_hand_written_logits():
    model = nn.Module()
    model.head = nn.Identity()  # the "head" passes the hand-written logits through
    bic = BiasCorrection()
    state = BiasCorrection().state_dict()
    state.update(alpha=torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64), beta=torch.tensor([0.0, -1.0, 3.0], dtype=torch.float64),
                 val_used=torch.tensor([0, 5, 5]), **{"classes.0": torch.tensor([0, 1]), "classes.1": torch.tensor([2, 3]),
                                                         "classes.2": torch.tensor([4])})
    bic.load_state_dict(state, model=model)
    z = torch.tensor([[1.0, -2.0, 3.0, 4.0, 10.0, float("-inf")],
                      [0.5, 0.25, -1.0, 0.0, -4.0, float("-inf")]])
    out = model.head(z)
    expected = z.clone()
    expected[:, 2:4] = 2.0 * z[:, 2:4] - 1.0
    expected[:, 4] = 0.5 * z[:, 4] + 3.0
    assert torch.equal(out, expected)
    assert torch.equal(out[:, :2], z[:, :2]) and torch.isneginf(out[:, 5]).all()  # untouched, bit for bit
    assert bic.report()["alpha"] == [1.0, 2.0, 0.5] and bic.report()["beta"] == [0.0, -1.0, 3.0]


def test_correct_is_out_of_place_and_differentiable():
    z = torch.randn(4, 5, requires_grad=True)
    a, b = torch.tensor(1.5, requires_grad=True), torch.tensor(0.5, requires_grad=True)
    out = correct(z, torch.tensor([3, 4]), a, b)
    out.sum().backward()
    assert torch.equal(z.grad[:, :3], torch.ones(4, 3)) and torch.allclose(z.grad[:, 3:], torch.full((4, 2), 1.5))
    assert a.grad.item() == pytest.approx(z[:, 3:].sum().item()) and b.grad.item() == 8.0


# ------------------------------------------------------------------ BiC: the held-out split
def test_bic_holds_out_a_class_balanced_random_split_disjoint_from_training():
    s = stream()
    e = s[0]
    bic = BiasCorrection(val_per_class=7, seed=3)
    reduced = bic.experience_data(e)
    assert reduced.num_train == e.num_train - 7 * len(e.classes)
    for c in e.classes:
        assert int((bic.val_y == c).sum()) == 7
        assert int((reduced.y_train == c).sum()) == int((e.y_train == c).sum()) - 7
    assert not same_rows(bic.val_x, reduced.x_train).any()  # disjoint from what the trainer sees
    assert same_rows(bic.val_x, e.x_train).all() and same_rows(reduced.x_train, e.x_train).all()
    # labels stay with their inputs
    for x, y in zip(bic.val_x, bic.val_y):
        assert e.y_train[(e.x_train == x).all(1)].item() == y.item()
    assert reduced.x_test is e.x_test and reduced.classes == e.classes  # only the training split changes
    # a different seed holds out other samples
    other = BiasCorrection(val_per_class=7, seed=4)
    other.experience_data(e)
    assert not torch.equal(other.val_x, bic.val_x)


def test_bic_holds_out_only_new_classes_and_balances_to_the_smallest_class():
    g = torch.Generator().manual_seed(0)
    x0, y0 = torch.randn(30, 3, generator=g), torch.tensor([0] * 20 + [1] * 10)  # class 1 has 10 samples: gives 5
    x1, y1 = torch.randn(40, 3, generator=g), torch.tensor([2] * 20 + [3] * 20)
    bic = BiasCorrection(val_per_class=8)
    bic.experience_data(experience(x0, y0))
    bic.experience_data(experience(x1, y1, index=1))
    counts = {c: int((bic.val_y == c).sum()) for c in range(4)}
    assert counts == {0: 8, 1: 5, 2: 8, 3: 8}
    vx, vy, vt, m = bic.validation_set()
    assert m == 5 and {c: int((vy == c).sum()) for c in range(4)} == {0: 5, 1: 5, 2: 5, 3: 5}
    # an experience that brings back a class already held out: nothing more is held out
    again = experience(x0, y0, index=2)
    assert bic.experience_data(again) is None and len(bic.val_y) == 29


def test_bic_validation_is_disjoint_from_the_replay_memory():
    s = stream(2)
    torch.manual_seed(0)
    model = Tiny(8, 6, num_classes=0)
    bic = BiasCorrection(val_per_class=10, epochs=3)
    er = ER(ClassBalancedBuffer(60, seed=0))
    seen = []
    probe = SimpleNamespace(after_experience=lambda m, e: seen.append(e))
    trainer = Trainer(model, lr=0.05, epochs=1, device="cpu", plugins=[HeadExpansion(model), er, probe, bic])
    for e in s:
        trainer.fit(e)  # the trainer asks bic.experience_data for the data to train on
    assert [e.num_train for e in seen] == [e.num_train - 10 * len(e.classes) for e in s]  # what training and the buffer saw
    for e in seen:
        assert not same_rows(e.x_train, bic.val_x).any()
    stored = er.buffer.stored()
    assert len(stored.y) == 60
    assert not same_rows(stored.x, bic.val_x).any()


# ------------------------------------------------------------------ BiC: stage 2
class Snapshot:
    """Records the model's parameters, buffers, gradients and the optimizer's state just before BiC's stage 2."""

    def __init__(self):
        self.states = []

    def after_experience(self, model, experience):
        self.states.append({
            "model": copy.deepcopy(model.state_dict()),
            "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
            "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
            "optimizer": copy.deepcopy(self.trainer.optimizer.state_dict()),
            "training": model.training,
        })


def run_bic(s, *, seed=0, epochs=20, snapshot=None):
    torch.manual_seed(seed)
    model = Tiny(8, 6, num_classes=0)
    bic = BiasCorrection(val_per_class=10, epochs=epochs, seed=seed)
    plugins = [HeadExpansion(model)] + ([snapshot] if snapshot else []) + [bic]
    trainer = Trainer(model, lr=0.05, epochs=2, momentum=0.9, device="cpu", plugins=plugins, seed=seed)
    if snapshot:
        snapshot.trainer = trainer
    for e in s:
        trainer.fit(e)
    return model, bic, trainer


def test_bic_stage2_changes_only_alpha_and_beta():
    snap = Snapshot()
    model, bic, trainer = run_bic(stream(2), snapshot=snap)
    before = snap.states[-1]  # just before stage 2 of experience 1
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before["model"].items())  # parameters and batch-norm statistics
    for n, p in model.named_parameters():
        g = before["grads"][n]
        assert (p.grad is None) == (g is None) and (g is None or torch.equal(p.grad, g))  # no gradient accumulated
        assert p.requires_grad == before["requires_grad"][n]
    opt_after = trainer.optimizer.state_dict()
    assert all(torch.equal(v, opt_after["state"][i][k]) for i, st in before["optimizer"]["state"].items() for k, v in st.items())
    assert model.training == before["training"]
    assert bic.alphas[0] == 1.0 and bic.betas[0] == 0.0  # experience 0 has no pair
    assert (bic.alphas[1], bic.betas[1]) != (1.0, 0.0)
    assert bic.report()["val_samples_per_class"] == [0, 10]


def test_bic_stage2_lowers_the_validation_loss_and_the_hook_applies_the_pair():
    model, bic, _ = run_bic(stream(2), epochs=170)
    vx, vy, vt, m = bic.validation_set()
    model.eval()
    with torch.no_grad():
        corrected = model(vx)
        bic._handle.remove()  # the raw logits
        raw = model(vx)
    cols = list(bic.classes[1])
    expected = raw.clone()
    expected[:, cols] = bic.alphas[1] * raw[:, cols] + bic.betas[1]
    assert torch.allclose(corrected, expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(corrected[:, bic.classes[0]], raw[:, bic.classes[0]])  # experience 0's logits untouched
    assert F.cross_entropy(corrected, vy) < F.cross_entropy(raw, vy)


def test_bic_stage2_settings_are_pycils():
    assert DEFAULTS["bic"] == {"val_per_class": 20, "bic_epochs": 170, "bic_lr": 0.1, "bic_weight_decay": 2e-4, "bic_batch": 128}
    b = BiasCorrection()
    assert (b.val_per_class, b.epochs, b.lr, b.weight_decay, b.batch_size) == (20, 170, 0.1, 2e-4, 128)
    assert MOMENTUM == 0.9 and [round(f * 170) for f in MILESTONES] == [60, 100, 140]


def test_bic_resumes_to_identical_outputs_and_continues_identically():
    s = stream(3)
    model, bic, trainer = run_bic(s[:2])
    state = roundtrip(bic.state_dict())
    fresh_model = Tiny(8, 6)
    fresh_model.load_state_dict(model.state_dict())  # the head's rows in use come with its state
    fresh = BiasCorrection(val_per_class=10, epochs=20, seed=99)
    fresh.load_state_dict(state, model=fresh_model)
    x = s[2].x_test
    model.eval(), fresh_model.eval()
    with torch.no_grad():
        assert torch.equal(fresh_model(x), model(x))
    assert fresh.report() == bic.report() and fresh.memory_bytes() == bic.memory_bytes()
    # the same next experience gives the same split and the same pair (the generator was restored)
    e = s[2]
    for m in (model, fresh_model):
        torch.manual_seed(5)  # the rows coming into use are initialised from the global RNG
        m.head.grow(6)
    ra, rb = bic.experience_data(e), fresh.experience_data(e)
    assert torch.equal(ra.x_train, rb.x_train) and torch.equal(bic.val_x, fresh.val_x)
    bic.after_experience(model, ra)
    fresh.after_experience(fresh_model, rb)
    assert bic.alphas == fresh.alphas and bic.betas == fresh.betas


def test_bic_copy_of_the_model_keeps_the_pairs_of_the_moment():
    model, bic, _ = run_bic(stream(2))
    teacher = copy.deepcopy(model).eval()
    model.eval()
    x = stream(2)[1].x_test
    with torch.no_grad():
        assert torch.equal(teacher(x), model(x))
        bic._hook.set([(bic.classes[1], 3.0, 1.0)])  # a later change of the plugin's pairs
        assert not torch.equal(teacher(x), model(x))
    assert all(not isinstance(h, BiasCorrection) for h in teacher.head._forward_hooks.values())  # the plugin is not copied


def test_bic_trains_through_the_hook_over_several_experiences_and_names_a_head_not_grown():
    model, bic, _ = run_bic(stream(3))  # experience 2 trains with experience 1's pair applied to its logits
    assert len(bic.alphas) == 3 and all(a != 1.0 for a in bic.alphas[1:])
    assert bic.report()["val_samples_per_class"] == [0, 10, 10]
    torch.manual_seed(0)
    small = Tiny(8, 6, num_classes=4)  # classes 4, 5 not in use: their logits are -inf
    late = BiasCorrection(val_per_class=10, epochs=2)
    s = stream(3)
    for e in s:
        late.experience_data(e)
    late.classes = [[0, 1], [2, 3]]
    late.alphas, late.betas, late.val_used = [1.0, 1.0], [0.0, 0.0], [0, 0]
    with pytest.raises(ContinualError, match=r"classes \[4, 5\] must be finite"):
        late.after_experience(small, s[2])


def test_bic_memory_bytes_counts_the_validation_store():
    bic = BiasCorrection(val_per_class=5)
    bic.experience_data(stream()[0])
    per_sample = 8 * 4 + 8 + 8  # float32 inputs of 8 features, label, task id
    assert bic.memory_bytes() == 10 * per_sample


def test_bic_rejects_bad_settings():
    for kwargs, word in (({"val_per_class": 0}, "val_per_class=0"), ({"epochs": -1}, "epochs=-1"), ({"lr": 0.0}, "lr=0.0"),
                         ({"batch_size": 0}, "batch_size=0"), ({"weight_decay": -1.0}, "weight_decay=-1.0")):
        with pytest.raises(ContinualError, match=word):
            BiasCorrection(**kwargs)


# ------------------------------------------------------------------ NME
POINTS = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0], [0.1, 1.0], [-1.0, -1.0], [-2.0, -0.5]])
LABELS = torch.tensor([0, 0, 1, 1, 2, 2])


def hand_nearest_mean(points, labels, queries):
    means = []
    for c in range(int(labels.max()) + 1):
        phi = points[labels == c] / points[labels == c].norm(dim=1, keepdim=True)
        mu = phi.mean(0)
        means.append(mu / mu.norm())
    means = torch.stack(means)
    q = queries / queries.norm(dim=1, keepdim=True)
    return means, torch.cdist(q, means).argmin(1)


def test_nme_equals_a_hand_written_nearest_class_mean():
    model = Identity(2, 3)
    nme = NearestMeanClassifier()
    nme.after_experience(model, experience(POINTS, LABELS))
    means, _ = hand_nearest_mean(POINTS, LABELS, POINTS)
    assert torch.allclose(nme.means, means, atol=1e-6)
    grid = torch.stack(torch.meshgrid(torch.linspace(-3, 3, 13), torch.linspace(-3, 3, 13), indexing="ij"), -1).view(-1, 2)
    grid = grid[grid.norm(dim=1) > 0]
    _, expected = hand_nearest_mean(POINTS, LABELS, grid)
    assert torch.equal(nme.predict(model, grid, None), expected)
    assert nme.report() == {"classes_with_mean": 3, "source": "training data"}


def test_nme_exemplar_path_uses_only_the_buffer():
    model = Identity(2, 3)
    buf = ReservoirBuffer(10)
    ex_x, ex_y = torch.tensor([[0.0, 1.0], [0.0, 2.0], [1.0, 0.0], [-1.0, 0.0]]), torch.tensor([0, 0, 1, 2])
    buf.add(ex_x, ex_y, torch.zeros(4, dtype=torch.long))
    nme = NearestMeanClassifier(buffer=buf)
    nme.after_experience(model, experience(POINTS, LABELS))  # the experience's own points are ignored
    means, _ = hand_nearest_mean(ex_x, ex_y, ex_x)
    assert torch.allclose(nme.means, means, atol=1e-6)
    assert torch.equal(nme.predict(model, torch.tensor([[0.1, 5.0], [3.0, 0.2], [-2.0, 0.1]])), torch.tensor([0, 1, 2]))
    assert nme.report() == {"classes_with_mean": 3, "source": "exemplars"}


def test_nme_keeps_the_mean_of_a_class_absent_from_the_new_data_and_recomputes_the_others():
    model = Identity(2, 4)
    nme = NearestMeanClassifier()
    nme.after_experience(model, experience(POINTS, LABELS))
    first = nme.means.clone()
    x1, y1 = torch.tensor([[1.0, -1.0], [0.0, -2.0], [5.0, 0.0]]), torch.tensor([3, 3, 0])
    nme.after_experience(model, experience(x1, y1, index=1))
    assert nme.means.shape == (4, 2) and nme.present.all()
    assert torch.equal(nme.means[1:3], first[1:3])  # classes 1, 2 absent: kept
    assert torch.allclose(nme.means[0], torch.tensor([1.0, 0.0]))  # class 0 recomputed from its new data
    expected = F.normalize(F.normalize(torch.tensor([1.0, -1.0]), dim=0) + torch.tensor([0.0, -1.0]), dim=0)
    assert torch.allclose(nme.means[3], expected, atol=1e-6)  # class 3 new: the mean of its normalised points, re-normalised


def test_nme_predicts_the_models_argmax_before_any_mean_and_never_a_class_without_one():
    torch.manual_seed(0)
    model = Identity(2, 5)
    x = torch.randn(20, 2)
    nme = NearestMeanClassifier()
    assert torch.equal(nme.predict(model, x), model(x).argmax(1))
    nme.after_experience(model, experience(POINTS[:4], LABELS[:4]))  # classes 0, 1
    nme.after_experience(model, experience(torch.tensor([[-1.0, -1.0]]), torch.tensor([4]), index=1))  # class 4; 2, 3 have none
    assert nme.present.tolist() == [True, True, False, False, True]
    assert set(nme.predict(model, torch.randn(200, 2)).tolist()) <= {0, 1, 4}


def test_nme_state_round_trip_and_memory():
    model = Identity(2, 3)
    nme = NearestMeanClassifier()
    assert nme.state_dict() == {} and nme.memory_bytes() == 0
    nme.after_experience(model, experience(POINTS, LABELS))
    fresh = NearestMeanClassifier()
    fresh.load_state_dict(roundtrip(nme.state_dict()), model=model)
    assert torch.equal(fresh.means, nme.means) and torch.equal(fresh.present, nme.present)
    x = torch.randn(30, 2)
    assert torch.equal(fresh.predict(model, x), nme.predict(model, x))
    assert nme.memory_bytes() == 3 * 2 * 4 + 3  # float32 means and the bool presence mask


def test_nme_uses_eval_mode_features_and_restores_the_mode():
    torch.manual_seed(0)
    s = stream(2)
    model = Tiny(8, 6, num_classes=6)
    with torch.no_grad():
        model(s[0].x_train)  # batch-norm statistics that differ from a batch's own
    nme = NearestMeanClassifier()
    model.train()
    nme.after_experience(model, s[0])
    assert model.training
    model.eval()
    with torch.no_grad():
        f = F.normalize(model.features(s[0].x_train), dim=1)
    means, _ = class_means(f, s[0].y_train, 6)
    assert torch.allclose(nme.means[:3], means[:3], atol=1e-6)
    model.train()
    pred = nme.predict(model, s[0].x_test)
    assert model.training
    assert torch.equal(pred, (F.normalize(model.eval().features(s[0].x_test), dim=1) @ nme.means.T).argmax(1))


# ------------------------------------------------------------------ strategies
def test_wa_and_bic_compose_with_replay_and_build_their_plugins():
    import continual.classifiers  # noqa: F401  (registers wa and bic)

    s = stream()
    context = Context(s, torch.device("cpu"), 3)
    wa = get_strategy("replay+wa")
    plugins = wa.make_plugins(wa.params(), context)
    assert [type(p).__name__ for p in plugins] == ["ER", "WeightAligning"]
    assert wa.past_classes and not get_strategy("wa").past_classes
    bic = get_strategy("replay+bic")
    params = bic.params({"val_per_class": "5", "bic_epochs": 10, "bic_lr": "0.05"})
    er, plugin = bic.make_plugins(params, context)
    assert isinstance(plugin, BiasCorrection) and (plugin.val_per_class, plugin.epochs, plugin.lr) == (5, 10, 0.05)
    assert torch.equal(plugin.generator.get_state(), torch.Generator().manual_seed(3).get_state())  # seeded by the run
    assert get_strategy("bic").params() == DEFAULTS["bic"]
    assert get_strategy("wa").params() == {"wa_clip": False}
    for bad in ({"val_per_class": 0}, {"bic_lr": 0.0}, {"bic_epochs": -1}, {"bic_batch": 0}):
        with pytest.raises(ContinualError, match="out of range"):
            get_strategy("bic").params(bad)


def test_the_package_imports_standalone():
    code = "import continual.classifiers as c; from continual.strategies import STRATEGIES; assert {'wa', 'bic'} <= set(STRATEGIES)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------ with the trainer and the real head
class WeightsBefore:
    """Records the head's weight and bias after training, before the plugins listed after it."""

    def __init__(self):
        self.weights = []

    def after_experience(self, model, experience):
        self.weights.append((model.head.weight.detach().clone(), model.head.bias.detach().clone(), model.head.num_classes))


def test_replay_wa_with_the_trainer_and_the_incremental_head():
    s = stream(3)
    torch.manual_seed(0)
    model = build_model("mlp", (8,), 0, head="incremental", capacity=8, hidden=(16,))  # two rows never in use
    before, wa = WeightsBefore(), WeightAligning()
    trainer = Trainer(model, lr=0.1, epochs=2, device="cpu", seed=0,
                      plugins=[HeadExpansion(model), ER(ReservoirBuffer(40, seed=0)), before, wa])
    for i, e in enumerate(s):
        trainer.fit(e)
        w_before, b_before, n = before.weights[-1]
        w = model.head.weight.detach()
        assert torch.equal(w[n:], w_before[n:]) and torch.equal(model.head.bias.detach(), b_before)
        if i == 0:
            assert torch.equal(w, w_before) and wa.gammas == [None]
            continue
        new = list(e.classes)
        assert torch.equal(w[: new[0]], w_before[: new[0]])
        assert w[new].norm(dim=1).mean().item() == pytest.approx(w[: new[0]].norm(dim=1).mean().item(), rel=1e-6)
    assert len(wa.report()["gamma"]) == 3 and all(g > 0 for g in wa.report()["gamma"][1:])


def test_nme_is_evaluated_by_the_trainer_beside_the_linear_head():
    s = stream(3)
    torch.manual_seed(0)
    model = build_model("mlp", (8,), 0, head="incremental", capacity=6, hidden=(16,))
    er = ER(ClassBalancedBuffer(60, seed=0))
    nme = NearestMeanClassifier(buffer=er.buffer)
    trainer = Trainer(model, lr=0.1, epochs=2, device="cpu", seed=0, classifier="nme", plugins=[HeadExpansion(model), er, nme])
    acc = trainer.run(s)
    assert set(trainer.matrices) == {"linear"}
    last = []
    model.eval()
    for e in s:
        pred = nme.predict(model, e.transform(e.x_test), e.t_test)
        last.append((pred == e.y_test).double().mean().item())
    assert acc.values[-1].tolist() == pytest.approx(last)
    assert min(acc.values[-1]) > 0.5  # blobs: the nearest mean of exemplars classifies every experience's classes
    assert nme.report() == {"classes_with_mean": 6, "source": "exemplars"}


@pytest.mark.gpu
def test_on_cuda_the_split_is_the_cpus_and_every_plugin_runs_on_the_device():
    s_cpu, s_gpu = stream(2), stream(2).to("cuda")
    held = []
    for s in (s_cpu, s_gpu):
        bic = BiasCorrection(val_per_class=10, seed=2)
        bic.experience_data(s[0])
        held.append(bic.val_x.cpu())
    assert torch.equal(held[0], held[1])  # the generator lives on the CPU
    torch.manual_seed(0)
    model = build_model("mlp", (8,), 0, head="incremental", capacity=6, hidden=(16,))
    er = ER(ClassBalancedBuffer(40, device="cuda", seed=0))
    nme, bic, wa = NearestMeanClassifier(buffer=er.buffer), BiasCorrection(val_per_class=10, epochs=5), WeightAligning()
    trainer = Trainer(model, lr=0.1, epochs=1, device="cuda", classifier="nme", plugins=[HeadExpansion(model), er, bic, wa, nme])
    acc = trainer.run(s_gpu)
    assert nme.means.device.type == "cuda" and bic.val_x.device.type == "cuda"
    assert bic.report()["val_samples_per_class"] == [0, 10] and wa.gammas[1] is not None
    assert acc.values[-1].min() >= 0


def test_nme_drops_means_of_another_feature_width():
    """DER widens the features each experience: means of the old width cannot be compared and go."""
    from continual.classifiers import NearestMeanClassifier

    class Widening(nn.Module):
        def __init__(self):
            super().__init__()
            self.width = 2

        def features(self, x):
            return x[:, : self.width]

        def forward(self, x):
            return self.features(x)

    stream = split(synthetic(num_features=4, seed=0), 2)
    model, nme = Widening(), NearestMeanClassifier()
    nme.after_experience(model, stream[0])
    assert nme.means.shape[1] == 2 and int(nme.present.sum()) == 5
    model.width = 4
    nme.after_experience(model, stream[1])
    assert nme.means.shape[1] == 4 and nme.present.tolist() == [False] * 5 + [True] * 5
