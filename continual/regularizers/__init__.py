"""Regularizers against forgetting, usable as trainer plugins or from a plain PyTorch loop.

- :class:`EWC` (Kirkpatrick et al. 2017; ``mode="online"``: Schwarz et al. 2018), with the Fisher
  estimators ``empirical``, ``exact``, ``sampled`` and ``batched``;
- :class:`SI` (Zenke et al. 2017), :class:`MAS` (Aljundi et al. 2018), :class:`L2` (to the
  previous anchor), :class:`LwF` (Li & Hoiem 2017);
- :func:`combine` sums several and reports each term by name.

Importing this package registers the strategies ``ewc``, ``online-ewc``, ``si``, ``mas``, ``l2`` and
``lwf``. Their defaults (the paper's where it gives one usable here, otherwise chosen on
split-digits and said so) live in :data:`DEFAULTS`.
"""

from __future__ import annotations

from ..strategies import Context, Range, Strategy, register
from .base import Combined, QuadraticPenalty, Regularizer, RegularizerBase, combine
from .ewc import CONVENTIONS, EWC
from .fisher import ESTIMATORS, fisher_diagonal, grad_stats
from .l2 import L2
from .lwf import LwF
from .mas import MAS, mas_importance
from .si import SI

# Strategy defaults, one place (the classes' own defaults are the same; a test checks it).
# lam for EWC is for the paper's lambda/2 convention and the Fisher as a mean over samples;
# num_samples=0 means every training sample. Strengths are capped so that plain SGD at the
# benchmarks' lr 0.05 stays stable in every scenario (the demo), also for ewc+si: the papers' SI
# c=1 (with Adam) and MAS lambda=1 diverge there; each module says more. EWC's lam=50 is half the
# smallest that diverged on a bundled stream with any Fisher estimator, alone or combined, with 1
# or 10 epochs (100: permuted-digits, exact Fisher, 1 epoch; benchmarks/ewc_stability.py).
DEFAULTS: dict[str, dict[str, object]] = {
    "ewc": {"lam": 50.0, "estimator": "empirical", "convention": "paper", "num_samples": 0},
    "online-ewc": {"lam": 50.0, "gamma": 1.0, "estimator": "empirical", "convention": "paper", "num_samples": 0},
    "si": {"c": 0.1, "xi": 1e-3},
    "mas": {"lam": 0.1},
    "l2": {"lam": 1.0},
    "lwf": {"alpha": 1.0, "temperature": 2.0},
}


# Accepted values, checked when a configuration is resolved (before anything runs).
_AT_LEAST_0 = Range(0)
_EWC_LIMITS = {"lam": _AT_LEAST_0, "estimator": ESTIMATORS, "convention": CONVENTIONS, "num_samples": _AT_LEAST_0}
LIMITS: dict[str, dict[str, object]] = {
    "ewc": _EWC_LIMITS,
    "online-ewc": {**_EWC_LIMITS, "gamma": _AT_LEAST_0},
    "si": {"c": _AT_LEAST_0, "xi": Range(0, low_open=True)},
    "mas": {"lam": _AT_LEAST_0},
    "l2": {"lam": _AT_LEAST_0},
    "lwf": {"alpha": _AT_LEAST_0, "temperature": Range(0, low_open=True)},
}


def _ewc(mode: str):
    def make(params: dict, context: Context) -> list:
        return [EWC(params["lam"], mode=mode, gamma=params.get("gamma", 1.0), estimator=params["estimator"],
                    convention=params["convention"], num_samples=params["num_samples"] or None, seed=context.seed,
                    name="ewc" if mode == "separate" else "online-ewc")]
    return make


register(Strategy("ewc", "EWC, one quadratic per past experience (Kirkpatrick et al. 2017)",
                  defaults=DEFAULTS["ewc"], limits=LIMITS["ewc"], make_plugins=_ewc("separate")))
register(Strategy("online-ewc", "online EWC, decayed running Fisher (Schwarz et al. 2018)",
                  defaults=DEFAULTS["online-ewc"], limits=LIMITS["online-ewc"], make_plugins=_ewc("online")))
register(Strategy("si", "synaptic intelligence, path-integral importance (Zenke et al. 2017)",
                  defaults=DEFAULTS["si"], limits=LIMITS["si"], make_plugins=lambda p, c: [SI(p["c"], xi=p["xi"])]))
register(Strategy("mas", "memory aware synapses, output-sensitivity importance (Aljundi et al. 2018)",
                  defaults=DEFAULTS["mas"], limits=LIMITS["mas"], make_plugins=lambda p, c: [MAS(p["lam"], seed=c.seed)]))
register(Strategy("l2", "L2 distance to the previous experience's parameters",
                  defaults=DEFAULTS["l2"], limits=LIMITS["l2"], make_plugins=lambda p, c: [L2(p["lam"])]))
register(Strategy("lwf", "learning without forgetting, distillation from the previous model (Li & Hoiem 2017)",
                  defaults=DEFAULTS["lwf"], limits=LIMITS["lwf"], past_classes=True, make_plugins=lambda p, c: [LwF(p["alpha"], temperature=p["temperature"])]))

__all__ = [
    "Combined", "DEFAULTS", "ESTIMATORS", "EWC", "L2", "LwF", "MAS", "QuadraticPenalty", "Regularizer",
    "RegularizerBase", "SI", "combine", "fisher_diagonal", "grad_stats", "mas_importance",
]

from .lucir import LUCIR, ExemplarReplay, use_cosine_head  # noqa: E402  (registers lucir)

__all__ += ["ExemplarReplay", "LUCIR", "use_cosine_head"]
