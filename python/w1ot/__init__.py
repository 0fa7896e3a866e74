"""w1ot: fast Wasserstein-1 neural optimal transport for single-cell perturbation prediction.

The numerical core is Rust (``w1ot._core``); this package is the NumPy-facing layer:
``W1OT`` (models), ``datasets`` (toy data), ``metrics`` (numba), ``plotting`` (matplotlib).
"""

from importlib.metadata import PackageNotFoundError, version

from w1ot.io import ModelFileError
from w1ot.models import W1OT, Progress, TrainingError

try:
    __version__ = version("w1ot")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["W1OT", "ModelFileError", "Progress", "TrainingError", "__version__"]
