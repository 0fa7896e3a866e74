"""w1ot: fast Wasserstein-1 neural optimal transport for single-cell perturbation prediction.

The numerical core is Rust (``w1ot._core``); this package is the NumPy-facing layer:
``W1OT`` and ``W2OT`` (solvers), ``tl`` (fit and predict on AnnData), ``pp`` (preprocessing),
``baselines``, ``benchmark`` (the paper's evaluation protocol), ``datasets`` (toy data and the
perturbation simulator), ``metrics`` (numba), ``plotting`` (matplotlib).

Names are loaded on first use, so ``import w1ot.datasets`` (say) does not load the
extension, numba or matplotlib.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

try:
    __version__ = version("w1ot")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

_LAZY = {
    "Autoencoder": "w1ot.solvers",
    "W1OT": "w1ot.solvers",
    "W2OT": "w1ot.solvers",
    "Progress": "w1ot.solvers",
    "TrainingError": "w1ot.solvers",
    "TrainingWarning": "w1ot.solvers",
    "ModelFileError": "w1ot.io",
}
_SUBMODULES = {
    "baselines",
    "benchmark",
    "datasets",
    "io",
    "metrics",
    "solvers",
    "plotting",
    "pp",
    "preprocessing",
    "tl",
}

__all__ = [
    "W1OT",
    "W2OT",
    "Autoencoder",
    "ModelFileError",
    "Progress",
    "TrainingError",
    "TrainingWarning",
    "__version__",
]

if TYPE_CHECKING:
    from w1ot.io import ModelFileError
    from w1ot.solvers import W1OT, W2OT, Autoencoder, Progress, TrainingError, TrainingWarning


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"w1ot.{name}")
    raise AttributeError(f"module 'w1ot' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(__all__) | _SUBMODULES)
