"""Closed-form heads (NCM, SLDA, RanPAC): equal to the batch solution on all data seen, independent
of class order and split, resumable from their statistics, and runnable as strategies.

Tolerances: the test model computes its features in float64 and every statistic and solve is
float64, on a few hundred samples; merging in chunks only reorders sums, so statistics agree with
the direct computation to ~1e-14 relative (we allow 1e-9). Solved heads lose digits to the
conditioning of the system (SLDA's shrunk covariance ~1e4, RanPAC's Gram matrix): they are
checked to 1e-7, or to 1e-8 of the solution's largest entry.
"""

import io

import pytest
import torch
from torch import nn

from continual import ContinualError, Trainer, get_strategy, make_stream
from continual.classifiers.closed_form import (
    DEFAULTS, NCM, RIDGES, SLDA, RanPAC, class_stats, merge_stats,
)
from continual.data import synthetic
from continual.models import build_model
from continual.strategies import Context
from continual.streams import Experience

NUM_CLASSES, NUM_FEATURES = 6, 5


class Net(nn.Module):
    """A fixed random feature extractor (8 ReLU features) and a linear head, in float64 so that the
    features of a sample do not depend on the batch it is computed in beyond float64 rounding."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.body = nn.Sequential(nn.Linear(NUM_FEATURES, 8), nn.ReLU()).double()
        self.head = nn.Linear(8, NUM_CLASSES).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def features(self, x):
        return self.body(x.double())

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture(scope="module")
def data():
    return synthetic(num_classes=NUM_CLASSES, num_features=NUM_FEATURES, train_per_class=30, test_per_class=10, seed=3)


def experiences(data, groups):
    """Hand-cut experiences of ``data`` with the original labels (no renumbering)."""
    out = []
    for i, g in enumerate(groups):
        m, mt = torch.isin(data.y_train, torch.tensor(g)), torch.isin(data.y_test, torch.tensor(g))
        out.append(Experience(index=i, classes=tuple(g), task_id=0, x_train=data.x_train[m], y_train=data.y_train[m],
                              t_train=torch.zeros(int(m.sum()), dtype=torch.long), x_test=data.x_test[mt],
                              y_test=data.y_test[mt], t_test=torch.zeros(int(mt.sum()), dtype=torch.long),
                              transform=data.transform))
    return out


def fit(plugin, data, groups, model=None):
    model = model or Net()
    for e in experiences(data, groups):
        plugin.after_experience(model, e)
    return plugin


def all_features(data):
    with torch.no_grad():
        return Net().features(data.x_train).double(), data.y_train


GROUPS = [[0, 1, 2], [3, 4, 5]]
OTHER = [[5, 3], [1], [4, 0, 2]]  # another class order and another cut of the same classes


def test_chan_merge_equals_the_batch_statistics(data):
    f, y = all_features(data)
    parts = [class_stats(f[s : s + 17], y[s : s + 17], NUM_CLASSES) for s in range(0, len(y), 17)]
    merged = parts[0]
    for p in parts[1:]:
        merged = merge_stats(merged, p)
    for a, b in zip(merged, class_stats(f, y, NUM_CLASSES)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_ncm_equals_the_class_means_of_all_data_seen(data, metric):
    ncm = fit(NCM(metric=metric, batch_size=7), data, GROUPS)
    f, y = all_features(data)
    means = torch.stack([f[y == c].mean(0) for c in range(NUM_CLASSES)])
    torch.testing.assert_close(ncm.means(), means, rtol=1e-9, atol=1e-9)
    with torch.no_grad():
        ft = Net().features(data.x_test).double()
    if metric == "cosine":
        expected = (nn.functional.normalize(ft, dim=1) @ nn.functional.normalize(means, dim=1).T).argmax(1)
    else:
        expected = torch.cdist(ft, means).argmin(1)
    assert torch.equal(ncm.predict(Net(), data.x_test), expected)
    assert ncm.report() == {"classes": NUM_CLASSES, "metric": metric, "memory_bytes": (NUM_CLASSES * 8 + NUM_CLASSES) * 8}


def test_slda_equals_lda_on_all_data_seen(data):
    slda = fit(SLDA(batch_size=11), data, GROUPS)
    f, y = all_features(data)
    means = torch.stack([f[y == c].mean(0) for c in range(NUM_CLASSES)])
    centred = f - means[y]
    sigma = centred.T @ centred / len(y)
    torch.testing.assert_close(slda.mu, means, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(slda.scatter / slda.counts.sum(), sigma, rtol=1e-9, atol=1e-9)
    eps = 1e-4
    precision = torch.linalg.inv((1 - eps) * sigma + eps * torch.eye(8, dtype=torch.float64))
    w = precision @ means.T
    b = -0.5 * (means.T * w).sum(0)
    torch.testing.assert_close(slda.weight, w, rtol=1e-7, atol=1e-7)  # inv vs solve: the precision has condition ~1e4
    torch.testing.assert_close(slda.bias, b, rtol=1e-7, atol=1e-7)
    with torch.no_grad():
        ft = Net().features(data.x_test).double()
    assert torch.equal(slda.predict(Net(), data.x_test), (ft @ w + b).argmax(1))


@pytest.mark.parametrize("ridge", [0.0, 0.5])
def test_ranpac_equals_ridge_regression_on_all_data_seen(data, ridge):
    m = 12  # fewer projections than samples: lstsq is the unique solution even without a ridge
    ranpac = fit(RanPAC(num_projections=m, ridge=ridge, seed=4, batch_size=13), data, GROUPS)
    f, y = all_features(data)
    h = torch.relu(f @ ranpac.w_rand.double())  # (N, M)
    yh = nn.functional.one_hot(y, NUM_CLASSES).double()
    a = torch.cat([h, ridge**0.5 * torch.eye(m, dtype=torch.float64)])  # ridge as least squares on an augmented system
    b = torch.cat([yh, torch.zeros(m, NUM_CLASSES, dtype=torch.float64)])
    w = torch.linalg.lstsq(a, b, driver="gelsd").solution
    scale = w.abs().max()
    torch.testing.assert_close(ranpac.weight / scale, w / scale, rtol=0, atol=1e-8)
    torch.testing.assert_close(ranpac.gram, h.T @ h, rtol=1e-9, atol=1e-9)
    with torch.no_grad():
        ht = torch.relu(Net().features(data.x_test).double() @ ranpac.w_rand.double())
    assert torch.equal(ranpac.predict(Net(), data.x_test), (ht @ w).argmax(1))


@pytest.mark.parametrize("make", [lambda: NCM(), lambda: NCM(metric="euclidean"), lambda: SLDA(),
                                  lambda: RanPAC(num_projections=64, ridge=1.0, seed=1)], ids=["ncm", "ncm-euclid", "slda", "ranpac"])
def test_predictions_do_not_depend_on_class_order_or_split(data, make):
    one, other = fit(make(), data, GROUPS), fit(make(), data, OTHER)
    assert torch.equal(one.predict(Net(), data.x_test), other.predict(Net(), data.x_test))
    whole = fit(make(), data, [list(range(NUM_CLASSES))])
    assert torch.equal(one.predict(Net(), data.x_test), whole.predict(Net(), data.x_test))
    assert (one.predict(Net(), data.x_test) == data.y_test).float().mean() > 0.5


def test_ranpac_chooses_its_ridge_on_held_out_data_deterministically(data):
    a, b = fit(RanPAC(num_projections=32, seed=2), data, GROUPS), fit(RanPAC(num_projections=32, seed=2), data, GROUPS)
    assert a.report()["ridge_chosen"] and a.report()["ridge"] in RIDGES and a.report()["ridge"] == b.report()["ridge"]
    assert torch.equal(a.predict(Net(), data.x_test), b.predict(Net(), data.x_test))


@pytest.mark.parametrize("m", [24, 400], ids=["gram", "kernel"])  # 144 fitting samples: M < n, then M > n
def test_ranpac_ridge_is_the_authors_held_out_choice(data, m):
    """The authors' procedure (RanPAC.py optimise_ridge_parameter) by hand: fit on the first 80% of
    the (seeded) shuffled experience, one solve per lambda, least mean squared error on the rest."""
    ranpac = fit(RanPAC(num_projections=m, seed=7), data, [list(range(NUM_CLASSES))])
    f, y = all_features(data)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(7 + 0))
    h = torch.relu(f[order] @ ranpac.w_rand.double())
    yh = nn.functional.one_hot(y[order], NUM_CLASSES).double()
    cut = int(len(y) * 0.8)
    g, q = h[:cut].T @ h[:cut], h[:cut].T @ yh[:cut]
    losses = [((h[cut:] @ torch.linalg.solve(g + r * torch.eye(m, dtype=torch.float64), q) - yh[cut:]) ** 2).mean() for r in RIDGES]
    assert ranpac.report()["ridge"] == RIDGES[int(torch.stack(losses).argmin())]
    assert float(ranpac.ridge) == ranpac.report()["ridge"]


def test_doctests():
    import doctest

    from continual.classifiers import closed_form

    assert doctest.testmod(closed_form).failed == 0


@pytest.mark.parametrize("make", [lambda: NCM(), lambda: SLDA(), lambda: RanPAC(num_projections=32, seed=5)], ids=["ncm", "slda", "ranpac"])
def test_a_resumed_head_predicts_as_the_uninterrupted_one(data, make):
    whole = fit(make(), data, GROUPS)
    first = fit(make(), data, GROUPS[:1])
    state = first.state_dict()
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    assert first.memory_bytes() == sum(v.numel() * v.element_size() for v in state.values())
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    resumed = make()
    resumed.load_state_dict(torch.load(buf, weights_only=True), model=Net())
    resumed.after_experience(Net(), experiences(data, GROUPS)[1])
    assert torch.equal(resumed.predict(Net(), data.x_test), whole.predict(Net(), data.x_test))
    assert resumed.report() == whole.report()


def test_before_any_experience_the_model_argmax_is_used(data):
    model = Net()
    for plugin in (NCM(), SLDA(), RanPAC(num_projections=8)):
        assert torch.equal(plugin.predict(model, data.x_test), model(data.x_test).argmax(1))


def test_bad_values_are_refused_in_one_line(data):
    with pytest.raises(ContinualError, match="need a model with features"):
        NCM().after_experience(nn.Linear(NUM_FEATURES, 2), experiences(data, GROUPS)[0])
    assert RanPAC().report()["ridge"] is None  # nothing seen yet: JSON-able, no NaN
    for make, word in [(lambda: NCM(metric="manhattan"), "manhattan"), (lambda: SLDA(shrinkage=1.0), "shrinkage=1.0"),
                       (lambda: RanPAC(num_projections=0), "num_projections=0"), (lambda: RanPAC(ridge=-1.0), "ridge=-1.0"),
                       (lambda: NCM(batch_size=0), "batch_size=0")]:
        with pytest.raises(ContinualError, match=word) as err:
            make()
        assert "\n" not in str(err.value)
    with pytest.raises(ContinualError, match="slda: checkpoint state has") as err:
        SLDA().load_state_dict(NCM().state_dict())
    assert "\n" not in str(err.value)
    with pytest.raises(ContinualError, match="ncm_metric"):
        get_strategy("ncm").params({"ncm_metric": "dot"})
    with pytest.raises(ContinualError, match="slda_shrinkage"):
        get_strategy("slda").params({"slda_shrinkage": "1.5"})


def test_strategy_defaults_are_the_classes_defaults():
    assert NCM().metric == DEFAULTS["ncm"]["ncm_metric"]
    assert SLDA().shrinkage == DEFAULTS["slda"]["slda_shrinkage"]
    assert RanPAC().num_projections == DEFAULTS["ranpac"]["ranpac_m"]
    assert RanPAC().fixed_ridge is None and DEFAULTS["ranpac"]["ranpac_ridge"] == 0.0  # 0: chosen on held-out data
    for name in ("ncm", "slda", "ranpac"):
        s = get_strategy(name)
        assert s.needs_pretrained and s.classifier == name
        for key, value in s.defaults.items():  # every number has a limit that accepts its default
            assert key in s.limits and s.params({key: value})[key] == value


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from continual.transfer import pretrain

    path = tmp_path_factory.mktemp("pretrained") / "digits01.pt"
    pretrain("split-digits", path, classes=[0, 1], epochs=1, device="cpu", seed=0)
    return path


@pytest.mark.parametrize("name, params", [("ncm", {}), ("slda", {}), ("ranpac", {"ranpac_m": 256})])
def test_strategy_freezes_the_model_and_evaluates_with_its_head(name, params, pretrained):
    from continual.transfer import load_backbone

    stream = make_stream("split-digits", num_experiences=2, device="cpu")
    torch.manual_seed(0)
    model = build_model("mlp", tuple(stream[0].x_train.shape[1:]), stream.num_classes, head="fixed")
    load_backbone(model, pretrained, model_name="mlp")
    strategy = get_strategy(name)
    context = Context(stream=stream, device=torch.device("cpu"), seed=0)
    full = strategy.params(params)
    strategy.prepare_model(model, full, context)
    assert not any(p.requires_grad for p in model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = Trainer(model, epochs=1, device="cpu", plugins=strategy.make_plugins(full, context), classifier=name)
    acc = trainer.run(stream)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert trainer.matrices == {}  # nothing trains the head: its argmax is not evaluated beside
    assert acc.final_average_accuracy() > 0.8  # 10 digit classes from features pretrained on two (measured: 0.88-0.98)


@pytest.mark.parametrize("make", [lambda: NCM(), lambda: SLDA(), lambda: RanPAC(num_projections=32, seed=5)], ids=["ncm", "slda", "ranpac"])
def test_a_trainer_checkpoint_carries_the_statistics(data, make):
    exps = experiences(data, GROUPS)
    whole = Trainer(Net(), device="cpu", plugins=[make()], classifier=make().classifier)
    for e in exps:
        whole.fit(e)
    first = Trainer(Net(), device="cpu", plugins=[make()], classifier=make().classifier)
    first.fit(exps[0])
    resumed = Trainer(Net(), device="cpu", plugins=[make()], classifier=make().classifier)
    resumed.load_state_dict(first.state_dict())
    resumed.fit(exps[1])
    assert resumed.evaluate(exps, classifier=make().classifier) == whole.evaluate(exps, classifier=make().classifier)


@pytest.mark.gpu
@pytest.mark.parametrize("make", [lambda: NCM(), lambda: SLDA(), lambda: RanPAC(num_projections=64, ridge=1.0, seed=1)], ids=["ncm", "slda", "ranpac"])
def test_on_cuda_the_statistics_live_on_the_device_and_predict_as_on_cpu(data, make):
    cpu, gpu = fit(make(), data, GROUPS), make()
    for e in experiences(data, GROUPS):
        gpu.after_experience(Net().cuda(), e)
    assert all(v.is_cuda for v in gpu.state_dict().values())
    assert torch.equal(gpu.predict(Net().cuda(), data.x_test.cuda()).cpu(), cpu.predict(Net(), data.x_test))


@pytest.mark.parametrize("make, values", [(lambda: SLDA(shrinkage=1e-4), [0.0, 1e-4, 0.1, 0.5]),
                                          (lambda: RanPAC(num_projections=40, ridge=1.0), [1e-3, 1.0, 100.0])])
def test_a_sweep_reuses_the_statistics_and_equals_fresh_heads(data, make, values):
    """Each value's accuracy equals a head fitted from scratch with that value; the statistics are untouched."""
    head = fit(make(), data, GROUPS)
    before = {k: v.clone() for k, v in head.state_dict().items()}
    own = head._get()
    exps = experiences(data, GROUPS)
    swept = head.sweep(Net(), exps, values)
    assert list(swept) == values and head._get() == own
    for k, v in head.state_dict().items():
        assert torch.equal(v, before[k]), k
    f, y = torch.cat([Net().features(e.x_test) for e in exps]).double(), torch.cat([e.y_test for e in exps])
    for value in values:
        fresh = make()
        if isinstance(fresh, SLDA):
            fresh.shrinkage = value
        else:
            fresh.fixed_ridge = value
        fit(fresh, data, GROUPS)
        assert swept[value] == float((fresh._scores(f).argmax(1) == y).double().mean()), value
    with pytest.raises(ContinualError, match="must be"):
        head.sweep(Net(), exps, [-1.0])
    assert head._get() == own
    with pytest.raises(ContinualError, match="ncm: has no hyperparameter to sweep"):
        fit(NCM(), data, GROUPS).sweep(Net(), exps, [1.0])
