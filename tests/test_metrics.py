import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from continual import ContinualError
from continual import metrics as M

# A hand-written 3x3 matrix: rows = after training on i, columns = tested on j.
R = [[0.90, 0.10, 0.05],
     [0.60, 0.80, 0.10],
     [0.30, 0.50, 0.70]]
B = [0.10, 0.12, 0.08]


def test_golden_3x3():
    assert M.final_average_accuracy(R) == pytest.approx((0.30 + 0.50 + 0.70) / 3)
    assert M.average_accuracy(R, 0) == pytest.approx(0.90)
    assert M.average_accuracy(R, 1) == pytest.approx((0.60 + 0.80) / 2)
    assert M.accuracy_curve(R) == pytest.approx([0.90, 0.70, 0.50])
    assert M.average_incremental_accuracy(R) == pytest.approx((0.90 + 0.70 + 0.50) / 3)
    assert M.learning_accuracy(R) == pytest.approx([0.90, 0.80, 0.70])
    # max-minus-last: f0 = max(0.9, 0.6) - 0.3, f1 = max(0.1, 0.8) - 0.5
    assert M.forgetting(R) == pytest.approx([0.60, 0.30])
    assert M.average_forgetting(R) == pytest.approx(0.45)
    # BWT = ((0.3 - 0.9) + (0.5 - 0.8)) / (T - 1)
    assert M.backward_transfer(R) == pytest.approx(-0.45)
    # FWT = ((R[0][1] - b1) + (R[1][2] - b2)) / (T - 1)
    assert M.forward_transfer(R, B) == pytest.approx(((0.10 - 0.12) + (0.10 - 0.08)) / 2)
    assert M.intransigence(R, [0.95, 0.90, 0.85]) == pytest.approx([0.05, 0.10, 0.15])


def test_max_and_first_forgetting_differ():
    # Experience 0's accuracy rises after it was learned (0.5 -> 0.9), then falls to 0.4.
    R2 = [[0.5, 0.0, 0.0], [0.9, 0.8, 0.0], [0.4, 0.8, 0.9]]
    assert M.forgetting(R2, mode="max") == pytest.approx([0.5, 0.0])
    assert M.forgetting(R2, mode="first") == pytest.approx([0.1, 0.0])
    assert M.average_forgetting(R2, mode="first") == pytest.approx(0.05)


def test_single_experience():
    assert M.average_forgetting([[0.7]]) == 0.0
    assert M.backward_transfer([[0.7]]) == 0.0
    assert M.forward_transfer([[0.7]], [0.1]) == 0.0


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ContinualError, match="square"):
        M.final_average_accuracy([[0.1, 0.2]])
    with pytest.raises(ContinualError, match="one entry per experience"):
        M.forward_transfer(R, [0.1])
    with pytest.raises(ContinualError, match="forgetting mode"):
        M.forgetting(R, mode="last")


acc = st.floats(0, 1, allow_nan=False)


@given(st.integers(1, 8), acc)
def test_forgetting_zero_on_constant_matrix(T, c):
    R = np.full((T, T), c)
    assert M.average_forgetting(R) == pytest.approx(0.0)
    assert M.average_forgetting(R, mode="first") == pytest.approx(0.0)
    assert M.backward_transfer(R) == pytest.approx(0.0)


@given(st.lists(acc, min_size=1, max_size=8), st.data())
def test_bwt_zero_when_columns_constant_from_diagonal(diag, data):
    # Upper-triangular-constant: column j holds diag[j] from row j downwards (never forgotten);
    # the untrained part above the diagonal is arbitrary.
    T = len(diag)
    R = np.array(data.draw(st.lists(st.lists(acc, min_size=T, max_size=T), min_size=T, max_size=T)))
    for j in range(T):
        R[j:, j] = diag[j]
    assert M.backward_transfer(R) == pytest.approx(0.0, abs=1e-12)
    assert M.average_forgetting(R, mode="first") == pytest.approx(0.0, abs=1e-12)


@given(st.integers(2, 6), st.data())
def test_forgetting_is_never_below_first_minus_last(T, data):
    R = np.array(data.draw(st.lists(st.lists(acc, min_size=T, max_size=T), min_size=T, max_size=T)))
    assert np.all(M.forgetting(R, mode="max") >= M.forgetting(R, mode="first") - 1e-12)


def test_t_quantiles_against_known_values():
    # Values from standard t tables.
    for df, q in [(1, 12.706), (5, 2.571), (30, 2.042), (40, 2.021), (60, 2.000), (120, 1.980)]:
        assert M.t_quantile_975(df) == pytest.approx(q, abs=1.5e-3)


def test_mean_ci():
    m, h = M.mean_ci([1.0, 2.0, 3.0, 4.0])
    sem = np.std([1, 2, 3, 4], ddof=1) / 2
    assert m == 2.5 and h == pytest.approx(3.182 * sem)
    m1, h1 = M.mean_ci([0.3])
    assert m1 == 0.3 and math.isnan(h1)


def test_accuracy_matrix_object():
    m = M.AccuracyMatrix(3)
    assert not m.complete
    m.set_random_init(B)
    for i, row in enumerate(R):
        m.set_row(i, row)
    assert m.complete
    assert m.summary()["forward_transfer"] == pytest.approx(M.forward_transfer(R, B))
    assert m.average_forgetting(mode="first") == pytest.approx(M.average_forgetting(R, mode="first"))
    with pytest.raises(ContinualError, match="random-init"):
        M.AccuracyMatrix.from_rows(R).forward_transfer()


# ------------------------------------------------ class-incremental metrics (sample-weighted)
# Uneven test sets, as in B50 Inc10: experience 0 holds 500 test samples, the others 100 each.
N = [500, 100, 100]


def test_seen_accuracy_golden_3x3():
    # step 0: 0.9; step 1: (500*0.6 + 100*0.8) / 600; step 2: (500*0.3 + 100*0.5 + 100*0.7) / 700
    curve = [0.90, (300 + 80) / 600, (150 + 50 + 70) / 700]
    assert M.seen_accuracy_curve(R, N) == pytest.approx(curve)
    assert M.average_incremental_accuracy(R, N) == pytest.approx(sum(curve) / 3)
    assert M.average_incremental_accuracy(R) == pytest.approx((0.90 + 0.70 + 0.50) / 3)  # unweighted: mean of A_k
    assert M.last_accuracy(R, N) == pytest.approx(270 / 700)
    old, new = M.old_new_accuracy(R, N)
    assert math.isnan(old[0]) and old[1:] == pytest.approx([0.60, (150 + 50) / 600])
    assert new == pytest.approx([0.90, 0.80, 0.70])


@given(st.integers(1, 6), st.integers(1, 1000), st.data())
def test_equal_sizes_give_the_unweighted_metrics(T, n, data):
    R2 = np.array(data.draw(st.lists(st.lists(acc, min_size=T, max_size=T), min_size=T, max_size=T)))
    sizes = [n] * T
    assert M.seen_accuracy_curve(R2, sizes) == pytest.approx(M.accuracy_curve(R2))
    assert M.average_incremental_accuracy(R2, sizes) == pytest.approx(M.average_incremental_accuracy(R2))
    assert M.last_accuracy(R2, sizes) == pytest.approx(M.final_average_accuracy(R2))


@given(st.integers(1, 6), st.data())
def test_seen_accuracy_is_accuracy_over_pooled_samples(T, data):
    # Build per-experience correct counts, then compare with the pooled accuracy computed by hand.
    sizes = data.draw(st.lists(st.integers(1, 50), min_size=T, max_size=T))
    correct = [[data.draw(st.integers(0, sizes[j])) for j in range(T)] for _ in range(T)]
    R2 = [[correct[i][j] / sizes[j] for j in range(T)] for i in range(T)]
    pooled = [sum(correct[k][: k + 1]) / sum(sizes[: k + 1]) for k in range(T)]
    assert M.seen_accuracy_curve(R2, sizes) == pytest.approx(pooled)
    old, _ = M.old_new_accuracy(R2, sizes)
    assert old[1:] == pytest.approx([sum(correct[k][:k]) / sum(sizes[:k]) for k in range(1, T)])


def test_empty_test_sets_give_nan_not_an_error():
    curve = M.seen_accuracy_curve([[0.0, 0.0], [0.0, 0.5]], [0, 10])
    assert math.isnan(curve[0]) and curve[1] == pytest.approx(0.5)
    assert M.average_incremental_accuracy([[0.0, 0.0], [0.0, 0.5]], [0, 10]) == pytest.approx(0.5)


@pytest.mark.parametrize("sizes, message", [([1, 2], "one entry per experience"), ([1, -2, 3], "integers >= 0"),
                                            ([1, 2.5, 3], "integers >= 0")])
def test_bad_test_sizes_are_clear_errors(sizes, message):
    with pytest.raises(ContinualError, match=message):
        M.seen_accuracy_curve(R, sizes)


def test_summary_with_test_sizes():
    plain = M.summary(R, B)
    assert "last_accuracy" not in plain and plain["average_incremental_accuracy"] == pytest.approx(0.7)
    s = M.summary(R, B, test_sizes=N)
    assert s["average_incremental_accuracy"] == pytest.approx(M.average_incremental_accuracy(R, N))
    assert s["average_incremental_accuracy_unweighted"] == pytest.approx(0.7)
    assert s["last_accuracy"] == pytest.approx(270 / 700)
    assert s["last_old_accuracy"] == pytest.approx(200 / 600) and s["last_new_accuracy"] == pytest.approx(0.7)
    assert {k: v for k, v in s.items() if k in plain and k != "average_incremental_accuracy"} == \
        {k: v for k, v in plain.items() if k != "average_incremental_accuracy"}
    assert all(isinstance(v, float) for v in s.values())


def test_accuracy_matrix_with_test_sizes():
    m = M.AccuracyMatrix.from_rows(R, B, test_sizes=N)
    assert m.test_sizes == N and m.last_accuracy() == pytest.approx(270 / 700)
    assert m.summary() == M.summary(R, B, test_sizes=N)
    assert m.seen_accuracy_curve() == pytest.approx(M.seen_accuracy_curve(R, N))
    assert m.average_incremental_accuracy() == pytest.approx(M.average_incremental_accuracy(R, N))
    unsized = M.AccuracyMatrix.from_rows(R)
    assert unsized.average_incremental_accuracy() == pytest.approx(0.7)
    with pytest.raises(ContinualError, match="test sizes"):
        unsized.last_accuracy()
    with pytest.raises(ContinualError, match="one entry per experience"):
        M.AccuracyMatrix(3, test_sizes=[1, 2])
