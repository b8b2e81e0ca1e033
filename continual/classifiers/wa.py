"""Weight aligning: Zhao et al., "Maintaining Discrimination and Fairness in Class Incremental
Learning", CVPR 2020.

After training on an experience that brings new classes, the new classes' weight rows of the
linear head are rescaled so that their mean L2 norm equals that of the old classes' rows:
``gamma = mean_i ||w_old_i|| / mean_j ||w_new_j||``, ``w_new <- gamma * w_new``. The logits of the
new classes are then on the old classes' scale, which corrects the bias towards the classes just
learned. Nothing is learned and no validation set is needed.

Choices, against the paper and G-U-N/PyCIL ``utils/inc_net.py`` (``IncrementalNet.weight_align``,
called from ``models/wa.py``):

- Biases are not scaled, as in PyCIL (it multiplies ``fc.weight.data[-increment:]`` only).
- Old classes are those below the smallest class of the experience (classes arrive in order, so
  they are the rows trained before it); new rows are the experience's classes. An experience
  that brings no class above an old one (the first, or a domain-incremental stream) is left as
  it is. Rows of classes not in use (a head allocated ahead) are never touched.
- Alignment runs once per experience, in ``after_experience``. PyCIL calls ``weight_align``
  twice (at the end of ``_train`` and again in ``after_task``); the second call computes gamma on
  rows already aligned, so it is 1 up to rounding.
- The paper also clips the head's weights to be non-negative after each optimisation step
  ("weight clipping"; the reference reimplementation runhang/Incremental-Learning-with-Weight-Aligning
  ``README.md`` lists it as missing). PyCIL's ``models/wa.py`` does not clip, and this plugin does not
  by default; ``clip=True`` clamps the head's weight (not its bias) to ``>= 0`` after every step.
- WA's first phase (training with knowledge distillation, PyCIL's ``loss_clf + 2 * loss_kd``, T=2)
  is not part of this plugin: combine it with replay or LwF (``replay+wa``, ``wa+lwf``). List
  ``wa`` before ``lwf``: PyCIL's ``after_task`` aligns the weights, then copies the network as the
  next teacher.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..errors import ContinualError
from ..models import IncrementalClassifier, MultiHeadClassifier, growing_heads
from ..streams import Experience
from ..trainer import Plugin


def linear_head(model: nn.Module, *, who: str) -> nn.Module:
    """The model's class-incremental linear head: its first :class:`IncrementalClassifier`, else
    ``model.head`` when it has a ``weight`` (a fixed ``nn.Linear``).

    Raises:
        ContinualError: for a multi-head model or a model without such a head, naming ``who`` needs it.
    """
    heads = growing_heads(model)
    if heads and isinstance(heads[0], MultiHeadClassifier):
        raise ContinualError(f"{who} needs one class-incremental head; got a multi-head model (task-incremental): use head=incremental")
    head = heads[0] if heads and isinstance(heads[0], IncrementalClassifier) else getattr(model, "head", None)
    if not isinstance(getattr(head, "weight", None), Tensor):
        raise ContinualError(f"{who} needs a linear head with a weight (model.head: IncrementalClassifier or nn.Linear); "
                             f"got {type(head).__name__ if head is not None else 'none'}")
    return head


class WeightAligning(Plugin):
    """Weight aligning (Zhao et al. 2020): rescale the new classes' head rows after each experience.

    ``report()`` gives ``{"gamma": [gamma of experience 0, 1, ...], "clip": bool}`` with ``None``
    where nothing was aligned (no old class).

    Args:
        clip: clamp the head's weight to ``>= 0`` after every optimisation step (the paper's weight
            clipping; off as in PyCIL).

    Example:
        >>> import types
        >>> model = nn.Module(); model.head = nn.Linear(2, 4, bias=False)
        >>> with torch.no_grad(): _ = model.head.weight.copy_(torch.tensor([[1., 0], [0, 1], [3, 0], [0, 3]]))
        >>> WeightAligning().after_experience(model, types.SimpleNamespace(classes=(2, 3)))
        >>> model.head.weight[2:].tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """

    name = "wa"

    def __init__(self, *, clip: bool = False) -> None:
        self.clip = bool(clip)
        self.gammas: list[float | None] = []

    @torch.no_grad()
    def align(self, model: nn.Module, classes) -> float | None:
        """Align the rows of ``classes`` (the new ones) with the rows below ``min(classes)``.

        Returns:
            gamma, or ``None`` when there is no old class (nothing changed).
        """
        classes = sorted({int(c) for c in classes})
        if not classes or classes[0] <= 0:
            return None
        head = linear_head(model, who="weight aligning")
        weight = head.weight
        num_old = classes[0]
        new = torch.tensor(classes, dtype=torch.long, device=weight.device)
        norms = weight.detach().norm(dim=1)  # (capacity,)
        gamma = norms[:num_old].mean() / norms[new].mean()
        value = gamma.item()  # one host sync per experience
        if not (math.isfinite(value) and value > 0):
            raise ContinualError(f"weight aligning: gamma={value} (mean norm of the old rows / mean norm of the new rows) "
                                 "must be a positive finite number; a row norm is zero or not finite")
        weight.data[new] = weight.data[new] * gamma
        return value

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        self.gammas.append(self.align(model, experience.classes))

    def after_step(self, model: nn.Module) -> None:
        if self.clip:
            with torch.no_grad():
                linear_head(model, who="weight clipping").weight.clamp_(min=0)

    def state_dict(self) -> dict[str, Tensor]:
        """The gammas (NaN where nothing was aligned), so a resumed run reports them all."""
        return {"gamma": torch.tensor([math.nan if g is None else g for g in self.gammas], dtype=torch.float64)}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        self.gammas = [None if math.isnan(g) else g for g in state["gamma"].tolist()]

    def report(self) -> dict:
        return {"gamma": list(self.gammas), "clip": self.clip}
