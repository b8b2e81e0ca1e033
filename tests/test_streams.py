import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from continual import ContinualError, Transform, concat, digits, permuted, rotated, split, synthetic
from continual.streams import rotate


@pytest.fixture(scope="module")
def dig():
    return digits()


def test_digits_dataset(dig):
    assert dig.x_train.dtype == torch.uint8 and dig.x_train.shape == (1438, 1, 8, 8)
    assert dig.x_test.shape == (359, 1, 8, 8)
    assert dig.num_classes == 10
    assert torch.bincount(dig.y_test).tolist() == [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]
    x = dig.transform(dig.x_train)
    assert x.dtype == torch.float32
    assert x.mean().item() == pytest.approx(0.0, abs=1e-4) and x.std().item() == pytest.approx(1.0, abs=1e-3)
    assert torch.equal(digits().x_train, dig.x_train)  # fixed split


def test_digits_are_scikit_learns_read_without_importing_it(dig):
    import subprocess
    import sys

    import numpy as np
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = np.rint(raw.images * (255.0 / 16.0)).astype(np.uint8)
    ours = torch.cat([dig.x_train, dig.x_test])[:, 0].numpy()
    labels = torch.cat([dig.y_train, dig.y_test]).numpy()
    order = np.lexsort(ours.reshape(len(ours), -1).T[::-1])  # the same multiset of (image, label) pairs
    ref = np.lexsort(images.reshape(len(images), -1).T[::-1])
    assert np.array_equal(ours[order], images[ref]) and np.array_equal(labels[order], raw.target[ref])
    code = "import sys, continual; continual.digits(); assert 'sklearn' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_transform_per_channel_and_augment():
    calls = []

    def aug(x, g):
        calls.append(g)
        return x + 1

    t = Transform(mean=(0.0, 1.0), std=(1.0, 2.0), augment=aug)
    x = torch.ones(2, 2, 3, 3)
    y = t(x)
    assert torch.allclose(y[:, 0], torch.ones(2, 3, 3)) and torch.allclose(y[:, 1], torch.zeros(2, 3, 3))
    assert not calls
    assert torch.allclose(t(x, train=True)[:, 0], 2 * torch.ones(2, 3, 3)) and len(calls) == 1


@settings(max_examples=30, deadline=None)
@given(num_classes=st.integers(2, 12), data=st.data())
def test_split_partitions_the_classes(num_classes, data):
    ds = synthetic(num_classes=num_classes, num_features=3, train_per_class=3, test_per_class=2)
    n_exp = data.draw(st.integers(1, num_classes))
    order = data.draw(st.permutations(range(num_classes)))
    scenario = data.draw(st.sampled_from(["class", "task"]))
    stream = split(ds, n_exp, scenario=scenario, class_order=order)
    assert len(stream) == n_exp
    seen = [c for e in stream for c in e.classes]
    assert sorted(seen) == list(range(num_classes))  # every class once: a partition
    assert all(len(e.classes) >= 1 for e in stream)
    for e in stream:
        assert set(e.y_train.tolist()) == set(e.classes) == set(e.y_test.tolist())
        assert (e.t_train == e.task_id).all() and (e.t_test == e.task_id).all()
        assert e.task_id == (e.index if scenario == "task" else 0)
        # relabelling: new label k is original label order[k]
        orig = torch.tensor(stream.class_order)[e.y_train]
        for x, yo in zip(e.x_train, orig):
            assert ((ds.x_train == x).all(1) & (ds.y_train == yo)).any()
    assert sum(e.num_train for e in stream) == len(ds.y_train)


def test_split_standard_order_and_random_order(dig):
    s = split(dig, 5)
    assert [e.classes for e in s] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert s.class_order == tuple(range(10))
    r1, r2 = split(dig, 5, class_order="random", seed=3), split(dig, 5, class_order="random", seed=3)
    assert r1.class_order == r2.class_order != tuple(range(10))


def test_split_errors(dig):
    with pytest.raises(ContinualError, match="scenario"):
        split(dig, 5, scenario="domain")
    with pytest.raises(ContinualError, match="permutation"):
        split(dig, 5, class_order=[0, 1, 2])
    with pytest.raises(ContinualError, match="num_experiences=11"):
        split(dig, 11)
    with pytest.raises(ContinualError, match="'shuffled'"):
        split(dig, 5, class_order="shuffled")


def test_stream_is_a_sequence(dig):
    s = split(dig, 5, scenario="task")
    assert len(s) == 5 and s[-1].index == 4
    head = s[:3]
    assert len(head) == 3 and head.scenario == "task" and head.num_classes == 10
    it1, it2 = iter(s), iter(s)
    next(it1)
    assert next(it2).index == 0  # fresh iterators
    assert [(a.index, b.index) for a in s for b in s][:6] == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 0)]
    mask = s.task_class_mask()
    assert mask.shape == (5, 10) and mask[2].nonzero().flatten().tolist() == [4, 5]


def test_concat_keeps_task_ids(dig):
    s = split(dig, 5, scenario="task")
    c = concat(list(s[:2]))
    assert c.classes == (0, 1, 2, 3)
    assert set(c.t_train.tolist()) == {0, 1}
    assert c.num_train == s[0].num_train + s[1].num_train


def test_permuted(dig):
    s = permuted(dig, 3, seed=1)
    assert s.scenario == "domain" and len(s) == 3
    flat = dig.x_train.reshape(len(dig.x_train), -1)
    for e in s:
        assert e.classes == tuple(range(10)) and torch.equal(e.y_train, dig.y_train)
        ex = e.x_train.reshape(len(e.x_train), -1)
        # one fixed permutation per experience: the same pixel multiset per image
        assert torch.equal(ex.sort(1).values, flat.sort(1).values)
    assert not torch.equal(s[0].x_train, s[1].x_train)
    assert torch.equal(permuted(dig, 3, seed=1)[2].x_test, s[2].x_test)
    assert torch.equal(permuted(dig, 2, identity_first=True)[0].x_train, dig.x_train)


def test_rotate_and_rotated(dig):
    img = torch.zeros(1, 1, 5, 5, dtype=torch.uint8)
    img[0, 0, 0, 2] = 200  # top centre
    assert torch.equal(rotate(img, 0), img)
    r = rotate(img, 90)
    assert r.dtype == torch.uint8 and r.shape == img.shape
    assert r[0, 0].flatten().argmax().item() in (10, 14)  # moved to the middle of a side
    s = rotated(dig, 4)
    assert len(s) == 4 and torch.equal(s[0].x_train, dig.x_train)
    with pytest.raises(ContinualError, match="angles"):
        rotated(dig, 3, angles=[0, 10])
    with pytest.raises(ContinualError, match="images"):
        rotated(synthetic(), 2)


def test_experience_mask_logits_matches_the_trainers_mask():
    s = split(synthetic(num_features=4), 5, scenario="task")
    out = torch.randn(6, 10)
    masked = s[2].mask_logits(out)
    assert torch.isinf(masked[:, [0, 1, 2, 3, 6, 7, 8, 9]]).all() and torch.equal(masked[:, 4:6], out[:, 4:6])
    both = concat(list(s[:3]))
    t = torch.tensor([0, 1, 2, 0, 1, 2])
    per_sample = both.mask_logits(out, t)
    expected = out.masked_fill(~s.task_class_mask()[t], float("-inf"))
    assert torch.equal(per_sample, expected)
    cls = split(synthetic(num_features=4), 5)
    assert torch.equal(cls[1].mask_logits(out), out)  # no masking outside the task scenario


# --------------------------------------------------- uneven splits, B m Inc n, named class orders
@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 4), min_size=1, max_size=10))
def test_split_by_increments_is_a_partition_in_arrival_order(sizes):
    num_classes = sum(sizes)
    d = synthetic(num_classes=num_classes, num_features=4, train_per_class=3, test_per_class=2)
    stream = split(d, increments=sizes, class_order="random", seed=1)
    assert [len(e.classes) for e in stream] == sizes
    seen = [c for e in stream for c in e.classes]
    assert seen == list(range(num_classes))  # relabelled in arrival order, each class once
    for e in stream:
        assert set(e.y_train.tolist()) == set(e.classes) and set(e.y_test.tolist()) == set(e.classes)


def test_b_m_inc_n_equals_its_list_as_pycil_cuts_it():
    from continual.streams import class_increments

    assert class_increments(100, first=50, increment=10) == [50] + [10] * 5
    assert class_increments(100, first=50, increment=5) == [50] + [5] * 10
    assert class_increments(100, increment=10) == [10] * 10  # B0: an equal split
    assert class_increments(100, first=0, increment=10) == [10] * 10
    assert class_increments(10, first=4, increment=4) == [4, 4, 2]  # a smaller last experience takes the rest
    d = synthetic(num_classes=10, num_features=4, train_per_class=2, test_per_class=1)
    a = split(d, first=4, increment=3)
    b = split(d, increments=[4, 3, 3])
    assert [e.classes for e in a] == [e.classes for e in b]
    assert all(torch.equal(x.x_train, y.x_train) for x, y in zip(a, b))


@pytest.mark.parametrize("kwargs, match", [
    ({}, "exactly one of num_experiences, increments or increment"),
    ({"num_experiences": 2, "increment": 5}, "exactly one"),
    ({"increments": [5, 4]}, "summing to the 10 classes"),
    ({"increments": [5, 0, 5]}, "positive class counts"),
    ({"first": 5}, "goes with increment="),
    ({"first": 11, "increment": 2}, "does not fit 10 classes"),
])
def test_bad_cuts_name_what_is_wrong(kwargs, match):
    d = synthetic(num_classes=10, num_features=4, train_per_class=2, test_per_class=1)
    with pytest.raises(ContinualError, match=match):
        split(d, **kwargs)


def test_icarl_class_order_is_the_fields_and_ignores_the_run_seed():
    """PyCIL: np.random.seed(1993); np.random.permutation(100) (FACIL hard-codes the same list)."""
    from continual.streams import _resolve_class_order

    first20 = [68, 56, 78, 8, 23, 84, 90, 65, 74, 76, 40, 89, 3, 92, 55, 9, 26, 80, 43, 38]
    assert _resolve_class_order("icarl", 100, seed=0)[:20] == first20
    assert _resolve_class_order("icarl", 100, seed=7) == _resolve_class_order("icarl", 100, seed=0)
    d = synthetic(num_classes=10, num_features=4, train_per_class=2, test_per_class=1)
    assert list(split(d, 5, class_order="icarl").class_order) == _resolve_class_order("icarl", 10, seed=0)
    with pytest.raises(ContinualError, match="'random', 'icarl'"):
        split(d, 5, class_order="lucir")


def test_a_stream_over_a_subset_of_the_classes():
    """classes=[...]: only those labels, renumbered in the order given (or the class order's);
    the three-then-five example is increments=[3, 2] over five classes."""
    d = synthetic(num_classes=10, num_features=4, train_per_class=3, test_per_class=2)
    stream = split(d, increments=[3, 2], classes=[7, 0, 2, 9, 4])
    assert [e.classes for e in stream] == [(0, 1, 2), (3, 4)] and stream.num_classes == 5
    assert list(stream.class_order) == [7, 0, 2, 9, 4]
    for e in stream:
        originals = torch.tensor(stream.class_order)[e.y_train]
        for x, c in zip(e.x_train, originals):  # each sample is one of its original class's samples
            assert (d.x_train[d.y_train == c] == x).all(1).any()
        assert sorted(torch.tensor(stream.class_order)[e.y_test].unique().tolist()) == sorted(stream.class_order[c] for c in e.classes)
    assert sum(e.num_train for e in stream) == 5 * 3
    ordered = split(d, 5, classes=[7, 0, 2, 9, 4], class_order="icarl")
    from continual.streams import _resolve_class_order

    assert list(ordered.class_order) == [c for c in _resolve_class_order("icarl", 10, 0) if c in {7, 0, 2, 9, 4}]
    for bad in ([1, 1], [10], []):
        with pytest.raises(ContinualError, match="must be distinct labels"):
            split(d, 1, classes=bad)


def test_split_names_parse():
    from continual.streams import parse_split

    assert parse_split("B50-Inc10") == (50, 10) and parse_split(" b0 inc2 ") == (0, 2) and parse_split("B4_Inc2") == (4, 2)
    for bad in ("B50", "Inc10", "B50-Inc0", "50-10", "B-1-Inc2"):
        with pytest.raises(ContinualError, match="expected B<first>-Inc<increment>"):
            parse_split(bad)


def test_streams_keep_the_datasets_class_names_through_every_derived_stream():
    """Class names follow the class order into each experience, survive slicing, moving, the
    blurry cut and the validation hold-out, and reach the result's provenance (the plots' legends);
    a domain stream has none per experience."""
    from continual import RunConfig, run
    from continual.online import make_blurry
    from continual.validation import split_stream

    d = digits()
    s = split(d, 5, class_order=[9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    assert s.experience_class_names() == [["9", "8"], ["7", "6"], ["5", "4"], ["3", "2"], ["1", "0"]]
    assert s[1:3].experience_class_names() == [["7", "6"], ["5", "4"]] and s.to("cpu").class_names == d.class_names
    train, held = split_stream(s, 0.2, seed=0)
    assert train.experience_class_names() == held.experience_class_names() == s.experience_class_names()
    blurred = make_blurry(s, "i-blurry-50-10", seed=0)
    assert {n for names in blurred.experience_class_names() for n in names} == set(d.class_names)  # blurry: in several
    assert permuted(d, 2).experience_class_names() is None
    r = run(RunConfig(benchmark="split-digits", epochs=1, num_experiences=2, device="cpu", classes=[0, 1, 2, 3]))
    assert r.provenance["experience_classes"] == [["0", "1"], ["2", "3"]]
    assert "experience_classes" not in run(RunConfig(benchmark="permuted-digits", epochs=1, num_experiences=2,
                                                     device="cpu")).provenance
