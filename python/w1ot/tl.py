"""Perturbation prediction on AnnData, in scverse's ``tl`` style.

``fit`` learns one perturbation from the control and perturbed cells of an AnnData and returns
the fitted model (a :class:`~w1ot.W1OT`, :class:`~w1ot.W2OT` or baseline) that remembers which
representation, genes and labels it was fitted on (``model.fitted_on_``, saved with the model).
``predict`` returns a new AnnData of predicted perturbed cells, ready to
``anndata.concat`` with the real ones and to plot with scanpy.

.. code-block:: python

    model = w1ot.tl.fit(adata, condition_key="condition", control="ctrl",
                        perturbation="stim", genes="highly_variable")
    pred = w1ot.tl.predict(model, adata)          # from the control cells of adata
    both = anndata.concat([adata, pred])          # condition "stim (predicted)" beside "stim"
    model.save("stim.w1ot"); model = w1ot.tl.load("stim.w1ot")
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from w1ot._anndata import Representation, check_adata, labels
from w1ot.screen import ModelCollection, fit_many

__all__ = ["METHODS", "ModelCollection", "fit", "fit_many", "load", "predict"]

#: Methods by name: the solvers and the baselines.
METHODS = ("w1ot", "w2ot", "identity", "observed", "mean_shift", "scgen")


def _estimator(method, options: dict[str, Any]):
    if not isinstance(method, str):
        if not (hasattr(method, "fit") and hasattr(method, "transport")):
            raise TypeError(
                f"method must be one of {', '.join(METHODS)} or an estimator with fit and "
                f"transport, got {method!r}"
            )
        if options:
            raise TypeError("options are given to the estimator's constructor: pass them there")
        return method
    if method == "w1ot":
        from w1ot.solvers import W1OT

        return W1OT(**options)
    if method == "w2ot":
        from w1ot.solvers import W2OT

        return W2OT(**options)
    from w1ot.baselines import BASELINES

    if method not in BASELINES:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    return BASELINES[method](**options)


def _label(values: np.ndarray, label, what: str, key: str) -> np.ndarray:
    mask = values == label
    if not mask.any():
        present = list(dict.fromkeys(v for v in values.tolist() if v == v))
        shown = ", ".join(map(repr, present[:12])) + (", ..." if len(present) > 12 else "")
        raise ValueError(f"{what}={label!r} is not a value of adata.obs[{key!r}] ({shown})")
    return np.flatnonzero(mask)


def _jsonable(v):
    return v.item() if isinstance(v, np.generic) else v


def fit(
    adata,
    *,
    condition_key: str,
    control,
    perturbation,
    layer: str | None = None,
    obsm_key: str | None = None,
    genes=None,
    method="w1ot",
    **options,
):
    """Fits a model of ``perturbation`` from the ``control`` cells of ``adata``.

    Parameters
    ----------
    adata : AnnData
        Cells x genes; ``X`` (dense or sparse) or the chosen layer should be log-normalised
        (a warning says so when it looks like raw counts: see :mod:`w1ot.pp`).
    condition_key : str
        Column of ``adata.obs`` with the condition labels.
    control, perturbation : labels of ``condition_key``
        The source and the target cells.
    layer : str, optional
        Use ``adata.layers[layer]`` instead of ``X``.
    obsm_key : str, optional
        Use ``adata.obsm[obsm_key]`` (an embedding) instead; predictions are then embeddings.
    genes : list of str, str or boolean mask, optional
        Features: var names, the name of a boolean var column (``"highly_variable"``) or a
        mask. Default: all genes. Predictions carry the other genes over unchanged.
    method : str or estimator
        ``"w1ot"`` (default), ``"w2ot"``, ``"identity"``, ``"observed"``, ``"mean_shift"``, or
        an unfitted estimator with ``fit(source, target)`` and ``transport(x)``.
    **options
        Keyword arguments of the method's constructor (``W1OT(**options)``, ...).

    Returns
    -------
    The fitted estimator; ``model.fitted_on_`` records the representation, genes, labels and
    whether the training data were non-negative (then predictions are clipped at 0).
    """
    check_adata(adata)
    values = labels(adata, condition_key)
    src_rows = _label(values, control, "control", condition_key)
    tgt_rows = _label(values, perturbation, "perturbation", condition_key)
    if control == perturbation:
        raise ValueError("control and perturbation are the same label")
    rep = Representation.select(adata, layer=layer, obsm_key=obsm_key, genes=genes)
    model = _estimator(method, options)
    source = rep.cells(adata, src_rows)
    target = rep.cells(adata, tgt_rows, check_scale=False)
    model.fit(source, target)
    model.fitted_on_ = {
        "representation": rep.to_dict(),
        "condition_key": condition_key,
        "control": _jsonable(control),
        "perturbation": _jsonable(perturbation),
        "n_cells": {"control": len(src_rows), "perturbation": len(tgt_rows)},
        "nonnegative": bool(rep.obsm_key is None and source.min() >= 0 and target.min() >= 0),
        "method": method if isinstance(method, str) else type(method).__name__,
    }
    return model


def _spec(model) -> tuple[dict[str, Any], Representation]:
    spec = getattr(model, "fitted_on_", None)
    if not isinstance(spec, dict):
        raise ValueError(
            "this model was not fitted on an AnnData: fit it with w1ot.tl.fit (or use "
            "model.transport on arrays)"
        )
    return spec, Representation.from_dict(spec["representation"])


def predict(model, adata, *, key_added: str = "w1ot", nonnegative: bool | None = None):
    """Predicts the perturbed state of the control cells of ``adata``.

    The cells are those labelled with the model's control label in ``obs[condition_key]``
    when that column exists, else all cells of ``adata``.

    Returns
    -------
    AnnData
        One predicted cell per source cell, with ``adata.var`` (all genes: those the model was
        not fitted on are the source cell's, unchanged). ``X`` holds the prediction in the
        representation the model was fitted on (with ``layer=L`` also ``layers[L]``; with an
        ``obsm_key``, ``obsm[obsm_key]`` and no ``X``). ``obs`` is the source cells' with the
        condition set to ``"<perturbation> (predicted)"`` and ``obs[f"{key_added}_source"]``
        naming the control cell each prediction came from; obs names get the suffix
        ``f"-{key_added}"``. ``var[f"{key_added}_predicted"]`` marks the predicted genes and
        ``uns[key_added]`` describes the model.

    ``nonnegative`` clips predictions at 0; default: when the training data were
    non-negative (counts, log-normalised expression).
    """
    import anndata
    import pandas as pd

    spec, rep = _spec(model)
    check_adata(adata)
    if not isinstance(key_added, str) or not key_added:
        raise TypeError(f"key_added must be a non-empty str, got {key_added!r}")
    key = spec["condition_key"]
    if key in adata.obs.columns:
        rows = _label(labels(adata, key), spec["control"], "the model's control", key)
    else:
        rows = np.arange(adata.shape[0])
    pred = np.asarray(model.transport(rep.cells(adata, rows, check_scale=False)), np.float32)
    clip = spec.get("nonnegative", False) if nonnegative is None else bool(nonnegative)
    if clip:
        np.maximum(pred, 0.0, out=pred)

    obs = adata.obs.iloc[rows].copy()
    source_names = obs.index.astype(str)
    obs[f"{key_added}_source"] = np.asarray(source_names, dtype=object)
    label = f"{spec['perturbation']} (predicted)"
    obs[key] = pd.Categorical([label] * len(rows))
    obs.index = pd.Index([f"{n}-{key_added}" for n in source_names])
    var = adata.var.copy()
    uns = {
        key_added: {
            "method": spec.get("method", type(model).__name__),
            "condition_key": key,
            "control": str(spec["control"]),
            "perturbation": str(spec["perturbation"]),
            "representation": rep.describe(),
            "nonnegative": bool(clip),
            "params": json.dumps(_params(model), default=str),
        }
    }
    if rep.obsm_key is not None:
        out = anndata.AnnData(obs=obs, var=var, uns=uns)
        out.obsm[rep.obsm_key] = pred
        var[f"{key_added}_predicted"] = False
        out.var = var
        return out
    cols = rep.columns(adata)
    X = _with_columns(rep.full_rows(adata, rows), cols, pred)
    predicted = np.zeros(adata.shape[1], dtype=bool)
    predicted[cols] = True
    var[f"{key_added}_predicted"] = predicted
    out = anndata.AnnData(X=X, obs=obs, var=var, uns=uns)
    if rep.layer is not None:
        out.layers[rep.layer] = X.copy()
    return out


def _params(model) -> dict[str, Any]:
    get = getattr(model, "get_params", None)
    return get() if callable(get) else {}


def _with_columns(M, cols: np.ndarray, values: np.ndarray):
    """``M`` (dense or CSR) with columns ``cols`` replaced by the dense ``values``."""
    if not hasattr(M, "tocsr"):
        M[:, cols] = values
        return M
    import scipy.sparse as sp

    d = M.shape[1]
    others = np.setdiff1d(np.arange(d), cols, assume_unique=True)
    stacked = sp.hstack([M[:, others], sp.csr_matrix(values)], format="csr")
    order = np.empty(d, dtype=np.intp)
    order[np.concatenate([others, cols])] = np.arange(d)
    out = stacked[:, order]
    out.sort_indices()
    return out


def load(path: str | os.PathLike):
    """Loads any model file written by ``model.save`` (a solver, a baseline or an
    autoencoder), with what :func:`fit` recorded, ready for :func:`predict`."""
    from w1ot.baselines import BASELINES
    from w1ot.io import ModelFileError, read_class
    from w1ot.solvers import W1OT, W2OT, Autoencoder

    classes = {c.__name__: c for c in (W1OT, W2OT, Autoencoder, *BASELINES.values())}
    name = read_class(path)
    if name not in classes:
        raise ModelFileError(f"{os.fspath(path)!r} holds an unknown model class {name!r}")
    return classes[name].load(path)
