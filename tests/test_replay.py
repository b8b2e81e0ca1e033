"""Replay buffers, ER and DER++: capacity, balance, uniformity, herding, state round trips, behaviour."""

import io
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from continual import ContinualError, Experience, RunConfig, Strategy, Transform, run, split, synthetic
from continual.models import MLP
from continual.replay import (
    ER, IGNORE_LABEL, ClassBalancedBuffer, DERpp, ExperienceBalancedBuffer, ReservoirBuffer, balanced_quotas,
    herding, make_buffer,
)
from continual.strategies import STRATEGIES, get_strategy, register


def batches(n, sizes, *, dim=3):
    """Samples 0..n-1 (x = its index in every feature, as uint8 when small) cut into batches of the given sizes."""
    s, i = 0, 0
    while s < n:
        b = min(sizes[i % len(sizes)], n - s)
        idx = torch.arange(s, s + b)
        yield idx.float().unsqueeze(1).expand(b, dim).contiguous(), idx, torch.zeros(b, dtype=torch.long)
        s, i = s + b, i + 1


def stored_ids(buf):
    return buf.stored().y.tolist()


# ------------------------------------------------------------------ reservoir
@settings(max_examples=25, deadline=None)
@given(capacity=st.integers(1, 40), n=st.integers(0, 200), sizes=st.lists(st.integers(1, 60), min_size=1, max_size=4))
def test_reservoir_capacity_never_exceeded_and_samples_are_distinct(capacity, n, sizes):
    buf = ReservoirBuffer(capacity, seed=1)
    for x, y, t in batches(n, sizes):
        buf.add(x, y, t)
        assert len(buf) <= capacity and buf.x.shape[0] == capacity  # the storage never grows
    assert len(buf) == min(n, capacity) and buf.num_seen == n
    ids = stored_ids(buf) if n else []
    assert len(set(ids)) == len(ids)  # no sample stored twice
    if ids:
        assert (buf.stored().x[:, 0].long() == buf.stored().y).all()  # rows stay aligned across tensors


def reference_algorithm_r(capacity, stream_batches, seed):
    """Sequential algorithm R, one sample at a time, consuming the same draws as the vectorised buffer."""
    g = torch.Generator().manual_seed(seed)
    slots, seen = [None] * capacity, 0
    for _, y, _ in stream_batches:
        B = len(y)
        u = torch.rand(B, dtype=torch.float64, generator=g) if seen + B > capacity else None
        for i in range(B):
            k = seen + i
            j = k if k < capacity else min(int(u[i] * (k + 1)), k)
            if j < capacity:
                slots[j] = int(y[i])
        seen += B
    return [s for s in slots if s is not None]


@pytest.mark.parametrize("sizes", [(7,), (33, 5), (100,)])
def test_reservoir_equals_sequential_algorithm_r(sizes):
    # Batches larger than the capacity make several samples pick one slot: the last must win.
    buf = ReservoirBuffer(20, seed=3)
    for b in batches(300, sizes):
        buf.add(*b)
    assert stored_ids(buf) == reference_algorithm_r(20, batches(300, sizes), seed=3)


def test_reservoir_keeps_every_sample_with_equal_probability():
    n, capacity, trials = 120, 12, 1500
    counts = torch.zeros(n)
    for trial in range(trials):
        buf = ReservoirBuffer(capacity, seed=trial)
        for b in batches(n, (5, 17)):
            buf.add(*b)
        counts[buf.stored().y] += 1
    expected = trials * capacity / n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    df = n - 1
    assert chi2 < df + 6 * math.sqrt(2 * df), chi2  # about 6 standard deviations: generous, seeded
    first, last = counts[: n // 4].mean(), counts[-n // 4 :].mean()
    assert abs(first - last) < 0.1 * expected  # early and late samples equally likely


def test_memory_is_capacity_times_sample_size_and_reported():
    buf = ReservoirBuffer(50, logit_width=10)
    x = torch.zeros(8, 1, 8, 8, dtype=torch.uint8)
    buf.add(x, torch.zeros(8, dtype=torch.long), torch.zeros(8, dtype=torch.long), logits=torch.zeros(8, 10))
    per_sample = 64 * 1 + 8 + 8 + 10 * 4  # uint8 image, int64 label and task id, float32 logits
    assert buf.memory_bytes == 50 * per_sample
    assert buf.report() == {"buffer": "reservoir", "capacity": 50, "size": 8, "memory_bytes": 50 * per_sample,
                            "bytes_per_sample": per_sample, "num_seen": 8}
    assert buf.x.dtype == torch.uint8  # stored in the compact form


# ------------------------------------------------------------ balanced buffers
def class_stream(num_classes=10, num_experiences=5, per_class=30, seed=0):
    return split(synthetic(num_classes=num_classes, num_features=6, train_per_class=per_class, seed=seed), num_experiences)


@settings(max_examples=20, deadline=None)
@given(capacity=st.integers(1, 120), num_experiences=st.sampled_from([1, 2, 3, 5, 10]), seed=st.integers(0, 3))
def test_class_balanced_stays_balanced_within_one(capacity, num_experiences, seed):
    buf = ClassBalancedBuffer(capacity, seed=seed)
    seen = set()
    for e in class_stream(num_experiences=num_experiences, seed=seed):
        buf.update(e)
        seen |= set(e.classes)
        counts = buf.group_counts()
        assert len(buf) == min(capacity, 30 * len(seen)) and buf.x.shape[0] == capacity
        assert set(counts) <= seen
        values = [counts.get(c, 0) for c in seen]
        assert max(values) - min(values) <= 1, counts
        assert (buf.stored().y.unsqueeze(1) == torch.tensor(sorted(seen))).any(1).all()


def test_experience_balanced_and_small_classes():
    buf = ExperienceBalancedBuffer(50, seed=0)
    for e in class_stream(num_experiences=3):
        buf.update(e)
    assert buf.group_counts() == {0: 17, 1: 17, 2: 16} and len(buf) == 50
    # A group with fewer samples than its share keeps them all; the others share the rest.
    assert balanced_quotas([3, 50, 50, 0], 40) == [3, 19, 18, 0]
    assert sum(balanced_quotas([5, 5], 40)) == 10


def test_class_balanced_domain_stream_keeps_a_share_of_every_experience():
    d = synthetic(num_classes=4, num_features=6, train_per_class=40)
    from continual import permuted
    stream = permuted(d, 4)
    buf = ClassBalancedBuffer(40, seed=0)
    for e in stream:
        buf.update(e)
    assert buf.group_counts() == {0: 10, 1: 10, 2: 10, 3: 10}
    # The inputs come from several experiences (each permutes the features differently).
    rows = {tuple(r) for r in buf.stored().x.tolist()}
    origin = [sum(tuple(r) in rows for r in e.x_train.tolist()) for e in stream]
    assert all(k > 0 for k in origin) and sum(origin) == 40


def test_a_returning_class_keeps_a_uniform_subset_of_all_its_samples():
    """Capacity 10, one class arriving in three experiences of 100, 50 and 30 samples: every one
    of the 180 samples must end in the buffer with probability 10/180 (the number of new samples
    kept is hypergeometric; rounding it made the groups' rates 0.056 / 0.048 / 0.067)."""
    from scipy.stats import chisquare

    def exp(lo, n):
        x = torch.arange(lo, lo + n).float().unsqueeze(1)
        y = t = torch.zeros(n, dtype=torch.long)
        return Experience(0, (0,), 0, x, y, t, x[:1], y[:1], t[:1], Transform())

    experiences, trials = [exp(0, 100), exp(100, 50), exp(150, 30)], 2000
    counts = torch.zeros(180)
    for seed in range(trials):
        buf = ClassBalancedBuffer(10, seed=seed)
        for e in experiences:
            buf.update(e)
        counts[buf.stored().x[:, 0].long()] += 1
    assert counts.sum() == 10 * trials
    assert chisquare(counts.numpy()).pvalue > 1e-3  # seeded, so deterministic; about 0.25 here
    rates = [float(counts[a:b].mean()) / trials for a, b in ((0, 100), (100, 150), (150, 180))]
    assert all(abs(r - 10 / 180) < 0.004 for r in rates), rates  # the binomial sd of a group's rate is under 0.0015


def naive_herding(features, m):
    """Straightforward iCaRL herding: try every candidate, one exemplar at a time."""
    phi = features / np.linalg.norm(features, axis=1, keepdims=True)
    mu = phi.mean(0)
    chosen = []
    for k in range(1, m + 1):
        best, best_d = None, np.inf
        for i in range(len(phi)):
            if i in chosen:
                continue
            d = np.linalg.norm(mu - (phi[chosen].sum(0) + phi[i]) / k)
            if d < best_d:
                best, best_d = i, d
        chosen.append(best)
    return chosen


def test_herding_matches_a_straightforward_implementation():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(25, 5, generator=g, dtype=torch.float64)
    assert herding(feats, 10).tolist() == naive_herding(feats.numpy(), 10)
    assert herding(feats, 25).sort().values.tolist() == list(range(25))  # a permutation when m = N
    with pytest.raises(ContinualError, match="m=26"):
        herding(feats, 26)


def test_herding_buffer_keeps_herding_order_when_shrinking():
    stream = class_stream(num_experiences=2, per_class=20)
    torch.manual_seed(0)
    model = MLP(6, (16,), 10)
    buf = ClassBalancedBuffer(40, selection="herding")
    buf.update(stream[0], model=model)  # 5 classes x 8 exemplars
    e = stream[0]
    for c in e.classes:
        xc = e.x_train[e.y_train == c]
        expected = xc[herding(model.features(e.transform(xc)).detach(), 8)]
        assert torch.equal(buf.stored().x[buf.stored().y == c], expected)
    kept = {c: buf.stored().x[buf.stored().y == c][:4].clone() for c in e.classes}
    buf.update(stream[1], model=model)  # 10 classes x 4: the old classes keep their first 4 exemplars
    for c in e.classes:
        assert torch.equal(buf.stored().x[buf.stored().y == c], kept[c])
    with pytest.raises(ContinualError, match="herding selection needs the model"):
        buf.update(stream[1])


@pytest.mark.parametrize("selection", ["random", "herding"])
def test_budgets_a_fixed_total_or_a_fixed_number_per_class(selection):
    """mem=40 is shared out (8 per class for 5 classes, then 4 for 10); mem_per_class=6 keeps 6
    of every class seen, the total growing with the classes (30, then 60)."""
    stream = class_stream(num_experiences=2, per_class=20)
    torch.manual_seed(0)
    model = MLP(6, (16,), 10)
    total = ClassBalancedBuffer(40, selection=selection)
    per_class = make_buffer("class-balanced", 6 * 10, selection=selection, per_class=6)
    for i, (each_total, each_per_class) in enumerate([(8, 6), (4, 6)]):
        for buf, each in ((total, each_total), (per_class, each_per_class)):
            buf.update(stream[i], model=model)
            classes = range(5 * (i + 1))
            assert buf.group_counts() == {c: each for c in classes} and len(buf) == each * len(classes)
    assert per_class.report()["budget"] == "6 per class" and total.report()["budget"] == "40 in total"
    if selection == "herding":  # the first experience's exemplars are its herding selection, with either budget
        fresh = make_buffer("class-balanced", 60, selection="herding", per_class=6)
        fresh.update(stream[0], model=model)
        e = stream[0]
        for c in e.classes:
            xc = e.x_train[e.y_train == c]
            assert torch.equal(fresh.stored().x[fresh.stored().y == c], xc[herding(model.features(e.transform(xc)).detach(), 6)])
    with pytest.raises(ContinualError, match="mem_per_class=6 needs buffer=class-balanced"):
        make_buffer("reservoir", 60, per_class=6)


def test_replay_strategy_takes_mem_per_class():
    r = run(RunConfig(strategy="replay", params={"buffer": "class-balanced", "mem_per_class": 7}, epochs=1, device="cpu"))
    assert r.extra["replay"]["budget"] == "7 per class" and r.extra["replay"]["capacity"] == 70
    assert r.extra["replay"]["per_group"] == {str(c): 7 for c in range(10)}  # filled after the last experience too


# -------------------------------------------------------------------- state
def roundtrip(state):
    f = io.BytesIO()
    torch.save(state, f)
    f.seek(0)
    return torch.load(f, weights_only=True)


def test_state_dict_round_trip_gives_identical_future_samples():
    a = ReservoirBuffer(30, seed=5, logit_width=4)
    for x, y, t in batches(100, (9,)):
        a.add(x, y, t, logits=x[:, :3])
    b = ReservoirBuffer(30, seed=99, logit_width=4)
    b.load_state_dict(roundtrip(a.state_dict()))
    for x, y, t in batches(60, (11,)):
        a.add(x, y, t, logits=x[:, :3])
        b.add(x, y, t, logits=x[:, :3])
        ra, rb = a.sample(8), b.sample(8)
        assert all(torch.equal(u, v) for u, v in zip(ra, rb))
    assert torch.equal(a.logits, b.logits) and a.num_seen == b.num_seen == 160
    assert torch.isinf(a.logits[:, 3]).all()  # narrower logits are padded with -inf ("not compared")

    stream = class_stream(num_experiences=3)
    c, d = ClassBalancedBuffer(25, seed=1), ClassBalancedBuffer(25, seed=2)
    c.update(stream[0])
    d.load_state_dict(roundtrip(c.state_dict()))
    for e in stream[1:]:
        c.update(e), d.update(e)
        assert all(torch.equal(u, v) for u, v in zip(c.sample(10), d.sample(10)) if u is not None)
    with pytest.raises(ContinualError, match="capacity 25 into one of capacity 3"):
        ClassBalancedBuffer(3).load_state_dict(c.state_dict())


# ------------------------------------------------------------ plugins, errors
def test_er_joins_a_replay_batch_and_der_marks_it_ignored():
    x, y, t = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]), torch.zeros(6, dtype=torch.long)
    er = ER(ReservoirBuffer(10), batch_size=3)
    assert er.batch(x, y, t) is None
    jx, jy, jt = er.batch(x, y, t)
    assert len(jx) == 9 and torch.equal(jx[:6], x)
    assert all((x == row).all(1).any() for row in jx[6:])  # replayed rows are stored samples

    der = DERpp(ReservoirBuffer(10, logit_width=5), alpha=1.0, beta=0.0, batch_size=4)
    assert der.batch(x, y, t) is None
    assert der.penalty(None, x=x, y=y, t=t, out=torch.zeros(6, 3)) is None  # stores logits of width 3
    jx, jy, jt = der.batch(x, y, t)
    assert (jy[6:] == IGNORE_LABEL).all() and len(jy) == 10
    # The head grew to 5 outputs: only the 3 stored columns are compared (each off by 2 here).
    out = torch.cat([torch.zeros(6, 5), torch.full((4, 5), 2.0)])
    assert der.penalty(None, x=jx, y=jy, t=jt, out=out).item() == pytest.approx(4.0)


def test_der_penalty_is_finite_with_task_masked_logits():
    x, y, t = torch.randn(4, 4), torch.tensor([0, 1, 0, 1]), torch.zeros(4, dtype=torch.long)
    masked = torch.tensor([[1.0, 2.0, float("-inf")]]).repeat(4, 1)
    der = DERpp(ReservoirBuffer(8, logit_width=3), batch_size=4)
    der.batch(x, y, t)
    der.penalty(None, x=x, y=y, t=t, out=masked)
    jx, jy, jt = der.batch(x, y, t)
    out = torch.cat([masked, masked + 1]).requires_grad_()
    p = der.penalty(None, x=jx, y=jy, t=jt, out=out)
    p.backward()
    assert torch.isfinite(p) and torch.isfinite(out.grad).all()


def test_bad_settings_name_the_value_and_the_choices():
    with pytest.raises(ContinualError, match="buffer='fifo' is not accepted; expected one of reservoir, class-balanced, experience-balanced"):
        run(RunConfig(strategy="replay", device="cpu", params={"buffer": "fifo"}))
    with pytest.raises(ContinualError, match="unknown buffer 'fifo'; expected one of reservoir, class-balanced, experience-balanced"):
        make_buffer("fifo", 10)
    with pytest.raises(ContinualError, match="unknown selection 'best'; expected one of random, herding"):
        make_buffer("class-balanced", 10, selection="best")
    with pytest.raises(ContinualError, match="needs buffer=class-balanced"):
        make_buffer("reservoir", 10, selection="herding")
    with pytest.raises(ContinualError, match="mem=0"):
        make_buffer("reservoir", 0)
    with pytest.raises(ContinualError, match="replay_batch=-1"):
        ER(ReservoirBuffer(3), batch_size=-1)
    with pytest.raises(ContinualError, match="filled at the end of each experience"):
        ClassBalancedBuffer(3).add(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))


class Counter:
    name = "counter"

    def __init__(self):
        self.batch_sizes = []

    def penalty(self, model, *, x, y, t, out):
        self.batch_sizes.append(len(y))
        return None

    def report(self):
        return {"max_batch": max(self.batch_sizes)}


def test_replay_composes_with_another_sequential_strategy():
    toy = register(Strategy("toy-counter", "test only", defaults={}, make_plugins=lambda p, c: [Counter()]))
    try:
        both = get_strategy("replay+toy-counter")
        assert set(both.defaults) == {"buffer", "selection", "mem", "mem_per_class", "replay_batch"}
        r = run(RunConfig(strategy="replay+toy-counter", epochs=1, device="cpu", params={"mem": 40, "replay_batch": 16}))
        assert r.extra["replay"]["capacity"] == 40 and r.extra["replay"]["memory_bytes"] == 40 * (64 + 16)
        assert r.extra["counter"]["max_batch"] == 32 + 16  # the other plugin sees the joined batch
    finally:
        del STRATEGIES[toy.name]


# ---------------------------------------------------------------- behaviour
@pytest.fixture(scope="module")
def digits_runs():
    """Split-digits, class-incremental, the benchmark's defaults (MLP, 10 epochs, lr 0.05), two seeds."""
    return {s: [run(RunConfig(strategy=s, scenario="class", device="cpu", seed=seed)).metrics for seed in (0, 1)]
            for s in ("finetune", "replay", "der++")}


def mean(runs, key):
    return sum(m[key] for m in runs) / len(runs)


@pytest.mark.parametrize("strategy", ["replay", "der++"])
def test_replay_forgets_clearly_less_than_finetune(digits_runs, strategy):
    ft, rp = digits_runs["finetune"], digits_runs[strategy]
    assert mean(rp, "average_forgetting") < mean(ft, "average_forgetting") - 0.5
    assert mean(rp, "final_average_accuracy") > mean(ft, "final_average_accuracy") + 0.5
    assert mean(rp, "final_average_accuracy") > 0.8


def test_a_buffer_larger_than_the_memory_available_is_refused_before_allocating(monkeypatch):
    import continual.replay.buffers as replay  # where check_memory looks it up

    assert replay.available_memory("cpu") > 0  # MemAvailable, or free pages
    monkeypatch.setattr(replay, "available_memory", lambda device: 1000)
    x, y, t = torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long)
    buf = ReservoirBuffer(100)  # 100 x (64 + 8 + 8) bytes = 8 kB
    with pytest.raises(ContinualError, match=r"^a reservoir buffer of mem=100 samples \(80 bytes each\) needs 8\.0 KB on cpu, "
                                             r"but 1\.0 KB is available; lower mem$"):
        buf.add(x, y, t)
    assert buf.x is None  # nothing allocated
    der = ReservoirBuffer(10, logit_width=10)  # 10 x (64 + 16 + 40) = 1.2 kB
    with pytest.raises(ContinualError, match=r"\(120 bytes each\) needs 1\.2 KB"):
        der.add(x, y, t, logits=torch.zeros(4, 10))
    ReservoirBuffer(12).add(x, y, t)  # 960 bytes fit
