"""LUCIR: Hou, Pan, Loy, Wang & Lin, "Learning a Unified Classifier Incrementally via
Rebalancing", CVPR 2019.

Three parts, all here (the strategy ``"lucir"`` runs them together):

- a cosine-normalised head with a learnable scale sigma (Eq. 4):
  :class:`continual.models.heads.CosineIncrementalClassifier`, swapped in for the model's
  incremental head by the strategy's ``prepare_model`` (same capacity and classes in use);
- the less-forget constraint on normalised features (Eq. 6), with the adaptive weight (Eq. 7)
  ``lambda = lambda_base * sqrt(old classes / new classes)``: ``lambda * mean_b (1 - cos(f(x_b),
  f*(x_b)))`` over the whole batch (new samples and exemplars), ``f*`` the features of a frozen copy
  of the model taken after the previous experience (:func:`less_forget_loss`);
- the margin ranking loss (Eq. 8) on the exemplars of old classes in the batch: for each, its
  ground-truth cosine score against the K highest new-class cosine scores, ``max(0, m - <gt> +
  <hard negative>)``, averaged over the (sample, negative) pairs (:func:`margin_ranking_loss`).
  Cosine scores are taken before the scale, as the reference does.

The exemplars are a class-balanced herding memory (iCaRL's selection) whose contents join the
experience's training data (:class:`ExemplarReplay`), as the reference concatenates them to the
training set; the training loss is the cross-entropy of the scaled cosine logits (the trainer's).

Defaults and where they come from. ``A``: the authors' code, hshustc/CVPR19_Incremental_Learning:
``cifar100-class-incremental/run.sh`` (the LUCIR line: ``--nb_protos 20 --imprint_weights
--less_forget --lamda 5 --adapt_lamda --mr_loss --dist 0.5 --K 2 --lw_mr 1``),
``cifar100-class-incremental/class_incremental_cosine_cifar100.py`` (adaptive lambda, imprinting,
the frozen old rows) and ``utils_incremental/incremental_train_and_eval_MR_LF.py`` (the loss).
``F``: mmasana/FACIL ``src/approach/lucir.py``, which quotes the paper's Sec. 4.1.

- ``lambda_base = 5`` (CIFAR-100; 10 for ImageNet): paper Sec. 4.1 (quoted by F); A ``--lamda 5``;
  F ``--lamb 5``.
- ``adapt_lambda = True``: A ``--adapt_lamda`` (``cur_lamda = args.lamda * math.sqrt(lamda_mult)``,
  ``lamda_mult`` = old / new classes); F on unless ``--remove-adapt-lamda``.
- ``margin = 0.5``, ``K = 2``: paper Sec. 4.1 (quoted by F); A ``--dist 0.5 --K 2``; F ``--dist 0.5 --K 2``.
- ``margin_weight = 1``: A ``--lw_mr 1``; F ``--lamb-mr 1`` ("set to 1 in the original code").
- ``freeze_old = True``: A gives the old classes' rows (``fc.fc1``) learning rate 0 and weight
  decay 0 whenever the less-forget constraint is on; F freezes the previous heads likewise
  ("from original code"). Here the old rows are written back after each optimizer step, which
  keeps them exactly (whatever the optimizer's momentum or weight decay).
- ``imprint = True``: A ``--imprint_weights``: before training on new classes, each new row is
  set to the normalised mean of the class's normalised features (eval transform), times the mean
  norm of the old rows. (F leaves it out: "not mentioned in the paper and doesn't seem to make a
  significant difference".)
- memory: 20 exemplars per class (``mem_per_class = 20``), herding: paper Sec. 4.1 as quoted by F
  ("a constant number of samples for each old class (e.g. R_per=20) (...) we adopt the first
  strategy"); A ``--nb_protos 20``. ``mem_per_class = 0`` gives a fixed total of ``mem`` instead
  (2000, the PyCIL-style protocol; at the end of CIFAR-100 both hold 2000).
- sigma initialised to 1 and new rows drawn from ``U(-1/sqrt(d), 1/sqrt(d))``: F
  ``CosineLinear.reset_parameters``, copied from A's ``modified_linear.py`` (the copy read:
  JoyHuYY1412/DDE_CIL ``cifar100-class-incremental/modified_linear.py``).
- the loss terms: A ``incremental_train_and_eval_MR_LF.py``: ``nn.CosineEmbeddingLoss()(cur_features,
  ref_features, ones) * lamda`` on the features entering the head, and ``nn.MarginRankingLoss(
  margin=dist)`` on the scores before the scale of old-class samples against their top-K
  new-class scores, times ``lw_mr``.

Deviations:

- The ReLU before the features is kept (the paper removes the backbone's last ReLU so features
  may be negative; F does it for its ResNet-32 only). Our backbones are shared by every strategy.
- Class-balanced fine-tuning (the paper's optional last stage, A
  ``cifar100-class-incremental/cbf_class_incremental_cosine_cifar100.py``, with several
  ``ft_flag`` variants) is not implemented.
- The trainer keeps one optimizer across experiences (its schedule restarts with each), as for
  every strategy; A builds a new SGD with ``MultiStepLR([80, 120])`` per experience.
- The features and cosine scores of the current model are read from the trainer's own forward
  pass through a forward hook on the cosine head (as A reads them with hooks), so the penalty
  costs one forward of the frozen model and a (B, capacity) matrix product.
- Labels of old classes are the classes of earlier experiences (not "labels below the number of
  old classes", which assumes the classes arrive in label order).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ContinualError
from ..models.heads import CosineIncrementalClassifier, IncrementalClassifier, MultiHeadClassifier
from ..replay.buffers import Buffer, embed, join_exemplars, make_buffer
from ..strategies import Range, Strategy, register
from ..streams import Experience
from ..trainer import Plugin
from .base import RegularizerBase


def adaptive_lambda(lambda_base: float, num_old: int, num_new: int) -> float:
    """Eq. 7: ``lambda_base * sqrt(num_old / num_new)``; ``lambda_base`` when there is no new class.

    >>> adaptive_lambda(5.0, 50, 10)  # CIFAR-100 B50 Inc10, second step
    11.180339887498949
    """
    return lambda_base * math.sqrt(num_old / num_new) if num_new > 0 else lambda_base


def less_forget_loss(features: Tensor, old_features: Tensor) -> Tensor:
    """Eq. 6: ``mean_b (1 - cos(features_b, old_features_b))`` (``nn.CosineEmbeddingLoss`` with
    target 1), unweighted. ``old_features`` gets no gradient.

    >>> less_forget_loss(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[1.0, 1.0], [0.0, 1.0]])).item()
    0.1464466154575348
    """
    return (1.0 - F.cosine_similarity(features, old_features.detach(), dim=1)).mean()


def margin_ranking_loss(cos: Tensor, y: Tensor, old: Tensor, new: Tensor, *, margin: float = 0.5, k: int = 2) -> Tensor:
    """Eq. 8: for each sample of an old class, ``max(0, margin - cos[gt] + cos[hard negative])``
    over its ``k`` highest new-class scores, averaged over the (sample, negative) pairs; 0 when
    the batch holds no old-class sample (``nn.MarginRankingLoss`` as A and F call it).

    Args:
        cos: cosine scores before the scale, ``(B, C)``.
        y: labels ``(B,)``; negative labels (ignored samples) count as neither old nor new.
        old: ``(C,)`` bool, the old classes.
        new: ``(C,)`` bool, the new classes (at least ``k`` of them).
        margin: the margin m.
        k: hard negatives per sample.

    >>> cos = torch.tensor([[0.6, 0.1, 0.9, 0.3], [0.2, 0.8, 0.7, 0.9]])
    >>> old, new = torch.tensor([True, True, False, False]), torch.tensor([False, False, True, True])
    >>> round(margin_ranking_loss(cos, torch.tensor([0, 2]), old, new, margin=0.5, k=2).item(), 6)  # (0.8 + 0.2) / 2
    0.5
    """
    if k < 1:
        return cos.new_zeros(())
    valid = y >= 0
    labels = y.clamp(min=0)
    hard = old[labels] & valid  # (B,) samples of old classes
    gt = cos.gather(1, labels.unsqueeze(1))  # (B, 1)
    negatives = cos.masked_fill(~new, float("-inf")).topk(k, dim=1).values  # (B, k)
    pairs = (margin - gt + negatives).clamp(min=0) * hard.unsqueeze(1)  # (B, k)
    return pairs.sum() / (hard.sum() * k).clamp(min=1)


def cosine_head(model: nn.Module) -> CosineIncrementalClassifier:
    """The model's cosine head (``model.head``); a clear error when it has none."""
    head = getattr(model, "head", None)
    if not isinstance(head, CosineIncrementalClassifier):
        raise ContinualError(f"LUCIR needs a model whose head is a CosineIncrementalClassifier; got {type(head).__name__} "
                             "(the strategy 'lucir' swaps it in: use_cosine_head(model))")
    return head


def use_cosine_head(model: nn.Module) -> CosineIncrementalClassifier:
    """Replace ``model.head`` (an :class:`IncrementalClassifier`) by a cosine head with the same
    capacity, classes in use and growth history (a no-op when it is one already); return it.

    Raises:
        ContinualError: for a model without a class-incremental head (fixed or multi-head).
    """
    head = getattr(model, "head", None)
    if isinstance(head, CosineIncrementalClassifier):
        return head
    if not isinstance(head, IncrementalClassifier) or isinstance(head, MultiHeadClassifier):
        raise ContinualError(f"LUCIR needs a class-incremental head (head='incremental'); the model's head is "
                             f"{type(head).__name__}")
    model.head = CosineIncrementalClassifier.like(head)
    return model.head


class ExemplarReplay(Plugin):
    """Train on each experience joined with the exemplars in ``buffer`` (iCaRL's and LUCIR's
    protocol: the memory is added to the training set, not drawn as a separate replay batch);
    refill the buffer from the experience itself (without the exemplars it was joined with) after it.

    Args:
        buffer: a buffer filled per experience (class-balanced, herding for LUCIR).
    """

    name = "exemplars"

    def __init__(self, buffer: Buffer) -> None:
        if buffer.per_batch:
            raise ContinualError(f"ExemplarReplay needs a buffer filled per experience; got a {buffer.kind} buffer")
        self.buffer = buffer
        self._original: Experience | None = None

    def experience_data(self, experience: Experience) -> Experience | None:
        self._original = experience
        return join_exemplars(experience, self.buffer)

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        self.buffer.update(self._original if self._original is not None else experience, model=model)
        self._original = None

    def state_dict(self) -> dict[str, Tensor]:
        return self.buffer.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.buffer.load_state_dict(state)

    def report(self) -> dict:
        return self.buffer.report()


class _Record:
    """The forward hook that hands a cosine head's input (the features) to its :class:`LUCIR`, in
    training mode only; a deep copy of the model (LUCIR's or LwF's frozen copy) shares it rather
    than copying the plugin, and it ignores any head but the one it was registered on."""

    def __init__(self, plugin: LUCIR) -> None:
        self.plugin = plugin

    def __call__(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        if module is self.plugin._head and module.training:
            self.plugin._features = inputs[0]

    def __deepcopy__(self, memo: dict) -> _Record:
        return self


class LUCIR(RegularizerBase):
    """LUCIR's less-forget constraint and margin ranking loss, on a model with a cosine head.

    A trainer plugin (and a regularizer for a plain loop: ``out = model(x)``, then
    ``loss = F.cross_entropy(out, y) + lucir.penalty(model, x=x, y=y)``; call
    ``lucir.before_experience(model, experience)`` after growing the head and
    ``lucir.consolidate(model, experience)`` after each experience). The penalty is 0 in the first
    experience (no old model).

    Args:
        lambda_base: base weight of the less-forget constraint.
        margin: the margin m of the ranking loss.
        K: hard negatives (new classes) per old-class sample.
        margin_weight: weight of the margin ranking loss.
        adapt_lambda: scale ``lambda_base`` by ``sqrt(old classes / new classes)`` (Eq. 7).
        freeze_old: keep the old classes' rows of the head fixed while later classes are learned.
        imprint: initialise new rows from the new classes' mean normalised features.
        name: label of the penalty in results.
    """

    strength_names = ("lambda_base", "margin_weight")  # named in the message when the loss diverges

    def __init__(self, lambda_base: float = 5.0, *, margin: float = 0.5, K: int = 2, margin_weight: float = 1.0,
                 adapt_lambda: bool = True, freeze_old: bool = True, imprint: bool = True, name: str = "lucir") -> None:
        if lambda_base < 0 or margin_weight < 0:
            raise ContinualError(f"lambda_base={lambda_base} and margin_weight={margin_weight} must be >= 0")
        if not (isinstance(K, int) and K >= 1):
            raise ContinualError(f"K={K!r} must be a positive integer")
        self.lambda_base, self.margin, self.K, self.margin_weight = float(lambda_base), float(margin), K, float(margin_weight)
        self.adapt_lambda, self.freeze_old, self.imprint = bool(adapt_lambda), bool(freeze_old), bool(imprint)
        self.name = name
        self.old_model: nn.Module | None = None
        self.old_classes: list[int] = []
        self.lam = self.lambda_base  # the current experience's less-forget weight
        self.lambdas: list[float] = []  # per experience
        self.terms: dict[str, list[float]] = {"less_forget": [], "margin": []}  # mean unweighted terms per experience
        self._sums: dict[str, Tensor] = {}
        self._steps = 0
        self._head: CosineIncrementalClassifier | None = None
        self._hook = None
        self._features: Tensor | None = None
        self._old_mask = self._new_mask = self._old_rows = self._frozen = None
        self._k = 0

    # ------------------------------------------------------------------ hooks
    def _watch(self, head: CosineIncrementalClassifier) -> None:
        """Record the features the head receives in training (the trainer's forward pass)."""
        if self._head is head:
            return
        if self._hook is not None:
            self._hook.remove()
        self._head = head
        self._hook = head.register_forward_hook(_Record(self))

    @torch.no_grad()
    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        """Set the experience's old/new classes and lambda; freeze the old rows; imprint the new ones
        (after the head has grown: list :class:`HeadExpansion` first)."""
        head = cosine_head(model)
        self._watch(head)
        old = set(self.old_classes)
        new = sorted(set(experience.classes) - old)
        if new and new[-1] >= head.num_classes:
            raise ContinualError(f"the head has {head.num_classes} classes in use but experience {experience.index} brings class "
                                 f"{new[-1]}: grow the head first (list HeadExpansion before LUCIR)")
        self.lam = adaptive_lambda(self.lambda_base, len(old), len(new)) if self.adapt_lambda else self.lambda_base
        device = head.weight.device
        self._old_mask = torch.zeros(head.capacity, dtype=torch.bool, device=device)
        self._old_mask[sorted(old)] = True
        self._new_mask = torch.zeros(head.capacity, dtype=torch.bool, device=device)
        self._new_mask[new] = True
        self._k = min(self.K, len(new))
        self._old_rows = torch.tensor(sorted(old), dtype=torch.long, device=device)
        self._frozen = None
        if old and self.imprint and new:
            self._imprint(model, head, experience, new)
        if old and self.freeze_old:
            self._frozen = head.weight.detach().index_select(0, self._old_rows).clone()
        self._sums, self._steps = {}, 0

    def _imprint(self, model: nn.Module, head: CosineIncrementalClassifier, experience: Experience, new: list[int]) -> None:
        """A's ``--imprint_weights``: row c = normalise(mean_x normalise(f(x))) * mean old-row norm."""
        x, y, t = experience.x_train, experience.y_train, experience.t_train
        features = F.normalize(embed(model, x, t, experience.transform), dim=1)  # (N, d), eval mode
        sums = features.new_zeros(head.capacity, features.shape[1]).index_add_(0, y.to(features.device), features)
        index = torch.tensor(new, dtype=torch.long, device=features.device)
        rows = F.normalize(sums.index_select(0, index), dim=1)  # the mean's direction: the count cancels
        scale = head.weight.index_select(0, self._old_rows).norm(dim=1).mean()
        head.weight.index_copy_(0, index.to(head.weight.device), (rows * scale).to(head.weight))

    def penalty(self, model: nn.Module, x: Tensor | None = None, y: Tensor | None = None,
                t: Tensor | None = None, out: Tensor | None = None) -> Tensor | None:
        """``lambda * less-forget + margin_weight * margin ranking`` on the batch; ``None`` in the first
        experience. Reads the current features from the trainer's forward pass (computes them when
        the model has not been run on ``x`` in training mode)."""
        features, self._features = self._features, None
        if self.old_model is None:
            return None
        if x is None or y is None:
            raise ContinualError("LUCIR needs the batch: call lucir.penalty(model, x=inputs, y=labels) after out = model(inputs)")
        head = cosine_head(model)
        if features is None or features.shape[0] != x.shape[0]:
            features = model.features(x)  # (B, d)
        with torch.no_grad():
            old_features = F.normalize(self.old_model.features(x), dim=1)  # (B, d)
        features = F.normalize(features, dim=1)  # normalised once for both terms
        lf = (1.0 - (features * old_features).sum(1)).mean()  # less_forget_loss(features, old_features)
        cos = features @ F.normalize(head.weight, dim=1).t()  # (B, capacity): head.cosine(features)
        mr = margin_ranking_loss(cos, y, self._old_mask, self._new_mask, margin=self.margin, k=self._k)
        for key, value in (("less_forget", lf), ("margin", mr)):
            self._sums[key] = self._sums.get(key, 0) + value.detach()
        self._steps += 1
        return self.lam * lf + self.margin_weight * mr

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        if self._frozen is not None:  # the old classes' rows, written back (A: learning rate 0, no weight decay)
            self._head.weight.index_copy_(0, self._old_rows, self._frozen)

    @torch.no_grad()
    def consolidate(self, model: nn.Module, experience: Experience) -> None:
        """Freeze a copy of ``model`` and add the experience's classes to the old ones."""
        for key in self.terms:  # one host sync per term and experience
            total = self._sums.get(key)
            self.terms[key].append(float(total) / max(self._steps, 1) if total is not None else 0.0)
        self.lambdas.append(self.lam if self.old_model is not None else 0.0)
        self._sums, self._steps, self._features, self._frozen = {}, 0, None, None
        self.old_model = self._frozen_copy(model)
        self.old_classes = sorted(set(self.old_classes) | {int(c) for c in experience.classes})

    def _frozen_copy(self, model: nn.Module) -> nn.Module:
        """A frozen copy of ``model`` in eval mode, without this plugin's recording hook."""
        old = copy.deepcopy(model).eval().requires_grad_(False)
        if self._hook is not None:
            for m in old.modules():
                m._forward_hooks.pop(self._hook.id, None)
        return old

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Tensor]:
        """The frozen model (``old_model.*``), the old classes and the per-experience record."""
        state: dict[str, Tensor] = {
            "old_classes": torch.tensor(self.old_classes, dtype=torch.long),
            "lambdas": torch.tensor(self.lambdas, dtype=torch.float64),
            **{f"terms.{k}": torch.tensor(v, dtype=torch.float64) for k, v in self.terms.items()},
        }
        if self.old_model is not None:
            state.update({f"old_model.{k}": v for k, v in self.old_model.state_dict().items()})
        return state

    def load_state_dict(self, state: Mapping[str, Tensor], *, model: nn.Module | None = None) -> None:
        """Restore :meth:`state_dict`; ``model`` (of the checkpoint's architecture: a grown cosine
        head) is the template for the frozen copy when there is none yet."""
        self.old_classes = [int(c) for c in state["old_classes"].tolist()]
        self.lambdas = [float(v) for v in state["lambdas"].tolist()]
        self.terms = {k: [float(v) for v in state[f"terms.{k}"].tolist()] for k in self.terms}
        old = {k[len("old_model."):]: v for k, v in state.items() if k.startswith("old_model.")}
        if old:
            if self.old_model is None:
                if model is None:
                    raise ContinualError("LUCIR.load_state_dict needs model= (a model of the same architecture) to rebuild the frozen copy")
                self.old_model = self._frozen_copy(model)
            self.old_model.load_state_dict(old)
        else:
            self.old_model = None

    def report(self) -> dict:
        """Settings, the less-forget weight used in each experience (0 in the first) and the mean
        unweighted terms per experience."""
        return {"lambda_base": self.lambda_base, "margin": self.margin, "K": self.K, "margin_weight": self.margin_weight,
                "adapt_lambda": self.adapt_lambda, "freeze_old": self.freeze_old, "imprint": self.imprint,
                "lambdas": list(self.lambdas), "terms": {k: list(v) for k, v in self.terms.items()}}


# --------------------------------------------------------------------------- strategy
def _lucir_plugins(params: dict, context) -> list:
    per_class = params["mem_per_class"] or None
    capacity = per_class * context.stream.num_classes if per_class else params["mem"]  # per class: allocated ahead
    buffer = make_buffer("class-balanced", capacity, selection="herding", device=context.device, seed=context.seed,
                         per_class=per_class)
    lucir = LUCIR(params["lambda_base"], margin=params["margin"], K=params["K"], margin_weight=params["margin_weight"],
                  adapt_lambda=params["adapt_lambda"], freeze_old=params["freeze_old"], imprint=params["imprint"])
    return [ExemplarReplay(buffer), lucir]


def _lucir_model(model: nn.Module, params: dict, context) -> None:
    use_cosine_head(model)


register(Strategy(
    "lucir", "LUCIR (Hou et al. 2019): cosine head, less-forget constraint, margin ranking loss, herding exemplars",
    defaults={  # sources in the module docstring
        "mem_per_class": 20,  # exemplars per class seen (paper Sec. 4.1, R_per=20); 0: a fixed total of mem
        "mem": 2000,  # total exemplars when mem_per_class=0 (PyCIL-style protocol)
        "lambda_base": 5.0,  # less-forget weight base (paper: 5 on CIFAR-100, 10 on ImageNet)
        "adapt_lambda": True,  # lambda = lambda_base * sqrt(old / new classes) (Eq. 7)
        "margin": 0.5,  # margin m of the ranking loss
        "K": 2,  # hard negatives per old-class sample
        "margin_weight": 1.0,  # weight of the margin ranking loss (authors' lw_mr)
        "freeze_old": True,  # old classes' rows fixed while new classes are learned (authors' code)
        "imprint": True,  # new rows from the new classes' mean normalised features (authors' --imprint_weights)
    },
    make_plugins=_lucir_plugins,
    prepare_model=_lucir_model,
    limits={"mem_per_class": Range(0), "mem": Range(1), "lambda_base": Range(0), "adapt_lambda": (False, True),
            "margin": Range(0), "K": Range(1), "margin_weight": Range(0), "freeze_old": (False, True), "imprint": (False, True)},
    past_classes=True,
))
