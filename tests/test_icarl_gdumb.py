"""iCaRL and GDumb: losses computed by hand, herding exemplars, nearest-mean prediction, GDumb's
greedy sampler and from-scratch training on the memory only, resume."""

import copy
import math
import random

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import continual.replay.gdumb  # noqa: F401  (registers gdumb)
import continual.replay.icarl  # noqa: F401  (registers icarl)
from continual import RunConfig, Transform, Trainer, run, split, synthetic
from continual.classifiers import NearestMeanClassifier
from continual.errors import ContinualError
from continual.models import MLP, HeadExpansion, build_model
from continual.replay import ClassBalancedBuffer, embed, herding
from continual.replay.gdumb import GDumb, GreedyClassBalancedMemory, greedy_balanced_picks, reinitialise
from continual.replay.icarl import ICaRL, icarl_bce, icarl_softmax_kd
from continual.strategies import STRATEGIES, Context, get_strategy

INF = float("inf")


def sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def bce(x, z):
    return -(z * math.log(sig(x)) + (1 - z) * math.log(1 - sig(x)))


# Two samples, classes 0 and 1 old, 2 new (this experience), 3 not in use (-inf).
OUT = torch.tensor([[1.0, -2.0, 0.5, -INF], [-0.5, 2.0, -1.0, -INF]])
OLD = torch.tensor([[0.0, 1.0, -INF, -INF], [2.0, -1.0, -INF, -INF]])  # the old model: classes 0, 1 in use
Y = torch.tensor([2, 0])  # a new sample, then an exemplar of old class 0
SEEN = torch.tensor([True, True, True, False])
OLD_CLASSES = torch.tensor([True, True, False, False])


# ------------------------------------------------------------------ iCaRL losses
def test_icarl_bce_by_hand():
    # Old classes' targets are the old model's sigmoids (even for the exemplar's own class 0), the
    # new class's the one-hot label; class 3 is left out; the mean is over the 6 entries taking part.
    expected = (bce(1.0, sig(0.0)) + bce(-2.0, sig(1.0)) + bce(0.5, 1.0)
                + bce(-0.5, sig(2.0)) + bce(2.0, sig(-1.0)) + bce(-1.0, 0.0)) / 6
    got = icarl_bce(OUT, Y, OLD, seen=SEEN, old_classes=OLD_CLASSES)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # Without an old model: one-hot targets over the classes seen.
    plain = (bce(1.0, 0) + bce(-2.0, 0) + bce(0.5, 1) + bce(-0.5, 1) + bce(2.0, 0) + bce(-1.0, 0)) / 6
    assert icarl_bce(OUT, Y, None, seen=SEEN, old_classes=None).item() == pytest.approx(plain, rel=1e-6)


def test_icarl_softmax_kd_by_hand():
    def log_softmax(v, i):
        return v[i] - math.log(sum(math.exp(u) for u in v))

    def softmax(v, i):
        return math.exp(log_softmax(v, i))

    ce = -(log_softmax([1.0, -2.0, 0.5], 2) + log_softmax([-0.5, 2.0, -1.0], 0)) / 2
    T = 2.0
    kd = 0.0
    for new, old in (([1.0, -2.0], [0.0, 1.0]), ([-0.5, 2.0], [2.0, -1.0])):  # the old classes' logits only
        new, old = [v / T for v in new], [v / T for v in old]
        kd -= sum(softmax(old, i) * log_softmax(new, i) for i in range(2))
    got = icarl_softmax_kd(OUT, Y, OLD, seen=SEEN, old_classes=OLD_CLASSES, temperature=T)
    assert got.item() == pytest.approx(ce + kd / 2, rel=1e-6)
    assert icarl_softmax_kd(OUT, Y, None, seen=SEEN, old_classes=None).item() == pytest.approx(ce, rel=1e-6)


@pytest.mark.parametrize("loss", ["bce", "softmax-kd"])
def test_losses_give_finite_gradients_with_masked_logits(loss):
    out = OUT.clone().requires_grad_(True)
    value = icarl_bce(out, Y, OLD, seen=SEEN, old_classes=OLD_CLASSES) if loss == "bce" else \
        icarl_softmax_kd(out, Y, OLD, seen=SEEN, old_classes=OLD_CLASSES)
    value.backward()
    assert torch.isfinite(out.grad).all() and (out.grad[:, 3] == 0).all()


@pytest.mark.parametrize("loss", ["bce", "softmax-kd"])
@pytest.mark.parametrize("num_old", [0, 2, 3])
def test_the_short_form_equals_the_masked_general_form(loss, num_old):
    from continual.replay.icarl import _bce_prefix, _softmax_kd_prefix

    g = torch.Generator().manual_seed(num_old)
    n, capacity = 5, 8  # classes 0..4 in use of 8 rows: the rest at -inf, as a growing head gives them
    out = torch.randn(6, capacity, generator=g).masked_fill(torch.arange(capacity) >= n, -INF)
    old = torch.randn(6, capacity, generator=g).masked_fill(torch.arange(capacity) >= max(num_old, 1), -INF)
    y = torch.randint(0, n, (6,), generator=g)
    seen, old_classes = torch.arange(capacity) < n, torch.arange(capacity) < num_old
    if loss == "bce":
        short, general = _bce_prefix(out, y, old, n, num_old), icarl_bce(out, y, old, seen=seen, old_classes=old_classes)
    else:
        short = _softmax_kd_prefix(out, y, old, n, num_old, 2.0)
        general = icarl_softmax_kd(out, y, old, seen=seen, old_classes=old_classes, temperature=2.0)
    assert short.item() == pytest.approx(general.item(), rel=1e-5)


class Noise:
    """An augmentation that adds seeded noise: the old model must see the very batch the model saw."""

    def __call__(self, x, generator):
        return x + torch.randn(x.shape, generator=generator, device=x.device)


@pytest.mark.parametrize("loss", ["bce", "softmax-kd"])
def test_criterion_runs_the_old_model_on_the_augmented_batch(loss):
    torch.manual_seed(0)
    model, old = MLP(4, (8,), 4), MLP(4, (8,), 4)
    stream = split(synthetic(num_classes=4, num_features=4), 2)
    icarl = ICaRL(ClassBalancedBuffer(8), loss=loss)
    icarl.before_experience(model, stream[0])
    icarl.before_experience(model, stream[1])  # classes 0, 1 old; 2, 3 new
    icarl.old_model = old.eval()
    x = Transform(augment=Noise())(stream[1].x_train[:5], train=True, generator=torch.Generator().manual_seed(1))
    y = stream[1].y_train[:5]
    model.train()
    out = model(x)
    got = icarl.criterion(out, y)
    fn = icarl_bce if loss == "bce" else icarl_softmax_kd
    seen = torch.ones(4, dtype=torch.bool)
    assert icarl._prefix  # classes 0..3 seen, 0..1 old: the short form, equal to the general one
    assert torch.allclose(got, fn(out, y, old(x), seen=seen, old_classes=torch.tensor([True, True, False, False])))
    assert icarl._recorder.inputs is None  # forgotten after use
    with torch.no_grad():
        model(x)  # not recorded: no gradients (evaluation, herding)
    assert icarl._recorder.inputs is None
    twin = copy.deepcopy(model)  # a copy does not carry the plugin along
    twin.train()(x)
    assert icarl._recorder.inputs is None


# ------------------------------------------------------------------ iCaRL exemplars and NME
def icarl_trainer(stream, *, mem, seed=0, nme=False, loss="bce"):
    torch.manual_seed(seed)
    model = build_model("mlp", (stream[0].x_train.shape[1],), 0, head="incremental", capacity=stream.num_classes, hidden=(32,))
    plugins = [HeadExpansion(model), *get_strategy("icarl").make_plugins(
        get_strategy("icarl").params({"mem": mem, "loss": loss}), Context(stream=stream, device=torch.device("cpu"), seed=seed))]
    if nme:
        plugins.append(NearestMeanClassifier(buffer=plugins[1].buffer))
    trainer = Trainer(model, lr=0.1, epochs=2, batch_size=16, device="cpu", seed=seed, plugins=plugins,
                      classifier="nme" if nme else "linear")
    return trainer, plugins[1]


def class_samples(experience, c):
    idx = (experience.y_train == c).nonzero().flatten()
    return experience.x_train[idx], experience.t_train[idx]


def test_exemplars_are_the_herding_selection_and_old_sets_keep_their_first_m():
    stream = split(synthetic(num_classes=4, num_features=6, train_per_class=30), 2)
    trainer, icarl = icarl_trainer(stream, mem=24)
    trainer.fit(stream[0])
    buf = icarl.buffer
    first = {}
    for c in stream[0].classes:  # 12 each, chosen by herding on the trained model's features
        x, t = class_samples(stream[0], c)
        pick = herding(embed(trainer.model, x, t, stream[0].transform), 12)
        stored = buf.stored().x[buf.stored().y == c]
        assert torch.equal(stored, x[pick])
        first[c] = stored.clone()
    trainer.fit(stream[1])  # trained on 60 new samples + 24 exemplars; the buffer takes the 60 new ones only
    assert sorted(buf.group_counts().items()) == [(0, 6), (1, 6), (2, 6), (3, 6)]
    for c in stream[0].classes:  # reduced: the first 6 of the herding order
        assert torch.equal(buf.stored().x[buf.stored().y == c], first[c][:6])
    for c in stream[1].classes:
        x, t = class_samples(stream[1], c)
        pick = herding(embed(trainer.model, x, t, stream[1].transform), 6)
        assert torch.equal(buf.stored().x[buf.stored().y == c], x[pick])


def test_training_data_is_the_experience_joined_by_the_exemplars():
    stream = split(synthetic(num_classes=4, num_features=6, train_per_class=30), 2)
    trainer, icarl = icarl_trainer(stream, mem=24)
    sizes = []

    class Count:
        def batch(self, x, y, t):
            sizes.append(len(y))

    trainer = Trainer(trainer.model, lr=0.1, epochs=2, batch_size=16, device="cpu", plugins=[*trainer.plugins, Count()])
    trainer.fit(stream[0])
    assert sum(sizes) == 2 * 60
    trainer.fit(stream[1])
    assert sum(sizes) - 2 * 60 == 2 * (60 + 24)  # each epoch visits the new samples and every exemplar once
    assert icarl.old_model is not None and not any(p.requires_grad for p in icarl.old_model.parameters())
    assert icarl.memory_bytes() == sum(v.numel() * v.element_size() for v in trainer.model.state_dict().values())


def test_nme_prediction_is_the_nearest_class_mean_of_the_exemplars():
    stream = split(synthetic(num_classes=6, num_features=6, train_per_class=30), 3)
    trainer, icarl = icarl_trainer(stream, mem=30, nme=True)
    acc = trainer.run(stream)
    model = trainer.model
    ex = icarl.buffer.stored()
    feats = F.normalize(embed(model, ex.x, ex.t, stream[0].transform), dim=1)
    means = torch.stack([F.normalize(feats[ex.y == c].mean(0), dim=0) for c in range(6)])  # (C, D)
    for j, e in enumerate(stream):
        with torch.no_grad():
            f = F.normalize(model.eval().features(e.transform(e.x_test)), dim=1)
        pred = torch.cdist(f, means).argmin(1)  # nearest mean, Euclidean
        assert torch.equal(trainer.classifiers["nme"].predict(model, e.transform(e.x_test)), pred)
        assert acc.values[-1, j] == pytest.approx((pred == e.y_test).double().mean().item())


def test_icarl_strategy_defaults_and_its_run_evaluates_with_nme():
    s = STRATEGIES["icarl"]
    assert s.defaults == {"mem": 2000, "selection": "herding", "loss": "bce", "temperature": 2.0}
    assert s.classifier == "nme" and s.past_classes
    with pytest.raises(ContinualError, match="softmax-kd"):
        s.params({"loss": "kd"})
    r = run(RunConfig(strategy="icarl", epochs=1, num_experiences=2, device="cpu", seed=0, params={"mem": 40}))
    assert r.config["classifier"] == "nme" and "linear" in r.classifiers
    assert r.extra["memory"]["plugins"]["icarl"] == r.extra["icarl"]["old_model_bytes"] > 0
    assert r.extra["icarl"]["size"] == 40


# ------------------------------------------------------------------ GDumb's sampler
def counts_of_plain_algorithm(labels, capacity):
    """Algorithm 1 written plainly, counts only (which sample of the largest class goes does not change them)."""
    count, seen, size = {}, set(), 0
    for c in labels:
        seen.add(c)
        if size < capacity:
            count[c] = count.get(c, 0) + 1
            size += 1
        elif count.get(c, 0) < capacity / len(seen):
            largest = max(sorted(count), key=lambda g: count[g])  # ties: the smallest label
            count[largest] -= 1
            if count[largest] == 0:
                del count[largest]
            count[c] = count.get(c, 0) + 1
    return count


def test_greedy_sampler_on_a_hand_example():
    # k=4: 0,0,0,1 fill it; the second 1 (1 < 4/2) replaces a 0 (the largest class); the 2 (0 < 4/3)
    # replaces a sample of the largest class, 0 and 1 tied at 2: the smaller label, 0.
    slots, seen = greedy_balanced_picks([], [0, 0, 0, 1, 1, 2], 4, [0.0] * 6)
    labels = [0, 0, 0, 1, 1, 2]
    assert sorted(labels[i] for i in slots) == [0, 1, 1, 2] and seen == {0, 1, 2}
    assert len(set(slots)) == 4
    # A sample of a class already at its share is skipped: memory unchanged.
    slots, _ = greedy_balanced_picks([0, 1, 0, 1], [0, 1], 4, [0.5, 0.5])
    assert slots == [-1, -1, -1, -1]


@settings(max_examples=40, deadline=None)
@given(capacity=st.integers(1, 30), labels=st.lists(st.integers(0, 5), max_size=120), seed=st.integers(0, 10**6))
def test_greedy_sampler_counts_equal_the_plain_algorithm(capacity, labels, seed):
    rng = random.Random(seed)
    half = len(labels) // 2  # offered in two calls, as two experiences
    slots, seen = greedy_balanced_picks([], labels[:half], capacity, [rng.random() for _ in range(half)])
    stored = [labels[i] for i in slots]
    slots2, _ = greedy_balanced_picks(stored, labels[half:], capacity, [rng.random() for _ in labels[half:]], seen)
    final = [stored[j] if i < 0 else labels[half + i] for j, i in enumerate(slots2)]
    got = {c: final.count(c) for c in set(final)}
    assert got == counts_of_plain_algorithm(labels, capacity)
    assert len({i for i in slots2 if i >= 0}) == sum(i >= 0 for i in slots2)  # no sample stored twice


@pytest.mark.parametrize("capacity", [10, 37, 100])
def test_memory_is_balanced_within_one_once_full(capacity):
    stream = split(synthetic(num_classes=10, num_features=3, train_per_class=60), 5)
    mem = GreedyClassBalancedMemory(capacity, seed=capacity)
    for e in stream:
        mem.update(e)
        counts = mem.counts()
        assert len(mem) == min(capacity, 120 * (e.index + 1)) and mem.x.shape[0] == capacity
        assert max(counts.values()) - min(counts.values()) <= 1 and sorted(counts) == list(range(2 * e.index + 2))
        x, y = mem.stored().x, mem.stored().y
        data = torch.cat([s.x_train for s in stream[: e.index + 1]])
        labels = torch.cat([s.y_train for s in stream[: e.index + 1]])
        match = (x[:, None, :] == data[None]).all(-1)  # (size, N): each stored sample is one sample seen
        assert (match.sum(1) == 1).all() and torch.equal(labels[match.int().argmax(1)], y)
        assert len(torch.unique(x, dim=0)) == len(x)


# ------------------------------------------------------------------ GDumb's learner
class Recorder:
    """Records every training batch the trainer forms after GDumb's hooks, from the re-initialisation on."""

    name = "recorder"

    def __init__(self, gdumb):
        self.gdumb, self.batches, self.params_at_start, self.checked = gdumb, [], [], 0

    def before_experience(self, model, experience):
        self.batches = []
        self.params_at_start.append({k: v.clone() for k, v in model.state_dict().items()})

    def batch(self, x, y, t):
        self.batches.append(x.clone())

    def after_experience(self, model, experience):
        memory = self.gdumb.buffer.stored().x
        for x in self.batches:
            assert ((x[:, None, :] == memory[None]).all(-1)).any(1).all(), "a training sample outside the memory"
        assert sum(len(x) for x in self.batches) == len(memory) * 2  # every memory sample once per epoch (2 epochs)
        self.checked += 1


def test_the_evaluated_model_is_trained_from_scratch_on_the_memory_only():
    stream = split(synthetic(num_classes=6, num_features=5, train_per_class=40), 3)
    torch.manual_seed(0)
    model = build_model("mlp", (5,), 0, head="incremental", capacity=6, hidden=(16,))
    gdumb = GDumb(GreedyClassBalancedMemory(50, seed=3), seed=3)
    recorder = Recorder(gdumb)
    trainer = Trainer(model, lr=0.1, epochs=2, batch_size=8, device="cpu", seed=3, plugins=[HeadExpansion(model), gdumb, recorder])
    optimizers = []
    trainer.callbacks.append(lambda event, info: optimizers.append(trainer.optimizer) if event == "experience_end" else None)
    trainer.run(stream)
    assert recorder.checked == 3 and len({id(o) for o in optimizers}) == 3  # a fresh optimizer per experience
    # The parameters at the start of training are those of a fresh model re-initialised with the same seed:
    # nothing learned before survives.
    for i, start in enumerate(recorder.params_at_start):
        fresh = build_model("mlp", (5,), 0, head="incremental", capacity=6, hidden=(16,))
        fresh.head.grow(2 * (i + 1))
        reinitialise(fresh, gdumb.init_seed(i))
        for k, v in fresh.state_dict().items():
            assert torch.equal(start[k], v), k


def test_reinitialise_draws_rows_in_use_as_a_fresh_linear_and_leaves_the_global_rng():
    torch.manual_seed(5)
    model = build_model("mlp", (5,), 0, head="incremental", capacity=6, hidden=(16,))
    model.head.grow(4)
    state = torch.get_rng_state()
    reinitialise(model, 11)
    assert torch.equal(torch.get_rng_state(), state)
    bound = 1 / math.sqrt(model.head.in_features)
    assert model.head.weight[:4].abs().max() <= bound and model.head.bias[:4].abs().max() <= bound
    assert model.head.weight[:4].std() > bound / 3

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(3))

    with pytest.raises(ContinualError, match="scale"):
        reinitialise(Odd(), 0)


def test_gdumb_strategy_defaults():
    s = STRATEGIES["gdumb"]
    assert s.defaults == {"mem": 500} and s.classifier == "linear" and s.past_classes
