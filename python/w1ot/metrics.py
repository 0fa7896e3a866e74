"""Evaluation metrics for perturbation prediction, defined as in the paper and CellOT.

All metrics compare a predicted population ``pred`` (cells x features) with an observed one
``true``. Cell counts may differ; the evaluation protocol subsamples both to the same number of
cells beforehand. Inputs are converted to C-contiguous float64 arrays and checked (2-D, non-empty,
finite, numeric, matching feature counts).

- :func:`r2_means`, :func:`l2_means`: squared Pearson r / Euclidean distance between the
  per-feature mean vectors.
- :func:`mmd`: biased RBF MMD^2 averaged over 50 bandwidths (numba, tiled, O(d) memory per
  thread; 10,000 x 10,000 cells never materialise a kernel matrix).
- :func:`energy_distance`: energy distance (V-statistic), same numba kernel.
- :func:`wasserstein1`: exact W1 between two samples with POT (optional dependency).
- :func:`logfc_error`: error of the predicted log fold changes (paper, Suppl. Fig. S3).
- :func:`top_de_genes`: Welch t-test gene ranking as scanpy's ``rank_genes_groups``.
- :func:`paired_error`: mean per-cell distance to a known counterfactual (simulated data).
- :func:`compute_metrics`: the dictionary used by the evaluation harness.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from w1ot._validation import as_cells

__all__ = [
    "DEFAULT_GAMMAS",
    "compute_metrics",
    "energy_distance",
    "l2_means",
    "logfc_error",
    "mmd",
    "paired_error",
    "r2_means",
    "top_de_genes",
    "wasserstein1",
]

#: The 50 RBF bandwidths of the paper / CellOT: ``np.logspace(1, -3, 50)`` (10 down to 1e-3).
DEFAULT_GAMMAS = np.logspace(1, -3, 50)
DEFAULT_GAMMAS.setflags(write=False)

# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------


def _as_2d(a, name: str) -> np.ndarray:
    """``a`` as a C-contiguous, finite, non-empty 2-D float64 array (cells x features)."""
    return as_cells(a, name, dtype=np.float64)


def _same_features(**arrays: np.ndarray) -> None:
    names = list(arrays)
    d0 = arrays[names[0]].shape[1]
    for nm in names[1:]:
        d = arrays[nm].shape[1]
        if d != d0:
            raise ValueError(
                f"{names[0]} and {nm} have different numbers of features ({d0} vs {d})"
            )


def _as_gammas(gammas) -> np.ndarray:
    if gammas is None:
        return np.array(DEFAULT_GAMMAS, dtype=np.float64)
    try:
        g = np.asarray(gammas, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise TypeError("gammas must be a sequence of positive floats") from exc
    if g.size == 0:
        raise ValueError("gammas is empty")
    if not (np.isfinite(g).all() and (g > 0).all()):
        raise ValueError("gammas must be finite and > 0")
    return np.ascontiguousarray(g)


# --------------------------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------------------------
#
# The kernels are cached on disk (``cache=True``): compiling them takes seconds, so without a
# cache every new process paid that on its first ``mmd`` / ``energy_distance`` call. numba
# stores the cache in ``$NUMBA_CACHE_DIR`` if set, else in the ``__pycache__`` next to this file
# if writable, else in the user-wide cache directory (``~/.cache/numba``), so a read-only
# install in site-packages still caches. The ``@intrinsic`` helpers below emit plain LLVM
# instructions (bit casts, ``llvm.fma``) and no runtime addresses, so the functions using them
# are cacheable. If no cache location is writable at all, numba refuses ``cache=True`` at
# decoration time; ``_njit`` then falls back to compiling in memory.


def _njit(**options):
    """``numba.njit(cache=True, **options)``, or without the cache if no cache dir is writable."""

    def decorate(func):
        try:
            return numba.njit(cache=True, **options)(func)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return numba.njit(cache=False, **options)(func)

    return decorate


@intrinsic
def _f64_bits(typingctx, v):
    """Reinterpret a float64 as int64 (bit cast)."""
    if isinstance(v, types.Float):
        return types.int64(types.float64), lambda c, b, s, a: b.bitcast(a[0], ir.IntType(64))
    return None


@intrinsic
def _bits_f64(typingctx, v):
    """Reinterpret an int64 as float64 (bit cast)."""
    if isinstance(v, types.Integer):
        return types.float64(types.int64), lambda c, b, s, a: b.bitcast(a[0], ir.DoubleType())
    return None


@intrinsic
def _fma(typingctx, a, b, c):
    """Fused multiply-add a * b + c with a single rounding (llvm.fma; vectorises to vfmadd)."""
    if all(isinstance(t, types.Float) for t in (a, b, c)):
        sig = types.float64(types.float64, types.float64, types.float64)
        return sig, lambda ctx, builder, s, args: builder.fma(*args)
    return None


_ROUND_MAGIC = 6755399441055744.0  # 1.5 * 2**52: x + magic rounds x to the nearest integer
_ROUND_MAGIC_BITS = 0x4338000000000000  # bit pattern of _ROUND_MAGIC
_LOG2E = 1.4426950408889634
_LN2_HI = 0.6931471803691238  # ln 2 split in two (Cody-Waite) for an exact k * ln2_hi
_LN2_LO = 1.9082149292705877e-10
_EXP_MIN_ARG = -708.0  # exp(-708) ~ 3.3e-308, the smallest normal range we handle


@_njit(fastmath=False, inline="always")
def _exp_nonpos(x):
    """exp(x) for x <= 0 with ~2 ulp relative error; returns 0 for x < -708.

    Vectorisable replacement for libm's exp (numba has no SIMD exp without SVML):
    x = k ln2 + r, |r| <= ln2/2, exp(r) by its degree-13 Taylor polynomial (truncation
    < 2e-17 relative) in explicit fused multiply-adds (no fastmath: each FMA is one correctly
    rounded operation, so results are deterministic), 2^k assembled from its exponent bits.
    Below -708 the true value is < 3.3e-308 and is flushed to 0 (absolute error < 3.3e-308).
    Measured max error vs np.exp: 1 ulp.
    """
    xc = max(x, _EXP_MIN_ARG)
    kf = _fma(xc, _LOG2E, _ROUND_MAGIC)
    k = _f64_bits(kf) - _ROUND_MAGIC_BITS
    kf = kf - _ROUND_MAGIC
    r = _fma(-kf, _LN2_LO, _fma(-kf, _LN2_HI, xc))
    p = 1.0 / 6227020800.0
    p = _fma(p, r, 1.0 / 479001600.0)
    p = _fma(p, r, 1.0 / 39916800.0)
    p = _fma(p, r, 1.0 / 3628800.0)
    p = _fma(p, r, 1.0 / 362880.0)
    p = _fma(p, r, 1.0 / 40320.0)
    p = _fma(p, r, 1.0 / 5040.0)
    p = _fma(p, r, 1.0 / 720.0)
    p = _fma(p, r, 1.0 / 120.0)
    p = _fma(p, r, 1.0 / 24.0)
    p = _fma(p, r, 1.0 / 6.0)
    p = _fma(p, r, 0.5)
    p = _fma(p, r, 1.0)
    p = _fma(p, r, 1.0)
    res = p * _bits_f64((k + 1023) << 52)
    return res if x >= _EXP_MIN_ARG else 0.0


_BLOCK = 64  # columns per tile: the y tile (d x 64) and the 64 distances stay in L1/L2
_KIND_RBF = 0
_KIND_EUCLID = 1


@_njit(fastmath=False)
def _row_sum(xi, yT, j_start, neg_gammas, kind, d2buf, accbuf):
    """Sum over j >= j_start of sum_q exp(neg_gammas[q] ||xi - y_j||^2) (kind 0) or of
    ||xi - y_j|| (kind 1). ``yT`` is y transposed (features x cells), tiles of _BLOCK cells."""
    d = yT.shape[0]
    m = yT.shape[1]
    ng = neg_gammas.shape[0]
    total = 0.0
    for j0 in range(j_start, m, _BLOCK):
        bl = min(_BLOCK, m - j0)
        dd = d2buf[:bl]
        acc = accbuf[:bl]
        dd[:] = 0.0
        for k in range(d):  # squared distances, vectorised over the tile
            a = xi[k]
            yk = yT[k, j0 : j0 + bl]
            for jb in range(bl):
                t = a - yk[jb]
                dd[jb] += t * t
        if kind == _KIND_RBF:
            acc[:] = 0.0
            for q in range(ng):  # one distance, all bandwidths
                gq = neg_gammas[q]
                for jb in range(bl):
                    acc[jb] += _exp_nonpos(gq * dd[jb])
        else:
            for jb in range(bl):
                acc[jb] = math.sqrt(dd[jb])
        for jb in range(bl):
            total += acc[jb]
    return total


@_njit(parallel=True, fastmath=False)
def _pair_sums(x, yT, neg_gammas, symmetric, kind):
    """Per-task partial sums of the pair kernel (see ``_row_sum``) in float64.

    Cross (``symmetric=False``): task i sums over all j; the total is sum_ij k(x_i, y_j).
    Symmetric (y is x): only j > i, task t handles rows t and n-1-t so that every task has
    n-1 pairs (balanced); the total is the strict upper triangle, diagonal excluded.
    """
    n = x.shape[0]
    n_tasks = (n + 1) // 2 if symmetric else n
    out = np.zeros(n_tasks)
    for t in prange(n_tasks):
        d2buf = np.empty(_BLOCK)
        accbuf = np.empty(_BLOCK)
        if symmetric:
            s = _row_sum(x[t], yT, t + 1, neg_gammas, kind, d2buf, accbuf)
            i2 = n - 1 - t
            if i2 != t:
                s += _row_sum(x[i2], yT, i2 + 1, neg_gammas, kind, d2buf, accbuf)
        else:
            s = _row_sum(x[t], yT, 0, neg_gammas, kind, d2buf, accbuf)
        out[t] = s
    return out


def _self_sum(x: np.ndarray, neg_gammas: np.ndarray, kind: int) -> float:
    """sum_{i,j} k(x_i, x_j) over all ordered pairs, diagonal included (k(x, x) = 1 or 0)."""
    upper = float(_pair_sums(x, np.ascontiguousarray(x.T), neg_gammas, True, kind).sum())
    diag = x.shape[0] * neg_gammas.shape[0] if kind == _KIND_RBF else 0.0
    return 2.0 * upper + diag


def _cross_sum(x: np.ndarray, y: np.ndarray, neg_gammas: np.ndarray, kind: int) -> float:
    """sum_{i,j} k(x_i, y_j); parallelised over the larger set."""
    if x.shape[0] < y.shape[0]:
        x, y = y, x
    return float(_pair_sums(x, np.ascontiguousarray(y.T), neg_gammas, False, kind).sum())


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


def _scale(*arrays: np.ndarray) -> float:
    """A power of two that brings the arrays' largest magnitude near 1 when it is so large
    (or small) that squares would overflow (or underflow) float64; 1 otherwise. Powers of two
    divide exactly, so scale-equivariant metrics computed on the scaled data and scaled back
    are the metrics of the data."""
    m = max(float(np.abs(a).max()) if a.size else 0.0 for a in arrays)
    if m == 0.0 or 1e-50 < m < 1e50:
        return 1.0
    return 2.0 ** math.floor(math.log2(m))


def r2_means(pred, true) -> float:
    """Squared Pearson correlation between the per-feature mean vectors.

    ``r2 = corr(mean(pred, axis=0), mean(true, axis=0))**2`` over features, as in the paper and
    CellOT (this is *not* sklearn's ``r2_score``).

    Parameters
    ----------
    pred, true : array-like, shape (n_cells, n_features)
        Cell counts may differ; feature counts must match.

    Returns
    -------
    float
        In [0, 1]. ``nan`` (no warning) when either mean vector is constant, which includes
        the single-feature case: the correlation is undefined there.
    """
    pred = _as_2d(pred, "pred")
    true = _as_2d(true, "true")
    _same_features(pred=pred, true=true)
    s = _scale(pred, true)  # r2 is scale-free
    mp = (pred / s).mean(axis=0)
    mt = (true / s).mean(axis=0)
    if np.ptp(mp) == 0 or np.ptp(mt) == 0:
        return float("nan")
    a = mp - mp.mean()
    b = mt - mt.mean()
    r = float(a @ b) / math.sqrt(float(a @ a) * float(b @ b))
    r = min(max(r, -1.0), 1.0)
    return r * r


def l2_means(pred, true) -> float:
    """Euclidean distance ``||mean(pred, axis=0) - mean(true, axis=0)||_2`` between the mean
    vectors (cells x features inputs; feature counts must match)."""
    pred = _as_2d(pred, "pred")
    true = _as_2d(true, "true")
    _same_features(pred=pred, true=true)
    s = _scale(pred, true)
    return s * float(np.linalg.norm((pred / s).mean(axis=0) - (true / s).mean(axis=0)))


def paired_error(pred, truth) -> float:
    """Mean per-cell Euclidean error against a known counterfactual.

    ``mean_i ||pred[i] - truth[i]||_2``: row i of ``truth`` is the true perturbed state of the
    cell whose prediction is row i of ``pred``. Unlike the population metrics, this needs the
    cells to be paired, so it applies to simulated data whose per-cell truth is known (e.g.
    ``layers["truth"]`` of :func:`w1ot.datasets.simulate_perturbation`).

    Parameters
    ----------
    pred, truth : array-like, shape (n_cells, n_features)
        Same shape; finite.

    Returns
    -------
    float
    """
    pred = _as_2d(pred, "pred")
    truth = _as_2d(truth, "truth")
    if pred.shape != truth.shape:
        raise ValueError(
            f"pred and truth must have the same shape (paired cells), got {pred.shape} "
            f"and {truth.shape}"
        )
    s = _scale(pred, truth)
    return s * float(np.linalg.norm((pred - truth) / s, axis=1).mean())


def mmd(x, y, gammas=None) -> float:
    """Biased RBF MMD^2 averaged over bandwidths (the paper's / CellOT's MMD).

    For each gamma, with ``k(a, b) = exp(-gamma ||a - b||^2)``::

        MMD^2_gamma = mean_{i,i'} k(x_i, x_i') + mean_{j,j'} k(y_j, y_j') - 2 mean_{i,j} k(x_i, y_j)

    (V-statistic: the diagonal terms k(x_i, x_i) = 1 are included), and the result is the plain
    average of MMD^2_gamma over ``gammas``. No square root is taken.

    Computed in tiles by a parallel numba kernel without forming any kernel or distance matrix:
    each squared distance is computed once (direct differences, float64) and all bandwidths are
    accumulated from it; the x-x and y-y terms use symmetry (upper triangle only). All sums
    are in float64. The exponential is a vectorised polynomial with ~2 ulp relative error and
    values below exp(-708) flushed to 0, so results agree with a NumPy evaluation to ~1e-13
    relative. Tiny negative rounding residues (the V-statistic is >= 0) are clipped to 0.
    Runs on numba's threads (``numba.set_num_threads``); memory O(n d + m d).

    Parameters
    ----------
    x : array-like, shape (n, d)
    y : array-like, shape (m, d)
    gammas : float or array-like of floats > 0, optional
        Default :data:`DEFAULT_GAMMAS` = ``np.logspace(1, -3, 50)``.

    Returns
    -------
    float
    """
    x = _as_2d(x, "x")
    y = _as_2d(y, "y")
    _same_features(x=x, y=y)
    neg = -_as_gammas(gammas)
    n, m = x.shape[0], y.shape[0]
    kxx = _self_sum(x, neg, _KIND_RBF) / (n * n)
    kyy = _self_sum(y, neg, _KIND_RBF) / (m * m)
    kxy = _cross_sum(x, y, neg, _KIND_RBF) / (n * m)
    return max((kxx + kyy - 2.0 * kxy) / neg.shape[0], 0.0)


def energy_distance(x, y) -> float:
    """Energy distance ``2 E||X - Y|| - E||X - X'|| - E||Y - Y'||`` (V-statistic).

    The expectations are plain means over all pairs of the empirical samples, including the zero
    diagonal terms of the within-sample means; Euclidean norm; no square root is taken (in 1-D
    this is ``scipy.stats.energy_distance(u, v) ** 2``). Same tiled float64 numba kernel as
    :func:`mmd`; tiny negative rounding residues are clipped to 0.

    Parameters
    ----------
    x : array-like, shape (n, d)
    y : array-like, shape (m, d)

    Returns
    -------
    float
    """
    x = _as_2d(x, "x")
    y = _as_2d(y, "y")
    _same_features(x=x, y=y)
    s = _scale(x, y)  # homogeneous of degree 1: computed where squares cannot overflow
    if s != 1.0:
        x, y = x / s, y / s
    none = np.zeros(0)
    n, m = x.shape[0], y.shape[0]
    exx = _self_sum(x, none, _KIND_EUCLID) / (n * n)
    eyy = _self_sum(y, none, _KIND_EUCLID) / (m * m)
    exy = _cross_sum(x, y, none, _KIND_EUCLID) / (n * m)
    return s * max(2.0 * exy - exx - eyy, 0.0)


def _as_weights(w, n: int, name: str) -> np.ndarray:
    if w is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 1 or w.shape[0] != n:
        raise ValueError(f"{name} must be a 1-D array of length {n}, got shape {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"{name} must be finite, non-negative and have a positive sum")
    return w / w.sum()


def wasserstein1(x, y, a=None, b=None, num_itermax: int = 10_000_000) -> float:
    """Exact Wasserstein-1 distance between two weighted samples (POT's network simplex).

    ``W1 = min_P sum_ij P_ij ||x_i - y_j||_2`` over couplings P with marginals a and b, solved
    by ``ot.emd2`` on the dense Euclidean cost matrix. The cost is computed with
    ``scipy.spatial.distance.cdist`` (the same quantity as ``ot.dist(x, y, 'euclidean')``, but
    from direct differences, so identical points cost exactly 0). Memory is O(n m).

    Parameters
    ----------
    x : array-like, shape (n, d)
    y : array-like, shape (m, d)
    a, b : array-like, shape (n,) / (m,), optional
        Non-negative weights, normalised to sum 1; uniform by default.
    num_itermax : int
        Network-simplex iteration cap; the default 1e7 suffices for a few thousand points
        (POT warns if it is reached).

    Returns
    -------
    float

    Raises
    ------
    ImportError
        If POT is not installed (``pip install pot`` or ``pip install w1ot[ot]``).
    """
    try:
        import ot
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "wasserstein1 needs the POT package: pip install pot (or pip install 'w1ot[ot]')"
        ) from exc
    from scipy.spatial.distance import cdist

    x = _as_2d(x, "x")
    y = _as_2d(y, "y")
    _same_features(x=x, y=y)
    a = _as_weights(a, x.shape[0], "a")
    b = _as_weights(b, y.shape[0], "b")
    s = _scale(x, y)  # homogeneous of degree 1, like energy_distance
    cost = np.ascontiguousarray(cdist(x / s, y / s, metric="euclidean"))
    return s * float(ot.emd2(a, b, cost, numItermax=int(num_itermax)))


def logfc_error(source, pred, true, *, log_scale=True, eps=1e-8, return_vectors=False):
    """Mean absolute error between predicted and observed log fold changes vs. the control.

    The paper's supplementary fold-change test (Suppl. Fig. S3). With per-feature means
    ``s = mean(source)``, ``p = mean(pred)``, ``t = mean(true)`` (over cells):

    - ``log_scale=True`` (default; data already log-normalised, e.g. log1p counts): a log fold
      change is a difference of means, ``lfc_pred = p - s`` and ``lfc_true = t - s``
      (in the units of the data's log).
    - ``log_scale=False`` (linear-scale data, e.g. 4i intensities): ``lfc_pred =
      log2((p + eps) / (s + eps))``, ``lfc_true = log2((t + eps) / (s + eps))``; the means
      plus ``eps`` must be positive.

    The error is ``mean_f |lfc_pred[f] - lfc_true[f]|`` over features (select the features of
    interest, e.g. the perturbed genes, beforehand). Because both fold changes share the same
    control, the control cancels in the error itself (it equals ``mean|p - t|`` on log-scale
    data, ``mean|log2((p + eps) / (t + eps))|`` on linear data); ``source`` fixes the reported
    vectors.

    Parameters
    ----------
    source, pred, true : array-like, shape (n_cells, n_features)
        Control cells, predicted perturbed cells, observed perturbed cells.
    log_scale : bool
    eps : float
        Pseudo-count for ``log_scale=False`` (ignored otherwise).
    return_vectors : bool
        Also return the two logFC vectors.

    Returns
    -------
    float, or (float, ndarray, ndarray) with ``return_vectors=True``: error, lfc_pred, lfc_true.
    """
    source = _as_2d(source, "source")
    pred = _as_2d(pred, "pred")
    true = _as_2d(true, "true")
    _same_features(source=source, pred=pred, true=true)
    s, p, t = source.mean(axis=0), pred.mean(axis=0), true.mean(axis=0)
    if log_scale:
        lfc_pred, lfc_true = p - s, t - s
    else:
        for nm, v in (("source", s), ("pred", p), ("true", t)):
            if (v + eps <= 0).any():
                raise ValueError(f"{nm} has feature means <= -eps; log fold change undefined")
        lfc_pred = np.log2((p + eps) / (s + eps))
        lfc_true = np.log2((t + eps) / (s + eps))
    err = float(np.mean(np.abs(lfc_pred - lfc_true)))
    return (err, lfc_pred, lfc_true) if return_vectors else err


def _group_mean_var(X, mask: np.ndarray):
    """Per-feature mean and ddof=1 variance (float64) of the rows ``mask`` of X (dense or
    scipy.sparse; sparse X is only sliced, never densified; two-pass variance
    sum((x - mean)^2) over stored entries plus mean^2 per implicit zero)."""
    n = int(mask.sum())
    if hasattr(X, "tocsr") and callable(X.tocsr):  # scipy.sparse
        sub = X.tocsr()[np.flatnonzero(mask)].astype(np.float64)
        sub.sum_duplicates()
        cols, vals, d = sub.indices, sub.data, sub.shape[1]
        mean = np.bincount(cols, vals, minlength=d) / n
        dev = vals - mean[cols]
        implicit_zeros = n - np.bincount(cols, minlength=d)
        var = (np.bincount(cols, dev * dev, minlength=d) + implicit_zeros * mean**2) / (n - 1)
    else:
        sub = np.asarray(X[mask], dtype=np.float64)
        mean = sub.mean(axis=0)
        var = sub.var(axis=0, ddof=1)
    return mean, var


def top_de_genes(
    adata,
    groupby,
    reference,
    group,
    k=50,
    method="t-test",
    rank_by="score",
    layer=None,
    return_scores=False,
):
    """Top-k differentially expressed features of ``group`` vs ``reference`` (Welch t-test).

    Mirrors scanpy's ``rank_genes_groups(method='t-test')`` for one group against a reference
    group: per feature, ``t = (mean_g - mean_ref) / sqrt(var_g / n_g + var_ref / n_ref)`` with
    ddof=1 variances over the cells of each group (NaN scores, from zero variance in both
    groups and equal means, are set to 0 as scanpy does). Features are ranked by descending
    signed t (``rank_by="score"``, scanpy's default, which favours up-regulated genes) or by
    descending |t| (``rank_by="abs"``); ties keep feature order.

    Parameters
    ----------
    adata : AnnData-like
        Anything with ``.obs`` (DataFrame), ``.var_names``, ``.X`` and ``.layers``.
    groupby : str
        Column of ``adata.obs`` holding the labels.
    reference : label or ``"rest"``
        Reference group (``"rest"``: all cells not in ``group``).
    group : label
        Perturbed group.
    k : int
        Number of features; all features (ranked) if there are fewer than k.
    method : {"t-test"}
    rank_by : {"score", "abs"}
    layer : str, optional
        Use ``adata.layers[layer]`` instead of ``adata.X`` (dense or scipy.sparse).
    return_scores : bool
        Also return the t statistics of the returned features.

    Returns
    -------
    list, or (list, ndarray) with ``return_scores=True``
        The top-k entries of ``adata.var_names``, best first (and their t scores).
    """
    for attr in ("obs", "var_names", "X"):
        if not hasattr(adata, attr):
            raise TypeError(f"adata must be AnnData-like (missing .{attr})")
    if method != "t-test":
        raise ValueError(f"method must be 't-test', got {method!r}")
    if rank_by not in ("score", "abs"):
        raise ValueError(f"rank_by must be 'score' or 'abs', got {rank_by!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if groupby not in adata.obs.columns:
        raise ValueError(f"groupby {groupby!r} is not a column of adata.obs")
    X = adata.X if layer is None else adata.layers[layer]
    if X is None:
        raise ValueError("adata.X is None" if layer is None else f"layer {layer!r} is None")
    var_names = np.asarray(adata.var_names)
    labels = np.asarray(adata.obs[groupby])
    if X.ndim != 2 or X.shape != (labels.shape[0], var_names.shape[0]):
        raise ValueError(f"X has shape {X.shape}, expected (n_obs, n_vars)")
    if group == reference:
        raise ValueError("group and reference must differ")
    in_group = labels == group
    in_ref = (
        ~in_group if (isinstance(reference, str) and reference == "rest") else labels == reference
    )
    for nm, mask in (("group", in_group), ("reference", in_ref)):
        if mask.sum() < 2:
            raise ValueError(f"{nm} has {int(mask.sum())} cells in obs[{groupby!r}], need >= 2")
    mg, vg = _group_mean_var(X, in_group)
    mr, vr = _group_mean_var(X, in_ref)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = (mg - mr) / np.sqrt(vg / in_group.sum() + vr / in_ref.sum())
    scores[np.isnan(scores)] = 0.0
    key = -np.abs(scores) if rank_by == "abs" else -scores
    order = np.argsort(key, kind="stable")[:k]
    names = var_names[order].tolist()
    return (names, scores[order]) if return_scores else names


def compute_metrics(pred, true, source=None, gammas=None, energy=True) -> dict:
    """Standard evaluation metrics of a prediction.

    Returns a dict with ``r2`` (:func:`r2_means`), ``l2`` (:func:`l2_means`), ``mmd``
    (:func:`mmd` with ``gammas``), ``energy`` (:func:`energy_distance`, if ``energy``) and, when
    ``source`` (control cells) is given, ``logfc_error`` (:func:`logfc_error`, log-scale data).
    Inputs are cells x features with matching feature counts.
    """
    pred = _as_2d(pred, "pred")
    true = _as_2d(true, "true")
    _same_features(pred=pred, true=true)
    out = {
        "r2": r2_means(pred, true),
        "l2": l2_means(pred, true),
        "mmd": mmd(pred, true, gammas=gammas),
    }
    if energy:
        out["energy"] = energy_distance(pred, true)
    if source is not None:
        out["logfc_error"] = logfc_error(source, pred, true)
    return out
