"""The accuracy matrix and the metrics derived from it, as pure functions.

Notation (0-based): T experiences; ``R[i][j]`` is the test accuracy on experience ``j`` after
training on experience ``i``; ``b[j]`` is the accuracy on experience ``j`` of the model before any
training (random initialisation). Accuracies are fractions in ``[0, 1]``.

References:
    Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory for Continual Learning" (GEM): ACC, BWT, FWT.
    Chaudhry et al. 2018, "Riemannian Walk for Incremental Learning" (RWalk): average accuracy
        after k experiences, forgetting (max minus last), intransigence.
    Rebuffi et al. 2017, "iCaRL": average incremental accuracy (the mean over steps of the accuracy
        on all test samples of the classes seen so far).
    PyCIL (Zhou et al., TPAMI 2024, arXiv:2302.03648), G-U-N/PyCIL: ``models/base.py``
        ``BaseLearner._evaluate`` takes ``top1`` as the accuracy over every test sample of the
        classes seen so far, ``utils/toolkit.py`` ``accuracy`` also splits it into ``old`` (labels
        below the classes known before the step) and ``new``; ``trainer.py`` logs "Average
        Accuracy (CNN)/(NME)" as the mean of the ``top1`` curve, and the last entry is the last
        accuracy. FACIL computes its task-agnostic accuracy over the same samples.

Conventions:
    - BWT divides by T-1, as GEM's formula does (GEM's official code divides by T).
    - Forgetting defaults to max-minus-last (RWalk, A-GEM, Mammoth, FACIL, PyCIL);
      ``mode="first"`` gives first-minus-last, ``R[j][j] - R[T-1][j]`` (Avalanche).
    - Two averages over steps. Without test sizes, :func:`average_incremental_accuracy` is the
      mean of A_k (each experience weighs the same). With ``test_sizes`` (n_j, the number of test
      samples of experience j) it is the class-incremental papers' figure: the mean over steps
      of the sample-weighted seen accuracy ``sum_{j<=k} n_j R[k][j] / sum_{j<=k} n_j``
      (:func:`seen_accuracy_curve`), i.e. the accuracy over all test samples seen so far. The two
      agree when every experience has as many test samples; they differ on uneven splits
      (B50 Inc10: the first experience holds half the test set).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from .errors import ContinualError

ArrayLike = Sequence[Sequence[float]] | np.ndarray


def _square(R: ArrayLike) -> np.ndarray:
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ContinualError(f"an accuracy matrix must be square and non-empty; got shape {R.shape}")
    return R


def final_average_accuracy(R: ArrayLike) -> float:
    """ACC = (1/T) sum_j R[T-1][j] (GEM).

    >>> final_average_accuracy([[0.9, 0.1], [0.5, 0.8]])
    0.65
    """
    R = _square(R)
    return float(R[-1].mean())


def average_accuracy(R: ArrayLike, k: int | None = None) -> float:
    """A_k = (1/(k+1)) sum_{j<=k} R[k][j]: mean accuracy on the experiences seen so far (RWalk).

    ``k`` defaults to the last experience (then A_k equals the final average accuracy).

    >>> average_accuracy([[0.9, 0.1], [0.5, 0.8]], k=0)
    0.9
    """
    R = _square(R)
    k = R.shape[0] - 1 if k is None else k
    return float(R[k, : k + 1].mean())


def accuracy_curve(R: ArrayLike) -> np.ndarray:
    """``[A_0, A_1, ..., A_{T-1}]``: the accuracy-over-tasks curve.

    >>> accuracy_curve([[0.9, 0.1], [0.5, 0.8]]).tolist()
    [0.9, 0.65]
    """
    R = _square(R)
    return np.array([R[k, : k + 1].mean() for k in range(R.shape[0])])


def _sizes(test_sizes: Sequence[int], T: int) -> np.ndarray:
    n = np.asarray(test_sizes, dtype=float)
    if n.shape != (T,):
        raise ContinualError(f"test_sizes must have one entry per experience ({T}); got shape {n.shape}")
    if not np.all(np.isfinite(n)) or np.any(n < 0) or np.any(n != np.round(n)):
        raise ContinualError(f"test_sizes must be counts of test samples (integers >= 0); got {list(test_sizes)}")
    return n


def _weighted(values: np.ndarray, weights: np.ndarray) -> float:
    """``sum(w v) / sum(w)``, NaN when the weights sum to 0 (no test sample)."""
    total = weights.sum()
    return float((weights * values).sum() / total) if total > 0 else math.nan


def seen_accuracy_curve(R: ArrayLike, test_sizes: Sequence[int]) -> np.ndarray:
    """The class-incremental accuracy curve: after each step k, the accuracy over all test
    samples of the experiences seen so far, ``sum_{j<=k} n_j R[k][j] / sum_{j<=k} n_j``
    (iCaRL's and PyCIL's ``top1`` curve, see the module docstring).

    ``test_sizes[j]`` (n_j) is the number of test samples of experience j. With equal sizes this
    is :func:`accuracy_curve`. An entry is NaN where no test sample has been seen yet.

    >>> seen_accuracy_curve([[0.9, 0.1], [0.5, 0.8]], [300, 100]).round(6).tolist()
    [0.9, 0.575]
    """
    R = _square(R)
    n = _sizes(test_sizes, R.shape[0])
    return np.array([_weighted(R[k, : k + 1], n[: k + 1]) for k in range(R.shape[0])])


def average_incremental_accuracy(R: ArrayLike, test_sizes: Sequence[int] | None = None) -> float:
    """Average incremental accuracy (Rebuffi et al. 2017, iCaRL): the mean over steps k of the
    accuracy on what has been seen.

    With ``test_sizes``: the mean of :func:`seen_accuracy_curve`, sample-weighted, as the
    class-incremental papers report it (PyCIL's "Average Accuracy"). Without: the mean of A_k
    (:func:`accuracy_curve`, every experience weighing the same). The two agree when every
    experience has as many test samples.

    >>> round(average_incremental_accuracy([[0.9, 0.1], [0.5, 0.8]]), 6)
    0.775
    >>> round(average_incremental_accuracy([[0.9, 0.1], [0.5, 0.8]], [300, 100]), 6)
    0.7375
    """
    if test_sizes is None:
        return float(accuracy_curve(R).mean())
    curve = seen_accuracy_curve(R, test_sizes)
    seen = curve[~np.isnan(curve)]  # steps before any test sample was seen do not count
    return float(seen.mean()) if seen.size else math.nan


def last_accuracy(R: ArrayLike, test_sizes: Sequence[int]) -> float:
    """The accuracy over every test sample after the last step: the last entry of
    :func:`seen_accuracy_curve` (PyCIL's "last accuracy", A_B). With equal sizes it equals
    :func:`final_average_accuracy`.

    >>> round(last_accuracy([[0.9, 0.1], [0.5, 0.8]], [300, 100]), 6)
    0.575
    """
    return float(seen_accuracy_curve(R, test_sizes)[-1])


def old_new_accuracy(R: ArrayLike, test_sizes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy on old and on new classes after each step k (PyCIL ``utils/toolkit.py``
    ``accuracy``: ``old`` and ``new``).

    ``old[k] = sum_{j<k} n_j R[k][j] / sum_{j<k} n_j`` over the experiences learned before step k
    (sample-weighted; NaN at step 0, where nothing is old); ``new[k] = R[k][k]``.

    >>> old, new = old_new_accuracy([[0.9, 0.1, 0.0], [0.6, 0.8, 0.1], [0.3, 0.5, 0.9]], [100, 300, 100])
    >>> old.round(6).tolist(), new.tolist()
    ([nan, 0.6, 0.45], [0.9, 0.8, 0.9])
    """
    R = _square(R)
    n = _sizes(test_sizes, R.shape[0])
    old = np.array([_weighted(R[k, :k], n[:k]) if k else math.nan for k in range(R.shape[0])])
    return old, np.diag(R).copy()


def learning_accuracy(R: ArrayLike) -> np.ndarray:
    """The diagonal R[j][j]: accuracy on each experience right after learning it.

    >>> learning_accuracy([[0.9, 0.1], [0.5, 0.8]]).tolist()
    [0.9, 0.8]
    """
    return np.diag(_square(R)).copy()


def forgetting(R: ArrayLike, *, mode: Literal["max", "first"] = "max") -> np.ndarray:
    """Per-experience forgetting f_j for j < T-1.

    ``mode="max"``: f_j = max_{l<T-1} R[l][j] - R[T-1][j] (RWalk; the maximum runs over every row
    before the last, which includes rows before experience j was trained, as in the formula).
    ``mode="first"``: f_j = R[j][j] - R[T-1][j] (Avalanche).

    >>> forgetting([[0.9, 0.1, 0.0], [0.6, 0.8, 0.1], [0.3, 0.5, 0.9]]).tolist()
    [0.6000000000000001, 0.30000000000000004]
    """
    R = _square(R)
    T = R.shape[0]
    if mode == "max":
        if T < 2:
            return np.zeros(0)
        return R[: T - 1, : T - 1].max(axis=0) - R[T - 1, : T - 1]
    if mode == "first":
        return np.diag(R)[: T - 1] - R[T - 1, : T - 1]
    raise ContinualError(f"unknown forgetting mode {mode!r}; expected 'max' or 'first'")


def average_forgetting(R: ArrayLike, *, mode: Literal["max", "first"] = "max") -> float:
    """Mean of :func:`forgetting` over j < T-1 (0 for a single experience).

    >>> round(average_forgetting([[0.9, 0.1, 0.0], [0.6, 0.8, 0.1], [0.3, 0.5, 0.9]]), 6)
    0.45
    """
    f = forgetting(R, mode=mode)
    return float(f.mean()) if len(f) else 0.0


def backward_transfer(R: ArrayLike) -> float:
    """BWT = (1/(T-1)) sum_{j<T-1} (R[T-1][j] - R[j][j]) (GEM; divides by T-1 as the formula does).

    Negative values mean forgetting. 0 for a single experience.

    >>> round(backward_transfer([[0.9, 0.1, 0.0], [0.6, 0.8, 0.1], [0.3, 0.5, 0.9]]), 6)
    -0.45
    """
    R = _square(R)
    T = R.shape[0]
    if T < 2:
        return 0.0
    return float((R[T - 1, : T - 1] - np.diag(R)[: T - 1]).mean())


def forward_transfer(R: ArrayLike, b: Sequence[float]) -> float:
    """FWT = (1/(T-1)) sum_{j>=1} (R[j-1][j] - b[j]) (GEM).

    ``b[j]`` is the accuracy on experience j of the randomly initialised model.

    >>> round(forward_transfer([[0.9, 0.3, 0.2], [0.6, 0.8, 0.4], [0.3, 0.5, 0.9]], [0.1, 0.1, 0.1]), 6)
    0.25
    """
    R = _square(R)
    b = np.asarray(b, dtype=float)
    T = R.shape[0]
    if b.shape != (T,):
        raise ContinualError(f"random-init accuracies b must have one entry per experience ({T}); got shape {b.shape}")
    if T < 2:
        return 0.0
    return float(np.mean([R[j - 1, j] - b[j] for j in range(1, T)]))


def intransigence(R: ArrayLike, joint: Sequence[float]) -> np.ndarray:
    """I_k = a*_k - R[k][k] (RWalk), where a*_k is the accuracy on experience k of a model
    trained jointly on all data of experiences 0..k.

    >>> intransigence([[0.9, 0.1], [0.5, 0.8]], [0.95, 0.9]).round(6).tolist()
    [0.05, 0.1]
    """
    diag = learning_accuracy(R)
    joint = np.asarray(joint, dtype=float)
    if joint.shape != diag.shape:
        raise ContinualError(f"joint reference must have one accuracy per experience ({len(diag)}); got shape {joint.shape}")
    return joint - diag


def summary(R: ArrayLike, b: Sequence[float] | None = None, *, test_sizes: Sequence[int] | None = None) -> dict[str, float]:
    """The headline metrics of one run, as plain floats (what results files store).

    Always: ``final_average_accuracy``, ``average_incremental_accuracy``, ``average_forgetting``
    (max-minus-last), ``average_forgetting_first``, ``backward_transfer``; ``forward_transfer``
    with ``b``. With ``test_sizes``, ``average_incremental_accuracy`` is the sample-weighted one
    of the class-incremental papers, the mean of A_k moves to
    ``average_incremental_accuracy_unweighted``, and ``last_accuracy``, ``last_old_accuracy``
    and ``last_new_accuracy`` (:func:`old_new_accuracy` after the last step) are added.

    >>> s = summary([[0.9, 0.1], [0.5, 0.8]], test_sizes=[300, 100])
    >>> round(s["average_incremental_accuracy"], 4), round(s["average_incremental_accuracy_unweighted"], 4)
    (0.7375, 0.775)
    """
    out = {
        "final_average_accuracy": final_average_accuracy(R),
        "average_incremental_accuracy": average_incremental_accuracy(R, test_sizes),
        "average_forgetting": average_forgetting(R),
        "average_forgetting_first": average_forgetting(R, mode="first"),
        "backward_transfer": backward_transfer(R),
    }
    if test_sizes is not None:
        old, new = old_new_accuracy(R, test_sizes)
        out["average_incremental_accuracy_unweighted"] = average_incremental_accuracy(R)
        out["last_accuracy"] = last_accuracy(R, test_sizes)
        out["last_old_accuracy"] = float(old[-1])
        out["last_new_accuracy"] = float(new[-1])
    if b is not None:
        out["forward_transfer"] = forward_transfer(R, b)
    return out


# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (table up to 30, then a
    Cornish-Fisher expansion around the normal quantile, accurate to 1e-3).

    >>> t_quantile_975(2)
    4.303
    """
    if df < 1:
        raise ContinualError(f"degrees of freedom must be >= 1; got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (t distribution, n-1 dof).

    The half-width is NaN for a single value.

    >>> m, h = mean_ci([0.5, 0.6, 0.7])
    >>> round(m, 6), round(h, 4)
    (0.6, 0.2484)
    """
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ContinualError("mean_ci needs at least one value")
    if v.size == 1:
        return float(v[0]), math.nan
    sem = v.std(ddof=1) / math.sqrt(v.size)
    return float(v.mean()), float(t_quantile_975(v.size - 1) * sem)


class AccuracyMatrix:
    """A T x T accuracy matrix filled row by row as training proceeds, plus the random-init row.

    ``acc_matrix[i, j]`` is the accuracy on experience j after training on experience i; rows not
    yet trained are NaN. Metric methods need the full matrix. ``test_sizes`` (optional, the number
    of test samples of each experience) enables the sample-weighted class-incremental metrics
    (:func:`seen_accuracy_curve`, :func:`last_accuracy`...) and puts them in :meth:`summary`.

    Example:
        >>> m = AccuracyMatrix(2)
        >>> m.set_random_init([0.1, 0.1]); m.set_row(0, [0.9, 0.2]); m.set_row(1, [0.5, 0.8])
        >>> round(m.final_average_accuracy(), 6), m.complete
        (0.65, True)
    """

    def __init__(self, num_experiences: int, *, test_sizes: Sequence[int] | None = None) -> None:
        self.values = np.full((num_experiences, num_experiences), np.nan)
        self.random_init: np.ndarray | None = None
        self.test_sizes: list[int] | None = None
        if test_sizes is not None:
            self.set_test_sizes(test_sizes)

    @classmethod
    def from_rows(cls, rows: ArrayLike, random_init: Sequence[float] | None = None, *,
                  test_sizes: Sequence[int] | None = None) -> AccuracyMatrix:
        R = _square(rows)
        m = cls(R.shape[0], test_sizes=test_sizes)
        m.values[:] = R
        if random_init is not None:
            m.set_random_init(random_init)
        return m

    @property
    def num_experiences(self) -> int:
        return self.values.shape[0]

    @property
    def complete(self) -> bool:
        return not np.isnan(self.values).any()

    def set_row(self, i: int, accuracies: Sequence[float]) -> None:
        self.values[i] = np.asarray(accuracies, dtype=float)

    def set_random_init(self, accuracies: Sequence[float]) -> None:
        self.random_init = np.asarray(accuracies, dtype=float)

    def set_test_sizes(self, test_sizes: Sequence[int]) -> None:
        """Record the number of test samples of each experience (checked: one count each)."""
        self.test_sizes = [int(v) for v in _sizes(test_sizes, self.num_experiences)]

    def _need_sizes(self) -> list[int]:
        if self.test_sizes is None:
            raise ContinualError("this metric needs the test sizes of the experiences; none were recorded (set_test_sizes)")
        return self.test_sizes

    def __getitem__(self, idx):
        return self.values[idx]

    def tolist(self) -> list[list[float]]:
        return self.values.tolist()

    def final_average_accuracy(self) -> float:
        return final_average_accuracy(self.values)

    def average_forgetting(self, *, mode: Literal["max", "first"] = "max") -> float:
        return average_forgetting(self.values, mode=mode)

    def backward_transfer(self) -> float:
        return backward_transfer(self.values)

    def forward_transfer(self) -> float:
        if self.random_init is None:
            raise ContinualError("forward transfer needs the random-init accuracies; none were recorded")
        return forward_transfer(self.values, self.random_init)

    def average_incremental_accuracy(self) -> float:
        """Sample-weighted when the test sizes are known, else the mean of A_k."""
        return average_incremental_accuracy(self.values, self.test_sizes)

    def seen_accuracy_curve(self) -> np.ndarray:
        return seen_accuracy_curve(self.values, self._need_sizes())

    def last_accuracy(self) -> float:
        return last_accuracy(self.values, self._need_sizes())

    def old_new_accuracy(self) -> tuple[np.ndarray, np.ndarray]:
        return old_new_accuracy(self.values, self._need_sizes())

    def summary(self) -> dict[str, float]:
        return summary(self.values, self.random_init, test_sizes=self.test_sizes)

    def __repr__(self) -> str:
        return f"AccuracyMatrix({np.array2string(self.values, precision=3)})"


# ------------------------------------------------------------------ anytime metrics (online runs)
def _anytime(log: dict) -> dict:
    from .online import check_log

    return check_log(log)


def anytime_accuracy_auc(log: dict) -> float:
    """A_AUC: the mean over the evaluation points of the accuracy on the test samples of the
    classes seen so far (Koh et al., ICLR 2022; ``naver-ai/i-Blurry:main.py`` averages the
    accuracies it evaluates every ``eval_period`` samples). ``log`` is an anytime log
    (:mod:`continual.online`).

    >>> anytime_accuracy_auc({"samples": [10, 20], "experience": [0, 0], "seen_acc": [0.5, 0.7], "stream_acc": [0.5, 0.7],
    ...                       "per_experience": [[0.5], [0.7]], "num_seen": [2, 2], "boundaries": [20]})
    0.6
    """
    return float(np.mean(_anytime(log)["seen_acc"]))


def anytime_accuracy_curve(log: dict) -> np.ndarray:
    """The running mean of the stream accuracy over the evaluation points: AAA after each point
    (Caccia et al., ICLR 2022, "New Insights on Reducing Abrupt Representation Change in Online
    Continual Learning", Eq. of the average anytime accuracy)."""
    acc = np.asarray(_anytime(log)["stream_acc"], dtype=float)
    return np.cumsum(acc) / np.arange(1, len(acc) + 1)


def average_anytime_accuracy(log: dict) -> float:
    """AAA (Caccia et al., ICLR 2022): the mean, over every evaluation point, of the accuracy on
    the test splits of the experiences reached so far (the last value of
    :func:`anytime_accuracy_curve`).

    >>> average_anytime_accuracy({"samples": [10, 20, 30], "experience": [0, 1, 1], "seen_acc": [0.9, 0.6, 0.6],
    ...                           "stream_acc": [0.8, 0.5, 0.5], "per_experience": [[0.8, 0.0], [0.5, 0.5], [0.4, 0.6]],
    ...                           "num_seen": [2, 4, 4], "boundaries": [10, 30]})
    0.6
    """
    return float(anytime_accuracy_curve(log)[-1])


def min_accuracy(log: dict, k: int | None = None) -> float:
    """min-ACC_k (De Lange et al., ICLR 2023, "Continual evaluation for lifelong learning: identifying
    the stability gap"): the mean over the past experiences ``i < k`` (1-based: the first ``k - 1``)
    of the lowest accuracy on ``E_i`` at any evaluation point after ``E_i`` was learned (samples
    seen strictly past its boundary) and up to the end of ``E_k``.

    Args:
        log: an anytime log with ``boundaries`` (samples seen at the end of each experience).
        k: experiences learned (default: every experience whose boundary the log holds).

    Raises:
        ContinualError: for ``k`` out of ``2..len(boundaries)``, or a past experience with no
            evaluation point after it.
    """
    log = _anytime(log)
    bounds = list(log["boundaries"])
    k = len(bounds) if k is None else int(k)
    if not 2 <= k <= len(bounds):
        raise ContinualError(f"min-ACC_k needs k in 2..{len(bounds)} (experiences learned, with a past one); got k={k}")
    samples, per = np.asarray(log["samples"]), log["per_experience"]
    lows = []
    for i in range(k - 1):
        points = np.nonzero((samples > bounds[i]) & (samples <= bounds[k - 1]))[0]
        if len(points) == 0:
            raise ContinualError(f"anytime log: no evaluation point after experience {i} (boundary {bounds[i]}) up to {bounds[k - 1]}")
        lows.append(min(per[p][i] for p in points))
    return float(np.mean(lows))


def worst_case_accuracy(log: dict, k: int | None = None) -> float:
    """WC-Acc_k = (1/k) acc(E_k) + (1 - 1/k) min-ACC_k (De Lange et al., ICLR 2023): the accuracy on
    the k-th experience (1-based) at its end, traded against the worst accuracy each earlier
    experience fell to since it was learned (:func:`min_accuracy`). ``k = 1`` gives acc(E_1).

    Args:
        log: an anytime log; acc(E_k) is read at its last evaluation point up to ``boundaries[k-1]``
            (the trainer logs a point at every experience's end).
        k: experiences learned (default: all the log's boundaries).

    >>> log = {"samples": [10, 20, 30, 40], "experience": [0, 0, 1, 1], "seen_acc": [0.0] * 4, "stream_acc": [0.0] * 4,
    ...        "per_experience": [[0.6, 0.0], [0.8, 0.1], [0.3, 0.5], [0.5, 0.9]], "num_seen": [2] * 4, "boundaries": [20, 40]}
    >>> round(worst_case_accuracy(log), 6)  # (1/2) 0.9 + (1/2) min(0.3, 0.5)
    0.6
    """
    log = _anytime(log)
    bounds = list(log["boundaries"])
    k = len(bounds) if k is None else int(k)
    if not 1 <= k <= len(bounds):
        raise ContinualError(f"WC-Acc_k needs k in 1..{len(bounds)} (experiences learned); got k={k}")
    samples = np.asarray(log["samples"])
    at_end = np.nonzero(samples <= bounds[k - 1])[0]
    if len(at_end) == 0:
        raise ContinualError(f"anytime log: no evaluation point by the end of experience {k - 1}")
    current = float(log["per_experience"][at_end[-1]][k - 1])
    if k == 1:
        return current
    return current / k + (1 - 1 / k) * min_accuracy(log, k)


def anytime_summary(log: dict) -> dict[str, float]:
    """The online run's headline metrics: ``anytime_accuracy_auc`` (A_AUC),
    ``average_anytime_accuracy`` (AAA) and ``worst_case_accuracy`` (WC-Acc after the last experience)."""
    return {"anytime_accuracy_auc": anytime_accuracy_auc(log), "average_anytime_accuracy": average_anytime_accuracy(log),
            "worst_case_accuracy": worst_case_accuracy(log)}
