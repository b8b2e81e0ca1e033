"""Learning without forgetting: Li & Hoiem 2017, "Learning without Forgetting" (TPAMI).

After each experience a frozen copy of the model is kept. On every training batch the current
model's logits for the old classes are distilled towards the frozen copy's, with temperature T
(T=2 in the paper): ``alpha * sum_groups KL(softmax(old_g / T) || softmax(new_g / T))``, averaged
over the batch. The paper writes it as a cross-entropy with the soft targets; the KL divergence
differs from it by the targets' entropy, a constant, so the gradients are the same (and the value
is 0 when nothing has changed). Like the paper (and unlike Hinton et al.) the loss is not
multiplied by T^2. ``alpha`` (the paper's lambda_o) is 1.

Groups: in the task scenario, one group per past experience (its classes: the paper's per-task
heads); otherwise one group holding every class seen so far (the class-incremental adaptation
used by van de Ven et al.), restricted to the columns the old model has.

Deviations: the old outputs are computed on the fly from the frozen copy (the paper records them
once before training; the result is the same without augmentation). In the task scenario the
trainer's logits are masked to the current task, so the current model is run once more on the
batch to read the old tasks' logits. Models that route by task id (``takes_task_id``) are
distilled through the batch's own task ids only.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ContinualError
from ..models import forward
from ..streams import Experience
from .base import RegularizerBase, zero


class LwF(RegularizerBase):
    """Learning without forgetting: distillation from a frozen copy of the previous model.

    Args:
        alpha: weight of the distillation loss.
        temperature: softmax temperature T.
        name: label of the penalty in results.

    Example:
        >>> LwF(alpha=1.0, temperature=2.0).penalty(torch.nn.Linear(2, 2)).item()
        0.0
    """

    strength_names = ("alpha",)  # named in the message when the loss diverges

    def __init__(self, alpha: float = 1.0, *, temperature: float = 2.0, name: str = "lwf") -> None:
        if alpha < 0:
            raise ContinualError(f"alpha={alpha} must be >= 0")
        if temperature <= 0:
            raise ContinualError(f"temperature={temperature} must be positive")
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.name = name
        self.old_model: nn.Module | None = None
        self.groups: list[list[int]] = []
        self.task_scenario = False
        self._index: dict[torch.device, list[Tensor]] = {}

    @torch.no_grad()
    def consolidate(self, model: nn.Module, experience: Experience) -> None:
        """Freeze a copy of ``model`` and add the experience's classes to the old ones."""
        self.old_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.task_scenario = experience.scenario == "task"
        if self.task_scenario:
            self.groups.append(sorted(experience.classes))
        else:
            self.groups = [sorted({c for g in self.groups for c in g} | set(experience.classes))]
        self._index = {}

    def _group_index(self, device: torch.device, width: int) -> list[Tensor]:
        if device not in self._index:
            self._index[device] = [torch.tensor([c for c in g if c < width], dtype=torch.long, device=device) for g in self.groups]
        return self._index[device]

    def penalty(self, model: nn.Module, x: Tensor | None = None, y: Tensor | None = None,
                t: Tensor | None = None, out: Tensor | None = None) -> Tensor:
        """The distillation loss on the batch ``x`` (model inputs); 0 before any consolidation.

        Args:
            model: the model being trained.
            x: the (transformed) batch; required.
            t: its task ids (for models that take them).
            out: ``model``'s logits on ``x`` when already computed (reused unless masked).
        """
        if self.old_model is None:
            return zero(model)
        if x is None:
            raise ContinualError("LwF needs the batch: call lwf.penalty(model, x=inputs) (and out=logits to save a forward)")
        with torch.no_grad():
            old = forward(self.old_model, x, t)  # (B, C_old)
        if out is None or self.task_scenario:
            out = forward(model, x, t)  # raw logits, old tasks' columns unmasked
        index = self._group_index(old.device, min(old.shape[1], out.shape[1]))
        T = self.temperature
        total = out.new_zeros(())
        for cols in index:
            if len(cols) == 0:
                continue
            log_p = F.log_softmax(out[:, cols] / T, dim=1)
            q = F.softmax(old[:, cols] / T, dim=1)
            total = total + F.kl_div(log_p, q, reduction="batchmean")
        return self.alpha * total

    def state_dict(self) -> dict[str, Tensor]:
        """The frozen model's parameters and buffers (``old_model.*``) and the class groups."""
        state: dict[str, Tensor] = {"task_scenario": torch.tensor(self.task_scenario)}
        for i, g in enumerate(self.groups):
            state[f"groups.{i}"] = torch.tensor(g, dtype=torch.long)
        if self.old_model is not None:
            state.update({f"old_model.{k}": v for k, v in self.old_model.state_dict().items()})
        return state

    def load_state_dict(self, state: Mapping[str, Tensor], *, model: nn.Module | None = None) -> None:
        """Restore :meth:`state_dict`; ``model`` (any model of the same architecture) is the template
        for the frozen copy when this LwF has none yet."""
        self.task_scenario = bool(state["task_scenario"])
        keys = sorted((k for k in state if k.startswith("groups.")), key=lambda k: int(k.split(".")[1]))
        self.groups = [state[k].tolist() for k in keys]
        old = {k[len("old_model."):]: v for k, v in state.items() if k.startswith("old_model.")}
        if old:
            if self.old_model is None:
                if model is None:
                    raise ContinualError("LwF.load_state_dict needs model= (a model of the same architecture) to rebuild the frozen copy")
                self.old_model = copy.deepcopy(model).eval().requires_grad_(False)
            self.old_model.load_state_dict(old)
        else:
            self.old_model = None
        self._index = {}

    def report(self) -> dict:
        return {"alpha": self.alpha, "temperature": self.temperature, "groups": [list(g) for g in self.groups]}
