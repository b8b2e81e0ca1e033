"""Replay: buffers (:mod:`continual.replay.buffers`) and the methods that keep a memory:
:mod:`continual.replay.er` (ER, ER-ACE, DER++), :mod:`continual.replay.agem` (A-GEM),
:mod:`continual.replay.icarl` (iCaRL) and :mod:`continual.replay.gdumb` (GDumb).

Every name of the buffers and the methods' plugins is importable from here (``from
continual.replay import ER, ReservoirBuffer``). Importing this package registers the strategies
``replay``, ``der++``, ``er-ace``, ``a-gem``, ``ewc+replay``, ``icarl`` and ``gdumb``.
"""

from .buffers import (
    BUFFERS, IGNORE_LABEL, SELECTIONS, Buffer, ClassBalancedBuffer, ExperienceBalancedBuffer, ReservoirBuffer, Samples,
    available_memory, balanced_quotas, check_memory, embed, herding, make_buffer,
)
from .er import DERpp, ER, ERACE, asymmetric_cross_entropy

__all__ = [
    "BUFFERS", "Buffer", "ClassBalancedBuffer", "DERpp", "ER", "ExperienceBalancedBuffer", "IGNORE_LABEL",
    "ReservoirBuffer", "SELECTIONS", "Samples", "available_memory", "balanced_quotas", "check_memory", "embed", "herding",
    "make_buffer",
]

# Replay combined with a regularizer (EWC's and replay's plugins together; each keeps its settings).
from .. import regularizers as _regularizers  # noqa: E402,F401  (registers ewc before it is composed)
from ..strategies import compose as _compose, register as _register  # noqa: E402

_register(_compose("ewc", "replay", summary="EWC (Kirkpatrick et al. 2017) + experience replay (Chaudhry et al. 2019)"))

from . import agem, gdumb, icarl  # noqa: E402,F401  (register their strategies)
from .agem import AGEM, EpisodicMemory, project  # noqa: E402
from .gdumb import GDumb  # noqa: E402
from .icarl import ICaRL  # noqa: E402

__all__ += ["AGEM", "ERACE", "EpisodicMemory", "GDumb", "ICaRL", "asymmetric_cross_entropy", "project"]
