"""A linear latent space for high-dimensional data: principal components of the training cells.

W1OT's potential meets the data through a d -> ``hidden[0]`` orthogonal layer, so with more
features than that width it sees only a learned projection of them, one it fits from a few
hundred cells and can overfit (on 1,000 genes the held-out W1 estimate falls below the
distance between the means, a bound any linear potential reaches). Fixing that projection to
the top principal components of the pooled training cells, as the paper and CellOT do with
an autoencoder latent, keeps the method's form: with P the k x d matrix of orthonormal
components, f(P(x - mean)) is 1-Lipschitz in x, its gradient P^T grad f lies in the span of
the components, and ``T(x) = x - eta * P^T u`` moves cells only inside that span.
"""

from __future__ import annotations

import numpy as np

__all__ = ["AUTO_COMPONENTS", "EXACT_LIMIT", "PCA", "resolve_components"]

# The paper's latent dimension for scRNA data.
AUTO_COMPONENTS = 50
#: Up to this many cells or features, principal components come from an exact SVD.
EXACT_LIMIT = 500


def resolve_components(n_components, n_features: int, first_width: int) -> int | None:
    """Components to use for ``n_features`` inputs: ``None`` (the full feature space) or k.

    ``"auto"`` projects to :data:`AUTO_COMPONENTS` components exactly when the potential's
    first layer (``first_width`` units) is narrower than the data; an int k must be in
    [1, n_features] (k = n_features is a rotation, kept for completeness).
    """
    if n_components is None:
        return None
    if isinstance(n_components, str):
        if n_components != "auto":
            raise ValueError(f"n_components must be 'auto', None or an int, got {n_components!r}")
        return min(AUTO_COMPONENTS, n_features) if n_features > first_width else None
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)):
        raise TypeError(f"n_components must be 'auto', None or an int, got {n_components!r}")
    if not 1 <= n_components <= n_features:
        raise ValueError(
            f"n_components must be in [1, {n_features}] (the number of features), "
            f"got {n_components}"
        )
    return int(n_components)


class PCA:
    """Orthonormal principal directions ``components`` (k x d) and the centre ``mean`` (d).

    Computed in float64 by a thin SVD of the centred data; each component's sign is fixed so
    that its largest-magnitude loading is positive, so the same data give the same basis.
    """

    def __init__(self, mean: np.ndarray, components: np.ndarray) -> None:
        self.mean = np.asarray(mean, dtype=np.float64)
        self.components = np.asarray(components, dtype=np.float64)
        k, d = self.components.shape
        if self.mean.shape != (d,) or k > d:
            raise ValueError(f"PCA: components {self.components.shape} and mean {self.mean.shape}")

    @classmethod
    def fit(cls, x: np.ndarray, n_components: int, *, seed: int = 0) -> PCA:
        """The top ``n_components`` of the rows of ``x``.

        Small problems (the smaller side at most :data:`EXACT_LIMIT`, or more than a fifth
        of it requested) take an exact thin SVD in float64. Larger ones take a randomized
        SVD (Halko, Martinsson and Tropp 2011, with scikit-learn's oversampling and power
        iterations) seeded by ``seed``: it costs a few passes over ``x`` in its own dtype
        instead of an O(n d min(n, d)) factorisation and a float64 copy, and its subspace
        matches the exact one to rounding on data whose spectrum decays (tested).
        """
        x = np.asarray(x)
        n, d = x.shape
        if not 1 <= n_components <= min(n, d):
            raise ValueError(
                f"n_components={n_components} needs at least that many cells and features, "
                f"got {n} cells x {d} features"
            )
        if min(n, d) <= EXACT_LIMIT or 5 * n_components > min(n, d):
            x = x.astype(np.float64, copy=False)
            mean = x.mean(axis=0)
            _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
            comps = vt[:n_components]
        else:
            mean, comps = _randomized_pca(x, n_components, np.random.default_rng(seed))
        lead = np.argmax(np.abs(comps), axis=1)
        comps = comps * np.sign(comps[np.arange(n_components), lead])[:, None]
        return cls(mean, comps)

    @property
    def n_components(self) -> int:
        return self.components.shape[0]

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Coordinates of the rows of ``x`` in the components, as float32."""
        return ((np.asarray(x, dtype=np.float64) - self.mean) @ self.components.T).astype(
            np.float32
        )

    def lift(self, v: np.ndarray) -> np.ndarray:
        """Latent vectors (displacements, gradients) mapped back into feature space."""
        return np.asarray(v, dtype=np.float64) @ self.components


def _randomized_pca(
    x: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, top-k right singular vectors of x - mean), centring implicitly so that ``x``
    is never copied. Products run in x's float type; the small factorisations in float64."""
    n, d = x.shape
    work = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    x = x.astype(work, copy=False)
    mean = x.mean(axis=0, dtype=np.float64)
    m = mean.astype(work)
    size = min(k + 10, min(n, d))
    n_iter = 7 if k < 0.1 * min(n, d) else 4

    def times(v):  # (x - mean) @ v
        return x @ v - np.outer(np.ones(n, work), m @ v)

    def times_t(u):  # (x - mean).T @ u
        return x.T @ u - np.outer(m, u.sum(axis=0))

    q = times(rng.standard_normal((d, size)).astype(work))
    for _ in range(n_iter):
        q, _ = np.linalg.qr(q.astype(np.float64))
        z, _ = np.linalg.qr(times_t(q.astype(work)).astype(np.float64))
        q = times(z.astype(work))
    q, _ = np.linalg.qr(q.astype(np.float64))
    b = times_t(q.astype(work)).astype(np.float64).T  # (size, d) = q^T (x - mean)
    _, _, vt = np.linalg.svd(b, full_matrices=False)
    return mean, vt[:k]
