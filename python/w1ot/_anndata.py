"""Where in an AnnData a model reads its cells: ``X``, a layer or an ``obsm`` entry, and which
features. Shared by :mod:`w1ot.tl` and the command line; knows nothing of the solvers.

Only the selected cells are ever densified: sparse matrices are sliced by row first (cheap in
CSR), then by column, then made dense.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from w1ot.preprocessing import _is_sparse

__all__ = ["Representation", "check_adata", "labels", "looks_like_counts"]


def check_adata(adata, name: str = "adata") -> None:
    """Raises TypeError unless ``adata`` looks like an AnnData (obs, var_names, X, shape)."""
    for attr in ("obs", "var_names", "X", "shape"):
        if not hasattr(adata, attr):
            raise TypeError(f"{name} must be an AnnData, got {type(adata).__name__}")


def labels(adata, key: str, what: str = "condition_key") -> np.ndarray:
    """The values of ``adata.obs[key]`` as an object array; a clear error if it is missing."""
    if not isinstance(key, str):
        raise TypeError(f"{what} must be a column name (str), got {key!r}")
    if key not in adata.obs.columns:
        cols = list(map(str, adata.obs.columns))
        raise ValueError(
            f"{what}={key!r} is not a column of adata.obs (columns: {', '.join(cols) or 'none'})"
        )
    return adata.obs[key].to_numpy(dtype=object)


def looks_like_counts(values: np.ndarray) -> bool:
    """True when the values are non-negative integers reaching beyond what log-normalised
    expression reaches (log1p of 1e4-normalised counts stays below ~10)."""
    v = np.asarray(values)
    if v.size == 0:
        return False
    return bool(v.min() >= 0 and v.max() > 30 and np.all(v == np.round(v)))


@dataclass(frozen=True)
class Representation:
    """``layer`` or ``obsm_key`` (at most one; neither means ``X``) and the ``features``: the
    var names used (``X`` / layer), or ``None`` with ``n_features`` columns of the obsm entry."""

    layer: str | None
    obsm_key: str | None
    features: tuple[str, ...] | None
    n_features: int

    # -- building ------------------------------------------------------------------------

    @classmethod
    def select(cls, adata, *, layer=None, obsm_key=None, genes=None) -> Representation:
        """The representation of ``adata`` chosen by ``layer`` / ``obsm_key`` / ``genes``.

        ``genes``: ``None`` (all var names), a list of var names, the name of a boolean var
        column (``"highly_variable"``) or a boolean mask over var.
        """
        if layer is not None and obsm_key is not None:
            raise ValueError("pass layer or obsm_key, not both")
        if layer is not None and not isinstance(layer, str):
            raise TypeError(f"layer must be a str, got {layer!r}")
        if obsm_key is not None:
            if not isinstance(obsm_key, str):
                raise TypeError(f"obsm_key must be a str, got {obsm_key!r}")
            if genes is not None:
                raise ValueError("genes selects var names; it cannot be used with obsm_key")
            M = cls._obsm(adata, obsm_key)
            return cls(None, obsm_key, None, int(M.shape[1]))
        cls._matrix(adata, layer)
        names = cls._var_names(adata)
        features = tuple(names) if genes is None else cls._genes(adata, names, genes)
        if not features:
            raise ValueError("genes selects no genes")
        return cls(layer, None, features, len(features))

    @staticmethod
    def _var_names(adata) -> list[str]:
        names = [str(v) for v in adata.var_names]
        if len(set(names)) != len(names):
            raise ValueError(
                "adata.var_names are not unique: call adata.var_names_make_unique() first"
            )
        return names

    @staticmethod
    def _genes(adata, names: list[str], genes) -> tuple[str, ...]:
        if isinstance(genes, str):
            if genes not in adata.var.columns:
                raise ValueError(
                    f"genes={genes!r} is neither a boolean column of adata.var nor a list of "
                    f"genes (var columns: {', '.join(map(str, adata.var.columns)) or 'none'})"
                )
            mask = adata.var[genes].to_numpy()
            if mask.dtype != bool:
                raise TypeError(f"adata.var[{genes!r}] must be boolean, got dtype {mask.dtype}")
            return tuple(n for n, m in zip(names, mask, strict=True) if m)
        arr = np.asarray(genes)
        if arr.dtype == bool:
            if arr.shape != (len(names),):
                raise ValueError(
                    f"a boolean genes mask needs {len(names)} entries, got {arr.shape}"
                )
            return tuple(n for n, m in zip(names, arr, strict=True) if m)
        if not isinstance(genes, Sequence | np.ndarray) or arr.ndim != 1:
            raise TypeError("genes must be a list of var names, a boolean var column or a mask")
        wanted = [str(g) for g in arr]
        known = set(names)
        missing = [g for g in wanted if g not in known]
        if missing:
            raise ValueError(
                f"{len(missing)} of the {len(wanted)} genes are not in adata.var_names, "
                f"e.g. {missing[:5]}"
            )
        if len(set(wanted)) != len(wanted):
            raise ValueError("genes lists a gene more than once")
        return tuple(wanted)

    @staticmethod
    def _matrix(adata, layer: str | None):
        if layer is None:
            if adata.X is None:
                raise ValueError("adata.X is empty (None): pass layer= or obsm_key=")
            return adata.X
        if layer not in adata.layers:
            raise ValueError(
                f"layer={layer!r} is not in adata.layers "
                f"(layers: {', '.join(map(str, adata.layers)) or 'none'})"
            )
        return adata.layers[layer]

    @staticmethod
    def _obsm(adata, key: str):
        if key not in adata.obsm:
            raise ValueError(
                f"obsm_key={key!r} is not in adata.obsm "
                f"(entries: {', '.join(map(str, adata.obsm)) or 'none'})"
            )
        M = adata.obsm[key]
        if getattr(M, "ndim", 0) != 2:
            raise ValueError(f"adata.obsm[{key!r}] must be 2-D (cells x dimensions)")
        return M

    # -- persistence ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "obsm_key": self.obsm_key,
            "features": None if self.features is None else list(self.features),
            "n_features": self.n_features,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Representation:
        feats = d.get("features")
        return cls(
            d.get("layer"),
            d.get("obsm_key"),
            None if feats is None else tuple(map(str, feats)),
            int(d["n_features"]),
        )

    def describe(self) -> str:
        where = (
            f"obsm[{self.obsm_key!r}]"
            if self.obsm_key
            else f"layers[{self.layer!r}]"
            if self.layer
            else "X"
        )
        return f"{where}, {self.n_features} features"

    # -- reading -------------------------------------------------------------------------

    def columns(self, adata) -> np.ndarray:
        """Positions of the features in ``adata.var`` (X / layer mode); a clear error naming
        what ``adata`` lacks."""
        self._matrix(adata, self.layer)
        pos = {n: i for i, n in enumerate(self._var_names(adata))}
        missing = [g for g in self.features if g not in pos]
        if missing:
            raise ValueError(
                f"adata lacks {len(missing)} of the model's {len(self.features)} genes, "
                f"e.g. {missing[:5]}"
            )
        return np.array([pos[g] for g in self.features], dtype=np.intp)

    def cells(self, adata, rows: np.ndarray, *, check_scale: bool = True) -> np.ndarray:
        """Dense float32 (len(rows) x n_features) of the chosen representation."""
        rows = np.asarray(rows, dtype=np.intp)
        if self.obsm_key is not None:
            M = self._obsm(adata, self.obsm_key)
            if M.shape[1] != self.n_features:
                raise ValueError(
                    f"adata.obsm[{self.obsm_key!r}] has {M.shape[1]} columns; the model was "
                    f"fitted on {self.n_features}"
                )
            sub = M[rows]
            sub = sub.toarray() if _is_sparse(sub) else np.asarray(sub)
            return np.ascontiguousarray(sub, dtype=np.float32)
        cols = self.columns(adata)
        sub = _rows(self._matrix(adata, self.layer), rows)
        sub = sub[:, cols]
        out = np.ascontiguousarray(sub.toarray() if _is_sparse(sub) else sub, dtype=np.float32)
        if check_scale and looks_like_counts(out):
            where = "adata.X" if self.layer is None else f"adata.layers[{self.layer!r}]"
            warnings.warn(
                f"{where} looks like raw counts (non-negative integers up to {out.max():.0f}); "
                "w1ot expects log-normalised data: run w1ot.pp.normalize_log1p(adata) first or "
                "pass layer= with the log-normalised layer",
                UserWarning,
                stacklevel=3,
            )
        return out

    def full_rows(self, adata, rows: np.ndarray):
        """All var columns of the rows (X / layer mode), sparse kept sparse, as float32."""
        sub = _rows(self._matrix(adata, self.layer), np.asarray(rows, dtype=np.intp))
        if _is_sparse(sub):
            return sub.tocsr().astype(np.float32)
        return np.array(sub, dtype=np.float32)


def _rows(M, rows: np.ndarray):
    if _is_sparse(M):
        return M.tocsr()[rows] if not hasattr(M, "indptr") or M.format != "csr" else M[rows]
    return np.asarray(M[rows])
