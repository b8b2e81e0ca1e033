"""Classifiers computed from a trained model's features or head, for class-incremental learning.

- :class:`WeightAligning` (Zhao et al., CVPR 2020, "WA"): rescale the new classes' head rows to the
  old rows' mean norm after each experience;
- :class:`BiasCorrection` (Wu et al., CVPR 2019, "BiC"): one learned ``(alpha, beta)`` per
  experience on its logits, trained on a held-out class-balanced validation set;
- :class:`NearestMeanClassifier` (Rebuffi et al., CVPR 2017, iCaRL's "NME"): the nearest
  re-normalised class mean of L2-normalised features, evaluated beside the model's head;
- :mod:`~continual.classifiers.closed_form`: :class:`NCM`, :class:`SLDA` and :class:`RanPAC`,
  exact heads computed from running statistics of a frozen backbone's features.

Importing this package registers the strategies ``wa`` and ``bic``, which add their plugin to a
run and are meant to be combined with a method that trains on old classes (``replay+wa``,
``replay+bic``, ``bic+lwf``), and ``ncm``, ``slda`` and ``ranpac``, which need a pretrained
backbone and train nothing. NME is not a strategy: a run chooses it as its evaluation classifier.
"""

from __future__ import annotations

from ..strategies import Context, Range, Strategy, register
from .bic import BiasCorrection
from .closed_form import NCM, SLDA, RanPAC  # registers ncm, slda and ranpac
from .nme import NearestMeanClassifier, class_means
from .wa import WeightAligning, linear_head

# Strategy defaults, one place (the classes' own defaults are the same; a test checks it).
DEFAULTS: dict[str, dict[str, object]] = {
    # WA: the paper's weight clipping after each step is off, as in PyCIL (models/wa.py).
    "wa": {"wa_clip": False},
    # BiC stage 2, PyCIL models/bic.py: SGD lr 0.1, momentum 0.9, weight decay 2e-4, 170 epochs,
    # batch 128; 20 validation samples per class = 10% of a 2000-sample memory at 10 classes.
    "bic": {"val_per_class": 20, "bic_epochs": 170, "bic_lr": 0.1, "bic_weight_decay": 2e-4, "bic_batch": 128},
}

LIMITS: dict[str, dict[str, object]] = {
    "wa": {"wa_clip": (False, True)},
    "bic": {"val_per_class": Range(1), "bic_epochs": Range(0), "bic_lr": Range(0, low_open=True),
            "bic_weight_decay": Range(0), "bic_batch": Range(1)},
}


def _wa(params: dict, context: Context) -> list:
    return [WeightAligning(clip=params["wa_clip"])]


def _bic(params: dict, context: Context) -> list:
    return [BiasCorrection(val_per_class=params["val_per_class"], epochs=params["bic_epochs"], lr=params["bic_lr"],
                           weight_decay=params["bic_weight_decay"], batch_size=params["bic_batch"], seed=context.seed)]


register(Strategy("wa", "weight aligning of the new classes' head rows after each experience (Zhao et al. 2020)",
                  defaults=DEFAULTS["wa"], limits=LIMITS["wa"], make_plugins=_wa))
register(Strategy("bic", "bias correction, one (alpha, beta) per experience learned on held-out data (Wu et al. 2019)",
                  defaults=DEFAULTS["bic"], limits=LIMITS["bic"], make_plugins=_bic, comes_before=("lwf",)))

__all__ = ["NCM", "SLDA", "BiasCorrection", "DEFAULTS", "RanPAC", "NearestMeanClassifier", "WeightAligning", "class_means", "linear_head"]
