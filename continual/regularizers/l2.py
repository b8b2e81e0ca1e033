"""L2 to the previous anchor: the uniform-importance baseline of the quadratic regularizers (used as
"L2" in Kirkpatrick et al. 2017, Fig. 2, and in Zenke et al. 2017).

Penalty: ``lambda sum_i (theta_i - theta*_i)^2`` with ``theta*`` the parameters after the latest
experience (no 1/2). Parameters added after the anchor (new head rows) are not penalised, nor are
the rows of a class-incremental head that were not in use at the anchor (they get importance 0).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models import unused_rows
from ..streams import Experience
from .base import QuadraticPenalty, trainable


class L2(QuadraticPenalty):
    """Squared distance to the latest anchor, every parameter weighted alike.

    Args:
        lam: the penalty's strength.
        name: label of the penalty in results.

    Example:
        >>> L2(lam=0.01).penalty(torch.nn.Linear(2, 2)).item()
        0.0
    """

    strength_names = ("lam",)  # named in the message when the loss diverges

    def __init__(self, lam: float = 1.0, *, name: str = "l2") -> None:
        super().__init__(lam, decay=0.0)  # importance replaced, not summed: always 1
        self.lam = float(lam)
        self.name = name

    def importance(self, model: nn.Module, experience: Experience) -> dict[str, Tensor]:
        unused = unused_rows(model)  # rows of a class-incremental head not in use yet: no anchor to keep
        return {name: torch.ones_like(p) if name not in unused else (~unused[name]).to(p.dtype) for name, p in trainable(model).items()}
