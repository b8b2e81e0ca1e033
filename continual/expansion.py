"""DER's dynamically expandable representation: one new feature extractor per experience.

Reference: S. Yan, J. Xie and X. He, "DER: Dynamically Expandable Representation for Class
Incremental Learning", CVPR 2021. Followed as G-U-N/PyCIL implements it (``models/der.py``,
``utils/inc_net.py::DERNet``); every default below cites the line it comes from.

What one experience does (PyCIL ``DER.incremental_train`` and ``DERNet.update_fc``):

- From the second experience on, a new feature extractor is added, a copy of the previous one's
  weights (PyCIL builds ``get_convnet(args)`` and then
  ``convnets[-1].load_state_dict(convnets[-2].state_dict())``); every earlier extractor is frozen:
  no gradient (``requires_grad=False``) and, while the model trains, its BatchNorm layers in eval
  mode (``DER.train`` calls ``convnets[i].eval()``), so its parameters and running statistics stay
  bit-identical. The features of all extractors are concatenated, ``(B, n * width)``.
- The classifier reads the concatenated features: its input width grows by one extractor's
  width; the old weights are kept in the old columns and the new columns get a fresh
  initialisation (PyCIL builds a new ``fc`` of the new width and copies the old weights into
  ``[:old_classes, :old_width]``). The class dimension is the run's head
  (:class:`~continual.models.IncrementalClassifier`, fixed capacity, rows of classes not seen
  yet masked to ``-inf``), grown by :class:`~continual.models.HeadExpansion` as for any method.
- An auxiliary classifier on the new extractor's features predicts the new classes plus one
  "old" class to which every old class is mapped (PyCIL ``aux_targets``:
  ``y - known + 1`` for new classes, 0 otherwise); its cross-entropy is added with weight 1
  (``loss = loss_clf + loss_aux``). It exists only while its experience trains (a new one is
  drawn for each experience, as PyCIL's ``aux_fc``) and only from the second experience on
  (PyCIL's first task, ``_init_train``, trains with the cross-entropy alone).
- Exemplars: a class-balanced herding memory of 2000 samples in total (PyCIL
  ``exps/der.json``: ``memory_size: 2000``, ``fixed_memory: false``; ``build_rehearsal_memory``
  herds on the concatenated features). As PyCIL's ``appendent=self._get_memory()``, the
  exemplars join the experience's training data (``experience_data``): batches are drawn from
  the union, not a replay batch joined to each batch.
- After each experience from the second on, the new classes' rows of the classifier are
  weight-aligned to the old rows' mean norm (PyCIL ``DER._train`` calls
  ``self._network.weight_align(...)`` after ``_update_representation``; the paper instead
  fine-tunes the classifier on a class-balanced subset). On by default (``weight_align``), with
  :class:`continual.classifiers.WeightAligning`'s arithmetic (biases untouched). ``der+wa``
  would align twice; the second gamma is 1 up to rounding.

Deviations:

- No pruning: the paper's channel masks and sparsity loss are not implemented, as in PyCIL
  ("masking and pruning are not implemented by the source repo", ``models/der.py``, line 1).
  The model grows by a whole extractor per experience.
- Initialisation of the classifier's new columns and of the auxiliary head: ``nn.Linear``'s
  default (the run's heads are initialised that way); PyCIL's ``SimpleLinear`` uses
  ``kaiming_uniform_(nonlinearity="linear")`` and zero biases. New classes' rows keep the
  initialisation :class:`~continual.models.HeadExpansion` gave their old columns.
- The optimizer, its schedule and the epochs are the run's (``RunConfig``); PyCIL trains DER
  with SGD, momentum 0.9, lr 0.1, 170 epochs (200 in the first task), batch 128, weight decay
  2e-4 (5e-4 first), MultiStepLR. Like PyCIL, a new optimizer is built each experience over the
  parameters that train (``rebuilds_optimizer``), so frozen extractors leave it.
- Old classes for the auxiliary head are the classes of earlier experiences (a table, so label
  order does not matter), not ``y < known_classes``.

Design: the run builds one model object and hands it to the trainer, so DER grows that object in
place. :func:`as_dernet` changes its class to a subclass of its own class and of :class:`DERNet`
(``DERMLP``, ``DERResNet18``...), which overrides ``features`` (the concatenation) and ``train``
(frozen extractors stay in eval mode), and adds the submodules ``der_extractors`` (extractors 1,
2, ...; extractor 0 is the model's own backbone) and ``der_aux`` (the auxiliary head, ``None``
between experiences). ``forward`` is the backbone's own, ``head(features(x))``, so the logits are
``(B, capacity)`` with unseen classes at ``-inf``; ``model.features`` (herding, NME) gives the
concatenated features and ``model.num_features`` their current width. On resume the plugin's
``load_state_dict(state, model=...)`` regrows the extractors and widens the head before the
trainer loads the model's weights, as ``HeadExpansion`` regrows heads. (Alternatives rejected:
a wrapper module cannot replace the object the run holds; bound methods assigned to the
instance hide the override from the class and from readers.) A model of a dynamically made class
cannot be pickled whole (``torch.save(model)``); save its ``state_dict`` (checkpoints do).

Memory: the extractors are model parameters, so the run's ledger counts them under
``model_parameters``; ``report()["parameters"]`` gives the model's parameter count after each
experience (the survey of Zhou et al. 2024 counts DER's growing model against the exemplar budget).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ContinualError
from .models import IncrementalClassifier
from .models.backbones import Backbone
from .replay.buffers import ClassBalancedBuffer, join_exemplars
from .strategies import Context, Range, Strategy, register
from .streams import Experience
from .trainer import Plugin

_DER_MODULES = ("head", "der_extractors", "der_aux")  # the model's submodules that are not extractor 0
_DER_ATTRIBUTES = ("der_width", "_der_new")  # plain attributes as_dernet adds


class DERNet(nn.Module):
    """The behaviour DER adds to a backbone (mixed in by :func:`as_dernet`; not built directly).

    Extractor 0 is the backbone's own ``features``; extractors 1, 2... are ``der_extractors``,
    copies of it (its class, head replaced by ``nn.Identity``). ``features(x)`` is their
    concatenation ``(B, num_extractors * der_width)``; all extractors but the newest are frozen.

    Attributes:
        der_width: the width of one extractor's features.
        der_extractors: extractors 1, 2... (``nn.ModuleList``).
        der_aux: the auxiliary head on the newest extractor's features while an experience trains, else ``None``.
    """

    der_width: int
    der_extractors: nn.ModuleList
    der_aux: nn.Module | None

    @property
    def num_extractors(self) -> int:
        return 1 + len(self.der_extractors)

    def features(self, x: Tensor) -> Tensor:
        feats = [super().features(x)] + [e.features(x) for e in self.der_extractors]  # each (B, der_width)
        if self.training and self.der_aux is not None:
            self._der_new = feats[-1]  # the auxiliary head's input, taken by DER.penalty in the same step
        return feats[0] if len(feats) == 1 else torch.cat(feats, 1)  # (B, num_extractors * der_width)

    def aux_logits(self) -> Tensor | None:
        """The auxiliary head's logits on the newest extractor's features of the last training
        forward pass, ``(B, new classes + 1)``; ``None`` when there is none. Forgets those features."""
        f, self._der_new = self._der_new, None
        return None if f is None or self.der_aux is None else self.der_aux(f)

    def own_modules(self) -> list[nn.Module]:
        """Extractor 0's modules: the backbone's children other than the head and DER's own."""
        return [m for name, m in self.named_children() if name not in _DER_MODULES]

    def extractor(self, index: int) -> list[nn.Module]:
        """The modules of extractor ``index`` (0: the backbone's own)."""
        return self.own_modules() if index == 0 else [self.der_extractors[index - 1]]

    def train(self, mode: bool = True) -> DERNet:
        super().train(mode)
        if mode:
            for i in range(self.num_extractors - 1):  # frozen extractors: BatchNorm statistics stay as they are
                for m in self.extractor(i):
                    m.eval()
        return self

    def _backbone_copy(self) -> nn.Module:
        """A copy of extractor 0 as a module of the backbone's own class, with an ``nn.Identity`` head."""
        base = _base_class(type(self))
        shell = base.__new__(base)  # shares this model's state, minus DER's parts; deep-copied below, never used
        shell.__dict__.update({k: v for k, v in self.__dict__.items() if k not in _DER_ATTRIBUTES})
        shell.__dict__["_modules"] = {**{k: v for k, v in self._modules.items() if k not in _DER_MODULES}, "head": nn.Identity()}
        shell.__dict__["num_features"] = self.der_width
        return copy.deepcopy(shell)

    def add_extractor(self) -> list[nn.Parameter]:
        """Add an extractor initialised from the newest one (PyCIL), freeze every earlier one and
        widen the head by one extractor's width; return the new parameters (extractor, head weight)."""
        previous = self.der_extractors[-1] if len(self.der_extractors) else None
        new = copy.deepcopy(previous) if previous is not None else self._backbone_copy()
        new.requires_grad_(True)
        for i in range(self.num_extractors):
            for m in self.extractor(i):
                m.requires_grad_(False)
        self.der_extractors.append(new)
        self.num_features = self.der_width * self.num_extractors
        return [*new.parameters(), widen(self.head, self.num_features)]

    def extra_repr(self) -> str:
        return f"der_extractors={self.num_extractors}, der_width={self.der_width}"


_CLASSES: dict[type, type] = {}


def _base_class(cls: type) -> type:
    return next(c for c in cls.__mro__[1:] if c is not DERNet and issubclass(c, Backbone) and not issubclass(c, DERNet))


def as_dernet(model: nn.Module) -> DERNet:
    """Make ``model`` (a :class:`~continual.models.backbones.Backbone` with one class-incremental or
    linear head) a :class:`DERNet` in place, with its own backbone as its single extractor;
    returns the same object. A model that already is one is returned as it is.

    Raises:
        ContinualError: for a model that is not a backbone with ``features``, ``num_features`` and a
            linear head (``IncrementalClassifier`` or ``nn.Linear``), e.g. a multi-head model.

    Example:
        >>> from continual.models import MLP
        >>> model = as_dernet(MLP(4, (8,), 3))
        >>> type(model).__name__, model.num_extractors, model.features(torch.zeros(2, 4)).shape
        ('DERMLP', 1, torch.Size([2, 8]))
    """
    if isinstance(model, DERNet):
        return model
    if not isinstance(model, Backbone):
        raise ContinualError(f"DER needs a backbone model (features, num_features, head: continual.models); got {type(model).__name__}")
    if not isinstance(getattr(model, "head", None), (IncrementalClassifier, nn.Linear)):
        raise ContinualError(f"DER needs one class-incremental head (head=incremental or fixed); got {type(model.head).__name__} "
                             "(a multi-head model is task-incremental: DER is a class-incremental method)")
    cls = type(model)
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"DER{cls.__name__}", (DERNet, cls), {"__module__": __name__, "__doc__": DERNet.__doc__})
    model.__class__ = _CLASSES[cls]
    model.der_width = int(model.num_features)
    model.der_extractors = nn.ModuleList()
    model.register_module("der_aux", None)
    model._der_new = None
    return model


@torch.no_grad()
def widen(head: nn.Module, in_features: int) -> nn.Parameter:
    """Widen a linear head's input to ``in_features``: old columns kept, new ones freshly initialised.

    The new columns are those of ``nn.Linear(in_features, out)``'s default initialisation
    (drawn on the CPU from the global RNG). The weight becomes a new parameter (an optimizer must
    be rebuilt or patched); the bias is untouched. Returns the new weight.

    >>> head = nn.Linear(2, 3)
    >>> old = head.weight.clone()
    >>> w = widen(head, 5)
    >>> w.shape, head.in_features, torch.equal(w[:, :2], old)
    (torch.Size([3, 5]), 5, True)
    """
    old = head.weight
    out, width = old.shape
    if in_features < width:
        raise ContinualError(f"cannot widen a head of {width} input features to {in_features}")
    fresh = torch.empty(out, in_features)
    nn.init.kaiming_uniform_(fresh, a=math.sqrt(5))  # nn.Linear's weight initialisation
    fresh = fresh.to(old)
    fresh[:, :width] = old
    head.weight = nn.Parameter(fresh, requires_grad=old.requires_grad)
    head.in_features = in_features
    return head.weight


class DER(Plugin):
    """DER (Yan et al. 2021): a new extractor per experience, an auxiliary loss, herding exemplars.

    See the module docstring for what each hook does and the deviations from PyCIL. Use it with
    :class:`~continual.models.HeadExpansion` before it (the run adds one for a growing head).

    ``report()`` gives ``{"extractors", "feature_width": [per experience], "parameters": [model
    parameters after each experience], "trainable_parameters": [of which trained then], "gamma": [weight aligning, None where none], "aux_weight",
    "weight_align", ...the buffer's report}``.

    Args:
        buffer: the exemplar memory (a class-balanced herding buffer in PyCIL), or ``None`` for none.
        aux_weight: the auxiliary loss's weight (PyCIL: 1).
        weight_align: align the new classes' head rows after each experience (PyCIL: yes).
        model: the model, needed only to restore a checkpoint before the first experience
            (``load_state_dict`` is otherwise given it by the trainer).
    """

    name = "der"
    rebuilds_optimizer = True  # frozen extractors leave the optimizer; one new optimizer per experience (PyCIL)
    strength_names = ("aux_weight",)

    def __init__(self, buffer: ClassBalancedBuffer | None = None, *, aux_weight: float = 1.0, weight_align: bool = True,
                 model: nn.Module | None = None) -> None:
        if not (isinstance(aux_weight, (int, float)) and math.isfinite(aux_weight) and aux_weight >= 0):
            raise ContinualError(f"aux_weight={aux_weight!r} must be a non-negative finite number")
        self.buffer = buffer
        self.aux_weight = float(aux_weight)
        self.weight_align = bool(weight_align)
        self._model = model
        self.known: list[int] = []  # classes of the experiences trained on
        self.widths: list[int] = []  # feature width after each experience
        self.param_counts: list[int] = []  # model parameters after each experience
        self.trainable_counts: list[int] = []  # of which trained in that experience (newest extractor, head)
        self.gammas: list[float | None] = []
        self._aux_map: Tensor | None = None  # label -> auxiliary target (0: an old class)
        self._new: list[int] = []
        self._original: Experience | None = None

    @property
    def num_trained(self) -> int:
        return len(self.widths)

    # ------------------------------------------------------------------ hooks
    def before_experience(self, model: nn.Module, experience: Experience) -> list[nn.Parameter]:
        model = self._model = as_dernet(model)
        new_params = model.add_extractor() if self.num_trained > 0 else []
        self._new = sorted({int(c) for c in experience.classes} - set(self.known))
        self._aux_map = None
        if self.known and self._new:
            size = max(model.head.weight.shape[0], max(self.known + self._new) + 1)
            table = torch.zeros(size, dtype=torch.long)
            table[self._new] = torch.arange(1, len(self._new) + 1)
            self._aux_map = table.to(model.head.weight.device)
            model.der_aux = nn.Linear(model.der_width, len(self._new) + 1).to(model.head.weight)
            new_params += list(model.der_aux.parameters())
        return new_params

    def experience_data(self, experience: Experience) -> Experience | None:
        """The experience's training data joined by the exemplars (PyCIL's ``appendent``)."""
        self._original = experience
        return None if self.buffer is None else join_exemplars(experience, self.buffer)

    def penalty(self, model: nn.Module, *, x: Tensor, y: Tensor, t: Tensor, out: Tensor) -> Tensor | None:
        if self._aux_map is None:
            return None
        logits = model.aux_logits()  # (B, new classes + 1)
        if logits is None:
            return None
        targets = torch.where(y >= 0, self._aux_map[y.clamp(min=0)], y)  # old classes -> 0; ignored labels stay
        return self.aux_weight * F.cross_entropy(logits, targets)

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        model = as_dernet(model)
        experience = self._original if self._original is not None else experience
        model.der_aux = None  # trained only during its experience
        model._der_new = None
        self._aux_map, self._original = None, None
        gamma = None
        if self.weight_align and self.known and self._new:
            from .classifiers.wa import WeightAligning

            gamma = WeightAligning().align(model, self._new)
        if self.buffer is not None:
            self.buffer.update(experience, model=model)
        self.known = sorted(set(self.known) | {int(c) for c in experience.classes})
        self.gammas.append(gamma)
        self.widths.append(model.num_features)
        self.param_counts.append(sum(p.numel() for p in model.parameters()))
        self.trainable_counts.append(sum(p.numel() for p in model.parameters() if p.requires_grad))

    # -------------------------------------------------------------- records
    def report(self) -> dict:
        out = {"extractors": len(self.widths), "feature_width": list(self.widths), "parameters": list(self.param_counts),
               "trainable_parameters": list(self.trainable_counts),
               "gamma": list(self.gammas), "aux_weight": self.aux_weight, "weight_align": self.weight_align}
        return {**(self.buffer.report() if self.buffer is not None else {}), **out}

    def memory_bytes(self) -> int:
        """What the plugin holds besides its buffer (counted as exemplars) and the extractors
        (model parameters): the auxiliary label table while an experience trains."""
        return 0 if self._aux_map is None else self._aux_map.numel() * self._aux_map.element_size()

    def state_dict(self) -> dict:
        return {
            "known": torch.tensor(self.known, dtype=torch.long),
            "widths": torch.tensor(self.widths, dtype=torch.long),
            "parameters": torch.tensor(self.param_counts, dtype=torch.long),
            "trainable_parameters": torch.tensor(self.trainable_counts, dtype=torch.long),
            "gamma": torch.tensor([math.nan if g is None else g for g in self.gammas], dtype=torch.float64),
            "buffer": self.buffer.state_dict() if self.buffer is not None else {},
        }

    def load_state_dict(self, state: dict, *, model: nn.Module | None = None) -> None:
        """Restore the records and the buffer, and regrow ``model`` (else the one given at
        construction) to the checkpoint's extractors, head width and frozen parts, so that the
        trainer can load its weights next."""
        self.known = state["known"].tolist()
        self.widths = state["widths"].tolist()
        self.param_counts = state["parameters"].tolist()
        self.trainable_counts = state["trainable_parameters"].tolist()
        self.gammas = [None if math.isnan(g) else g for g in state["gamma"].tolist()]
        if self.buffer is not None and state["buffer"]:
            self.buffer.load_state_dict(state["buffer"])
        model = model if model is not None else self._model
        if model is None:
            raise ContinualError("DER.load_state_dict needs the model: pass model= or build the plugin as DER(..., model=model)")
        model = self._model = as_dernet(model)
        while model.num_extractors < max(self.num_trained, 1):
            model.add_extractor()


# --------------------------------------------------------------------------- strategy
DEFAULTS: dict[str, object] = {
    "mem": 2000,  # exemplars in total, shared among the classes seen (PyCIL exps/der.json: memory_size 2000, fixed_memory false)
    "aux_weight": 1.0,  # weight of the auxiliary loss (PyCIL models/der.py: loss = loss_clf + loss_aux)
    "weight_align": True,  # align new rows after each experience (PyCIL models/der.py, _train: self._network.weight_align(...))
}
LIMITS: dict[str, object] = {"mem": Range(0), "aux_weight": Range(0), "weight_align": (False, True)}


def _der_plugins(params: dict, context: Context) -> list:
    buffer = (ClassBalancedBuffer(params["mem"], device=context.device, seed=context.seed, selection="herding")
              if params["mem"] > 0 else None)
    return [DER(buffer, aux_weight=params["aux_weight"], weight_align=params["weight_align"])]


def _der_prepare(model: nn.Module, params: dict, context: Context) -> None:
    as_dernet(model)
    return None


register(Strategy(
    "der", "DER (Yan et al. 2021, as PyCIL): a new extractor per experience, old ones frozen, features concatenated; "
           "auxiliary head; herding exemplars (no pruning)",
    defaults=DEFAULTS, make_plugins=_der_plugins, prepare_model=_der_prepare, limits=LIMITS, past_classes=True,
))

__all__ = ["DER", "DERNet", "as_dernet", "widen"]
