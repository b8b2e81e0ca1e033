"""Interoperability with other continual-learning libraries, imported lazily.

``import continual`` (and ``import continual.interop``) never imports avalanche or torchvision;
the names below load :mod:`continual.interop.avalanche` on first use, which needs the extra
``pip install 'continual[avalanche]'``.

- :func:`from_avalanche`: an Avalanche classification benchmark as a :class:`~continual.Stream`;
- :func:`as_avalanche_plugin`: a regularizer of ours as an Avalanche ``SupervisedPlugin``;
- :func:`accuracy_matrix_from_avalanche` / :func:`accuracy_matrix_to_avalanche`: Avalanche's
  per-experience accuracy dictionaries <-> :class:`~continual.AccuracyMatrix`.
"""

from __future__ import annotations

import importlib

_AVALANCHE = ("from_avalanche", "as_avalanche_plugin", "experience_from_avalanche",
              "accuracy_matrix_from_avalanche", "accuracy_matrix_to_avalanche")

__all__ = list(_AVALANCHE)


def __getattr__(name: str):
    if name in _AVALANCHE:
        return getattr(importlib.import_module(".avalanche", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_AVALANCHE))
