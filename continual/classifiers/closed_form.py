"""Exact closed-form heads on a frozen backbone's features: NCM, SLDA, RanPAC.

Each head is an evaluation classifier plugin (``classifier`` name and ``predict``, see
:mod:`continual.trainer`) with ``skips_training = True``: after each experience it adds the
experience's features (``model.features`` in eval mode, the evaluation transform, chunks of
``batch_size`` on the model's device) to running sufficient statistics, and predicts from them.
No SGD; the model (frozen whole by the strategies' ``prepare_model``) is never changed. The
statistics after any sequence of experiences equal those of one batch computation on all the data
seen so far (up to float rounding), so the predictions depend neither on the class order nor on
how the classes were cut into experiences (tested), with one exception: RanPAC's ridge chosen on
held-out data (``ridge=None``) is chosen per experience, as in the paper.

Strategies ``ncm``, ``slda``, ``ranpac`` (registered here; all need ``--pretrained`` or ``--adapt-first``) freeze the
whole model (backbone and head) and evaluate with their head by default. A ``classifier="both"``
run's ``"linear"`` matrix is then the untrained (pretrained, frozen) head's and means nothing.

NCM: Zhou et al., "Revisiting Class-Incremental Learning with Pre-Trained Models: Generalizability
and Adaptivity are All You Need" (SimpleCIL), 2023; Janson et al., "A Simple Baseline that
Questions the Use of Pretrained-Models in Continual Learning", NeurIPS-W 2022.

- Prototypes are the means of the raw features (SimpleCIL's ``replace_fc``; RanPAC's code
  ``RanPAC.py`` for ``use_RP=False``), kept as running sums and counts in float64.
- ``metric="cosine"`` (default; SimpleCIL's cosine classifier on the prototypes): argmax of the
  cosine between feature and prototype. ``metric="euclidean"`` (Janson et al.'s nearest mean):
  argmin ``||f - mu||^2``, computed as argmax ``2 f.mu - ||mu||^2``.
- Unlike :class:`~continual.classifiers.NearestMeanClassifier` (iCaRL), features are not
  L2-normalised before averaging.

SLDA: Hayes & Kanan, "Lifelong Machine Learning with Deep Streaming Linear Discriminant Analysis",
CVPR-W 2020; the authors' code tyler-hayes/Deep_SLDA ``SLDA_Model.py`` and Avalanche's
``training/supervised/deep_slda.py`` (which loops over samples in Python).

- Statistics: per-class counts and means and the pooled within-class scatter
  ``sum_c sum_{i in c} (x_i - mu_c)(x_i - mu_c)^T``, float64, merged one chunk at a time with
  Chan et al.'s parallel update ("Updating formulae and a pairwise algorithm for computing sample
  variances", 1979): ``S += S_chunk + sum_c n_c m_c / (n_c + m_c) (mu_c - xbar_c)(mu_c - xbar_c)^T``.
  The shared covariance is ``S / N`` (the maximum-likelihood estimate, as the authors' base
  initialisation, ``OAS(assume_centered=True)`` on ``X - mu_y``, without OAS shrinkage).
  Deviation: the authors' streaming update (``fit``) is a per-sample approximation of this
  (it centres on the class mean before the update and weights by ``N / (N + 1)``); ours is the
  exact batch covariance, with no separate base-initialisation phase (and no need for the
  authors' start value ``Sigma = ones``, which their per-sample update weights away).
- Prediction as the authors': ``Lambda = inv((1 - eps) Sigma + eps I)`` (eps = ``shrinkage``,
  1e-4), ``W = Lambda mu``, ``b = -1/2 sum(mu * W)``, scores ``f W + b``; solved with
  ``torch.linalg.solve`` in float64 (the authors use ``pinverse`` in float32).

RanPAC: McDonnell et al., "RanPAC: Random Projections and Pre-trained Models for Continual
Learning", NeurIPS 2023; the authors' code RanPAC/RanPAC ``RanPAC.py`` (``setup_RP``,
``replace_fc``, ``optimise_ridge_parameter``).

- Deviation: the paper's Phase 1 (parameter-efficient adaptation of the backbone on the first
  experience: adapters, SSF or VPT) is not done by default; the backbone is the frozen pretrained
  one, which is the authors' ``model_name="ncm"`` with ``use_RP=True`` (their "no Phase 1"
  ablation). ``--adapt-first`` (:func:`continual.transfer.adapt_first`) adapts on the first
  experience by fine-tuning every backbone layer instead of adding adapters.
- ``H = ReLU(F W_rand)``, ``W_rand ~ N(0, 1)`` of shape ``(D, M)`` drawn once from ``seed`` with a
  CPU ``torch.Generator`` (the authors: ``torch.randn`` from the global generator); ``G += H^T H``, ``Q += H^T Y`` (one-hot ``Y``);
  ``W = (G + lambda I)^-1 Q``; scores ``H W``. Float64 throughout (the authors: float32 on CPU).
- ``M`` (``num_projections``) defaults to 2000, not the paper's 10000: ``G`` is ``M x M`` float64
  (32 MB at 2000, 800 MB at 10000) and the solve is ``O(M^3)``, which a CPU run of small
  backbones (features of width 64 to 512) does not need; pass 10000 for the paper's setting.
- ``ridge=None`` (default, the paper's): lambda chosen after each experience from
  ``10^-8 .. 10^8`` by the mean squared error on the last 20% of a seeded permutation of the
  experience's own samples, fitted on the first 80% of them (as the authors, whose statistics
  for the choice are the experience's alone and whose loader is shuffled; the permutation's seed
  is ``seed + experience index``). One eigendecomposition of the 80% Gram matrix (or of its
  kernel ``H H^T`` when the experience has fewer samples than ``M``) serves all 17 values (the same minimiser as the authors' 17 solves, tested); the experience's features
  ``(N, D)`` are kept until then. An experience of one sample holds nothing out: lambda = 1. A
  float fixes lambda (the strategy's ``ranpac_ridge``: 0, the default, means chosen).
- Classes with no sample score ``-inf`` (the authors slice the head to the classes seen).

All three: classes are the labels seen (one growing set of columns, class-incremental use; the
task scenario's per-task masking is not applied). Before the first experience, :meth:`predict`
returns the model's own argmax.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ContinualError
from ..models import forward
from ..streams import Experience
from ..strategies import Context, Range, Strategy, register
from ..trainer import Plugin

Metric = Literal["cosine", "euclidean"]
METRICS = ("cosine", "euclidean")
RIDGES = tuple(10.0**k for k in range(-8, 9))  # RanPAC.py optimise_ridge_parameter: 10.0**np.arange(-8, 9)

# Strategy defaults, one place (the classes' own defaults are the same; a test checks it).
DEFAULTS: dict[str, dict[str, object]] = {
    "ncm": {"ncm_metric": "cosine"},  # SimpleCIL's cosine prototype classifier
    "slda": {"slda_shrinkage": 1e-4},  # Deep_SLDA SLDA_Model.py shrinkage_param
    # RanPAC: M = 10000 in the paper, 2000 here (CPU, see the module docstring); ridge 0 = chosen
    # on held-out data as the paper (0 itself is no ridge a user would want: G may be singular).
    "ranpac": {"ranpac_m": 2000, "ranpac_ridge": 0.0},
}
LIMITS: dict[str, dict[str, object]] = {
    "ncm": {"ncm_metric": METRICS},
    "slda": {"slda_shrinkage": Range(0, 1, high_open=True)},
    "ranpac": {"ranpac_m": Range(1), "ranpac_ridge": Range(0)},
}


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def _feature_chunks(model: nn.Module, experience: Experience, batch_size: int):
    """Yield ``(features (B, D) float64, labels (B,))`` of the experience's training data, eval mode."""
    if not callable(getattr(model, "features", None)):
        raise ContinualError(f"closed-form heads need a model with features(x); {type(model).__name__} has none")
    was_training = model.training
    model.eval()
    try:
        device = _device(model)
        x, y, t = experience.x_train, experience.y_train, experience.t_train
        for s in range(0, len(y), batch_size):
            xb = experience.transform(x[s : s + batch_size].to(device))
            yield model.features(xb).flatten(1).double(), y[s : s + batch_size].to(device)
    finally:
        model.train(was_training)


def class_stats(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class counts, means and the pooled within-class scatter of a batch.

    Args:
        features: ``(N, D)``.
        labels: ``(N,)`` int64 in ``[0, num_classes)``.
        num_classes: rows of the result.

    Returns:
        ``(counts (C,), means (C, D), scatter (D, D))``: an absent class has count and mean 0;
        ``scatter = sum_i (x_i - mu_{y_i})(x_i - mu_{y_i})^T``.

    >>> n, mu, s = class_stats(torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0]]), torch.tensor([0, 0, 2]), 3)
    >>> n.tolist(), mu.tolist(), s.tolist()
    ([2.0, 0.0, 1.0], [[2.0, 0.0], [0.0, 0.0], [0.0, 5.0]], [[2.0, 0.0], [0.0, 0.0]])
    """
    counts = torch.bincount(labels, minlength=num_classes)[:num_classes].to(features.dtype)  # (C,)
    sums = features.new_zeros(num_classes, features.shape[1]).index_add_(0, labels, features)  # (C, D)
    means = sums / counts.clamp(min=1)[:, None]
    centred = features - means[labels]  # (N, D)
    return counts, means, centred.T @ centred


def merge_stats(a: tuple[Tensor, Tensor, Tensor], b: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Chan et al.'s parallel merge of two ``(counts, means, scatter)`` of the same classes.

    >>> x, y = torch.tensor([[1.0], [3.0], [2.0], [6.0]]), torch.tensor([0, 0, 0, 1])
    >>> n, mu, s = merge_stats(class_stats(x[:1], y[:1], 2), class_stats(x[1:], y[1:], 2))
    >>> n.tolist(), mu.tolist(), s.tolist()
    ([3.0, 1.0], [[2.0], [6.0]], [[2.0]])
    """
    (na, ma, sa), (nb, mb, sb) = a, b
    n = na + nb
    w = nb / n.clamp(min=1)  # (C,) share of b in each merged mean
    d = mb - ma  # (C, D)
    cross = na * w  # n_a n_b / (n_a + n_b), 0 where either is empty
    return n, ma + w[:, None] * d, sa + sb + (d * cross[:, None]).T @ d


class _ClosedForm(Plugin):
    """Shared parts: skip training, accumulate after each experience, fall back to the model's argmax."""

    skips_training = True
    name = classifier = ""
    _state: tuple[str, ...] = ()  # the statistics: what state_dict holds and memory_bytes counts

    def __init__(self, *, batch_size: int = 1024) -> None:
        if batch_size < 1:
            raise ContinualError(f"{self.name}: batch_size={batch_size} must be >= 1")
        self.batch_size = batch_size

    def _num_classes(self) -> int:
        raise NotImplementedError

    @torch.no_grad()
    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        """Add the experience's features to the statistics and refit the head."""
        if len(experience.y_train) == 0:
            return
        width = max(int(experience.y_train.max()) + 1, self._num_classes())  # one host sync per experience
        for f, y in _feature_chunks(model, experience, self.batch_size):
            self._add(f, y, width)
        self._fit(experience)

    def _add(self, f: Tensor, y: Tensor, width: int) -> None:
        raise NotImplementedError

    def _fit(self, experience: Experience) -> None:
        return None

    def _scores(self, f: Tensor) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, model: nn.Module, x: Tensor, t: Tensor | None = None) -> Tensor:
        """The head's label for each sample of ``x`` (a transformed batch), ``(B,)`` int64."""
        was_training = model.training
        model.eval()
        try:
            if self._num_classes() == 0:
                return forward(model, x, t).argmax(1)
            return self._scores(model.features(x).flatten(1).double()).argmax(1)
        finally:
            model.train(was_training)

    def memory_bytes(self) -> int:
        """Bytes of the statistics (not of the head solved from them)."""
        return sum(getattr(self, k).numel() * getattr(self, k).element_size() for k in self._state)

    def state_dict(self) -> dict[str, Tensor]:
        """The statistics, tensors only (a head solved from them is solved again on load)."""
        return {k: getattr(self, k).clone() for k in self._state}

    def load_state_dict(self, state: Mapping[str, Tensor], *, model: nn.Module | None = None) -> None:
        """Restore :meth:`state_dict`; the tensors go to ``model``'s device when it is given.

        Raises:
            ContinualError: when the keys are not this head's statistics.
        """
        if set(state) != set(self._state):
            raise ContinualError(f"{self.name}: checkpoint state has {sorted(state)}; expected {sorted(self._state)}")
        for k, v in state.items():
            setattr(self, k, v.to(_device(model)).clone() if model is not None else v.clone())
        self._refit()

    def _refit(self) -> None:
        return None

    _swept = ""  # the hyperparameter :meth:`sweep` varies (the head is solved again from the same statistics)

    def _set(self, value: float) -> None:
        raise NotImplementedError

    def _get(self) -> float:
        raise NotImplementedError

    @torch.no_grad()
    def sweep(self, model: nn.Module, experiences, values) -> dict[float, float]:
        """Accuracy on the experiences' test splits for each value of the head's hyperparameter
        (SLDA's shrinkage, RanPAC's ridge), from the statistics already accumulated.

        Nothing is accumulated again: the test features are computed once, and for each value the
        head is solved again from the same statistics (a ``D x D`` or ``M x M`` solve), so a sweep
        of ``k`` values costs ``k`` solves, not ``k`` runs. The head's own value is restored after.

        Args:
            model: the frozen model whose features the statistics hold.
            experiences: the experiences to score (their test splits, pooled).
            values: the hyperparameter values to try.

        Returns:
            ``{value: accuracy}``.

        Raises:
            ContinualError: for a head with nothing to sweep, before any experience, or a value
                outside the hyperparameter's range.
        """
        if not self._swept:
            raise ContinualError(f"{self.name}: has no hyperparameter to sweep")
        if self._num_classes() == 0:
            raise ContinualError(f"{self.name}: no statistics yet; sweep after an experience")
        was_training = model.training
        model.eval()
        try:
            device = _device(model)
            feats, labels = [], []
            for e in experiences:
                for s in range(0, e.num_test, self.batch_size):
                    xb = e.transform(e.x_test[s : s + self.batch_size].to(device))
                    feats.append(model.features(xb).flatten(1).double())
                    labels.append(e.y_test[s : s + self.batch_size].to(device))
        finally:
            model.train(was_training)
        f, y = torch.cat(feats), torch.cat(labels)
        own, out = self._get(), {}
        try:
            for value in values:
                self._set(float(value))
                out[float(value)] = float((self._scores(f).argmax(1) == y).double().mean())
        finally:
            self._set(own)
        return out


class NCM(_ClosedForm):
    """Nearest class mean of a frozen backbone's features (SimpleCIL's prototype classifier).

    Args:
        metric: ``"cosine"`` (default) or ``"euclidean"``.
        batch_size: chunk of training samples embedded at once.

    Example:
        >>> from continual.streams import split
        >>> from continual.data import synthetic
        >>> stream = split(synthetic(num_features=4, seed=0), 2)
        >>> model = nn.Sequential(nn.Identity()); model.features = nn.Identity()
        >>> ncm = NCM()
        >>> ncm.after_experience(model, stream[0])
        >>> ncm.report()
        {'classes': 5, 'metric': 'cosine', 'memory_bytes': 200}
    """

    name = classifier = "ncm"
    _state = ("sums", "counts")

    def __init__(self, *, metric: Metric = "cosine", batch_size: int = 1024) -> None:
        super().__init__(batch_size=batch_size)
        if metric not in METRICS:
            raise ContinualError(f"ncm: unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
        self.metric = metric
        self.sums = torch.zeros(0, 0, dtype=torch.float64)  # (C, D) running class sums
        self.counts = torch.zeros(0, dtype=torch.float64)  # (C,)

    def _num_classes(self) -> int:
        return int(self.counts.shape[0])

    def _add(self, f: Tensor, y: Tensor, width: int) -> None:
        if not self.counts.numel():
            self.sums = f.new_zeros(0, f.shape[1])
        if self.sums.shape[1] != f.shape[1]:
            raise ContinualError(f"ncm: the model gives {f.shape[1]} features, the class sums have {self.sums.shape[1]}")
        pad = width - self.counts.shape[0]
        self.sums = F.pad(self.sums.to(f.device), (0, 0, 0, pad))  # (C, D), new classes at zero
        self.counts = F.pad(self.counts.to(f.device), (0, pad))
        self.sums.index_add_(0, y, f)
        self.counts += torch.bincount(y, minlength=width)[:width].to(f.dtype)

    def means(self) -> Tensor:
        """Class means ``(C, D)`` (zero for a class with no sample)."""
        return self.sums / self.counts.clamp(min=1)[:, None]

    def _scores(self, f: Tensor) -> Tensor:
        mu = self.means().to(f.device)
        if self.metric == "cosine":
            scores = F.normalize(f, dim=1) @ F.normalize(mu, dim=1).T  # (B, C)
        else:
            scores = 2 * f @ mu.T - (mu * mu).sum(1)  # (B, C): -||f - mu||^2 + ||f||^2
        return scores.masked_fill(self.counts.to(f.device) == 0, float("-inf"))

    def report(self) -> dict:
        """How many classes have a mean, the metric and the statistics' bytes."""
        return {"classes": int((self.counts > 0).sum()), "metric": self.metric, "memory_bytes": self.memory_bytes()}


class SLDA(_ClosedForm):
    """Streaming linear discriminant analysis (Hayes & Kanan 2020) with exact batch statistics.

    Args:
        shrinkage: eps in ``inv((1 - eps) Sigma + eps I)``, in ``[0, 1)`` (the authors' 1e-4).
        batch_size: chunk of training samples embedded and merged at once.
    """

    name = classifier = "slda"
    _state = ("counts", "mu", "scatter")

    def __init__(self, *, shrinkage: float = 1e-4, batch_size: int = 1024) -> None:
        super().__init__(batch_size=batch_size)
        if not 0 <= shrinkage < 1:
            raise ContinualError(f"slda: shrinkage={shrinkage} must be in [0, 1)")
        self.shrinkage = shrinkage
        self.counts = torch.zeros(0, dtype=torch.float64)  # (C,)
        self.mu = torch.zeros(0, 0, dtype=torch.float64)  # (C, D) class means
        self.scatter = torch.zeros(0, 0, dtype=torch.float64)  # (D, D) pooled within-class scatter
        self.weight = torch.zeros(0, 0, dtype=torch.float64)  # (D, C) = Lambda mu^T
        self.bias = torch.zeros(0, dtype=torch.float64)  # (C,)

    def _num_classes(self) -> int:
        return int(self.counts.shape[0])

    def _add(self, f: Tensor, y: Tensor, width: int) -> None:
        D = f.shape[1]
        if not self.counts.numel():
            self.mu, self.scatter = f.new_zeros(0, D), f.new_zeros(D, D)
        if self.mu.shape[1] != D:
            raise ContinualError(f"slda: the model gives {D} features, the class means have {self.mu.shape[1]}")
        pad = width - self.counts.shape[0]
        old = (F.pad(self.counts.to(f.device), (0, pad)), F.pad(self.mu.to(f.device), (0, 0, 0, pad)), self.scatter.to(f.device))
        self.counts, self.mu, self.scatter = merge_stats(old, class_stats(f, y, width))

    def _fit(self, experience: Experience | None = None) -> None:
        D = self.mu.shape[1]
        sigma = self.scatter / self.counts.sum()
        eye = torch.eye(D, dtype=sigma.dtype, device=sigma.device)
        self.weight = torch.linalg.solve((1 - self.shrinkage) * sigma + self.shrinkage * eye, self.mu.T)  # (D, C)
        self.bias = -0.5 * (self.mu.T * self.weight).sum(0)  # (C,)

    def _refit(self) -> None:
        if self.counts.numel():
            self._fit()

    _swept = "shrinkage"

    def _set(self, value: float) -> None:
        if not 0 <= value < 1:
            raise ContinualError(f"slda: shrinkage={value} must be in [0, 1)")
        self.shrinkage = value
        self._refit()

    def _get(self) -> float:
        return self.shrinkage

    def _scores(self, f: Tensor) -> Tensor:
        scores = f @ self.weight.to(f.device) + self.bias.to(f.device)  # (B, C)
        return scores.masked_fill(self.counts.to(f.device) == 0, float("-inf"))

    def report(self) -> dict:
        """How many classes have a mean, the shrinkage and the statistics' bytes."""
        return {"classes": int((self.counts > 0).sum()), "shrinkage": self.shrinkage, "memory_bytes": self.memory_bytes()}


class RanPAC(_ClosedForm):
    """Ridge regression on random ReLU projections of frozen features (McDonnell et al. 2023).

    Args:
        num_projections: ``M``, the width of the random projection (the paper: 10000).
        ridge: a fixed lambda, or ``None`` to choose it after each experience on held-out data.
        seed: seed of ``W_rand`` and of the held-out split.
        batch_size: chunk of training samples embedded at once.
    """

    name = classifier = "ranpac"
    _state = ("w_rand", "gram", "q", "counts", "ridge")  # W_rand too: a resumed run projects identically

    def __init__(self, *, num_projections: int = 2000, ridge: float | None = None, seed: int = 0, batch_size: int = 1024) -> None:
        super().__init__(batch_size=batch_size)
        if num_projections < 1:
            raise ContinualError(f"ranpac: num_projections={num_projections} must be >= 1")
        if ridge is not None and not ridge >= 0:
            raise ContinualError(f"ranpac: ridge={ridge} must be >= 0 (or None to choose it on held-out data)")
        self.num_projections, self.fixed_ridge, self.seed = num_projections, ridge, seed
        self.w_rand = torch.zeros(0, 0)  # (D, M), drawn at the first experience
        self.gram = torch.zeros(0, 0, dtype=torch.float64)  # (M, M) G = sum H^T H
        self.q = torch.zeros(0, 0, dtype=torch.float64)  # (M, C) Q = sum H^T Y
        self.counts = torch.zeros(0, dtype=torch.float64)  # (C,)
        self.ridge = torch.tensor(float("nan"), dtype=torch.float64)  # lambda in use
        self._held: list[tuple[Tensor, Tensor]] = []  # the experience's features, for choosing lambda
        self.weight = torch.zeros(0, 0, dtype=torch.float64)  # (M, C)

    def _num_classes(self) -> int:
        return int(self.counts.shape[0])

    def project(self, f: Tensor) -> Tensor:
        """``H = ReLU(f W_rand)``, ``(B, M)`` float64."""
        return torch.relu(f.double() @ self.w_rand.to(f.device, torch.float64))

    def _add(self, f: Tensor, y: Tensor, width: int) -> None:
        D, M = f.shape[1], self.num_projections
        if not self.w_rand.numel():
            g = torch.Generator().manual_seed(self.seed)
            self.w_rand = torch.randn(D, M, generator=g).to(f.device)  # RanPAC.py setup_RP: torch.randn(in_features, M)
            self.gram, self.q = f.new_zeros(M, M), f.new_zeros(M, 0)
        if self.w_rand.shape[0] != D:
            raise ContinualError(f"ranpac: the model gives {D} features, the random projection takes {self.w_rand.shape[0]}")
        pad = width - self.counts.shape[0]
        self.q = F.pad(self.q.to(f.device), (0, pad))  # (M, C), new classes at zero
        self.counts = F.pad(self.counts.to(f.device), (0, pad))
        h = self.project(f)  # (B, M)
        self.gram = self.gram.to(f.device) + h.T @ h
        self.q.index_add_(1, y, h.T)  # H^T Y with one-hot Y
        self.counts += torch.bincount(y, minlength=width)[:width].to(f.dtype)
        if self.fixed_ridge is None:
            self._held.append((f, y))

    def _fit(self, experience: Experience | None = None) -> None:
        if self.fixed_ridge is not None:
            self.ridge = torch.tensor(float(self.fixed_ridge), dtype=torch.float64)
        elif experience is not None:
            self.ridge = torch.tensor(self._choose_ridge(experience), dtype=torch.float64)
        self._refit()

    def _refit(self) -> None:
        if not self.counts.numel():
            return
        eye = torch.eye(self.gram.shape[0], dtype=self.gram.dtype, device=self.gram.device)
        self.weight = torch.linalg.solve(self.gram + self.ridge.item() * eye, self.q)  # (M, C)

    def _choose_ridge(self, experience: Experience) -> float:
        """The lambda of :data:`RIDGES` with the least squared error on the last 20% of the experience.

        The experience's features (kept from :meth:`_add`, ``(N, D)``) are permuted with a seeded
        generator, ridge regression is fitted on the first 80% and scored on the rest. One
        eigendecomposition ``G_fit = V diag(e) V^T`` serves every lambda:
        ``W = V diag(1 / (e + lambda)) V^T Q_fit``; with fewer fitting samples ``n`` than ``M``,
        that of the ``n x n`` kernel ``H H^T = U diag(e) U^T`` instead:
        ``W = H^T U diag(1 / (e + lambda)) U^T Y`` (the same ``W``, since lambda > 0).
        """
        f, y = torch.cat([c[0] for c in self._held]), torch.cat([c[1] for c in self._held])
        self._held = []
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(self.seed + experience.index)).to(f.device)
        f, y = f[order], y[order]
        cut = int(len(y) * 0.8)  # RanPAC.py: the first int(N * 0.8) samples fit, the rest validate
        if cut == 0 or cut == len(y):
            return 1.0  # too few samples to hold any out
        M, C = self.num_projections, self.q.shape[1]
        if cut < M:  # fewer fitting samples than projections: kernel form, (H^T H + l I)^-1 H^T = H^T (H H^T + l I)^-1
            h = self.project(f[:cut])  # (n, M)
            e, u = torch.linalg.eigh(h @ h.T)  # (n,), (n, n)
            basis, coef = h.T @ u, u.T @ F.one_hot(y[:cut], C).double()  # (M, n), (n, C)
        else:
            g, q = f.new_zeros(M, M), f.new_zeros(M, C)
            for s in range(0, cut, self.batch_size):
                h = self.project(f[s : min(s + self.batch_size, cut)])  # (B, M)
                g += h.T @ h
                q.index_add_(1, y[s : min(s + self.batch_size, cut)], h.T)
            e, basis = torch.linalg.eigh(g)  # (M,), (M, M)
            coef = basis.T @ q  # (M, C)
        ridges = torch.tensor(RIDGES, dtype=f.dtype, device=f.device)  # (R,)
        w = coef[None] / (e[None, :, None] + ridges[:, None, None])  # (R, K, C): each lambda's head in the eigenbasis
        sse = f.new_zeros(len(RIDGES))
        for s in range(cut, len(y), self.batch_size):
            hv = self.project(f[s : s + self.batch_size]) @ basis  # (B, K) in the eigenbasis
            yv = F.one_hot(y[s : s + self.batch_size], C).double()  # (B, C)
            sse += ((hv @ w - yv) ** 2).sum((1, 2))  # (R, B, C) -> (R,)
        return RIDGES[int(sse.argmin())]  # one host sync per experience

    _swept = "ridge"

    def _set(self, value: float) -> None:
        if not value >= 0:
            raise ContinualError(f"ranpac: ridge={value} must be >= 0")
        self.ridge = torch.tensor(value, dtype=torch.float64)
        self._refit()

    def _get(self) -> float:
        return float(self.ridge)

    def _scores(self, f: Tensor) -> Tensor:
        scores = self.project(f) @ self.weight.to(f.device)  # (B, C)
        return scores.masked_fill(self.counts.to(f.device) == 0, float("-inf"))

    def report(self) -> dict:
        """Classes seen, ``M``, lambda in use (chosen or fixed) and the statistics' bytes."""
        return {"classes": int((self.counts > 0).sum()), "num_projections": self.num_projections,
                "ridge": None if self.ridge.isnan() else float(self.ridge), "ridge_chosen": self.fixed_ridge is None, "memory_bytes": self.memory_bytes()}


# ------------------------------------------------------------------------------------------ strategies
def _freeze_all(model: nn.Module, params: dict, context: Context) -> None:
    from ..transfer import freeze

    freeze(model)


register(Strategy(
    "ncm", "nearest class mean of frozen pretrained features, cosine (SimpleCIL, Zhou et al. 2023; needs --pretrained)",
    defaults=DEFAULTS["ncm"], limits=LIMITS["ncm"], prepare_model=_freeze_all, needs_pretrained=True, classifier="ncm",
    make_plugins=lambda params, context: [NCM(metric=params["ncm_metric"])],
))
register(Strategy(
    "slda", "streaming LDA on frozen pretrained features, exact running statistics (Hayes & Kanan 2020; needs --pretrained)",
    defaults=DEFAULTS["slda"], limits=LIMITS["slda"], prepare_model=_freeze_all, needs_pretrained=True, classifier="slda",
    make_plugins=lambda params, context: [SLDA(shrinkage=params["slda_shrinkage"])],
))
register(Strategy(
    "ranpac", "ridge regression on random ReLU projections of frozen pretrained features (McDonnell et al. 2023; needs --pretrained)",
    defaults=DEFAULTS["ranpac"], limits=LIMITS["ranpac"], prepare_model=_freeze_all, needs_pretrained=True, classifier="ranpac",
    make_plugins=lambda params, context: [RanPAC(num_projections=params["ranpac_m"], ridge=params["ranpac_ridge"] or None,
                                                  seed=context.seed)],
))
