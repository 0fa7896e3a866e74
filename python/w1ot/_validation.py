"""Input validation shared by the models and the metrics."""

from __future__ import annotations

import numpy as np

#: Largest magnitude the float32 solvers accept: squared distances of such values, summed
#: over thousands of features and a batch, stay far inside float32's range (3.4e38).
MAX_ABS_FLOAT32 = 1e12


def as_cells(a, name: str, *, dtype=np.float64, n_features: int | None = None) -> np.ndarray:
    """``a`` as a C-contiguous, finite, non-empty 2-D array (cells x features) of ``dtype``.

    Sparse matrices are densified. Raises TypeError for non-numeric input and ValueError
    (naming ``name``) for a wrong dimensionality, no cells or features, a feature count
    other than ``n_features``, or NaN/infinite values. Converts at most once: an array that
    already has the right dtype and layout is returned as is.
    """
    if hasattr(a, "toarray") and callable(a.toarray):  # scipy.sparse
        a = a.toarray()
    try:
        arr = np.asarray(a)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a numeric array-like, got {type(a).__name__}") from exc
    if arr.dtype.kind == "O":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be numeric, got non-numeric objects") from exc
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric (bool/int/float), got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (cells x features), got ndim={arr.ndim}; "
            "use .reshape(-1, 1) for a single feature"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 cells)")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has 0 features")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features, expected {n_features}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if np.dtype(dtype) == np.float32 and arr.size:
        # Not np.abs(arr).max(): the absolute value of the most negative integer wraps to
        # itself (np.abs(int64(-2**63)) < 0), which would pass the check.
        big = max(abs(float(arr.max())), abs(float(arr.min())))
        if big > MAX_ABS_FLOAT32:
            raise ValueError(
                f"{name} has values up to {big:.3g} in magnitude; w1ot's solvers compute in "
                f"float32 and accept magnitudes up to {MAX_ABS_FLOAT32:.0e}: rescale the data"
            )
    return np.ascontiguousarray(arr, dtype=dtype)
