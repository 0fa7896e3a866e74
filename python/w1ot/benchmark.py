"""Evaluation harness: the paper's perturbation-prediction protocol on an AnnData.

For every perturbation and repeat, control and perturbed cells are split into train and test
sets, each method is fitted on the training split, predicts the perturbed state of the test
control cells, and is scored against the test perturbed cells (:mod:`w1ot.metrics`: r2, l2,
MMD, optionally energy distance) on all features and on the perturbation's top-k
differentially expressed features.

Protocol (see the docstring of :func:`run_benchmark` for details):

- Split: per side (control / perturbed), ``test = clip(floor(0.2 n), 500, 1000)`` cells, capped
  at ``floor(n / 2)`` so that at least half of a small side stays for training
  (:func:`test_size`). Control cells are re-split for every perturbation and repeat.
- Out-of-distribution mode (``ood_column``, ``ood_value``): every cell whose ``ood_column``
  equals the held-out value is removed from training (both sides); the test control cells are
  all held-out control cells, the test truth is a :func:`test_size` split of the held-out
  perturbed cells.
- Baselines (:mod:`w1ot.baselines`): identity, observed (real perturbed cells not in the test
  truth, see :class:`~w1ot.baselines.Observed`), mean shift (balanced, scGen-style).
- Before scoring, prediction and truth are subsampled without replacement to the same number of
  cells; the truth subsample is the same for every method of a run.
- Top-k DE features: Welch t-test of the test perturbed vs test control cells
  (:func:`w1ot.metrics.top_de_genes`, signed ranking by default); all features when there are
  at most k.
- Small perturbations: a mini-batch method (W1OT, W2OT) whose batch exceeds a run's training
  cells per side (after the solver's own ``valid_fraction`` hold-out) is fitted with the
  largest batch that fits, with a warning; ``splits["batch_size"]`` records it. Under
  ``on_error="warn"`` a perturbation that cannot be evaluated (fewer than 4 cells) is skipped
  by name and a failing method scores NaN, without stopping the other runs
  (:attr:`BenchmarkResult.failures`).

Results are a tidy DataFrame with columns ``method, perturbation, holdout, repeat, features,
metric, value`` (``holdout`` is ``""`` in the i.i.d. setting; fit times are rows with metric
``"fit_time"``, seconds, features ``"all"``), summarised by :func:`summarize`, compared by
:func:`mann_whitney` and drawn by :func:`plot_benchmark`.
"""

from __future__ import annotations

import copy
import inspect
import math
import numbers
import pickle
import time
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, NamedTuple

import numpy as np

from w1ot.baselines import Identity, LatentMeanShift, MeanShift, Observed
from w1ot.preprocessing import _is_sparse, highly_variable_genes, normalize_log1p

__all__ = [
    "DEFAULT_METHODS",
    "LOWER_IS_BETTER",
    "BenchmarkResult",
    "format_summary",
    "mann_whitney",
    "plot_benchmark",
    "run_benchmark",
    "summarize",
    "test_size",
]

#: Methods run by default.
DEFAULT_METHODS = ("identity", "observed", "mean_shift", "w1ot")
#: Direction of each metric (``False``: higher is better). Unknown metrics count as lower-better.
LOWER_IS_BETTER = {
    "r2": False,
    "l2": True,
    "mmd": True,
    "energy": True,
    "fit_time": True,
    "autoencoder_time": True,
}
_QUALITY_METRICS = ("r2", "l2", "mmd", "energy")
_COLUMNS = ["method", "perturbation", "holdout", "repeat", "features", "metric", "value"]


# --------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------


def test_size(n: int, fraction: float = 0.2, min_size: int = 500, max_size: int = 1000) -> int:
    """Test cells for a side of ``n`` cells: ``clip(floor(fraction n), min_size, max_size)``,
    capped at ``floor(n / 2)`` so the training split keeps at least half of a small side."""
    n = int(n)
    if n < 2:
        raise ValueError(f"need at least 2 cells to split, got {n}")
    t = int(min(max(math.floor(fraction * n), min_size), max_size))
    return max(1, min(t, n // 2))


test_size.__test__ = False  # not a pytest test despite its name


def _split(n: int, rng: np.random.Generator, **rule) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) positions of a random split of ``n`` items by :func:`test_size`."""
    perm = rng.permutation(n)
    k = test_size(n, **rule)
    return np.sort(perm[k:]), np.sort(perm[:k])


def _stable_int(*parts) -> int:
    """A 32-bit hash of the parts' string forms that does not vary between processes."""
    return zlib.crc32("\x1f".join(map(str, parts)).encode())


def _with_context(exc: Exception, context: str) -> Exception:
    """A copy of ``exc`` (same type when it can be built from a message, else RuntimeError)
    whose message starts with ``context``; raise it ``from exc``."""
    msg = f"{context}: {type(exc).__name__}: {exc}"
    try:
        new = type(exc)(msg)
        if str(new) == msg:
            return new
    except Exception:
        pass
    return RuntimeError(msg)


# --------------------------------------------------------------------------------------------
# mini-batches of the solvers
# --------------------------------------------------------------------------------------------


def _solver_train_cells(n: int, valid_fraction: float) -> int:
    """Cells of a side of ``n`` that a solver trains on: W1OT and W2OT hold out
    ``floor(valid_fraction n)`` of each side for their held-out statistics
    (``w1ot.solvers._base.Solver._split``) and need ``batch_size`` <= the rest."""
    return int(n) - math.floor(float(valid_fraction) * int(n))


def _batch_params(est) -> dict | None:
    """``est.get_params()`` when it has an integer ``batch_size`` (W1OT, W2OT and estimators
    following the same convention), else None."""
    get = getattr(est, "get_params", None)
    if not callable(get):
        return None
    try:
        params = get()
    except Exception:
        return None
    if not isinstance(params, Mapping):
        return None
    b = params.get("batch_size")
    if isinstance(b, bool) or not isinstance(b, numbers.Integral):
        return None
    return dict(params)


def _fit_batch(params: Mapping[str, Any], n_source: int, n_target: int) -> tuple[int, int, float]:
    """(requested, usable batch, valid_fraction) of an estimator with ``params`` trained on
    ``n_source`` and ``n_target`` cells: the largest batch <= the requested one that both
    sides' training cells (after the estimator's ``valid_fraction`` hold-out, 0 if it has
    none) can fill."""
    requested = int(params["batch_size"])
    vf = params.get("valid_fraction", 0.0)
    vf = float(vf) if isinstance(vf, numbers.Real) and 0.0 <= vf < 1.0 else 0.0
    room = min(_solver_train_cells(n_source, vf), _solver_train_cells(n_target, vf))
    return requested, max(1, min(requested, room)), vf


def _batch_for_run(est, n_source: int, n_target: int) -> tuple[Any, int | None, str | None]:
    """(estimator, batch its fit uses, note) for a run with ``n_source`` and ``n_target``
    training cells: a mini-batch estimator whose batch is too large for them gets the largest
    that fits, and the note says so; ``(est, None, None)`` for other estimators."""
    params = _batch_params(est)
    if params is None:
        return est, None, None
    requested, batch, vf = _fit_batch(params, n_source, n_target)
    if batch >= requested:
        return est, requested, None
    after = f" left after holding out valid_fraction={vf}" if vf else ""
    note = (
        f"batch_size={requested} exceeds the {batch} training cells{after} of the smaller "
        f"side ({n_source} control, {n_target} perturbed); fitted with batch_size={batch}"
    )
    return _with_batch(est, params, batch), batch, note


def _with_batch(est, params: Mapping[str, Any], batch: int):
    """``est`` with ``batch_size=batch``: through ``set_params`` when it has one, else
    rebuilt as ``type(est)(**params)``."""
    set_params = getattr(est, "set_params", None)
    if callable(set_params):
        out = set_params(batch_size=batch)
        return est if out is None else out
    return type(est)(**{**params, "batch_size": batch})


# --------------------------------------------------------------------------------------------
# methods
# --------------------------------------------------------------------------------------------


def _autoencoder_time(est) -> float | None:
    """Seconds the estimator's fit spent training an autoencoder (latent mode, scGen), or
    None when it trained none."""
    t = getattr(est, "fit_time_", None)
    if isinstance(t, dict) and "autoencoder" in t:
        return float(t["autoencoder"])
    return None


def _accepts_seed(f) -> bool:
    try:
        params = inspect.signature(f).parameters
    except (TypeError, ValueError):
        return False
    return "seed" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _is_estimator(obj) -> bool:
    return callable(getattr(obj, "fit", None)) and callable(getattr(obj, "transport", None))


def _factory_for(
    spec, solver_kwargs: Mapping[str, Mapping[str, Any]]
) -> tuple[str, Callable[[int], Any]]:
    """(default name, factory(seed) -> unfitted estimator) of a method spec; the solvers'
    keyword arguments come from ``solver_kwargs[name]``."""
    if isinstance(spec, str):
        key = spec.lower()
        if key in ("w1ot", "w2ot"):
            from w1ot.solvers import W1OT, W2OT

            cls = W1OT if key == "w1ot" else W2OT
            kwargs = {"progress": False, **solver_kwargs.get(key, {})}
            cls(**{**kwargs, "seed": kwargs.get("seed", 0)})  # fail early on bad kwargs
            return key, lambda seed: cls(**{"seed": seed, **kwargs})
        if key == "identity":
            return key, lambda seed: Identity()
        if key == "observed":
            return key, lambda seed: Observed(seed=seed)
        if key == "mean_shift":
            return key, lambda seed: MeanShift(seed=seed)
        if key == "scgen":
            return key, lambda seed: LatentMeanShift(seed=seed)
        raise ValueError(
            f"unknown method {spec!r}: choose from {[*DEFAULT_METHODS, 'w2ot', 'scgen']} or pass "
            "an object "
            "with fit/transport (or a factory returning one)"
        )
    if isinstance(spec, type):
        if not _is_estimator(spec):
            raise ValueError(f"method class {spec.__name__} has no fit/transport methods")
        takes_seed = _accepts_seed(spec)
        return spec.__name__, (lambda seed: spec(seed=seed)) if takes_seed else (
            lambda seed: spec()
        )
    if _is_estimator(spec):
        return type(spec).__name__, lambda seed: copy.deepcopy(spec)
    if callable(spec):
        takes_seed = _accepts_seed(spec)
        name = getattr(spec, "__name__", type(spec).__name__)
        return name, (lambda seed: spec(seed=seed)) if takes_seed else (lambda seed: spec())
    raise ValueError(
        f"unknown method {spec!r}: pass a name, an object with fit/transport or a factory"
    )


class _Job(NamedTuple):
    """One method's fit and scoring on one run: what a worker needs and nothing more."""

    meta: tuple  # (method, perturbation, holdout, repeat, where, last method of the run)
    est: Any  # the unfitted estimator, or the exception that building it raised
    src_train: np.ndarray
    target_train: np.ndarray
    src_test: np.ndarray
    truth: np.ndarray
    top: np.ndarray
    seeds: tuple[int, int]  # subsampling of the prediction and of the truth


def _evaluate(job: _Job, scoring: Mapping[str, Any], threads: int | None) -> tuple:
    """(meta, error or None, (scores, fit_time, autoencoder_time) or None, warnings) of a job;
    runs in this process or in a worker. ``threads``: the Rust threads a solver with
    ``n_threads=0`` gets in a worker (workers x threads stay within the cores)."""
    from w1ot.metrics import compute_metrics

    est = job.est
    if isinstance(est, Exception):
        return job.meta, est, None, []
    error, result = None, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # re-emitted by the caller, whose filters apply
        try:
            if threads is not None and getattr(est, "n_threads", None) == 0:
                est.n_threads = threads
            t0 = time.perf_counter()
            est.fit(job.src_train, job.target_train)
            fit_time = time.perf_counter() - t0
            pred = np.asarray(est.transport(job.src_test), dtype=np.float64)
            d, truth = scoring["n_features"], job.truth
            if pred.ndim != 2 or pred.shape[1] != d or pred.shape[0] < 2:
                raise ValueError(
                    f"method {job.meta[0]!r} returned shape {pred.shape}, expected "
                    f"(n_cells >= 2, {d})"
                )
            n = min(pred.shape[0], truth.shape[0])
            s_pred, s_truth = job.seeds
            pi = np.sort(np.random.default_rng(s_pred).permutation(pred.shape[0])[:n])
            ti = np.sort(np.random.default_rng(s_truth).permutation(truth.shape[0])[:n])
            ps, ts = pred[pi], truth[ti]
            kw = {"gammas": scoring["gammas"], "energy": scoring["energy"]}
            scores = {
                "all": compute_metrics(ps, ts, **kw),
                scoring["top"]: compute_metrics(ps[:, job.top], ts[:, job.top], **kw),
            }
            result = (scores, fit_time, _autoencoder_time(est))
        except Exception as exc:
            error = exc
    if threads is not None and error is not None:
        try:  # it travels back from a worker process
            pickle.dumps(error)
        except Exception:
            error = RuntimeError(f"{type(error).__name__}: {error}")
    found = [(w.message, w.category, w.filename, w.lineno) for w in caught]
    return job.meta, error, result, found


class _JobRunner:
    """Runs jobs in this process (one worker) or in loky worker processes (scverse's
    default engine, as :func:`w1ot.tl.fit_many`), outcomes in job order, so that the results
    do not depend on ``n_jobs``."""

    def __init__(self, n_jobs, n_tasks: int) -> None:
        from w1ot.screen import _cores, _workers

        cores = _cores()
        self.workers = _workers(n_jobs, max(1, n_tasks), cores, None)
        self.threads = None if self.workers == 1 else max(1, cores // self.workers)
        self._parallel: Any = None

    def __enter__(self) -> _JobRunner:
        if self.workers > 1:
            import joblib

            self._parallel = joblib.Parallel(n_jobs=self.workers, backend="loky").__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._parallel is not None:
            self._parallel.__exit__(*exc)

    def chunks(self, plan: list, jobs_per_item: int):
        """The plan in groups that give every worker a few jobs: only a few perturbations'
        splits are held at once."""
        size = 1 if self.workers == 1 else math.ceil(4 * self.workers / max(1, jobs_per_item))
        for i in range(0, len(plan), size):
            yield plan[i : i + size]

    def run(self, jobs: list[_Job], scoring: Mapping[str, Any]):
        if self._parallel is None:
            for job in jobs:
                yield _evaluate(job, scoring, None)
        else:
            import joblib

            yield from self._parallel(
                joblib.delayed(_evaluate)(job, scoring, self.threads) for job in jobs
            )


def _resolve_methods(methods, solver_kwargs) -> list[tuple[str, Callable[[int], Any]]]:
    if isinstance(methods, (str, type)) or _is_estimator(methods):
        methods = [methods]
    items = list(methods.items()) if isinstance(methods, Mapping) else [(None, m) for m in methods]
    if not items:
        raise ValueError("methods is empty")
    out: list[tuple[str, Callable[[int], Any]]] = []
    for name, spec in items:
        if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
            name, spec = spec
        default, factory = _factory_for(spec, solver_kwargs)
        name = str(name) if name is not None else default
        if name in [n for n, _ in out]:
            raise ValueError(f"duplicate method name {name!r}; pass a mapping name -> method")
        out.append((name, factory))
    return out


# --------------------------------------------------------------------------------------------
# data access
# --------------------------------------------------------------------------------------------


class _Data:
    """The selected matrix of an AnnData, read and densified one group of cells at a time."""

    def __init__(self, adata, layer, genes, n_top_genes, normalize):
        if layer is None:
            X = adata.X
        else:
            layers = getattr(adata, "layers", {})
            if layer not in layers:
                raise ValueError(f"layer {layer!r} not in adata.layers ({list(layers)})")
            X = layers[layer]
        if X is None:
            raise ValueError("adata.X is None" if layer is None else f"layer {layer!r} is None")
        var_names = np.asarray(adata.var_names)
        if X.ndim != 2 or X.shape[1] != var_names.shape[0]:
            raise ValueError(f"data has shape {X.shape}, expected (n_obs, {var_names.shape[0]})")
        self.X, self.normalize = X, bool(normalize)
        cols = np.arange(var_names.shape[0])
        if genes is not None:
            genes = [genes] if isinstance(genes, str) else list(genes)
            pos = {g: i for i, g in enumerate(var_names.tolist())}
            missing = [g for g in genes if g not in pos]
            if missing:
                raise ValueError(f"{len(missing)} genes not in adata.var_names, e.g. {missing[:5]}")
            cols = np.array(sorted({pos[g] for g in genes}), dtype=np.intp)
        if n_top_genes is not None:
            X_hvg = X if not self.normalize else normalize_log1p(X)
            sub = SimpleNamespace(X=X_hvg[:, cols], var_names=np.arange(cols.shape[0]), layers={})
            top = highly_variable_genes(sub, n_top_genes)
            cols = cols[np.sort(np.asarray(top, dtype=np.intp))]
        if cols.shape[0] == 0:
            raise ValueError("no features selected")
        self.cols = cols
        self.var_names = var_names[cols]

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Dense float64 (cells x selected features) of the rows ``idx`` (sorted)."""
        idx = np.sort(np.asarray(idx, dtype=np.intp))
        X = self.X
        if _is_sparse(X):
            sub = X.tocsr()[idx] if not hasattr(X, "indptr") else X[idx]
            if self.normalize:
                sub = normalize_log1p(sub)
            sub = sub[:, self.cols].toarray()
        else:
            sub = np.asarray(X[idx])
            if self.normalize:
                sub = normalize_log1p(sub)
            sub = sub[:, self.cols]
        out = np.ascontiguousarray(sub, dtype=np.float64)
        if not np.isfinite(out).all():
            raise ValueError("the selected data contain NaN or infinite values")
        return out


# --------------------------------------------------------------------------------------------
# the harness
# --------------------------------------------------------------------------------------------


@dataclass
class BenchmarkResult:
    """What :func:`run_benchmark` returns.

    Attributes
    ----------
    results : DataFrame
        Tidy scores: ``method, perturbation, holdout, repeat, features, metric, value``.
    splits : DataFrame
        One row per run: cell counts of the train / test splits and of the scored subsample;
        with a mini-batch method (``w1ot``, ``w2ot``, any estimator whose ``get_params()``
        has ``batch_size``), ``batch_size``: the batch its fit used (the requested one, or the
        largest that the run's training cells fill). With several such methods,
        ``batch_size`` is the first one's and ``batch_size_<method>`` columns give each.
    de_genes : dict
        ``(perturbation, holdout, repeat) -> list`` of the top-k DE features of that run.
    config : dict
        The protocol's settings.
    failures : DataFrame
        What could not be scored under ``on_error="warn"``: ``perturbation, holdout, repeat,
        method, error``; ``method`` is ``""`` for a run (or, with ``repeat`` -1, a whole
        perturbation) skipped before any method was fitted, whose runs are absent from
        ``results``; a failed method's runs have NaN scores.
    """

    results: Any
    splits: Any
    de_genes: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    failures: Any = None

    def summary(self, by: Sequence[str] = ()) -> Any:
        """:func:`summarize` of the results."""
        return summarize(self.results, by=by)

    def mann_whitney(self, **kwargs) -> Any:
        """:func:`mann_whitney` of the results."""
        return mann_whitney(self.results, **kwargs)

    def plot(self, path=None, **kwargs):
        """:func:`plot_benchmark` of the results, labelled with the dataset (``config
        ["dataset"]``, with the layer if one was used) and the number of features."""
        dataset = self.config.get("dataset")
        if dataset is not None and self.config.get("layer") is not None:
            dataset = f"{dataset} (layer {self.config['layer']})"
        kwargs.setdefault("dataset", dataset)
        kwargs.setdefault("n_features", self.config.get("n_features"))
        return plot_benchmark(self.results, path=path, **kwargs)

    def to_csv(self, path) -> None:
        """Writes the tidy results to ``path`` (no index)."""
        self.results.to_csv(path, index=False)


def _labels(adata, column: str, what: str) -> np.ndarray:
    obs = getattr(adata, "obs", None)
    if obs is None or not hasattr(obs, "columns"):
        raise TypeError("adata must be AnnData-like (with a pandas .obs)")
    if column not in obs.columns:
        raise ValueError(
            f"{what} column {column!r} not in adata.obs (columns: {list(obs.columns)})"
        )
    return obs[column].to_numpy()


def _present(labels: np.ndarray) -> list:
    vals = [v for v in dict.fromkeys(labels.tolist()) if not (isinstance(v, float) and v != v)]
    return vals


def run_benchmark(
    adata,
    condition_key: str,
    control,
    perturbations=None,
    methods=DEFAULT_METHODS,
    *,
    n_repeats: int = 5,
    first_repeat: int = 0,
    layer: str | None = None,
    genes: Sequence[str] | None = None,
    n_top_genes: int | None = None,
    normalize: bool = False,
    w1ot_kwargs: Mapping[str, Any] | None = None,
    w2ot_kwargs: Mapping[str, Any] | None = None,
    test_fraction: float = 0.2,
    min_test: int = 500,
    max_test: int = 1000,
    top_k: int = 50,
    rank_by: str = "score",
    energy: bool = False,
    gammas=None,
    ood_column: str | None = None,
    ood_value=None,
    seed: int = 0,
    on_error: str = "raise",
    n_jobs: int = 1,
    progress: bool = True,
    output=None,
    figure=None,
    dataset: str | None = None,
) -> BenchmarkResult:
    """Runs the evaluation protocol of the paper on ``adata``.

    For each perturbation, held-out value (o.o.d. mode only) and repeat ("run"):

    1. Split control and perturbed cells into train and test (:func:`test_size` per side;
       in o.o.d. mode as described below), seeded by ``seed``, the perturbation, the held-out
       value and the repeat (so a run's split does not depend on which other perturbations
       are benchmarked).
    2. Rank the features by a t-test of the test perturbed vs test control cells and keep the
       top ``top_k`` (all if there are at most ``top_k``).
    3. For every method: build a fresh estimator (seeded per run), ``fit(train control,
       train perturbed)`` and time it, ``transport(test control)``; subsample prediction and
       test truth to the same number of cells and score them on all and on the top-k features.

    Mini-batch methods (``"w1ot"``, ``"w2ot"``, any estimator whose ``get_params()`` has an
    integer ``batch_size``) need a batch no larger than the training cells of each side left
    after their own held-out split (``valid_fraction``): when a run has fewer, the fit uses
    the largest batch that fits, with a warning naming the perturbation and the batch, and
    ``splits["batch_size"]`` records the batch used.

    Parameters
    ----------
    adata : AnnData
        Cells x features; ``X`` or ``layers[layer]``, dense or scipy.sparse (only the selected
        cells are densified, one group at a time).
    condition_key : str
        Column of ``adata.obs`` with the condition labels.
    control : label
        The control label of ``condition_key``.
    perturbations : label or list of labels, optional
        Perturbations to evaluate (default: every other label).
    methods : sequence or mapping
        Each a name (``"identity"``, ``"observed"``, ``"mean_shift"``, ``"w1ot"``, ``"w2ot"``), an object
        with ``fit``/``transport`` (deep-copied for every run: pass it unfitted) or a factory
        returning one (a class or function; called with ``seed=`` if it accepts it). A mapping,
        or ``(name, method)`` pairs, set the names used in the results.
    n_repeats : int
        Repeats per perturbation (5).
    first_repeat : int
        Index of the first repeat (0). Each repeat's splits and seeds depend on its index
        alone, so a long benchmark can run in pieces (``n_repeats=1, first_repeat=r`` for each
        ``r``) whose results, concatenated, equal one run's.
    layer : str, optional
        Use ``adata.layers[layer]`` instead of ``adata.X``.
    genes : sequence of str, optional
        Restrict to these entries of ``adata.var_names`` (kept in ``var_names`` order).
    n_top_genes : int, optional
        Further restrict to the most variable genes (:func:`w1ot.preprocessing.
        highly_variable_genes` on all cells, after normalisation if ``normalize``).
    normalize : bool
        Data are raw counts: apply :func:`w1ot.preprocessing.normalize_log1p` per cell (on all
        genes, before any gene selection).
    w1ot_kwargs : mapping, optional
        Keyword arguments of :class:`w1ot.W1OT` for the ``"w1ot"`` method (``progress`` is
        off by default; ``seed`` defaults to a per-run seed).
    w2ot_kwargs : mapping, optional
        The same for :class:`w1ot.W2OT` and the ``"w2ot"`` method (the W2 baseline).
    test_fraction, min_test, max_test : float, int, int
        The split rule (0.2, 500, 1000), see :func:`test_size`.
    top_k : int
        DE features for the ``"top{top_k}"`` feature set (50).
    rank_by : {"score", "abs"}
        DE ranking: signed t (scanpy's default, favours up-regulated features) or |t|.
    energy : bool
        Also compute the energy distance.
    gammas : array-like, optional
        MMD bandwidths (default :data:`w1ot.metrics.DEFAULT_GAMMAS`).
    ood_column : str, optional
        Out-of-distribution mode: column of ``adata.obs`` (a cell type, a patient). For a
        held-out value v, cells with ``obs[ood_column] == v`` are never used for training;
        the test control cells are all held-out control cells; the held-out perturbed cells
        are split by :func:`test_size` into the test truth and the cells the ``observed``
        baseline returns.
    ood_value : label or list of labels, optional
        Held-out value(s). Default: every value of ``ood_column``; values without at least
        4 cells on each side (held out and remaining) are then skipped with a warning.
    seed : int
        Master seed.
    on_error : {"raise", "warn"}
        What to do when a perturbation cannot be evaluated (fewer than 4 cells, a failed
        split or DE ranking) or a method fails on a run: raise, with a message naming the
        perturbation (the error keeps its type where it can), or warn and go on: the perturbation
        or run is skipped, a failed method gets NaN scores, and both are listed in
        :attr:`BenchmarkResult.failures`.
    n_jobs : int
        Worker processes for the fits (1, the default: this process; -1: one per core), as
        :func:`w1ot.tl.fit_many` runs them (loky); each solver fitted in a worker gets an
        equal share of the cores. The results do not depend on it. Estimators passed as
        objects or factories must then be picklable (cloudpickle: lambdas are).
    progress : bool
        Show a progress bar over the runs.
    output : path, optional
        Write the tidy results there as CSV.
    figure : path, optional
        Write :func:`plot_benchmark` of the results there.
    dataset : str, optional
        Name of the dataset (``config["dataset"]``), shown in the figure's title.

    Returns
    -------
    BenchmarkResult
    """
    import pandas as pd

    from w1ot.metrics import top_de_genes

    # -- validation ----------------------------------------------------------------------
    for attr in ("obs", "X", "var_names"):
        if not hasattr(adata, attr):
            raise TypeError(f"adata must be AnnData-like (missing .{attr})")
    if isinstance(n_repeats, bool) or not isinstance(n_repeats, (int, np.integer)) or n_repeats < 1:
        raise ValueError(f"n_repeats must be a positive integer, got {n_repeats!r}")
    if (
        isinstance(first_repeat, bool)
        or not isinstance(first_repeat, (int, np.integer))
        or first_repeat < 0
    ):
        raise ValueError(f"first_repeat must be a non-negative integer, got {first_repeat!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    if rank_by not in ("score", "abs"):
        raise ValueError(f"rank_by must be 'score' or 'abs', got {rank_by!r}")
    if on_error not in ("raise", "warn"):
        raise ValueError(f"on_error must be 'raise' or 'warn', got {on_error!r}")
    from w1ot.screen import check_n_jobs

    check_n_jobs(n_jobs)  # before the data are prepared
    if not (0 < test_fraction < 1) or min_test < 1 or max_test < min_test:
        raise ValueError("need 0 < test_fraction < 1 and 1 <= min_test <= max_test")
    rule = {"fraction": test_fraction, "min_size": int(min_test), "max_size": int(max_test)}
    labels = _labels(adata, condition_key, "condition")
    present = _present(labels)
    if control not in present:
        raise ValueError(
            f"control label {control!r} not found in adata.obs[{condition_key!r}] "
            f"(labels: {present[:20]})"
        )
    if perturbations is None:
        perturbations = [p for p in present if p != control]
    elif isinstance(perturbations, (str, int, np.integer)):
        perturbations = [perturbations]
    perturbations = list(perturbations)
    if not perturbations:
        raise ValueError("no perturbations to evaluate")
    for p in perturbations:
        if p == control:
            raise ValueError(f"perturbation {p!r} is the control label")
        if p not in present:
            raise ValueError(
                f"perturbation {p!r} not found in adata.obs[{condition_key!r}] "
                f"(labels: {present[:20]})"
            )
    method_list = _resolve_methods(
        methods, {"w1ot": dict(w1ot_kwargs or {}), "w2ot": dict(w2ot_kwargs or {})}
    )
    data = _Data(adata, layer, genes, n_top_genes, normalize)
    n_features = data.cols.shape[0]
    feat_top = f"top{top_k}"

    is_ctrl = labels == control
    if ood_column is None:
        if ood_value is not None:
            raise ValueError("ood_value needs ood_column")
        holdouts: list = [None]
        groups = None
    else:
        groups = _labels(adata, ood_column, "ood")
        values = _present(groups)
        if ood_value is None:
            holdouts = values
        else:
            holdouts = [ood_value] if np.ndim(ood_value) == 0 else list(ood_value)
            for v in holdouts:
                if v not in values:
                    raise ValueError(
                        f"ood_value {v!r} not found in adata.obs[{ood_column!r}] "
                        f"(values: {values[:20]})"
                    )

    # -- the runs --------------------------------------------------------------------------
    ctrl_rows = np.flatnonzero(is_ctrl)
    if ctrl_rows.shape[0] < 4:
        raise ValueError(
            f"control {control!r} has {ctrl_rows.shape[0]} cells, need at least 4 to split"
        )
    failures: list[tuple] = []  # (perturbation, holdout, repeat, method, error)

    def skip(msg: str, p, hold: str, r: int, method: str = "") -> None:
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        failures.append((p, hold, r, method, msg))

    plan = []  # (perturbation, holdout, positions within the control / perturbed cells)
    for p in perturbations:
        pert_rows = np.flatnonzero(labels == p)
        if pert_rows.shape[0] < 4:
            msg = f"perturbation {p!r} has {pert_rows.shape[0]} cells, need at least 4 to split"
            if on_error == "raise":
                raise ValueError(msg)
            skip(msg + "; skipped", p, "", -1)
            continue
        for h in holdouts:
            if h is None:
                plan.append((p, h, None))
                continue
            c_out, p_out = groups[ctrl_rows] == h, groups[pert_rows] == h
            sides = {
                "held-out control": np.flatnonzero(c_out),
                "held-out perturbed": np.flatnonzero(p_out),
                "training control": np.flatnonzero(~c_out),
                "training perturbed": np.flatnonzero(~p_out),
            }
            small = [f"{k} ({v.shape[0]})" for k, v in sides.items() if v.shape[0] < 4]
            if small:
                msg = (
                    f"o.o.d. value {h!r} of {ood_column!r} for perturbation {p!r}: too few "
                    f"cells (need 4) in {', '.join(small)}"
                )
                if ood_value is not None:
                    raise ValueError(msg)
                skip(msg + "; skipped", p, str(h), -1)
                continue
            plan.append((p, h, sides))
    if not plan:
        raise ValueError(
            "nothing to evaluate: every perturbation"
            + (" and o.o.d. value" if ood_column is not None else "")
            + f" was skipped ({'; '.join(f[-1] for f in failures)})"
        )

    rows: list[tuple] = []
    split_rows: list[dict] = []
    batch_methods: list[str] = []  # methods fitted in mini-batches, in method order
    warned_batches: set = set()
    de_genes: dict = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plan) * n_repeats, desc="benchmark", unit="run")
    ctrl_all = data.rows(ctrl_rows)  # densified once, the perturbed cells once per perturbation
    nan_scores = dict.fromkeys(("r2", "l2", "mmd", *(("energy",) if energy else ())), math.nan)
    scoring = {"gammas": gammas, "energy": energy, "n_features": n_features, "top": feat_top}

    def jobs_of(p, h, sides, pert_all) -> list[_Job]:
        """The method fits of one perturbation (and held-out value), every repeat: splits and
        DE genes here, fits wherever the jobs run."""
        hold = "" if h is None else str(h)
        out = []
        for r in range(int(first_repeat), int(first_repeat) + n_repeats):
            where = f"perturbation {p!r}" + (f" (holdout {hold!r})" if hold else "")
            where_run = f"{where}, repeat {r}"
            ss = np.random.SeedSequence([int(seed), _stable_int(p), _stable_int(hold), r])
            s_split, s_model, s_pred, s_truth = (int(v) for v in ss.generate_state(4))
            rng = np.random.default_rng(s_split)
            try:
                if h is None:
                    c_tr, c_te = _split(ctrl_all.shape[0], rng, **rule)
                    p_tr, p_te = _split(pert_all.shape[0], rng, **rule)
                    src_train, src_test = ctrl_all[c_tr], ctrl_all[c_te]
                    tgt_train, truth = pert_all[p_tr], pert_all[p_te]
                    reference = tgt_train
                else:
                    held = pert_all[sides["held-out perturbed"]]
                    p_ref, p_te = _split(held.shape[0], rng, **rule)
                    src_train = ctrl_all[sides["training control"]]
                    src_test = ctrl_all[sides["held-out control"]]
                    tgt_train = pert_all[sides["training perturbed"]]
                    truth, reference = held[p_te], held[p_ref]
                if n_features > top_k:
                    de = SimpleNamespace(
                        obs=pd.DataFrame({"g": ["c"] * src_test.shape[0] + ["p"] * truth.shape[0]}),
                        var_names=np.arange(n_features),
                        X=np.vstack([src_test, truth]),
                        layers={},
                    )
                    top = np.asarray(top_de_genes(de, "g", "c", "p", k=top_k, rank_by=rank_by))
                else:
                    top = np.arange(n_features)
            except Exception as exc:
                if on_error == "raise":
                    raise _with_context(exc, f"{where_run} cannot be evaluated") from exc
                skip(f"{where_run} skipped: {type(exc).__name__}: {exc}", p, hold, r)
                if bar is not None:
                    bar.update(1)
                continue
            de_genes[(p, hold, r)] = data.var_names[top].tolist()
            batches: dict[str, int] = {}
            split_rows.append(
                {
                    "perturbation": p,
                    "holdout": hold,
                    "repeat": r,
                    "n_train_control": src_train.shape[0],
                    "n_train_perturbed": tgt_train.shape[0],
                    "n_test_control": src_test.shape[0],
                    "n_test_perturbed": truth.shape[0],
                    "n_observed_reference": reference.shape[0],
                    "n_eval": min(src_test.shape[0], truth.shape[0]),
                    "_batches": batches,
                }
            )
            model_seed = s_model % (2**31)
            for i, (name, factory) in enumerate(method_list):
                job = _Job(
                    (name, p, hold, r, where_run, i == len(method_list) - 1),
                    None,
                    src_train,
                    tgt_train,
                    src_test,
                    truth,
                    top,
                    (s_pred, s_truth),
                )
                try:
                    est = factory(model_seed)
                    if isinstance(est, Observed):
                        job = job._replace(target_train=reference)
                    est, batch, note = _batch_for_run(
                        est, src_train.shape[0], job.target_train.shape[0]
                    )
                    if batch is not None:
                        batches[name] = batch
                        if name not in batch_methods:
                            batch_methods.append(name)
                    if note is not None and (name, p, hold, note) not in warned_batches:
                        warned_batches.add((name, p, hold, note))  # once, not per repeat
                        warnings.warn(
                            f"method {name!r} on {where}: {note}", RuntimeWarning, stacklevel=4
                        )
                    job = job._replace(est=est)
                except Exception as exc:
                    job = job._replace(est=exc)  # reported with the fits' failures
                out.append(job)
        return out

    def record(outcome: tuple) -> None:
        (name, p, hold, r, where_run, last), error, scored, caught = outcome
        for w in caught:  # warnings of the fit, wherever it ran
            warnings.warn_explicit(w[0], w[1], w[2], w[3])
        if error is not None:
            if on_error == "raise":
                raise _with_context(error, f"method {name!r} failed on {where_run}") from error
            msg = f"method {name!r} failed on {where_run}: {type(error).__name__}: {error}"
            skip(msg, p, hold, r, name)
            scores, fit_time, ae_time = {"all": nan_scores, feat_top: nan_scores}, math.nan, None
        else:
            scores, fit_time, ae_time = scored
        for feats, sc in scores.items():
            for metric, value in sc.items():
                rows.append((name, p, hold, r, feats, metric, float(value)))
        rows.append((name, p, hold, r, "all", "fit_time", float(fit_time)))
        if ae_time is not None:
            # Counted separately: the share of fit_time spent on the autoencoder.
            rows.append((name, p, hold, r, "all", "autoencoder_time", ae_time))
        if last and bar is not None:
            bar.set_postfix_str(f"{p}" + (f" / {hold}" if hold else ""), refresh=False)
            bar.update(1)

    try:
        with _JobRunner(n_jobs, len(plan) * n_repeats * len(method_list)) as runner:
            pert_all, pert_of = None, None
            for chunk in runner.chunks(plan, n_repeats * len(method_list)):
                jobs = []
                for p, h, sides in chunk:
                    if pert_of != p:
                        pert_all, pert_of = data.rows(np.flatnonzero(labels == p)), p
                    jobs += jobs_of(p, h, sides, pert_all)
                for outcome in runner.run(jobs, scoring):
                    record(outcome)
    finally:
        if bar is not None:
            bar.close()
    if not split_rows:
        raise ValueError(
            f"nothing was evaluated: every run was skipped ({'; '.join(f[-1] for f in failures)})"
        )

    splits = pd.DataFrame([{k: v for k, v in d.items() if k != "_batches"} for d in split_rows])
    # the batch of the first mini-batch method; of each one too when there are several
    batch_cols = [("batch_size", m) for m in batch_methods[:1]]
    if len(batch_methods) > 1:
        batch_cols += [(f"batch_size_{m}", m) for m in batch_methods]
    for col, m in batch_cols:
        splits[col] = pd.array([d["_batches"].get(m) for d in split_rows], dtype="Int64")
    results = pd.DataFrame(rows, columns=_COLUMNS)
    result = BenchmarkResult(
        results=results,
        splits=splits,
        de_genes=de_genes,
        failures=pd.DataFrame(
            failures, columns=["perturbation", "holdout", "repeat", "method", "error"]
        ),
        config={
            "dataset": dataset,
            "condition_key": condition_key,
            "control": control,
            "perturbations": perturbations,
            "methods": [n for n, _ in method_list],
            "n_repeats": int(n_repeats),
            "first_repeat": int(first_repeat),
            "layer": layer,
            "n_features": int(n_features),
            "normalize": bool(normalize),
            "n_top_genes": n_top_genes,
            "w1ot_kwargs": dict(w1ot_kwargs or {}),
            "w2ot_kwargs": dict(w2ot_kwargs or {}),
            "split_rule": rule,
            "top_k": int(top_k),
            "rank_by": rank_by,
            "ood_column": ood_column,
            "holdouts": [h for h in holdouts if h is not None],
            "seed": int(seed),
            "on_error": on_error,
        },
    )
    if output is not None:
        result.to_csv(output)
    if figure is not None:
        result.plot(path=figure)
    return result


# --------------------------------------------------------------------------------------------
# summaries and tests
# --------------------------------------------------------------------------------------------


def _check_results(results) -> None:
    missing = [c for c in ("method", "features", "metric", "value") if c not in results.columns]
    if missing:
        raise ValueError(f"results lack the columns {missing} (expected {_COLUMNS})")


def _worst(values, metric: str) -> float:
    v = values.dropna()
    if v.empty:
        return math.nan
    return float(v.max() if LOWER_IS_BETTER.get(metric, True) else v.min())


def summarize(results, by: Sequence[str] = ()) -> Any:
    """Per method summary of tidy benchmark results over runs.

    Parameters
    ----------
    results : DataFrame
        Tidy results (:attr:`BenchmarkResult.results`, or the CSV read back).
    by : sequence of str
        Extra grouping columns, e.g. ``["perturbation"]`` or ``["holdout"]``.

    Returns
    -------
    DataFrame
        Index ``(*by, features, metric, method)`` (methods in order of appearance); columns
        ``n`` (runs with a finite value), ``mean``, ``std`` (ddof=1), ``median`` and ``worst``
        (the maximum of lower-is-better metrics, the minimum of r2).
    """
    import pandas as pd

    _check_results(results)
    keys = [*by, "features", "metric", "method"]
    out = []
    for key, g in results.groupby(keys, sort=False):
        v = g["value"]
        out.append(
            (
                *key,
                int(v.notna().sum()),
                float(v.mean()),
                float(v.std()) if v.notna().sum() > 1 else math.nan,
                float(v.median()),
                _worst(v, key[-2]),
            )
        )
    df = pd.DataFrame(out, columns=[*keys, "n", "mean", "std", "median", "worst"])
    return df.set_index(keys)


def mann_whitney(
    results,
    reference: str | None = None,
    metrics: Sequence[str] | None = None,
    features: str | Sequence[str] | None = None,
    by: Sequence[str] = (),
) -> Any:
    """Two-sided Mann-Whitney U (Wilcoxon rank-sum) tests between methods over all runs.

    Parameters
    ----------
    results : DataFrame
        Tidy results.
    reference : str, optional
        Compare this method with each other one; default every pair of methods.
    metrics : sequence of str, optional
        Default: the quality metrics present (r2, l2, mmd, energy; not fit_time).
    features : str or sequence, optional
        Feature sets to test (default all present).
    by : sequence of str
        Extra grouping columns (e.g. ``["perturbation"]``); default pools all runs.

    Returns
    -------
    DataFrame
        Columns ``*by, features, metric, method_a, method_b, n_a, n_b, median_a, median_b,
        u_statistic`` (U of ``method_a``), ``p_value`` and ``better`` (the method with the
        better median, ``""`` when equal). Samples identical in every value give p = 1.
    """
    import pandas as pd
    from scipy.stats import mannwhitneyu

    _check_results(results)
    df = results
    if metrics is None:
        metrics = [m for m in _QUALITY_METRICS if m in set(df["metric"])]
    df = df[df["metric"].isin(list(metrics))]
    if features is not None:
        df = df[df["features"].isin([features] if isinstance(features, str) else list(features))]
    names = list(dict.fromkeys(results["method"]))
    if reference is not None and reference not in names:
        raise ValueError(f"reference method {reference!r} not in the results ({names})")
    out = []
    keys = [*by, "features", "metric"]
    for key, g in df.groupby(keys, sort=False):
        metric = key[-1]
        vals = {m: s.dropna().to_numpy() for m, s in g.groupby("method", sort=False)["value"]}
        present = [m for m in names if m in vals and vals[m].size]
        if reference is not None:
            pairs = [(reference, m) for m in present if m != reference and reference in present]
        else:
            pairs = [(a, b) for i, a in enumerate(present) for b in present[i + 1 :]]
        for a, b in pairs:
            x, y = vals[a], vals[b]
            if np.unique(np.concatenate([x, y])).size == 1:
                u, pv = x.size * y.size / 2.0, 1.0
            else:
                res = mannwhitneyu(x, y, alternative="two-sided")
                u, pv = float(res.statistic), float(res.pvalue)
            ma, mb = float(np.median(x)), float(np.median(y))
            lower = LOWER_IS_BETTER.get(metric, True)
            better = "" if ma == mb else (a if (ma < mb) == lower else b)
            out.append((*key, a, b, x.size, y.size, ma, mb, u, pv, better))
    cols = [*keys, "method_a", "method_b", "n_a", "n_b", "median_a", "median_b"]
    return pd.DataFrame(out, columns=[*cols, "u_statistic", "p_value", "better"])


def _stars(p: float) -> str:
    if not np.isfinite(p):
        return "n/a"
    return "***" if p < 1e-3 else "**" if p < 1e-2 else "*" if p < 0.05 else "ns"


_METRIC_LABELS = {
    "r2": "$r^2$",
    "l2": "$l_2$",
    "mmd": "MMD",
    "energy": "energy",
    "fit_time": "fit time (s)",
    "autoencoder_time": "autoencoder fit time (s)",
}


def _same_scores(df, a: str, b: str) -> bool:
    """Whether feature sets ``a`` and ``b`` hold the same scores run for run (the top-k set
    is all features when there are at most k)."""
    keys = [c for c in ("method", "perturbation", "holdout", "repeat", "metric") if c in df]
    sa = df[df["features"] == a].set_index(keys)["value"].sort_index()
    sb = df[df["features"] == b].set_index(keys)["value"].sort_index()
    if len(sa) != len(sb) or not sa.index.equals(sb.index):
        return False
    return bool(np.allclose(sa.to_numpy(), sb.to_numpy(), rtol=1e-9, atol=0.0, equal_nan=True))


def _far_off(data: Sequence[np.ndarray], factor: float | None) -> list[int]:
    """Methods (positions in ``data``) lying far off the others: every value of the method
    beyond the others' range by more than ``factor`` times that range. Taken greedily from
    the lowest and highest medians while at least two methods remain."""
    core = [i for i, d in enumerate(data) if d.size]
    out: list[int] = []
    if factor is None:
        return out
    while len(core) > 2:
        order = sorted(core, key=lambda i: float(np.median(data[i])))
        best = None
        for i, below in ((order[0], True), (order[-1], False)):
            rest = np.concatenate([data[j] for j in core if j != i])
            lo, hi = float(rest.min()), float(rest.max())
            spread = hi - lo
            gap = lo - float(data[i].max()) if below else float(data[i].min()) - hi
            if spread > 0 and gap > factor * spread and (best is None or gap > best[0]):
                best = (gap, i)
        if best is None:
            break
        out.append(best[1])
        core.remove(best[1])
    return out


def _draw_panel(ax, data, names, stars: Mapping[str, str], factor: float | None, rng) -> None:
    """One panel: boxes and points per method; the y-axis spans the methods that are not far
    off (:func:`_far_off`), each far-off one marked by an arrow at the edge with its median."""
    pos = np.arange(1, len(names) + 1)
    ax.boxplot(data, positions=pos, widths=0.6, showfliers=False)
    for x, d in zip(pos, data, strict=True):
        ax.scatter(x + rng.uniform(-0.15, 0.15, d.size), d, s=10, alpha=0.6, zorder=3)
    ax.set_xticks(pos)
    ax.set_xticklabels(names, rotation=30, ha="right")
    trans = ax.get_xaxis_transform()  # x in data, y in axes coordinates
    star_room = 0.08 if stars else 0.0
    for m, text in stars.items():
        ax.text(names.index(m) + 1, 0.99, text, transform=trans, ha="center", va="top", fontsize=8)
    far = _far_off(data, factor)
    core = [d for i, d in enumerate(data) if d.size and i not in far]
    if not core:
        return
    vals = np.concatenate(core)
    lo, hi = float(vals.min()), float(vals.max())
    span = hi - lo if hi > lo else max(abs(hi), 1.0) * 0.1
    below = [i for i in far if float(np.median(data[i])) < lo]
    above = [i for i in far if i not in below]
    f_bot = 0.2 if below else 0.05
    f_top = (0.2 if above else 0.05) + star_room
    total = span / (1.0 - f_bot - f_top)
    ax.set_ylim(lo - f_bot * total, hi + f_top * total)
    for i in far:
        med = float(np.median(data[i]))
        if i in below:
            tip, text_y, va = 0.01, 0.19, "top"
        else:
            tip, text_y, va = 0.99 - star_room, 1.0 - f_top + 0.01, "bottom"
        ax.annotate(
            f"median\n{med:.3g}",
            xy=(pos[i], tip),
            xycoords=trans,
            xytext=(pos[i], text_y),
            textcoords=trans,
            ha="center",
            va=va,
            fontsize=7,
            color="C3",
            arrowprops={"arrowstyle": "->", "color": "C3", "lw": 0.8},
        )


def _feature_label(features: str, n_features: int | None, same_as: str | None = None) -> str:
    k = features[3:] if str(features).startswith("top") else ""
    if features == "all":
        label = f"all {n_features} features" if n_features else "all features"
        if same_as is not None:
            k_same = same_as[3:] if same_as.startswith("top") else same_as
            label += f"\n(= top {k_same} DE: no more features)"
        return label
    return f"top {k} DE features" if k.isdigit() else str(features)


def plot_benchmark(
    results,
    *,
    features: str | Sequence[str] | None = None,
    metrics: Sequence[str] = ("r2", "l2", "mmd"),
    reference: str | None = "w1ot",
    methods: Sequence[str] | None = None,
    path=None,
    axes=None,
    title: str | None = None,
    dataset: str | None = None,
    n_features: int | None = None,
    outlier_factor: float | None = 3.0,
):
    """Box plots of each metric per method over all runs, as in the paper's Fig. 3.

    One row of panels per feature set (all features, the top-k DE features), one panel per
    metric (arrow: better direction), one box per method with the runs as points, and the
    two-sided Mann-Whitney p-value of ``reference`` against every other method as stars
    above the boxes (``***`` p < 0.001, ``**`` < 0.01, ``*`` < 0.05, ``ns``). A top-k set
    with the same scores as all features (at most k features) is drawn once.

    A method far off the others (every run beyond their range by more than
    ``outlier_factor`` times that range, typically identity's r2) does not set a panel's
    y-axis: the axis spans the other methods and an arrow at its edge marks the far-off
    method with its median.

    Parameters
    ----------
    results : DataFrame
        Tidy results.
    features : str or sequence of str, optional
        Feature sets, one row each; default all present (``"all"`` and ``top*``).
    metrics : sequence of str
    reference : str, optional
        Method to test against the others (skipped if absent or None).
    methods : sequence of str, optional
        Methods and their order (default: order of appearance).
    path : path, optional
        Save the figure there (and close it).
    axes : array of Axes, optional
        One per feature set and metric (rows: feature sets); a new figure otherwise.
    title : str, optional
        Figure title (default: ``dataset``).
    dataset : str, optional
        Name of the dataset, shown in the title.
    n_features : int, optional
        Number of features of the data, shown in the labels of the all-features row.
    outlier_factor : float, optional
        See above; ``None`` lets every method set the axis.

    Returns
    -------
    matplotlib.figure.Figure
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plot_benchmark needs matplotlib: pip install 'w1ot[plot]'") from exc
    _check_results(results)
    df = results[results["metric"].isin(list(metrics))]
    present = list(dict.fromkeys(df["features"]))
    same_as: dict[str, str] = {}
    if features is None:
        sets = [f for f in present if f == "all"] + [f for f in present if f != "all"]
        if "all" in sets:
            for f in sets[1:]:
                if _same_scores(df, "all", f):
                    sets.remove(f)
                    same_as.setdefault("all", str(f))
    else:
        sets = [features] if isinstance(features, str) else list(features)
    df = df[df["features"].isin(sets)]
    if df.empty:
        raise ValueError(f"no results for features {sets} and metrics {list(metrics)}")
    sets = [f for f in sets if f in set(df["features"])]
    names = list(methods) if methods is not None else list(dict.fromkeys(results["method"]))
    metrics = [m for m in metrics if m in set(df["metric"])]
    shape = (len(sets), len(metrics))
    if axes is None:
        fig, axes = plt.subplots(
            *shape,
            figsize=(3.2 * shape[1] + 0.8, 3.6 * shape[0] + 0.9),
            squeeze=False,
        )
    else:
        flat = np.asarray(axes, dtype=object).ravel()
        if flat.size != shape[0] * shape[1]:
            raise ValueError(
                f"axes: need {shape[0] * shape[1]} (feature sets {sets} x metrics {metrics}), "
                f"got {flat.size}"
            )
        axes = flat.reshape(shape)
        fig = axes[0, 0].figure
    if reference not in names:
        reference = None
    rng = np.random.default_rng(0)
    for row, feats in enumerate(sets):
        sub_f = df[df["features"] == feats]
        tests = (
            mann_whitney(sub_f, reference=reference, metrics=metrics, features=feats)
            if reference is not None
            else None
        )
        for col, metric in enumerate(metrics):
            ax = axes[row, col]
            sub = sub_f[sub_f["metric"] == metric]
            data = [sub.loc[sub["method"] == m, "value"].dropna().to_numpy() for m in names]
            stars = {}
            if tests is not None:
                for _, t in tests[tests["metric"] == metric].iterrows():
                    if t["method_b"] in names:
                        stars[t["method_b"]] = _stars(t["p_value"])
            _draw_panel(ax, data, names, stars, outlier_factor, rng)
            arrow = "\u2193" if LOWER_IS_BETTER.get(metric, True) else "\u2191"
            ax.set_title(f"{_METRIC_LABELS.get(metric, metric)} {arrow}")
            if col == 0:
                ax.set_ylabel(_feature_label(feats, n_features, same_as.get(feats)))
    run_keys = [c for c in ("perturbation", "holdout", "repeat") if c in df]
    n_runs = len(df[run_keys].drop_duplicates()) if run_keys else None
    head = title if title else dataset
    if title and dataset and dataset not in title:
        head = f"{title} ({dataset})"
    what = "rows: " + ", ".join(
        _feature_label(f, n_features, same_as.get(f)).replace("\n", " ") for f in sets
    )
    note = "; ".join(
        [
            what,
            *([f"{n_runs} runs"] if n_runs else []),
            *([f"stars: Mann-Whitney vs {reference}"] if reference else []),
        ]
    )
    if head:
        fig.suptitle(f"{head}\n{note}", fontsize=10)
    else:
        fig.suptitle(note, fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


def format_summary(result_or_df, features: Sequence[str] | None = None) -> str:
    """The summary as printable text: per feature set, one line per metric and method with
    n, mean, std, median and worst over runs (fit times, in seconds, under ``all``). A feature
    set identical to ``all`` (fewer features than top_k) is only named."""
    results = result_or_df.results if isinstance(result_or_df, BenchmarkResult) else result_or_df
    s = summarize(results)
    lines = []
    feats = list(dict.fromkeys(results["features"])) if features is None else list(features)
    present = set(s.index.get_level_values("features"))
    for f in feats:
        if f not in present:
            continue
        sub = s.xs(f, level="features")
        if f != "all" and "all" in present:
            ref = s.xs("all", level="features").reindex(sub.index)
            if np.array_equal(ref["mean"].to_numpy(), sub["mean"].to_numpy(), equal_nan=True):
                lines.append(f"features: {f} = all features (no more than top_k)")
                continue
        lines.append(f"features: {f}")
        head = ("metric", "method", "n", "mean", "std", "median", "worst")
        lines.append("  {:<9}{:<14}{:>4}{:>12}{:>11}{:>12}{:>12}".format(*head))
        for (metric, method), row in sub.iterrows():
            lines.append(
                f"  {metric:<9}{method!s:<14}{int(row['n']):>4d}{row['mean']:>12.5g}"
                f"{row['std']:>11.3g}{row['median']:>12.5g}{row['worst']:>12.5g}"
            )
    return "\n".join(lines)
