"""Synthetic source/target pairs for testing and illustrating optimal transport.

Every generator takes an explicit ``seed`` (an ``int`` or a :class:`numpy.random.Generator`),
draws only from ``numpy.random.default_rng(seed)`` and returns ``(source, target)``, two
C-contiguous ``float64`` arrays of shape ``(n, 2)`` (``(n, d)`` for :func:`shifted_gaussians`).
The first four are the toy data of the paper's Fig. 2; ``moons``, ``circles`` and
``swiss_roll`` reimplement the scikit-learn generators the paper used, without depending on
scikit-learn.

:func:`simulate_perturbation` is different: it returns an :class:`anndata.AnnData` of simulated
single-cell counts (control and perturbed cells) together with each control cell's true
perturbed state, so that predictions can be scored cell by cell. :func:`simulate_screen`
simulates a whole screen the same way: one control population and many perturbations, each
with its own response (for :func:`w1ot.tl.fit_many` at scale).

Examples
--------
>>> from w1ot.datasets import load_toy
>>> source, target = load_toy("moons", n=500, seed=0)
>>> source.shape, target.shape
((500, 2), (500, 2))
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

__all__ = [
    "TOY_DATASETS",
    "bookshelf",
    "checkerboard",
    "circles",
    "eight_gaussians",
    "load_toy",
    "moons",
    "shifted_gaussians",
    "shifted_gaussians_w1",
    "simulate_perturbation",
    "simulate_screen",
    "swiss_roll",
]


# --------------------------------------------------------------------------- validation


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, np.random.SeedSequence) or (
        isinstance(seed, numbers.Integral) and not isinstance(seed, bool)
    ):
        if isinstance(seed, numbers.Integral) and seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        return np.random.default_rng(seed)
    raise TypeError(f"seed must be an int or a numpy.random.Generator, got {type(seed).__name__}")


def _check_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_nonneg(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}") from None
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
    return value


def _check_positive(value, name: str) -> float:
    value = _check_nonneg(value, name)
    if value == 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return value


def _pair(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.ascontiguousarray(source, dtype=np.float64),
        np.ascontiguousarray(target, dtype=np.float64),
    )


# --------------------------------------------------------------------------- generators


def bookshelf(n: int = 1000, *, seed, noise: float = 0.001) -> tuple[np.ndarray, np.ndarray]:
    """Two collinear strips: the 1-D example on which W1 maps are not unique.

    Source: ``x ~ U(0, 1)``, ``y ~ N(0, noise^2)``; target: ``x ~ U(2, 3)``,
    ``y ~ N(0, noise^2)``, all independent. The order-preserving (monotone) map is
    ``x -> x + 2``.

    Parameters
    ----------
    n : int
        Number of points per side.
    seed : int or numpy.random.Generator
        Random seed.
    noise : float
        Standard deviation of the vertical coordinate (the paper uses 0.001).

    Returns
    -------
    source, target : ndarray of shape (n, 2), float64
    """
    n = _check_int(n, "n")
    noise = _check_nonneg(noise, "noise")
    rng = _rng(seed)
    source = np.column_stack([rng.uniform(0.0, 1.0, n), rng.normal(0.0, noise, n)])
    target = np.column_stack([rng.uniform(2.0, 3.0, n), rng.normal(0.0, noise, n)])
    return _pair(source, target)


def _rings(n: int, radii: tuple[float, float], noise: float, rng: np.random.Generator):
    # scikit-learn's make_circles layout: n // 2 points on the outer ring, the rest on the
    # inner ring, angles evenly spaced (endpoint excluded), then shuffled.
    n_outer = n // 2
    n_inner = n - n_outer
    parts, labels = [], []
    for label, (count, radius) in enumerate(((n_inner, radii[0]), (n_outer, radii[1]))):
        angle = np.linspace(0.0, 2.0 * np.pi, count, endpoint=False)
        parts.append(radius * np.column_stack([np.cos(angle), np.sin(angle)]))
        labels.append(np.full(count, label, dtype=np.int64))
    points = np.concatenate(parts) + rng.normal(0.0, noise, (n, 2))
    order = rng.permutation(n)
    return points[order], np.concatenate(labels)[order]


def circles(
    n: int = 1000, *, seed, noise: float = 0.01, return_labels: bool = False
) -> tuple[np.ndarray, ...]:
    """Four concentric circles: source radii 0.5 and 1.5, target radii 1 and 2.

    Each side has ``n - n // 2`` points on its inner ring and ``n // 2`` on its outer ring,
    at evenly spaced angles (as scikit-learn's ``make_circles``), plus isotropic Gaussian
    noise of standard deviation ``noise``; rows are shuffled. The monotone map sends the
    inner source ring (0.5) to the inner target ring (1) and the outer (1.5) to the outer (2).

    Parameters
    ----------
    n : int
        Number of points per side.
    seed : int or numpy.random.Generator
        Random seed.
    noise : float
        Standard deviation of the noise added to every coordinate. (The paper's code scales
        the noise with the ring, x3 on the 1.5 ring and x2 on the 2 ring; here it is the same
        on all rings.)
    return_labels : bool
        Also return the ring of each source point.

    Returns
    -------
    source, target : ndarray of shape (n, 2), float64
    source_ring : ndarray of shape (n,), int64
        Only if ``return_labels``: 0 for the inner source ring (radius 0.5), 1 for the outer
        (radius 1.5). The target ring of a target point is ``norm > 1.5``.
    """
    n = _check_int(n, "n")
    noise = _check_nonneg(noise, "noise")
    rng = _rng(seed)
    source, source_ring = _rings(n, (0.5, 1.5), noise, rng)
    target, _ = _rings(n, (1.0, 2.0), noise, rng)
    source, target = _pair(source, target)
    if return_labels:
        return source, target, source_ring
    return source, target


def swiss_roll(
    n: int = 1000, *, seed, noise: float = 0.01, source_std: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic Gaussian source, 2-D swiss roll target.

    Source: ``N(0, source_std^2 I_2)`` (the paper: ``N(0, 0.25 I)``). Target: scikit-learn's
    ``make_swiss_roll`` reimplemented, ``t = 1.5 pi (1 + 2 u)`` with ``u ~ U(0, 1)``,
    ``(x, z) = (t cos t, t sin t) + N(0, noise^2 I_2)``, returned as ``(x, z) / 4`` (the
    roll's columns 0 and 2; its height, column 1, is dropped). Without noise the target lies
    on the spiral ``r = t / 4``, ``r`` in ``[3 pi / 8, 9 pi / 8]``.

    Parameters
    ----------
    n : int
        Number of points per side.
    seed : int or numpy.random.Generator
        Random seed.
    noise : float
        Standard deviation of the noise added to the roll before the division by 4.
    source_std : float
        Standard deviation of each source coordinate.

    Returns
    -------
    source, target : ndarray of shape (n, 2), float64
    """
    n = _check_int(n, "n")
    noise = _check_nonneg(noise, "noise")
    source_std = _check_nonneg(source_std, "source_std")
    rng = _rng(seed)
    source = rng.normal(0.0, source_std, (n, 2))
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.uniform(0.0, 1.0, n))
    roll = np.column_stack([t * np.cos(t), t * np.sin(t)]) + rng.normal(0.0, noise, (n, 2))
    return _pair(source, roll / 4.0)


def moons(n: int = 1000, *, seed, noise: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles: the upper moon is the source, the lower the target.

    scikit-learn's ``make_moons`` reimplemented, ``n`` points per moon with
    ``t = linspace(0, pi, n)``: source ``(cos t, sin t)``, target
    ``(1 - cos t, 1 - sin t - 0.5)``, each plus ``N(0, noise^2 I_2)``; rows shuffled.

    Parameters
    ----------
    n : int
        Number of points per side.
    seed : int or numpy.random.Generator
        Random seed.
    noise : float
        Standard deviation of the noise added to every coordinate.

    Returns
    -------
    source, target : ndarray of shape (n, 2), float64
    """
    n = _check_int(n, "n")
    noise = _check_nonneg(noise, "noise")
    rng = _rng(seed)
    t = np.linspace(0.0, np.pi, n)
    source = np.column_stack([np.cos(t), np.sin(t)]) + rng.normal(0.0, noise, (n, 2))
    target = np.column_stack([1.0 - np.cos(t), 0.5 - np.sin(t)]) + rng.normal(0.0, noise, (n, 2))
    return _pair(source[rng.permutation(n)], target[rng.permutation(n)])


def eight_gaussians(
    n: int = 1000,
    *,
    seed,
    scale: float = 2.0,
    std: float = 0.1,
    source_std: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Centred Gaussian source, mixture of eight Gaussians on a circle as target.

    Source: ``N(0, source_std^2 I_2)``. Target: each point picks one of 8 centres
    ``scale * (cos(k pi / 4), sin(k pi / 4))``, ``k = 0..7``, uniformly at random and adds
    ``N(0, std^2 I_2)`` (the usual flow/OT benchmark; FFJORD's version is
    ``scale = 2 sqrt 2``, ``std = 0.5 / sqrt 2``).

    Parameters
    ----------
    n : int
        Number of points per side.
    seed : int or numpy.random.Generator
        Random seed.
    scale : float
        Radius of the circle of centres.
    std : float
        Standard deviation of each mixture component.
    source_std : float
        Standard deviation of each source coordinate.

    Returns
    -------
    source, target : ndarray of shape (n, 2), float64
    """
    n = _check_int(n, "n")
    scale = _check_nonneg(scale, "scale")
    std = _check_nonneg(std, "std")
    source_std = _check_nonneg(source_std, "source_std")
    rng = _rng(seed)
    source = rng.normal(0.0, source_std, (n, 2))
    angle = rng.integers(0, 8, n) * (np.pi / 4.0)
    centres = scale * np.column_stack([np.cos(angle), np.sin(angle)])
    return _pair(source, centres + rng.normal(0.0, std, (n, 2)))


def checkerboard(n: int = 1000, *, seed) -> tuple[np.ndarray, np.ndarray]:
    """Standard normal source, 2-D checkerboard target (FFJORD / flow-matching toy data).

    Target: uniform on the 8 of the 16 squares of side 2 tiling ``[-4, 4)^2`` whose indices
    ``floor(x / 2) + floor(y / 2)`` are even (each point is one of FFJORD's
    ``x1 ~ U(-2, 2)``, ``x2 ~ U(0, 1) - 2 b + (floor(x1) mod 2)``, ``b ~ Bernoulli(1/2)``,
    scaled by 2). Source: ``N(0, I_2)``.

    Parameters
    ----------
    n : int
        Number of points per side.
    seed : int or numpy.random.Generator
        Random seed.

    Returns
    -------
    source, target : ndarray of shape (n, 2), float64
    """
    n = _check_int(n, "n")
    rng = _rng(seed)
    source = rng.standard_normal((n, 2))
    x1 = rng.uniform(-2.0, 2.0, n)
    x2 = rng.uniform(0.0, 1.0, n) - 2.0 * rng.integers(0, 2, n) + np.floor(x1) % 2
    return _pair(source, 2.0 * np.column_stack([x1, x2]))


def _shift_vector(shift, d: int) -> np.ndarray:
    arr = np.asarray(shift, dtype=np.float64)
    if arr.ndim == 0:
        vector = np.full(d, float(arr) / np.sqrt(d))
    elif arr.shape == (d,):
        vector = arr.copy()
    else:
        raise ValueError(
            f"shift must be a scalar or a vector of length d={d}, got shape {arr.shape}"
        )
    if not np.all(np.isfinite(vector)):
        raise ValueError("shift must be finite")
    return vector


def shifted_gaussians_w1(shift, d: int | None = None) -> float:
    """Exact W1 distance between the two distributions of :func:`shifted_gaussians`.

    Both are ``N(., cov_scale I_d)`` and differ by a translation, so ``W1 = ||shift||``
    (the translation is optimal: ``x . u`` with ``u = shift / ||shift||`` is 1-Lipschitz and
    its expectations differ by ``||shift||``), whatever ``cov_scale``.

    Parameters
    ----------
    shift : float or array_like of shape (d,)
        As in :func:`shifted_gaussians`; a scalar gives ``|shift|``.
    d : int, optional
        Dimension; if given, a vector ``shift`` must have length ``d``.

    Returns
    -------
    float
    """
    arr = np.asarray(shift, dtype=np.float64)
    if d is None:
        d = 1 if arr.ndim == 0 else arr.shape[-1]
    d = _check_int(d, "d")
    return float(np.linalg.norm(_shift_vector(shift, d)))


def shifted_gaussians(
    n: int = 1000,
    d: int = 2,
    shift=1.0,
    *,
    seed,
    cov_scale: float = 1.0,
    return_w1: bool = False,
) -> tuple:
    """Two Gaussians differing by a translation, with a known W1 distance.

    Source ``N(0, cov_scale I_d)``, target ``N(m, cov_scale I_d)`` where ``m = shift`` for a
    length-``d`` vector, and ``m = shift * (1, ..., 1) / sqrt(d)`` for a scalar (so
    ``||m|| = |shift|``). The exact W1 distance is ``||m||`` (:func:`shifted_gaussians_w1`).

    Parameters
    ----------
    n : int
        Number of points per side.
    d : int
        Dimension.
    shift : float or array_like of shape (d,)
        Length of the shift along the diagonal, or the mean of the target.
    seed : int or numpy.random.Generator
        Random seed.
    cov_scale : float
        Variance of every coordinate, on both sides (must be positive).
    return_w1 : bool
        Also return the exact W1 distance.

    Returns
    -------
    source, target : ndarray of shape (n, d), float64
    w1 : float
        Only if ``return_w1``: ``||m||``.
    """
    n = _check_int(n, "n")
    d = _check_int(d, "d")
    cov_scale = _check_positive(cov_scale, "cov_scale")
    mean = _shift_vector(shift, d)
    rng = _rng(seed)
    std = np.sqrt(cov_scale)
    source = std * rng.standard_normal((n, d))
    target = mean + std * rng.standard_normal((n, d))
    source, target = _pair(source, target)
    if return_w1:
        return source, target, float(np.linalg.norm(mean))
    return source, target


# --------------------------------------------------------------------------- registry

TOY_DATASETS: dict[str, Callable[..., tuple]] = {
    "bookshelf": bookshelf,
    "circles": circles,
    "swiss_roll": swiss_roll,
    "moons": moons,
    "eight_gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "shifted_gaussians": shifted_gaussians,
}
"""Name -> generator for every dataset in this module."""


def load_toy(name: str, n: int = 1000, *, seed, **kwargs) -> tuple:
    """Generate the toy dataset ``name`` (a key of :data:`TOY_DATASETS`).

    Parameters
    ----------
    name : str
        Dataset name, e.g. ``"moons"``.
    n : int
        Number of points per side.
    seed : int or numpy.random.Generator
        Random seed.
    **kwargs
        Passed to the generator (e.g. ``noise=0.05``).

    Returns
    -------
    tuple
        What the generator returns, normally ``(source, target)``.

    Raises
    ------
    ValueError
        If ``name`` is not a known dataset.
    """
    try:
        generator = TOY_DATASETS[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(TOY_DATASETS))
        raise ValueError(f"unknown toy dataset {name!r}; valid names: {valid}") from None
    return generator(n, seed=seed, **kwargs)


# --------------------------------------------------------------------------- single-cell simulator

_U_EPS = 1e-12  # the uniforms of the NB inversion are kept inside [eps, 1 - eps]
_ACTIVATION_GAIN = 2.0  # slope of the response's sigmoid in the latent state
_DISPERSION_SPREAD = 0.5  # sd of the per-gene log dispersion around log(dispersion)
_AMPLITUDE = (1.5, 3.5)  # range of the response genes' log fold changes at full activation
_SHIFT_SD = 1.0  # sd of the cell-type-dependent log fold change shift
_STRENGTH = (1.0, 0.1)  # strongest and weakest response strengths of the cell types


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def _check_fraction(value, name: str) -> float:
    value = _check_positive(value, name)
    if value > 1:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return value


def _nb_quantile_loop(u, mean, size, out):
    """Inverse NB CDF by summing the pmf upwards from 0 (compiled by numba on first use).

    ``u`` and ``mean`` are (cells x genes), ``size = 1 / dispersion`` per gene. Entries the
    sum cannot settle quickly or accurately (mean above 1e4, pmf(0) below ~1e-304, or no
    answer by ``mean + 40 sd + 100``) are set to -1 for the caller to hand to scipy.
    """
    n, g = u.shape
    for i in range(n):
        for j in range(g):
            r = size[j]
            m = mean[i, j]
            log_p0 = -r * math.log1p(m / r)
            out[i, j] = -1.0
            if m > 1e4 or log_p0 < -700.0:
                continue
            q = m / (r + m)
            k_max = m + 40.0 * math.sqrt(m + m * m / r) + 100.0
            target = u[i, j]
            pmf = math.exp(log_p0)
            cdf = pmf
            k = 0
            while cdf < target and k <= k_max:
                pmf *= (k + r) / (k + 1.0) * q
                k += 1
                cdf += pmf
            if cdf >= target:
                out[i, j] = k
    return out


_NB_KERNEL = None


def _nb_quantile(u: np.ndarray, mean: np.ndarray, dispersion: np.ndarray) -> np.ndarray:
    """Negative binomial quantiles: the smallest k with ``P(K <= k) >= u`` for K of mean
    ``mean`` and variance ``mean + dispersion * mean**2`` (dispersion per gene), as
    ``scipy.stats.nbinom.ppf`` but over ten times faster."""
    global _NB_KERNEL
    if _NB_KERNEL is None:
        import numba

        _NB_KERNEL = numba.njit(cache=False, nogil=True)(_nb_quantile_loop)
    u = np.ascontiguousarray(u, dtype=np.float64)
    mean = np.ascontiguousarray(mean, dtype=np.float64)
    size = np.ascontiguousarray(1.0 / np.asarray(dispersion, dtype=np.float64))
    out = _NB_KERNEL(u, mean, size, np.empty(u.shape))
    rows, cols = np.nonzero(out < 0)
    if rows.size:
        from scipy.stats import nbinom

        r = size[cols]
        out[rows, cols] = nbinom.ppf(u[rows, cols], r, r / (r + mean[rows, cols]))
    return out


class _Programme(NamedTuple):
    """The control population: gene programmes shared by every condition."""

    base: np.ndarray  # (G,) log-expression shared by all types
    type_offset: np.ndarray  # (K, G)
    loadings: np.ndarray  # (n_latent, G)
    dispersion: np.ndarray  # (G,) NB dispersion per gene
    proportions: np.ndarray  # (K,) cell-type proportions


class _Response(NamedTuple):
    """One perturbation: its response genes and how each cell type responds."""

    genes: np.ndarray  # (R,) sorted indices of the response genes
    sign: np.ndarray  # (R,) +1 induced, -1 repressed
    amplitude: np.ndarray  # (R,)
    direction: np.ndarray  # (n_latent,) unit latent direction of the activation
    strength: np.ndarray  # (K,)
    weight: np.ndarray  # (K, R)
    bias: np.ndarray  # (K,)
    shift: np.ndarray  # (K, R)


def _draw_programme(rng, K, G, n_latent, latent_scale, type_scale, dispersion) -> _Programme:
    base = rng.normal(0.0, 1.0, G)
    type_offset = type_scale * rng.normal(0.0, 1.0, (K, G))
    loadings = latent_scale * rng.normal(0.0, 1.0, (n_latent, G))
    gene_dispersion = dispersion * np.exp(_DISPERSION_SPREAD * rng.normal(0.0, 1.0, G))
    proportions = rng.dirichlet(np.full(K, 5.0))
    return _Programme(base, type_offset, loadings, gene_dispersion, proportions)


def _draw_response(rng, K, G, n_latent, de_fraction, cell_type_specific) -> _Response:
    # both the type-specific and the shared variant are drawn, so the flag changes no draw
    n_response = min(G, max(1, round(de_fraction * G)))
    genes = np.sort(rng.choice(G, size=n_response, replace=False))
    sign = np.ones(n_response)
    sign[rng.permutation(n_response)[: n_response // 3]] = -1.0
    amplitude = rng.uniform(*_AMPLITUDE, n_response)
    direction = rng.normal(0.0, 1.0, n_latent)
    direction /= max(float(np.linalg.norm(direction)), 1e-12)
    strength_k = np.linspace(*_STRENGTH, K)[rng.permutation(K)]
    weight_k = rng.uniform(0.2, 1.0, (K, n_response))
    bias_k = rng.uniform(-1.5, 1.5, K)
    shift_k = rng.normal(0.0, _SHIFT_SD, (K, n_response))
    weight_1 = rng.uniform(0.2, 1.0, n_response)
    shift_1 = rng.normal(0.0, _SHIFT_SD, n_response)
    if cell_type_specific:
        return _Response(genes, sign, amplitude, direction, strength_k, weight_k, bias_k, shift_k)
    return _Response(
        genes,
        sign,
        amplitude,
        direction,
        np.ones(K),
        np.broadcast_to(weight_1, (K, n_response)),
        np.zeros(K),
        np.broadcast_to(shift_1, (K, n_response)),
    )


def _cell_sampler(rng, programme: _Programme, library_size: float, library_spread: float):
    """``cells(n, every_type, response, effect)`` draws ``n`` cells of the control
    distribution: their types, NB uniforms, expected counts, and the expected counts of their
    response genes under ``response`` scaled by ``effect``."""
    K, G = programme.type_offset.shape
    n_latent = programme.loadings.shape[0]

    def cells(n: int, every_type: bool, response: _Response, effect: float):
        types = rng.choice(K, size=n, p=programme.proportions)
        if every_type:
            types[:K] = np.arange(K)
            types = types[rng.permutation(n)]
        z = rng.normal(0.0, 1.0, (n, n_latent))
        lib = library_size * np.exp(library_spread * rng.normal(0.0, 1.0, n))
        u = np.clip(rng.random((n, G)), _U_EPS, 1.0 - _U_EPS)
        eta = programme.base + programme.type_offset[types] + z @ programme.loadings
        eta -= eta.max(axis=1, keepdims=True)
        share = np.exp(eta)
        share /= share.sum(axis=1, keepdims=True)
        mean = lib[:, None] * share
        r = response
        activation = 1.0 / (1.0 + np.exp(-(_ACTIVATION_GAIN * (z @ r.direction) + r.bias[types])))
        delta = (
            effect
            * r.strength[types, None]
            * (r.sign * r.amplitude * r.weight[types] * activation[:, None] + r.shift[types])
        )
        with np.errstate(over="ignore"):  # an overflow is reported just below
            mean_perturbed = mean[:, r.genes] * np.exp(delta)
        if not (np.isfinite(mean).all() and np.isfinite(mean_perturbed).all()):
            raise ValueError(
                "the expected counts overflow: reduce effect, type_scale, latent_scale or "
                "library_size"
            )
        return types, u, mean, mean_perturbed

    return cells


def simulate_perturbation(
    n_control: int = 2000,
    n_perturbed: int = 2000,
    n_genes: int = 300,
    n_cell_types: int = 4,
    *,
    seed,
    perturbation: str = "stimulated",
    effect: float = 1.0,
    cell_type_specific: bool = True,
    sparse: bool = False,
    de_fraction: float = 0.2,
    n_latent: int = 3,
    latent_scale: float = 0.5,
    type_scale: float = 1.0,
    library_size: float = 1500.0,
    library_spread: float = 0.4,
    dispersion: float = 0.3,
    target_sum: float = 1e4,
):
    """Simulated scRNA-seq counts of a perturbation experiment whose per-cell truth is known.

    **Control cells.** Each of ``n_cell_types`` types has its own gene programme, a
    log-expression profile ``base + offset_k`` (``base ~ N(0, 1)`` per gene shared by all
    types, ``offset_k ~ N(0, type_scale^2)`` per type and gene). Within a type, cells vary
    continuously along a latent state ``z ~ N(0, I_{n_latent})`` with gene loadings
    ``W ~ N(0, latent_scale^2)``, so a cell's log-expression is
    ``eta = base + offset_k + z W`` and its expression shares are ``softmax(eta)``. Its
    library size ``s`` is log-normal (median ``library_size``, log-scale sd
    ``library_spread``); the expected count of gene g is ``mu_g = s softmax(eta)_g``. Counts are
    negative binomial with mean ``mu_g`` and variance ``mu_g + phi_g mu_g^2``, the per-gene
    dispersions ``phi_g`` log-normal around ``dispersion`` (median; log-scale sd 0.5). Cell
    types are drawn with Dirichlet(5, ..., 5) proportions (every type occurs among the
    control cells).

    **Perturbation.** ``round(de_fraction * n_genes)`` (at least 1) response genes, a third of
    them down-regulated, change their expected counts by the factor ``exp(delta_g)``::

        delta_g = effect * r_k * (sign_g * a_g * w_kg * sigmoid(2 z.v + b_k) + c_kg)

    a saturating induction (``sign_g = +1`` for induced and -1 for repressed genes, log fold
    change ``a_g ~ U(1.5, 3.5)`` at full activation, a latent direction ``v``) plus a
    cell-type-dependent shift ``c_kg ~ N(0, 1)``. With ``cell_type_specific=True`` the
    response strength ``r_k`` runs from 1 (strong responder) down to 0.1 (barely responds)
    over the types in random order, and the gene weights ``w_kg ~ U(0.2, 1)``, activation
    offsets ``b_k ~ U(-1.5, 1.5)`` and shifts ``c_kg`` are drawn per type, so that a single
    global mean shift is wrong for every type. With ``cell_type_specific=False`` all types
    share ``r = 1``, ``b = 0`` and one set of ``w_g`` and ``c_g``. The other genes keep their
    expected counts (the perturbed cell's total count changes accordingly). ``effect=0`` means
    no perturbation.

    **Populations.** The control cells and the perturbed cells are two independent (unpaired)
    samples of cells from the control distribution; the perturbed sample is then perturbed.
    Each control cell also gets its counterfactual, the same cell (type, latent state, library
    size) perturbed, with common random numbers: each count is the NB quantile of one uniform
    ``U`` per cell and gene, the same ``U`` for the cell's control and perturbed mean, so the
    counterfactual keeps the cell's own sampling noise (and the genes the perturbation does not
    change keep their counts exactly).

    All random quantities are drawn whatever the flags, in the same order, so one seed gives
    the same control cells for any ``effect``, ``cell_type_specific`` and ``sparse``.

    Parameters
    ----------
    n_control, n_perturbed : int
        Numbers of control and perturbed cells (>= 1).
    n_genes : int
        Number of genes (>= 2).
    n_cell_types : int
        Number of cell types, between 1 and ``n_control``.
    seed : int or numpy.random.Generator
        Random seed.
    perturbation : str
        Name of the perturbed condition (not ``"control"``).
    effect : float
        Scale of the perturbation (finite, >= 0; 0 is no perturbation).
    cell_type_specific : bool
        Whether the response depends on the cell type.
    sparse : bool
        Store ``X`` and ``layers["counts"]`` as scipy.sparse CSR matrices.
    de_fraction : float
        Fraction of the genes that respond, in (0, 1].
    n_latent : int
        Dimension of the within-type latent state (>= 1).
    latent_scale : float
        Standard deviation of the latent loadings (>= 0; 0: no within-type variation).
    type_scale : float
        Standard deviation of the cell types' log-expression offsets (>= 0).
    library_size : float
        Median library size (expected total count of a control cell, > 0).
    library_spread : float
        Standard deviation of the log library size (>= 0).
    dispersion : float
        Median negative binomial dispersion ``phi`` (> 0; variance ``mu + phi mu^2``).
    target_sum : float
        Total count each cell is scaled to before ``log1p`` (> 0).

    Returns
    -------
    anndata.AnnData
        ``n_control + n_perturbed`` cells (control cells first) by ``n_genes`` genes:

        - ``X``: log-normalised counts, ``log1p(target_sum * counts / total)``
          (:func:`w1ot.preprocessing.normalize_log1p`), float32; CSR if ``sparse``.
        - ``layers["counts"]``: the raw counts (float32 integers; CSR if ``sparse``).
        - ``layers["truth"]``: dense float32, the perturbed state of every cell in the
          representation of ``X``: for a control cell, its counterfactual counts normalised by
          their own total and log1p-transformed exactly as ``X`` is made; for a perturbed cell,
          its own row of ``X`` (it is already perturbed).
        - ``obs``: ``condition`` (categorical, ``"control"`` and ``perturbation``),
          ``cell_type`` (categorical, ``"type_0"``, ...), ``library_size`` (total counts, int);
          obs names ``"cell_0000"``, ...
        - ``var``: names ``"gene_000"``, ...; ``response`` (bool), the genes the perturbation
          changes.
        - ``uns["simulation"]``: the parameters (JSON-serialisable), the number of response
          genes and the response strength ``r_k`` of each type.

    Raises
    ------
    ValueError, TypeError
        For an invalid argument (the message names it).
    ImportError
        If anndata is not installed (``pip install 'w1ot[anndata]'``).

    Examples
    --------
    >>> from w1ot.datasets import simulate_perturbation
    >>> adata = simulate_perturbation(500, 500, 100, 3, seed=0)  # doctest: +SKIP
    >>> control = adata[adata.obs["condition"] == "control"]  # doctest: +SKIP
    >>> control.layers["truth"].shape  # doctest: +SKIP
    (500, 100)
    """
    n_control = _check_int(n_control, "n_control")
    n_perturbed = _check_int(n_perturbed, "n_perturbed")
    n_genes = _check_int(n_genes, "n_genes", minimum=2)
    n_cell_types = _check_int(n_cell_types, "n_cell_types")
    if n_cell_types > n_control:
        raise ValueError(
            f"n_cell_types must be <= n_control ({n_control}) so that every type occurs, "
            f"got {n_cell_types}"
        )
    if not isinstance(perturbation, str):
        raise TypeError(f"perturbation must be a str, got {type(perturbation).__name__}")
    if not perturbation or perturbation == "control":
        raise ValueError(
            f"perturbation must be a non-empty name other than 'control', got {perturbation!r}"
        )
    effect = _check_nonneg(effect, "effect")
    cell_type_specific = _check_bool(cell_type_specific, "cell_type_specific")
    sparse = _check_bool(sparse, "sparse")
    de_fraction = _check_fraction(de_fraction, "de_fraction")
    n_latent = _check_int(n_latent, "n_latent")
    latent_scale = _check_nonneg(latent_scale, "latent_scale")
    type_scale = _check_nonneg(type_scale, "type_scale")
    library_size = _check_positive(library_size, "library_size")
    library_spread = _check_nonneg(library_spread, "library_spread")
    dispersion = _check_positive(dispersion, "dispersion")
    target_sum = _check_positive(target_sum, "target_sum")
    rng = _rng(seed)
    try:
        import anndata
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "simulate_perturbation needs anndata and pandas: pip install 'w1ot[anndata]'"
        ) from exc
    import scipy.sparse

    from w1ot.preprocessing import normalize_log1p

    K, G = n_cell_types, n_genes
    programme = _draw_programme(rng, K, G, n_latent, latent_scale, type_scale, dispersion)
    resp = _draw_response(rng, K, G, n_latent, de_fraction, cell_type_specific)
    response, strength = resp.genes, resp.strength
    gene_dispersion = programme.dispersion
    cells = _cell_sampler(rng, programme, library_size, library_spread)
    types_c, u_c, mean_c, pert_c = cells(n_control, True, resp, effect)
    types_p, u_p, mean_p, pert_p = cells(n_perturbed, False, resp, effect)

    counts_c = _nb_quantile(u_c, mean_c, gene_dispersion)
    counterfactual = counts_c.copy()
    counterfactual[:, response] = _nb_quantile(u_c[:, response], pert_c, gene_dispersion[response])
    mean_p[:, response] = pert_p
    counts_p = _nb_quantile(u_p, mean_p, gene_dispersion)
    counts = np.concatenate([counts_c, counts_p]).astype(np.float32)

    x = normalize_log1p(counts, target_sum=target_sum).astype(np.float32)
    truth = np.concatenate(
        [normalize_log1p(counterfactual, target_sum=target_sum).astype(np.float32), x[n_control:]]
    )
    if sparse:
        x = scipy.sparse.csr_matrix(x)
        counts_layer = scipy.sparse.csr_matrix(counts)
    else:
        counts_layer = counts

    n = n_control + n_perturbed
    type_names = [f"type_{k}" for k in range(K)]
    obs = pd.DataFrame(
        {
            "condition": pd.Categorical(
                ["control"] * n_control + [perturbation] * n_perturbed,
                categories=["control", perturbation],
            ),
            "cell_type": pd.Categorical.from_codes(
                np.concatenate([types_c, types_p]), categories=type_names
            ),
            "library_size": counts.sum(axis=1, dtype=np.float64).round().astype(np.int64),
        },
        index=pd.Index([f"cell_{i:0{max(4, len(str(n - 1)))}d}" for i in range(n)]),
    )
    is_response = np.zeros(G, dtype=bool)
    is_response[response] = True
    var = pd.DataFrame(
        {"response": is_response},
        index=pd.Index([f"gene_{g:0{max(3, len(str(G - 1)))}d}" for g in range(G)]),
    )
    seed_used = int(seed) if isinstance(seed, numbers.Integral) else type(seed).__name__
    simulation = {
        "n_control": n_control,
        "n_perturbed": n_perturbed,
        "n_genes": n_genes,
        "n_cell_types": n_cell_types,
        "seed": seed_used,
        "perturbation": perturbation,
        "effect": effect,
        "cell_type_specific": cell_type_specific,
        "sparse": sparse,
        "de_fraction": de_fraction,
        "n_latent": n_latent,
        "latent_scale": latent_scale,
        "type_scale": type_scale,
        "library_size": library_size,
        "library_spread": library_spread,
        "dispersion": dispersion,
        "target_sum": target_sum,
        "n_response_genes": int(response.size),
        "response_strength": {name: float(r) for name, r in zip(type_names, strength, strict=True)},
    }
    return anndata.AnnData(
        X=x,
        obs=obs,
        var=var,
        layers={"counts": counts_layer, "truth": truth},
        uns={"simulation": simulation},
    )


def _check_effect_range(effect) -> tuple[float, float]:
    if isinstance(effect, (tuple, list)):
        if len(effect) != 2:
            raise ValueError(f"effect must be a number or a (low, high) pair, got {effect!r}")
        low, high = (_check_nonneg(e, "effect") for e in effect)
        if low > high:
            raise ValueError(f"effect must be a (low, high) pair with low <= high, got {effect!r}")
        return low, high
    e = _check_nonneg(effect, "effect")
    return e, e


def simulate_screen(
    n_perturbations: int = 188,
    n_control: int = 5000,
    n_per_perturbation: int = 2000,
    n_genes: int = 300,
    n_cell_types: int = 4,
    *,
    seed,
    effect=(0.2, 1.2),
    cell_type_specific: bool = True,
    sparse: bool = False,
    de_fraction: float = 0.2,
    n_latent: int = 3,
    latent_scale: float = 0.5,
    type_scale: float = 1.0,
    library_size: float = 1500.0,
    library_spread: float = 0.4,
    dispersion: float = 0.3,
    target_sum: float = 1e4,
):
    """A simulated perturbation screen: one control population and ``n_perturbations``
    perturbations of it, each with its own response (sciplex3 has 188 drugs).

    The control population is that of :func:`simulate_perturbation` (the same gene
    programmes, cell types, latent states, library sizes and negative binomial counts; see
    there). Every perturbation draws its own response genes, signs, amplitudes, latent
    direction and per-type response strengths, and its own strength ``effect_p ~ U(low,
    high)`` for ``effect=(low, high)`` (a number: the same for all), so a screen has weak and
    strong perturbations. Each perturbation's cells are an independent sample of the control
    distribution, perturbed.

    Unlike :func:`simulate_perturbation` there is no ``truth`` layer: the counterfactual of
    every control cell under every perturbation would be ``n_perturbations`` times the size of
    the data. Cells are generated one perturbation at a time into preallocated arrays, so the
    peak memory is about that of the result.

    Parameters
    ----------
    n_perturbations : int
        Number of perturbations (>= 1).
    n_control, n_per_perturbation : int
        Control cells, and cells of each perturbation (>= 1).
    effect : float or (float, float)
        Perturbation strength, or the range it is drawn from per perturbation (>= 0).
    n_genes, n_cell_types, seed, cell_type_specific, sparse, de_fraction, n_latent,
    latent_scale, type_scale, library_size, library_spread, dispersion, target_sum
        As in :func:`simulate_perturbation`.

    Returns
    -------
    anndata.AnnData
        ``n_control + n_perturbations * n_per_perturbation`` cells (control cells first, then
        each perturbation's in turn) by ``n_genes`` genes: ``X`` (log-normalised, float32),
        ``layers["counts"]``; ``obs["condition"]`` (categorical: ``"control"``, ``"pert_000"``,
        ...), ``obs["cell_type"]``, ``obs["library_size"]``; ``varm["response"]`` (a genes x
        perturbations boolean table of the genes each perturbation changes) and
        ``uns["simulation"]`` (the parameters and each perturbation's ``effect``).

    Examples
    --------
    >>> from w1ot.datasets import simulate_screen
    >>> adata = simulate_screen(3, 400, 200, 50, seed=0)  # doctest: +SKIP
    >>> adata.obs["condition"].value_counts()["pert_000"]  # doctest: +SKIP
    200
    """
    n_perturbations = _check_int(n_perturbations, "n_perturbations")
    n_control = _check_int(n_control, "n_control")
    n_per = _check_int(n_per_perturbation, "n_per_perturbation")
    n_genes = _check_int(n_genes, "n_genes", minimum=2)
    n_cell_types = _check_int(n_cell_types, "n_cell_types")
    if n_cell_types > n_control:
        raise ValueError(
            f"n_cell_types must be <= n_control ({n_control}) so that every type occurs, "
            f"got {n_cell_types}"
        )
    effect_range = _check_effect_range(effect)
    cell_type_specific = _check_bool(cell_type_specific, "cell_type_specific")
    sparse = _check_bool(sparse, "sparse")
    de_fraction = _check_fraction(de_fraction, "de_fraction")
    n_latent = _check_int(n_latent, "n_latent")
    latent_scale = _check_nonneg(latent_scale, "latent_scale")
    type_scale = _check_nonneg(type_scale, "type_scale")
    library_size = _check_positive(library_size, "library_size")
    library_spread = _check_nonneg(library_spread, "library_spread")
    dispersion = _check_positive(dispersion, "dispersion")
    target_sum = _check_positive(target_sum, "target_sum")
    rng = _rng(seed)
    try:
        import anndata
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "simulate_screen needs anndata and pandas: pip install 'w1ot[anndata]'"
        ) from exc
    import scipy.sparse

    from w1ot.preprocessing import normalize_log1p

    K, G, P = n_cell_types, n_genes, n_perturbations
    programme = _draw_programme(rng, K, G, n_latent, latent_scale, type_scale, dispersion)
    responses = [
        _draw_response(rng, K, G, n_latent, de_fraction, cell_type_specific) for _ in range(P)
    ]
    effects = (
        rng.uniform(*effect_range, P)
        if effect_range[0] < effect_range[1]
        else np.full(P, effect_range[0])
    )
    cells = _cell_sampler(rng, programme, library_size, library_spread)
    names = [f"pert_{p:0{max(3, len(str(P - 1)))}d}" for p in range(P)]

    n = n_control + P * n_per
    blocks_x, blocks_counts = [], []
    if not sparse:
        x_all = np.empty((n, G), dtype=np.float32)
        counts_all = np.empty((n, G), dtype=np.float32)
    types_all = np.empty(n, dtype=np.int64)
    library = np.empty(n, dtype=np.int64)

    def store(lo: int, types: np.ndarray, counts: np.ndarray) -> None:
        counts = counts.astype(np.float32)
        x = normalize_log1p(counts, target_sum=target_sum).astype(np.float32)
        types_all[lo : lo + len(types)] = types
        library[lo : lo + len(types)] = counts.sum(axis=1, dtype=np.float64).round()
        if sparse:
            blocks_x.append(scipy.sparse.csr_matrix(x))
            blocks_counts.append(scipy.sparse.csr_matrix(counts))
        else:
            x_all[lo : lo + len(types)] = x
            counts_all[lo : lo + len(types)] = counts

    # the control cells' response draws are made (and unused) so that every block of cells
    # takes the same draws whatever the perturbation
    types_c, u_c, mean_c, _ = cells(n_control, True, responses[0], 0.0)
    store(0, types_c, _nb_quantile(u_c, mean_c, programme.dispersion))
    for p, (resp, eff) in enumerate(zip(responses, effects, strict=True)):
        types_p, u_p, mean_p, pert_p = cells(n_per, False, resp, float(eff))
        mean_p[:, resp.genes] = pert_p
        store(n_control + p * n_per, types_p, _nb_quantile(u_p, mean_p, programme.dispersion))
    if sparse:
        x_all = scipy.sparse.vstack(blocks_x, format="csr")
        counts_all = scipy.sparse.vstack(blocks_counts, format="csr")

    type_names = [f"type_{k}" for k in range(K)]
    conditions = np.repeat(np.arange(P + 1), [n_control] + [n_per] * P)
    obs = pd.DataFrame(
        {
            "condition": pd.Categorical.from_codes(conditions, categories=["control", *names]),
            "cell_type": pd.Categorical.from_codes(types_all, categories=type_names),
            "library_size": library,
        },
        index=pd.Index([f"cell_{i:0{max(4, len(str(n - 1)))}d}" for i in range(n)]),
    )
    gene_names = pd.Index([f"gene_{g:0{max(3, len(str(G - 1)))}d}" for g in range(G)])
    response = np.zeros((G, P), dtype=bool)
    for p, resp in enumerate(responses):
        response[resp.genes, p] = True
    seed_used = int(seed) if isinstance(seed, numbers.Integral) else type(seed).__name__
    simulation = {
        "n_perturbations": P,
        "n_control": n_control,
        "n_per_perturbation": n_per,
        "n_genes": n_genes,
        "n_cell_types": n_cell_types,
        "seed": seed_used,
        "effect": list(effect_range),
        "cell_type_specific": cell_type_specific,
        "sparse": sparse,
        "de_fraction": de_fraction,
        "n_latent": n_latent,
        "latent_scale": latent_scale,
        "type_scale": type_scale,
        "library_size": library_size,
        "library_spread": library_spread,
        "dispersion": dispersion,
        "target_sum": target_sum,
        "perturbation_effect": {name: float(e) for name, e in zip(names, effects, strict=True)},
    }
    return anndata.AnnData(
        X=x_all,
        obs=obs,
        var=pd.DataFrame(index=gene_names),
        varm={"response": pd.DataFrame(response, index=gene_names, columns=names)},
        layers={"counts": counts_all},
        uns={"simulation": simulation},
    )
