"""Minimal single-cell preprocessing: library-size normalisation and highly variable genes.

Enough to prepare raw-count data for the benchmark without scanpy:

- :func:`normalize_log1p`: scale each cell to ``target_sum`` total counts, then ``log1p``.
- :func:`highly_variable_genes`: top genes by binned, normalised dispersion (scanpy's default
  ``flavor="seurat"``) or by plain variance of log-normalised data.

Dense arrays and scipy.sparse matrices are accepted; sparse input stays sparse.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["highly_variable_genes", "normalize_log1p"]


def _is_sparse(X) -> bool:
    return hasattr(X, "tocsr") and callable(X.tocsr)


def _check_matrix(X, name: str = "X"):
    if X is None:
        raise ValueError(f"{name} is None")
    if not _is_sparse(X):
        X = np.asarray(X)
        if X.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be numeric, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (cells x genes), got ndim={X.ndim}")
    return X


def _warn_unless_counts(X, where: str) -> None:
    """Normalising data that are already normalised distorts them: say so."""
    vals = X.data if _is_sparse(X) else np.asarray(X).ravel()
    vals = vals[:: max(1, vals.size // 100_000)]  # a sample is enough to tell
    if vals.size and not np.all(vals == np.round(vals)):
        warnings.warn(
            f"{where} does not look like raw counts (it has non-integer values): it may "
            "already be normalised, and normalising again distorts it",
            UserWarning,
            stacklevel=3,
        )


def normalize_log1p(X, target_sum: float = 1e4, *, layer: str | None = None, key_added=None):
    """Normalise each cell to ``target_sum`` total counts, then apply ``log1p``.

    ``out[i, g] = log1p(target_sum * X[i, g] / sum_g X[i, g])``. Cells with zero total stay 0.
    A warning says so when the input has non-integer values (it looks normalised already).

    Parameters
    ----------
    X : AnnData, array-like or scipy.sparse matrix, shape (n_cells, n_genes)
        Raw (non-negative) counts. An AnnData is changed in place (scanpy's habit): its ``X``
        (or ``layers[layer]``) is replaced by the result, or the result is written to
        ``layers[key_added]``.
    target_sum : float
        Total per cell after scaling (default 1e4).
    layer, key_added : str, optional
        AnnData only: read ``layers[layer]`` instead of ``X``; write to ``layers[key_added]``.

    Returns
    -------
    ndarray (float64) or scipy.sparse CSR matrix (float64), same shape as ``X``; ``None`` for
    an AnnData.
    """
    if hasattr(X, "obs") and hasattr(X, "var_names"):
        adata = X
        if layer is not None and layer not in adata.layers:
            raise ValueError(f"layer={layer!r} is not in adata.layers ({list(adata.layers)})")
        where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
        src = adata.X if layer is None else adata.layers[layer]
        _warn_unless_counts(_check_matrix(src, where), where)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out = normalize_log1p(src, target_sum)
        out = out.astype(np.float32)
        if key_added is not None:
            adata.layers[key_added] = out
        elif layer is None:
            adata.X = out
        else:
            adata.layers[layer] = out
        return None
    if layer is not None or key_added is not None:
        raise TypeError("layer and key_added need an AnnData")
    X = _check_matrix(X)
    _warn_unless_counts(X, "X")
    if not (np.isfinite(target_sum) and target_sum > 0):
        raise ValueError(f"target_sum must be a positive number, got {target_sum!r}")
    if _is_sparse(X):
        out = X.tocsr().astype(np.float64, copy=True)
        if out.data.size and out.data.min() < 0:
            raise ValueError("X has negative entries; normalize_log1p expects raw counts")
        totals = np.asarray(out.sum(axis=1)).ravel()
        scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
        out.data *= np.repeat(scale, np.diff(out.indptr))
        np.log1p(out.data, out=out.data)
        return out
    out = np.array(X, dtype=np.float64)
    if out.size and out.min() < 0:
        raise ValueError("X has negative entries; normalize_log1p expects raw counts")
    totals = out.sum(axis=1, keepdims=True)
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    out *= scale
    return np.log1p(out, out=out)


def _mean_var(X, transform=None):
    """Per-gene mean and ddof=1 variance of X (dense or sparse) after the elementwise
    ``transform`` (which must map 0 to 0)."""
    n = X.shape[0]
    if _is_sparse(X):
        X = X.tocsr().astype(np.float64)
        X.sum_duplicates()
        vals = X.data if transform is None else transform(X.data)
        cols, d = X.indices, X.shape[1]
        mean = np.bincount(cols, vals, minlength=d) / n
        dev = vals - mean[cols]
        zeros = n - np.bincount(cols, minlength=d)
        var = (np.bincount(cols, dev * dev, minlength=d) + zeros * mean**2) / max(n - 1, 1)
        return mean, var
    X = np.asarray(X, dtype=np.float64)
    if transform is not None:
        X = transform(X)
    return X.mean(axis=0), X.var(axis=0, ddof=1) if n > 1 else np.zeros(X.shape[1])


def highly_variable_genes(
    adata, n_top: int, layer: str | None = None, *, flavor: str = "dispersion", n_bins: int = 20
) -> list:
    """The ``n_top`` most variable genes of log-normalised data.

    ``flavor="dispersion"`` follows scanpy's default (``flavor="seurat"``): on ``expm1`` of the
    data, per gene, mean m and variance v, log dispersion ``log(v / m)``; genes are binned into
    ``n_bins`` equal-width bins of ``log1p(m)`` and the log dispersion is z-scored within each
    bin (a single-gene bin scores 1). Genes are ranked by that normalised dispersion (genes with
    zero mean or variance last). ``flavor="variance"`` ranks by the variance of the data itself.

    Parameters
    ----------
    adata : AnnData-like
        Needs ``.X`` (or ``.layers[layer]``) and ``.var_names``; the data must already be
        log-normalised (see :func:`normalize_log1p`).
    n_top : int
        Number of genes; all genes if there are fewer.
    layer : str, optional
        Use ``adata.layers[layer]`` instead of ``adata.X``.
    flavor : {"dispersion", "variance"}
    n_bins : int
        Mean bins for ``flavor="dispersion"``.

    Returns
    -------
    list
        Entries of ``adata.var_names``, most variable first.
    """
    if not hasattr(adata, "var_names") or not hasattr(adata, "X"):
        raise TypeError("adata must be AnnData-like (with .X and .var_names)")
    if isinstance(n_top, bool) or not isinstance(n_top, (int, np.integer)) or n_top < 1:
        raise ValueError(f"n_top must be a positive integer, got {n_top!r}")
    if flavor not in ("dispersion", "variance"):
        raise ValueError(f"flavor must be 'dispersion' or 'variance', got {flavor!r}")
    if layer is None:
        X = adata.X
    else:
        if layer not in adata.layers:
            raise ValueError(f"layer {layer!r} not in adata.layers ({list(adata.layers)})")
        X = adata.layers[layer]
    X = _check_matrix(X, "X" if layer is None else f"layers[{layer!r}]")
    names = np.asarray(adata.var_names)
    if X.shape[1] != names.shape[0]:
        raise ValueError(f"data has {X.shape[1]} genes but var_names has {names.shape[0]}")
    if flavor == "variance":
        _, var = _mean_var(X)
        score = var
    else:
        mean, var = _mean_var(X, np.expm1)
        with np.errstate(divide="ignore", invalid="ignore"):
            disp = np.log(var / np.where(mean > 0, mean, 1e-12))
        disp[~np.isfinite(disp)] = np.nan
        lmean = np.log1p(mean)
        edges = np.linspace(lmean.min(), lmean.max(), n_bins + 1)
        bins = np.clip(np.searchsorted(edges, lmean, side="right") - 1, 0, n_bins - 1)
        score = np.full(disp.shape, np.nan)
        for b in np.unique(bins):
            sel = (bins == b) & np.isfinite(disp)
            k = int(sel.sum())
            if k == 1:
                score[sel] = 1.0
            elif k > 1:
                mu, sd = disp[sel].mean(), disp[sel].std(ddof=1)
                score[sel] = (disp[sel] - mu) / sd if sd > 0 else 0.0
    score = np.where(np.isfinite(score), score, -np.inf)
    order = np.argsort(-score, kind="stable")[: min(n_top, names.shape[0])]
    return names[order].tolist()
