"""Memory aware synapses: Aljundi et al. 2018, "Memory Aware Synapses: Learning what (not) to
forget" (ECCV).

Importance ``Omega_i = (1/N) sum_n |d ||f(x_n)||_2^2 / d theta_i|``: the mean over samples of the
absolute gradient of the squared L2 norm of the outputs (the logits), per sample as in the paper
(no labels needed). It is computed without a loop over samples: for linear layers
``sum_n |g_n a_n^T| = |g|^T |a|``, other layers by vmap (see :mod:`continual.regularizers.fisher`).
Importances accumulate over experiences (``decay=1``) and the anchor is the latest parameters.
Penalty: ``lambda sum_i Omega_i (theta_i - theta*_i)^2`` (no 1/2, as in the paper). The paper uses
``lambda=1``; the default here is 0.1, because with plain SGD at the benchmarks' lr 0.05 the
paper's value makes the loss diverge in the class-incremental scenario (0.3 is stable, 1 is not).

Deviations: in the task scenario the outputs are the experience's own logits (the others are
zeroed), the single-head analogue of the paper's per-task head; with a ``mask_past`` head they
are the current experience's classes' logits, the ones training used. Avalanche's ``MASPlugin`` instead
takes the gradient of each mini-batch's mean norm (not per sample) and averages importances with
``alpha=0.5``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..streams import Experience
from .base import QuadraticPenalty, subsample, trainable
from .fisher import allowed_logits, grad_stats


def _squared_norm(out: Tensor, keep: Tensor, aux: Tensor | None) -> Tensor:
    return out.masked_fill(~keep, 0.0).square().sum(1, keepdim=True)  # (B, 1)


def mas_importance(
    model: nn.Module,
    x: Tensor,
    *,
    t: Tensor | None = None,
    transform=None,
    mask=None,
    chunk_size: int = 512,
) -> dict[str, Tensor]:
    """``mean_n |grad ||f(x_n)||^2|`` per trainable parameter, in eval mode.

    Args:
        model: the network (its logits are ``f``).
        x: inputs ``(N, ...)``, stored inputs when ``transform`` is given.
        t: per-sample task ids (zeros if ``None``).
        transform: applied to each chunk of ``x``.
        mask: ``mask(logits, t)`` (``experience.mask_logits``): logits set to -inf are left out of the norm.
        chunk_size: samples per batched pass (memory only).
    """
    N = len(x)
    if t is None:
        t = torch.zeros(N, dtype=torch.long, device=x.device)
    total = {name: torch.zeros_like(p) for name, p in trainable(model).items()}
    was_training = model.training
    model.eval()
    try:
        for s in range(0, N, chunk_size):
            xb, tb = x[s : s + chunk_size], t[s : s + chunk_size]
            xb = transform(xb) if transform is not None else xb
            keep = allowed_logits(model, xb, tb, mask)
            for name, v in grad_stats(model, xb, t=tb, keep=keep, objective=_squared_norm, power="abs").items():
                total[name] += v
    finally:
        model.train(was_training)
    return {name: v / max(N, 1) for name, v in total.items()}


class MAS(QuadraticPenalty):
    """Memory aware synapses.

    Args:
        lam: the penalty's strength (the paper uses 1; see the module docstring for 0.1).
        decay: ``Omega <- decay * Omega + Omega_new`` at each consolidation (1: accumulate).
        num_samples: estimate on a seeded random subset of this many samples (``None``: all).
        chunk_size: samples per batched pass (memory only).
        seed: seeds the subset.
        name: label of the penalty in results.

    Example:
        >>> MAS(lam=1.0).penalty(torch.nn.Linear(2, 2)).item()
        0.0
    """

    strength_names = ("lam",)  # named in the message when the loss diverges

    def __init__(self, lam: float = 0.1, *, decay: float = 1.0, num_samples: int | None = None,
                 chunk_size: int = 512, seed: int = 0, name: str = "mas") -> None:
        super().__init__(lam, decay=decay)
        self.lam = float(lam)
        self.num_samples = num_samples
        self.chunk_size = chunk_size
        self.seed = seed
        self.name = name

    def importance(self, model: nn.Module, experience: Experience) -> dict[str, Tensor]:
        x, _, t = subsample(experience, self.num_samples, self.seed + self.num_consolidations)
        return mas_importance(model, x, t=t, transform=experience.transform, mask=experience.mask_logits,
                              chunk_size=self.chunk_size)
