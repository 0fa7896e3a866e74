"""What every solver shares: option checks, the held-out split, the latent space (principal
components of wide data), progress reporting, the fitted state and the model file.

A solver subclass declares its options (``_CONFIG``), builds its core (``_new_core``) and
trains it (``fit``); everything here is written once for all of them.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, ClassVar

import numpy as np

from w1ot import _core
from w1ot import latent as latent_space
from w1ot._validation import as_cells
from w1ot.io import ModelFileError, invalid, load_model, save_model
from w1ot.projection import PCA, resolve_components

__all__ = ["Progress", "TrainingError", "TrainingWarning"]

TrainingError = _core.TrainingError


class TrainingWarning(RuntimeWarning):
    """A fit finished, but its held-out diagnostics say a stage learned little or nothing."""


def energy_distance(x: np.ndarray, y: np.ndarray) -> float:
    """The energy distance (V-statistic, as the core's held-out ``energy_valid``) in float64,
    by blocks so that memory stays small; for the diagnostics of a finished fit."""

    def mean_dist(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a.astype(np.float64), b.astype(np.float64)
        bb = np.einsum("ij,ij->i", b, b)
        total = 0.0
        for i in range(0, a.shape[0], 512):
            blk = a[i : i + 512]
            d2 = np.einsum("ij,ij->i", blk, blk)[:, None] + bb[None, :] - 2.0 * blk @ b.T
            total += float(np.sqrt(np.maximum(d2, 0.0)).sum())
        return total / (a.shape[0] * b.shape[0])

    return max(2.0 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y), 0.0)


@dataclass(frozen=True)
class Progress:
    """What a training callback receives every few iterations."""

    stage: str  # "potential", "step_size" (W1OT) or "w2" (W2OT)
    iteration: int
    total: int
    loss: float
    # the stage's held-out statistic: the dual W1 estimate (potential); D(real) - D(fake)
    # with step_loss="gan", else the energy distance (step size); the W2 estimate (w2)
    valid: float | None


# -- option checks (each message names the option) ---------------------------------------


def widths(v: Sequence[int], name: str) -> list[int]:
    if isinstance(v, (str, bytes)) or not isinstance(v, Sequence | np.ndarray):
        raise TypeError(f"{name} must be a sequence of layer widths, got {v!r}")
    out = []
    for h in v:
        if isinstance(h, bool) or not isinstance(h, numbers.Integral):
            raise TypeError(f"{name} must hold integer widths, got {h!r}")
        out.append(int(h))
    if not out or any(h < 1 for h in out):
        raise ValueError(f"{name} must be a non-empty sequence of positive widths, got {list(v)}")
    if max(out) > MAX_INT:
        raise ValueError(f"{name}: widths must be at most {MAX_INT}, got {max(out)}")
    return out


# The core counts in 64-bit integers.
MAX_INT = 2**63 - 1
#: More worker threads than this is a mistake on any machine.
MAX_THREADS = 1024
#: The most iterations a training stage may be asked for. The core allocates a stage's
#: history (a float per iteration) before its first iteration, so a count beyond memory
#: aborts the process (or, beyond 2**60, raises an internal error); 10**8 iterations are
#: days of training and 400 MB of history.
MAX_ITERS = 10**8


def integer(v, name: str, minimum: int, maximum: int = MAX_INT) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {v!r}")
    if v < minimum:
        kind = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{name} must be a {kind} integer, got {v!r}")
    if v > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {v!r}")
    return int(v)


def threads(v) -> int:
    return integer(v, "n_threads", 0, MAX_THREADS)


def iterations(v, name: str) -> int:
    return integer(v, name, 0, MAX_ITERS)


def number(v, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a number, got {v!r}")
    try:
        out = float(v)
    except OverflowError:  # an int beyond float range
        out = math.inf
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {v!r}")
    return out


def positive(v, name: str) -> float:
    v = number(v, name)
    if v <= 0:
        raise ValueError(f"{name} must be a positive number, got {v!r}")
    return v


def flag(v, name: str) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {v!r}")
    return bool(v)


def choice(v, name: str, options: Sequence[str]) -> str:
    if not isinstance(v, str):
        raise TypeError(f"{name} must be one of {', '.join(map(repr, options))}, got {v!r}")
    if v not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {v!r}")
    return v


def betas(v, name: str) -> tuple[float, float]:
    try:
        b1, b2 = v
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a pair of numbers, got {v!r}") from exc
    out = (number(b1, name), number(b2, name))
    if not all(0.0 <= b < 1.0 for b in out):
        raise ValueError(f"{name} must be two numbers in [0, 1), got {v!r}")
    return out


def components(v, first_width: int) -> int | str | None:
    resolve_components(v, 2**62, first_width)  # type and range, early
    return int(v) if isinstance(v, np.integer) else v


# -- the shared estimator ---------------------------------------------------------------


def config_of(model) -> dict[str, Any]:
    """The options ``model._CONFIG`` names, sequences as lists: ``get_params()``."""
    return {
        k: (list(v) if isinstance(v, (list, tuple)) else v)
        for k in model._CONFIG
        for v in [getattr(model, k)]
    }


class Solver:
    """Base of :class:`~w1ot.W1OT` and :class:`~w1ot.W2OT` (not used directly)."""

    _CONFIG: ClassVar[tuple[str, ...]] = ()
    # Options that define the networks, passed to the core's constructor with the dimension.
    _CORE_OPTIONS: ClassVar[tuple[str, ...]] = ()
    _CORE: ClassVar[str] = ""

    hidden: list[int]
    valid_fraction: float
    batch_size: int
    n_components: int | str | None
    latent: Any
    keep_residual: bool
    seed: int
    n_threads: int

    def _init_state(self) -> None:
        self._core: Any = None
        self._pca: PCA | None = None
        self._autoencoder: Any = None  # the fitted w1ot.Autoencoder of latent mode
        self._n_features = 0
        self.history: dict[str, np.ndarray] = {}
        self.fit_time_: dict[str, float] = {}
        # What w1ot.tl recorded about the AnnData it was fitted on (opaque here; saved).
        self.fitted_on_: dict[str, Any] | None = None

    def get_params(self) -> dict[str, Any]:
        """The configuration, as keyword arguments for ``type(self)(**params)``."""
        return config_of(self)

    def __repr__(self) -> str:
        fitted = "fitted" if self.is_fitted else "not fitted"
        shown = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._CONFIG[:3])
        return f"{type(self).__name__}({shown}, {fitted})"

    @property
    def is_fitted(self) -> bool:
        return self._core is not None

    @property
    def n_features(self) -> int:
        self._check_fitted()
        return self._n_features

    @property
    def latent_dim(self) -> int | None:
        """Dimensions of the space the transport was learned in: principal components or
        the autoencoder's latent space (``None``: the feature space)."""
        self._check_fitted()
        if self._autoencoder is not None:
            return self._autoencoder.latent
        return None if self._pca is None else self._pca.n_components

    @property
    def autoencoder(self) -> Any:
        """The fitted :class:`~w1ot.Autoencoder` whose latent space the transport was learned
        in, or ``None``."""
        self._check_fitted()
        return self._autoencoder

    @property
    def pca(self) -> PCA | None:
        """The fitted projection (``mean``, ``components``), or ``None``."""
        self._check_fitted()
        return self._pca

    # -- fitting -------------------------------------------------------------------------

    def _split(
        self, x: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        n_valid = math.floor(self.valid_fraction * x.shape[0])
        if n_valid == 0:
            return x, None
        perm = rng.permutation(x.shape[0])
        valid, train = np.sort(perm[:n_valid]), np.sort(perm[n_valid:])
        return x[train], x[valid]

    def _prepare(self, source, target) -> tuple[np.ndarray, np.ndarray, tuple, Any, int]:
        """Validated training and held-out cells in the space the core works in:
        (source_train, target_train, (valid_source, valid_target) or (None, None), the latent
        space (a PCA, a fitted Autoencoder or None), n_features)."""
        src = as_cells(source, "source", dtype=np.float32)
        tgt = as_cells(target, "target", dtype=np.float32, n_features=src.shape[1])
        rng = np.random.default_rng(self.seed)
        src_train, src_valid = self._split(src, rng)
        tgt_train, tgt_valid = self._split(tgt, rng)
        for name, arr in (("source", src_train), ("target", tgt_train)):
            if arr.shape[0] < self.batch_size:
                raise ValueError(
                    f"batch_size={self.batch_size} exceeds the {arr.shape[0]} training cells of "
                    f"{name} (after holding out valid_fraction={self.valid_fraction}); "
                    "lower batch_size or supply more cells"
                )
        valid: tuple = (
            (src_valid, tgt_valid)
            if src_valid is not None and tgt_valid is not None
            else (None, None)
        )
        d = src.shape[1]
        kind, k = latent_space.resolve(self.latent, self.n_components, d, self.hidden[0])
        space: Any = None
        if kind == "pca":
            space = PCA.fit(np.vstack([src_train, tgt_train]), k, seed=self.seed)
        elif kind == "autoencoder":
            space = self._fitted_autoencoder(src_train, tgt_train)
        if space is not None:
            src_train, tgt_train = space.encode(src_train), space.encode(tgt_train)
            valid = tuple(None if v is None else space.encode(v) for v in valid)
        return src_train, tgt_train, valid, space, d

    def _fitted_autoencoder(self, src_train: np.ndarray, tgt_train: np.ndarray) -> Any:
        """The latent option's autoencoder: a fitted one as it is (its feature count
        checked), else fitted here on the pooled training cells (a copy of an unfitted one,
        so that the option is left as given)."""
        from w1ot.solvers.autoencoder import Autoencoder, fitted_for

        ae = self.latent if isinstance(self.latent, Autoencoder) else None
        return fitted_for(
            ae, src_train, tgt_train, name="latent", seed=self.seed, n_threads=self.n_threads
        )

    def _new_core(self, dim: int) -> Any:
        return getattr(_core, self._CORE)(
            dim, **{k: getattr(self, k) for k in self._CORE_OPTIONS}, seed=self.seed
        )

    def _set_fitted(
        self, core: Any, space: Any, n_features: int, history: dict, times: dict
    ) -> None:
        pca = space if isinstance(space, PCA) else None
        ae = None if space is None or pca is not None else space
        if ae is not None and ae is not self.latent:
            times = {"autoencoder": ae.fit_time_.get("autoencoder", 0.0), **times}
        self._core, self.history, self.fit_time_ = core, history, times
        self._pca, self._autoencoder, self._n_features = pca, ae, n_features
        self.fitted_on_ = None  # a refit on arrays forgets the AnnData of a previous fit

    # -- inference -----------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if self._core is None:
            raise RuntimeError(
                f"this {type(self).__name__} is not fitted yet: call fit(source, target) first"
            )

    def _cells(self, x, name: str = "x") -> np.ndarray:
        self._check_fitted()
        return as_cells(x, name, dtype=np.float32, n_features=self._n_features)

    def _latent(self, x, name: str = "x") -> np.ndarray:
        """Validated cells in the space the core works in."""
        x = self._cells(x, name)
        space = self._autoencoder if self._autoencoder is not None else self._pca
        return x if space is None else space.encode(x)

    def _lifted(self, v: np.ndarray) -> np.ndarray:
        """Latent vectors (gradients, directions) in feature space: through the components;
        an autoencoder's latent space has no linear way back."""
        if self._autoencoder is not None:
            raise NotImplementedError(
                "this model transports in an autoencoder's latent space, where gradients and "
                "directions have no feature-space counterpart (fit with latent='pca' or None "
                "for them)"
            )
        return v if self._pca is None else self._pca.lift(v).astype(np.float32)

    def _fitted_core(self) -> Any:
        self._check_fitted()
        return self._core

    def _moved(self, x, move: Callable[[np.ndarray], np.ndarray], positive: bool) -> np.ndarray:
        """Cells moved by ``move`` (a map of the core's space); with components, the move
        happens inside their span and the rest of each cell is kept."""
        x = self._cells(x)
        if self._autoencoder is not None:
            ae = self._autoencoder
            z = ae.encode(x)
            out = ae.decode(move(z))
            if self.keep_residual:
                # The decoded displacement on the cell itself: the part of each cell that the
                # latent space does not reconstruct stays, as with components.
                out = x + (out - ae.decode(z))
        elif self._pca is None:
            out = move(x)
        else:
            z = self._pca.encode(x)
            out = x + self._pca.lift(move(z) - z)
        if positive:
            out = np.maximum(out, 0.0)
        return np.asarray(out, dtype=np.float32)

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Saves configuration, parameters and history to ``path`` (.npz, no pickle)."""
        self._check_fitted()
        state = self._core.get_state()
        arrays = {f"param/{k}": v for k, v in state.items()}
        arrays.update({f"history/{k}": np.asarray(v) for k, v in self.history.items()})
        if self._pca is not None:
            arrays.update({"pca/mean": self._pca.mean, "pca/components": self._pca.components})
        config = self.get_params()
        meta = {
            "class": type(self).__name__,
            "config": config,
            "n_features": self.n_features,
            "fit_time": self.fit_time_,
        }
        if self._autoencoder is not None:
            ae = self._autoencoder
            config["latent"] = "autoencoder"
            meta["autoencoder"] = {"config": ae.get_params(), "n_features": ae.n_features}
            arrays.update({f"autoencoder/{k}": v for k, v in ae._core.get_state().items()})
        if self.fitted_on_ is not None:
            meta["fitted_on"] = self.fitted_on_
        save_model(path, meta, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike):
        """Loads a model written by :meth:`save`; raises :class:`~w1ot.ModelFileError` for
        any file that is not one (every size is checked before anything is allocated)."""
        name = cls.__name__
        meta, arrays = load_model(
            path,
            name,
            names=("pca/mean", "pca/components"),
            prefixes=("param/", "history/", "autoencoder/"),
        )

        def bad(reason: str) -> ModelFileError:
            return invalid(path, name, reason)

        if meta["version"] >= 2 and "fit_time" not in meta:
            raise bad("its metadata lacks 'fit_time'")
        config = meta["config"]
        ae = cls._stored_autoencoder(meta, arrays, bad)
        if ae is not None:
            config = {**config, "latent": ae}
        try:
            # Files written before n_components existed hold full-space models.
            model = cls(**{"n_components": None, **config})
        except (TypeError, ValueError, OverflowError) as exc:
            raise bad(f"its configuration is refused ({exc})") from exc
        n_features = meta["n_features"]
        params = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("param/")}
        dim = model._stored_input_dim(params, bad)
        space: Any
        if ae is None:
            space = model._stored_projection(arrays, dim, n_features, bad)
        else:
            if "pca/mean" in arrays or "pca/components" in arrays:
                raise bad("it holds both an autoencoder and principal components")
            if (dim, n_features) != (ae.latent, ae.n_features):
                raise bad(
                    f"its networks take {dim} inputs and {n_features} features, its "
                    f"autoencoder {ae.latent} latent dimensions and {ae.n_features} features"
                )
            space = ae
        history = {}
        for k, v in arrays.items():
            if k.startswith("history/"):
                if v.ndim > 1:
                    raise bad(f"history array {k!r} is not a vector")
                history[k.split("/", 1)[1]] = v
        core = model._new_core(dim)
        try:
            core.set_state(params)
        except ValueError as exc:
            raise bad(f"its parameters do not match the configuration ({exc})") from exc
        model._set_fitted(core, space, n_features, history, dict(meta.get("fit_time", {})))
        model.fitted_on_ = meta.get("fitted_on")
        return model

    @staticmethod
    def _stored_autoencoder(meta: dict, arrays: dict, bad: Callable) -> Any:
        """The autoencoder of a latent-mode model file (checked like its own file), or None;
        a file either has all of it or none."""
        from w1ot.solvers.autoencoder import Autoencoder

        params = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("autoencoder/")}
        wants = meta["config"].get("latent") == "autoencoder"
        if not wants and not params and "autoencoder" not in meta:
            return None
        if not (wants and params and isinstance(meta.get("autoencoder"), dict)):
            raise bad("its latent setting, autoencoder metadata and arrays do not agree")
        return Autoencoder._from_stored(meta["autoencoder"], params, {}, {}, bad)

    def _stored_input_dim(self, params: dict[str, np.ndarray], bad: Callable) -> int:
        """The networks' input dimension implied by stored parameter vectors, checked before
        any network of that size is built (a crafted file must not make us allocate)."""
        for k, v in params.items():
            if v.dtype != np.float32 or v.ndim != 1:
                raise bad(f"parameter array {k!r} is not a float32 vector ({v.dtype}, {v.shape})")
            if not np.isfinite(v).all():
                raise bad(f"parameter array {k!r} holds NaN or infinite values")
        total = sum(v.size for v in params.values())
        for opt in self._CORE_OPTIONS:
            w = getattr(self, opt)
            if isinstance(w, list) and sum(a * b for a, b in pairwise(w)) + sum(w) > total:
                raise bad(f"{opt}={w} needs more than its {total} stored parameters")
        try:
            # Each vector's length is affine in the input dimension: read it off two tiny
            # networks of the same configuration.
            one, two = (
                {k: v.size for k, v in self._new_core(d).get_state().items()} for d in (1, 2)
            )
        except (TypeError, ValueError, OverflowError) as exc:
            raise bad(f"its configuration is refused ({exc})") from exc
        if set(params) != set(one):
            missing = sorted(set(one) - set(params))
            if missing:
                raise bad(f"it lacks the parameter array {missing[0]!r}")
            raise bad(
                f"it holds an unexpected parameter array {sorted(set(params) - set(one))[0]!r}"
            )
        dims = set()
        for k, v in params.items():
            per, fixed = two[k] - one[k], 2 * one[k] - two[k]
            if per == 0:
                if v.size != fixed:
                    raise bad(f"parameter array {k!r} has {v.size} values, not {fixed}")
                continue
            dim, rest = divmod(v.size - fixed, per)
            if rest or dim < 1:
                raise bad(
                    f"parameter array {k!r} ({v.size} values) does not match the configuration"
                )
            dims.add(dim)
        if len(dims) != 1:
            raise bad("its parameter arrays disagree on the input dimension")
        return dims.pop()

    def _stored_projection(self, arrays, dim: int, n_features: int, bad: Callable) -> PCA | None:
        """The stored principal components, checked against the networks and the config."""
        if ("pca/mean" in arrays) != ("pca/components" in arrays):
            raise bad("its projection lacks its mean or its components")
        if "pca/components" not in arrays:
            if dim != n_features:
                raise bad(f"its parameters are for {dim} features, not n_features={n_features}")
            if isinstance(self.n_components, int):
                raise bad(f"it has no projection, though n_components={self.n_components}")
            return None
        mean, comps = arrays["pca/mean"], arrays["pca/components"]
        if mean.dtype.kind != "f" or comps.dtype.kind != "f":
            raise bad("its projection is not floating point")
        if comps.shape != (dim, n_features) or mean.shape != (n_features,):
            raise bad(
                f"its projection ({comps.shape} components, {mean.shape} mean) does not "
                f"match {dim} latent dimensions and n_features={n_features}"
            )
        if not (np.isfinite(mean).all() and np.isfinite(comps).all()):
            raise bad("its projection holds NaN or infinite values")
        k = self.n_components
        if k is None or (not isinstance(k, str) and k != dim):
            raise bad(f"its projection does not match n_components={k!r}")
        return PCA(mean, comps)

    # -- pickling (for worker processes: joblib, Dask) ------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """What :meth:`save` stores, as plain Python and NumPy objects: the configuration,
        the core's parameter arrays, the projection, history, fit times and ``fitted_on_``.
        The core itself (a Rust object) is rebuilt from them by :meth:`__setstate__`."""
        state: dict[str, Any] = {"config": self.get_params(), "fitted_on": self.fitted_on_}
        if self._core is not None:
            state["params"] = {k: np.array(v) for k, v in self._core.get_state().items()}
            state["n_features"] = self._n_features
            state["autoencoder"] = self._autoencoder
            state["pca"] = (
                None if self._pca is None else (self._pca.mean.copy(), self._pca.components.copy())
            )
            state["history"] = {k: np.array(v) for k, v in self.history.items()}
            state["fit_time"] = dict(self.fit_time_)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Rebuilds the estimator (options checked by ``__init__``) and, when it was fitted,
        its core from the stored parameters, as :meth:`load` does."""
        type(self).__init__(self, **state["config"])
        if "params" in state:
            space = None if state["pca"] is None else PCA(*state["pca"])
            space = state.get("autoencoder") or space
            n_features = int(state["n_features"])
            if space is None:
                dim = n_features
            else:
                dim = space.n_components if isinstance(space, PCA) else space.latent
            core = self._new_core(dim)
            core.set_state(state["params"])
            self._core, self.history, self.fit_time_ = core, state["history"], state["fit_time"]
            self._n_features = n_features
            self._pca = space if isinstance(space, PCA) else None
            self._autoencoder = None if space is None or isinstance(space, PCA) else space
        self.fitted_on_ = state.get("fitted_on")


class ProgressReporter:
    """Adapts the core's progress calls to tqdm bars and the user's callback."""

    LABELS: ClassVar[dict[str, str]] = {
        "potential": "W1 (held out)",
        "w2": "W2 (held out)",
        "autoencoder": "held-out MSE",
    }

    def __init__(self, show: bool, callback: Callable[[Progress], Any] | None) -> None:
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        self.show, self.callback = show, callback
        self.bars: dict[str, Any] = {}
        self.last_valid: dict[str, float | None] = {}

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(self, *exc) -> None:
        for bar in self.bars.values():
            bar.close()

    def __call__(
        self, stage: str, iteration: int, total: int, loss: float, valid: float | None
    ) -> bool:
        if self.show:
            bar = self.bars.get(stage)
            if bar is None:
                from tqdm.auto import tqdm

                bar = self.bars[stage] = tqdm(total=total, desc=stage.replace("_", " "), leave=True)
                self.last_valid[stage] = None
            bar.update(iteration - bar.n)
            if valid is not None:
                self.last_valid[stage] = valid
            post = {"loss": f"{loss:.4g}"}
            if self.last_valid[stage] is not None:
                key = self.LABELS.get(stage, "held-out statistic")
                post[key] = f"{self.last_valid[stage]:.4g}"
            bar.set_postfix(post, refresh=False)
            if iteration >= total:
                bar.close()
        if self.callback is not None:
            result = self.callback(Progress(stage, iteration, total, loss, valid))
            # False stops, NumPy's False too (a callback returning e.g. ``loss < limit``).
            return not (result is False or (isinstance(result, np.bool_) and not result))
        return True
