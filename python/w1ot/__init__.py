"""w1ot: fast Wasserstein-1 neural optimal transport for single-cell perturbation prediction.

The numerical core is Rust (``w1ot._core``); this package is the NumPy-facing layer.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("w1ot")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
