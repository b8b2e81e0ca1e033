"""Elastic weight consolidation: Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in
neural networks" (PNAS), and its online variant from Schwarz et al. 2018, "Progress & Compress".

Penalty: ``(lambda/2) sum_i F_i (theta_i - theta*_i)^2`` as in the paper (``convention="paper"``);
``convention="avalanche"`` drops the 1/2 (``lambda sum_i ...``), as Avalanche's ``EWCPlugin``
does, so lambdas can be compared with it.

- ``mode="separate"``: one quadratic per past experience t, ``sum_t F_t (theta - theta_t)^2``.
  Stored in constant cost as ``A theta^2 - 2 b theta + c`` with ``A = sum_t F_t``,
  ``b = sum_t F_t theta_t``, ``c = sum_t F_t theta_t^2``; evaluated in the equivalent, numerically
  safe form ``A (theta - b/A)^2 + sum(c - b^2/A)`` (a sum of non-negative terms: no cancellation
  when theta is close to the anchors). Memory and per-step cost do not grow with the number of
  experiences; the per-experience Fishers and anchors are kept only with ``keep_importances=True``.
- ``mode="online"``: ``F <- gamma F + F_new`` and a single anchor at the latest parameters.

The Fisher is the mean over the experience's samples (or over mini-batches for ``batched``), of
the estimator chosen by name (see :mod:`continual.regularizers.fisher`), computed in eval mode
on the logits the trainer sees (masked to the task in the task scenario).

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
from .base import QuadraticPenalty, check_choice, fit_shape, subsample, trainable
from .fisher import ESTIMATORS, Estimator, fisher_diagonal

Mode = Literal["separate", "online"]
MODES: tuple[str, ...] = get_args(Mode)
Convention = Literal["paper", "avalanche"]
CONVENTIONS: tuple[str, ...] = get_args(Convention)


class EWC(QuadraticPenalty):
    """Elastic weight consolidation, separate or online.

    Args:
        lam: lambda, the penalty's strength (scale-sensitive: it depends on the estimator and on
            the convention). The default, 500, suits the empirical Fisher (mean over samples) on
            split-digits and keeps plain SGD at lr 0.05 stable in the class-incremental scenario,
            alone or combined with SI (the largest curvature it adds, 2 * lam/2 * max F, reaches
            about 15 there; SGD diverges when lr times the curvature nears 2). With Adam, 1e4
            forgets less (the behaviour test uses it).
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

    def __init__(
        self,
        lam: float = 500.0,
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
        self.sums: dict[str, dict[str, Tensor]] = {"A": {}, "b": {}, "c": {}}  # separate mode
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
        A, b, c = self.sums["A"], self.sums["b"], self.sums["c"]
        for name, f in fisher.items():
            theta = params[name].detach()
            f = f.detach()
            if name in A:
                A[name] = fit_shape(A[name], f, name) + f
                b[name] = fit_shape(b[name], f, name) + f * theta
                c[name] = fit_shape(c[name], f, name) + f * theta.square()
            else:
                A[name], b[name], c[name] = f.clone(), f * theta, f * theta.square()
            self._derive(name, theta)
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

    def _derive(self, name: str, theta: Tensor) -> None:
        """Importance ``A``, anchor ``b/A`` and constant ``sum(c - b^2/A)`` from the stored sums."""
        A, b, c = self.sums["A"][name], self.sums["b"][name], self.sums["c"][name]
        positive = A > 0
        self.importances[name] = A
        self.anchors[name] = torch.where(positive, b / torch.where(positive, A, torch.ones_like(A)), theta)
        A64, b64, c64 = A.double(), b.double(), c.double()
        resid = torch.where(positive, c64 - b64.square() / torch.where(positive, A64, torch.ones_like(A64)), torch.zeros_like(A64))
        self.consts[name] = max(float(resid.sum()), 0.0)

    def _grow(self, name: str, param: Tensor) -> None:
        super()._grow(name, param)
        for sums in self.sums.values():
            if name in sums:
                sums[name] = fit_shape(sums[name], param, name)

    def state_dict(self) -> dict[str, Tensor]:
        """Importances, anchors, the separate-mode sums (A, b, c) and, if kept, the history."""
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
        self.sums = {key: {k[len(key) + 1:]: v.clone() for k, v in state.items() if k.startswith(key + ".")} for key in ("A", "b", "c")}
        history: dict[int, dict[str, dict[str, Tensor]]] = {}
        for k, v in state.items():
            if k.startswith("history."):
                _, i, kind, name = k.split(".", 3)
                history.setdefault(int(i), {"fisher": {}, "anchor": {}})[kind][name] = v.clone()
        self.history = [history[i] for i in sorted(history)]

    def report(self) -> dict:
        return {**super().report(), "mode": self.mode, "estimator": self.estimator, "convention": self.convention}
