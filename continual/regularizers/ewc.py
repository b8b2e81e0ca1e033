"""Elastic weight consolidation: Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in
neural networks" (PNAS), and its online variant from Schwarz et al. 2018, "Progress & Compress".

Penalty: ``(lambda/2) sum_i F_i (theta_i - theta*_i)^2`` as in the paper (``convention="paper"``);
``convention="avalanche"`` drops the 1/2 (``lambda sum_i ...``), as Avalanche's ``EWCPlugin``
does, so lambdas can be compared with it.

- ``mode="separate"``: one quadratic per past experience t, ``sum_t F_t (theta - theta_t)^2``.
  Stored in constant cost as the identity ``A (theta - m)^2 + S`` with ``A = sum_t F_t``, the
  Fisher-weighted mean anchor ``m = sum_t F_t theta_t / A`` and the weighted spread
  ``S = sum_t F_t (theta_t - m)^2``. ``m`` and ``S`` are float64 and updated at each
  consolidation by West's weighted update (1979: ``m += (F/A') (theta - m)``,
  ``S += (F A / A') (theta - m)^2``, every term non-negative), never as ``c - b^2/A`` (which
  cancels when the anchors differ little against their size). The penalty subtracts ``m`` from
  the float32 parameters as a float32 pair (high + low, :func:`~continual.regularizers.base.split_float64`),
  so it equals the naive sum over experiences to float32 rounding however close the anchors are.
  Memory and per-step cost do not grow with the number of experiences; the per-experience
  Fishers and anchors are kept only with ``keep_importances=True``.
- ``mode="online"``: ``F <- gamma F + F_new`` and a single anchor at the latest parameters.

The Fisher is the mean over the experience's samples (or over mini-batches for ``batched``), of
the estimator chosen by name (see :mod:`continual.regularizers.fisher`), computed in eval mode
on the logits the trainer trains on: masked to the task in the task scenario, and to the current
experience's classes with a ``mask_past`` head (``--head incremental-mask-past``).

Deviations: none in the penalty. Kirkpatrick et al. do not say which Fisher estimator they used;
the default here is ``empirical`` (per-sample squared gradients at the true labels), the most
common choice; ``exact`` is the one the definition calls for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from ..errors import ContinualError
from ..streams import Experience
from .base import QuadraticPenalty, check_choice, fit_shape, split_float64, subsample, trainable
from .fisher import ESTIMATORS, Estimator, fisher_diagonal

Mode = Literal["separate", "online"]
MODES: tuple[str, ...] = get_args(Mode)
Convention = Literal["paper", "avalanche"]
CONVENTIONS: tuple[str, ...] = get_args(Convention)


class EWC(QuadraticPenalty):
    """Elastic weight consolidation, separate or online.

    Args:
        lam: lambda, the penalty's strength (scale-sensitive: it depends on the estimator and on
            the convention). The default, 50, keeps plain SGD at lr 0.05 stable on the bundled
            streams (split-, permuted- and rotated-digits) with every Fisher estimator, 1 or 10
            epochs per experience, alone or combined with MAS, SI or replay: the largest curvature
            it adds, 2 * lam/2 * max F, times lr stays below 2 (where SGD diverges), and the
            smallest lam that diverged there is 100 (permuted-digits, exact Fisher, 1 epoch; the
            former default, 500, diverged on split-digits with 1 epoch). The figures are in
            ``benchmarks/ewc_stability.py``. With Adam, 1e4 forgets less (the behaviour test uses it).
        mode: ``"separate"`` (one quadratic per past experience, stored in constant cost) or
            ``"online"`` (Schwarz et al. 2018).
        gamma: online mode's decay of the old Fisher (1 keeps it whole).
        estimator: ``"empirical"``, ``"exact"``, ``"sampled"`` or ``"batched"``.
        convention: ``"paper"`` (lambda/2) or ``"avalanche"`` (lambda).
        num_samples: estimate the Fisher on a seeded random subset of this many training samples
            (``None``: all of them).
        batch_size: mini-batch size of the ``batched`` estimator.
        chunk_size: samples per batched pass of the per-sample estimators (memory only).
        keep_importances: also keep each experience's Fisher and anchor (``self.history``), for analysis.
        seed: seeds the subset and the ``sampled`` labels.
        name: label of the penalty in results.

    Raises:
        ContinualError: for an unknown mode, estimator or convention, or a negative lam or gamma.

    Example:
        >>> ewc = EWC(lam=100.0, mode="online", gamma=0.9)
        >>> ewc.penalty(torch.nn.Linear(2, 2)).item()  # nothing consolidated yet
        0.0
    """

    strength_names = ("lam",)  # named in the message when the loss diverges

    def __init__(
        self,
        lam: float = 50.0,
        *,
        mode: Mode = "separate",
        gamma: float = 1.0,
        estimator: Estimator = "empirical",
        convention: Convention = "paper",
        num_samples: int | None = None,
        batch_size: int = 32,
        chunk_size: int = 512,
        keep_importances: bool = False,
        seed: int = 0,
        name: str = "ewc",
    ) -> None:
        self.mode = check_choice("EWC mode", mode, MODES)
        self.estimator = check_choice("Fisher estimator", estimator, ESTIMATORS)
        self.convention = check_choice("EWC convention", convention, CONVENTIONS)
        if mode == "separate" and gamma != 1.0:
            raise ContinualError(f"gamma={gamma} applies to mode='online' only; separate mode keeps every experience whole")
        if not 0 <= gamma:
            raise ContinualError(f"gamma={gamma} must be >= 0")
        super().__init__(lam, scale=0.5 if convention == "paper" else 1.0, decay=gamma)
        self.lam = float(lam)
        self.gamma = float(gamma)
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.keep_importances = keep_importances
        self.seed = seed
        self.name = name
        self.sums: dict[str, dict[str, Tensor]] = {"A": {}, "mean": {}, "S": {}}  # separate mode
        self.history: list[dict[str, dict[str, Tensor]]] = []  # [{"fisher": {...}, "anchor": {...}}], if kept

    def importance(self, model: nn.Module, experience: Experience) -> dict[str, Tensor]:
        """The diagonal Fisher of ``model`` on the experience's training data (mean over samples)."""
        x, y, t = subsample(experience, self.num_samples, self.seed + self.num_consolidations)
        return fisher_diagonal(
            model, x, y, t=t, estimator=self.estimator, transform=experience.transform, mask=experience.mask_logits,
            chunk_size=self.chunk_size, batch_size=self.batch_size, seed=self.seed + self.num_consolidations,
        )

    @torch.no_grad()
    def consolidate(self, model: nn.Module, experience: Experience) -> None:
        """Estimate the Fisher on ``experience`` and add its quadratic (separate) or fold it in (online)."""
        if self.mode == "online":
            fisher = self.importance(model, experience)
            if self.keep_importances:
                params = trainable(model)
                self.history.append({"fisher": {k: v.clone() for k, v in fisher.items()},
                                     "anchor": {k: params[k].detach().clone() for k in fisher}})
            self._fold(model, fisher)
            return
        fisher = self.importance(model, experience)
        params = trainable(model)
        A, mean, S = self.sums["A"], self.sums["mean"], self.sums["S"]
        for name, f in fisher.items():
            theta = params[name].detach().double()
            f = f.detach()
            if name not in A:
                A[name], mean[name], S[name] = torch.zeros_like(f), theta.clone(), torch.zeros_like(theta)
            a_old = fit_shape(A[name], f, name).double()
            m, s = fit_shape(mean[name], f, name), fit_shape(S[name], f, name)
            f64 = f.double()
            a_new = a_old + f64
            share = torch.where(a_new > 0, f64 / torch.where(a_new > 0, a_new, torch.ones_like(a_new)), torch.ones_like(a_new))
            delta = theta - m
            mean[name] = m + share * delta  # = theta where nothing was important before (share 1)
            S[name] = s + share * a_old * delta.square()  # F A / A' (theta - m)^2 >= 0
            A[name] = fit_shape(A[name], f, name) + f
            self._derive(name)
        if self.keep_importances:
            self.history.append({"fisher": {k: v.clone() for k, v in fisher.items()},
                                 "anchor": {k: params[k].detach().clone() for k in fisher}})
        self.num_consolidations += 1

    def _fold(self, model: nn.Module, fisher: dict[str, Tensor]) -> None:
        """Online mode: ``F <- gamma F + F_new``, anchor at the current parameters."""
        params = trainable(model)
        for name, f in fisher.items():
            old = self.importances.get(name)
            self.importances[name] = f.clone() if old is None else self.gamma * fit_shape(old, f, name) + f
            self.anchors[name] = params[name].detach().clone()
        self.num_consolidations += 1

    def _derive(self, name: str) -> None:
        """Importance ``A``, the anchor ``m`` as a float32 pair, and the constant ``sum S``."""
        A, m = self.sums["A"][name], self.sums["mean"][name]
        self.importances[name] = A
        self.anchors[name], self.anchor_lows[name] = split_float64(m, A.dtype)
        self.consts[name] = float(self.sums["S"][name].sum())

    def _grow(self, name: str, param: Tensor) -> None:
        super()._grow(name, param)
        for sums in self.sums.values():
            if name in sums:
                sums[name] = fit_shape(sums[name], param, name)

    def state_dict(self) -> dict[str, Tensor]:
        """Importances, anchors, the separate-mode statistics (A, mean, S) and, if kept, the history."""
        state = super().state_dict()
        for key, sums in self.sums.items():
            for name, v in sums.items():
                state[f"{key}.{name}"] = v
        for i, entry in enumerate(self.history):
            for kind, values in entry.items():
                for name, v in values.items():
                    state[f"history.{i}.{kind}.{name}"] = v
        return state

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        super().load_state_dict(state)
        self.sums = {key: {k[len(key) + 1:]: v.clone() for k, v in state.items() if k.startswith(key + ".")} for key in ("A", "mean", "S")}
        for name, A in self.sums["A"].items():
            if name not in self.sums["mean"] and f"b.{name}" in state:  # written by 0.1's (A, b, c) form
                A64, b, c = A.double(), state[f"b.{name}"].double(), state[f"c.{name}"].double()
                self.sums["mean"][name] = torch.where(A64 > 0, b / A64.clamp_min(torch.finfo(A.dtype).tiny), self.anchors[name].double())
                self.sums["S"][name] = (c - b * self.sums["mean"][name]).clamp_min(0)
        self.anchor_lows = {}
        for name in self.sums["A"]:
            self._derive(name)
        history: dict[int, dict[str, dict[str, Tensor]]] = {}
        for k, v in state.items():
            if k.startswith("history."):
                _, i, kind, name = k.split(".", 3)
                history.setdefault(int(i), {"fisher": {}, "anchor": {}})[kind][name] = v.clone()
        self.history = [history[i] for i in sorted(history)]

    def report(self) -> dict:
        return {**super().report(), "mode": self.mode, "estimator": self.estimator, "convention": self.convention}
