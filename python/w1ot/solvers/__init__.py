"""The optimal-transport solvers, estimators on NumPy arrays with one interface: keyword-only
configuration, ``fit(source, target)``, ``transport(x)``, ``history``, ``save`` / ``load``.

- :class:`W1OT` (:mod:`w1ot.solvers.w1`): the paper's Wasserstein-1 solver.
- :class:`W2OT` (:mod:`w1ot.solvers.w2`): the Wasserstein-2 baseline (ICNN, CellOT-style).
- :class:`Autoencoder` (:mod:`w1ot.solvers.autoencoder`): the latent space of the paper's
  scRNA-seq mode.
"""

from w1ot.solvers._base import Progress, TrainingError, TrainingWarning
from w1ot.solvers.autoencoder import Autoencoder
from w1ot.solvers.w1 import W1OT
from w1ot.solvers.w2 import W2OT

__all__ = ["W1OT", "W2OT", "Autoencoder", "Progress", "TrainingError", "TrainingWarning"]
