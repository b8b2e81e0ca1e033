"""The accuracy matrix and the metrics derived from it, as pure functions.

Notation (0-based): T experiences; ``R[i][j]`` is the test accuracy on experience ``j`` after
training on experience ``i``; ``b[j]`` is the accuracy on experience ``j`` of the model before any
training (random initialisation). Accuracies are fractions in ``[0, 1]``.

References:
    Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory for Continual Learning" (GEM): ACC, BWT, FWT.
    Chaudhry et al. 2018, "Riemannian Walk for Incremental Learning" (RWalk): average accuracy
        after k experiences, forgetting (max minus last), intransigence.
    Rebuffi et al. 2017, "iCaRL": average incremental accuracy.

Conventions:
    - BWT divides by T-1, as GEM's formula does (GEM's official code divides by T).
    - Forgetting defaults to max-minus-last (RWalk, A-GEM, Mammoth, FACIL, PyCIL);
      ``mode="first"`` gives first-minus-last, ``R[j][j] - R[T-1][j]`` (Avalanche).
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


def average_incremental_accuracy(R: ArrayLike) -> float:
    """Mean over k of A_k (Rebuffi et al. 2017, iCaRL).

    >>> round(average_incremental_accuracy([[0.9, 0.1], [0.5, 0.8]]), 6)
    0.775
    """
    return float(accuracy_curve(R).mean())


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


def summary(R: ArrayLike, b: Sequence[float] | None = None) -> dict[str, float]:
    """The headline metrics of one run, as plain floats (what results files store)."""
    out = {
        "final_average_accuracy": final_average_accuracy(R),
        "average_incremental_accuracy": average_incremental_accuracy(R),
        "average_forgetting": average_forgetting(R),
        "average_forgetting_first": average_forgetting(R, mode="first"),
        "backward_transfer": backward_transfer(R),
    }
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
    yet trained are NaN. Metric methods need the full matrix.

    Example:
        >>> m = AccuracyMatrix(2)
        >>> m.set_random_init([0.1, 0.1]); m.set_row(0, [0.9, 0.2]); m.set_row(1, [0.5, 0.8])
        >>> round(m.final_average_accuracy(), 6), m.complete
        (0.65, True)
    """

    def __init__(self, num_experiences: int) -> None:
        self.values = np.full((num_experiences, num_experiences), np.nan)
        self.random_init: np.ndarray | None = None

    @classmethod
    def from_rows(cls, rows: ArrayLike, random_init: Sequence[float] | None = None) -> AccuracyMatrix:
        R = _square(rows)
        m = cls(R.shape[0])
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

    def summary(self) -> dict[str, float]:
        return summary(self.values, self.random_init)

    def __repr__(self) -> str:
        return f"AccuracyMatrix({np.array2string(self.values, precision=3)})"
