"""Synthetic source/target pairs for testing and illustrating optimal transport.

Every generator takes an explicit ``seed`` (an ``int`` or a :class:`numpy.random.Generator`),
draws only from ``numpy.random.default_rng(seed)`` and returns ``(source, target)``, two
C-contiguous ``float64`` arrays of shape ``(n, 2)`` (``(n, d)`` for :func:`shifted_gaussians`).
The first four are the toy data of the paper's Fig. 2; ``moons``, ``circles`` and
``swiss_roll`` reimplement the scikit-learn generators the paper used, without depending on
scikit-learn.

Examples
--------
>>> from w1ot.datasets import load_toy
>>> source, target = load_toy("moons", n=500, seed=0)
>>> source.shape, target.shape
((500, 2), (500, 2))
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

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
