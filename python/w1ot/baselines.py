"""Baseline perturbation predictors with the same interface as :class:`w1ot.W1OT`.

Each has ``fit(source, target) -> self``, ``transport(x) -> ndarray`` and ``is_fitted``;
inputs are cells x features arrays (dense or scipy.sparse), validated like W1OT's.

- :class:`Identity`: the control cells themselves (lower bound).
- :class:`Observed`: real perturbed cells held out from the evaluation truth (upper bound).
- :class:`MeanShift`: scGen-style shift by the difference of the (balanced) means.
- :class:`LatentMeanShift`: scGen itself, the same shift in an autoencoder's latent space,
  decoded.
"""

from __future__ import annotations

import numbers

import numpy as np

from w1ot._validation import as_cells
from w1ot.io import ModelFileError, invalid, load_model, save_model

__all__ = ["BASELINES", "Identity", "LatentMeanShift", "MeanShift", "Observed"]


def _seed(v) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {v!r}")
    if v < 0:
        raise ValueError(f"seed must be an integer >= 0, got {v!r}")
    return int(v)


def _balanced_means(src: np.ndarray, tgt: np.ndarray, balance: bool, seed: int):
    """The two means, over the same number of cells when ``balance`` (the larger side
    subsampled without replacement)."""
    if balance and src.shape[0] != tgt.shape[0]:
        n = min(src.shape[0], tgt.shape[0])
        rng = np.random.default_rng(seed)
        if src.shape[0] > n:
            src = src[np.sort(rng.choice(src.shape[0], size=n, replace=False))]
        else:
            tgt = tgt[np.sort(rng.choice(tgt.shape[0], size=n, replace=False))]
    return src.mean(axis=0), tgt.mean(axis=0)


def _flag(v, name: str) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {v!r}")
    return bool(v)


class _Baseline:
    """Shared validation and fitted-state handling."""

    n_features_: int | None = None
    fitted_on_: dict | None = None
    # Fitted arrays and constructor options, for save/load.
    _ARRAYS: tuple[str, ...] = ()
    _OPTIONS: tuple[str, ...] = ()

    def get_params(self) -> dict:
        """The configuration, as keyword arguments for ``type(self)(**params)``."""
        return {k: getattr(self, k) for k in self._OPTIONS}

    def save(self, path) -> None:
        """Saves the fitted baseline to ``path`` (the safe .npz model format)."""
        self._check_fitted()
        meta = {"class": type(self).__name__, "config": self.get_params()}
        meta["n_features"] = int(self.n_features_)
        if self.fitted_on_ is not None:
            meta["fitted_on"] = self.fitted_on_
        save_model(path, meta, {k: getattr(self, k) for k in self._ARRAYS})

    @classmethod
    def load(cls, path):
        """Loads a baseline written by :meth:`save`; raises :class:`~w1ot.ModelFileError`
        for any file that is not one."""
        name = cls.__name__
        meta, arrays = load_model(path, name, names=cls._ARRAYS)

        def bad(reason: str) -> ModelFileError:
            return invalid(path, name, reason)

        # The constructors convert their options; a file must hold them as saved.
        defaults = cls().get_params()
        for k, v in meta["config"].items():
            if k not in defaults:
                raise bad(f"its configuration has an unknown option {k!r}")
            kind = type(defaults[k])
            if type(v) is not kind or (kind is int and v < 0):
                raise bad(f"its option {k}={v!r} is not a valid {kind.__name__}")
        model = cls(**meta["config"])
        n = meta["n_features"]
        # shift_: one value per feature; target_: at least one cell.
        shapes = {"shift_": (n,), "target_": (None, n)}
        for k in cls._ARRAYS:
            if k not in arrays:
                raise bad(f"it lacks the fitted array {k!r}")
            a = arrays[k]
            want = shapes[k]
            if (
                a.dtype.kind != "f"
                or a.ndim != len(want)
                or any(w is not None and s != w for s, w in zip(a.shape, want, strict=True))
                or a.size == 0
            ):
                shown = "x".join("n" if w is None else str(w) for w in want)
                raise bad(f"its array {k!r} ({a.dtype}, {a.shape}) is not a float {shown} array")
            if not np.isfinite(a).all():
                raise bad(f"its array {k!r} holds NaN or infinite values")
            setattr(model, k, a.astype(np.float64))
        model.n_features_ = n
        model.fitted_on_ = meta.get("fitted_on")
        return model

    @property
    def is_fitted(self) -> bool:
        return self.n_features_ is not None

    @property
    def n_features(self) -> int:
        self._check_fitted()
        return int(self.n_features_)

    def _check_fitted(self) -> None:
        if self.n_features_ is None:
            raise RuntimeError(
                f"this {type(self).__name__} is not fitted yet: call fit(source, target) first"
            )

    def _fit_inputs(self, source, target) -> tuple[np.ndarray, np.ndarray]:
        src = as_cells(source, "source")
        tgt = as_cells(target, "target", n_features=src.shape[1])
        self.fitted_on_ = None
        return src, tgt

    def _cells(self, x) -> np.ndarray:
        self._check_fitted()
        return as_cells(x, "x", n_features=self.n_features_)

    def __repr__(self) -> str:
        fitted = "fitted" if self.is_fitted else "not fitted"
        return f"{type(self).__name__}({fitted})"


class Identity(_Baseline):
    """No perturbation effect: ``transport(x) = x`` (the control cells are the prediction)."""

    def fit(self, source, target) -> Identity:
        """Checks the inputs and records the feature count; learns nothing."""
        src, _ = self._fit_inputs(source, target)
        self.n_features_ = src.shape[1]
        return self

    def transport(self, x) -> np.ndarray:
        """A float64 copy of ``x``."""
        return self._cells(x).copy()


class Observed(_Baseline):
    """The observed perturbed cells as the prediction: the best any method can do.

    ``fit(source, target)`` stores the perturbed cells ``target``; ``transport(x)`` ignores the
    values of ``x`` and returns ``len(x)`` stored cells, drawn without replacement (with
    replacement only if fewer are stored), seeded, the same for every call.

    The stored cells must be disjoint from the truth the prediction is scored against, else
    the score is trivially perfect. :func:`w1ot.benchmark.run_benchmark` therefore fits it,
    like every method, on the *training* split of the perturbed cells, which is what the
    paper's "observed" baseline is: real perturbed cells from the same distribution as, but
    held out from, the test truth (the finite-sample noise floor of each metric). In the
    out-of-distribution mode it is fitted on the held-out group's perturbed cells that are not
    in the test truth instead (so it is an oracle there, not a trained model).

    Parameters
    ----------
    seed : int
        Seed of the draw.
    """

    _ARRAYS = ("target_",)
    _OPTIONS = ("seed",)

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = _seed(seed)
        self.target_: np.ndarray | None = None

    def fit(self, source, target) -> Observed:
        """Stores ``target`` (the perturbed cells to return); ``source`` is only checked."""
        _, tgt = self._fit_inputs(source, target)
        self.target_ = tgt
        self.n_features_ = tgt.shape[1]
        return self

    def transport(self, x) -> np.ndarray:
        """``len(x)`` of the stored perturbed cells (float64)."""
        n = self._cells(x).shape[0]
        m = self.target_.shape[0]
        rng = np.random.default_rng(self.seed)
        idx = rng.choice(m, size=n, replace=n > m)
        return self.target_[idx].copy()


class MeanShift(_Baseline):
    """scGen-style mean shift: ``transport(x) = x + mean(target) - mean(source)``.

    With ``balance=True`` (the paper's choice, which keeps the shift from being biased by
    unequal group sizes) both means are taken over the same number of cells,
    ``min(n_source, n_target)``, the larger side subsampled without replacement with ``seed``.
    Unlike scGen, the shift is applied in the input feature space (no autoencoder).

    Parameters
    ----------
    balance : bool
        Equalise the cell counts before taking the means (default True).
    positive : bool
        Clip predictions at 0 (non-negative expression data).
    seed : int
        Seed of the balancing subsample.
    """

    _ARRAYS = ("shift_",)
    _OPTIONS = ("balance", "positive", "seed")

    def __init__(self, *, balance: bool = True, positive: bool = False, seed: int = 0) -> None:
        self.balance = _flag(balance, "balance")
        self.positive = _flag(positive, "positive")
        self.seed = _seed(seed)
        self.shift_: np.ndarray | None = None

    def fit(self, source, target) -> MeanShift:
        """Learns ``shift_ = mean(target) - mean(source)`` (balanced if ``balance``)."""
        src, tgt = self._fit_inputs(source, target)
        with np.errstate(over="ignore", invalid="ignore"):
            mean_src, mean_tgt = _balanced_means(src, tgt, self.balance, self.seed)
            shift = mean_tgt - mean_src
        if not np.isfinite(shift).all():
            raise ValueError(
                "source and target: their means (or the difference) overflow float64; "
                "rescale the data"
            )
        self.shift_ = shift
        self.n_features_ = src.shape[1]
        return self

    def transport(self, x) -> np.ndarray:
        """``x + shift_`` (float64; clipped at 0 if ``positive``)."""
        with np.errstate(over="ignore"):
            out = self._cells(x) + self.shift_
        if not np.isfinite(out).all():
            raise ValueError("x + shift_ overflows float64: x has values too large; rescale it")
        if self.positive:
            np.maximum(out, 0.0, out=out)
        return out


class LatentMeanShift(_Baseline):
    """scGen's prediction: the (balanced) mean shift in an autoencoder's latent space,
    decoded, ``transport(x) = decode(encode(x) + mean(encode(target)) - mean(encode(source)))``.

    Parameters
    ----------
    autoencoder : a :class:`w1ot.Autoencoder`: used as it is when fitted (one for a whole
        screen), else a copy of it is fitted on the pooled source and target cells; ``None``
        (default) fits one with the paper's defaults and ``seed``.
    balance : bool
        Equalise the cell counts before taking the means (default True).
    seed : int
        Seed of the balancing subsample and of a default autoencoder.
    """

    _OPTIONS = ("balance", "seed")

    def __init__(self, *, autoencoder=None, balance: bool = True, seed: int = 0) -> None:
        from w1ot.solvers.autoencoder import Autoencoder

        if autoencoder is not None and not isinstance(autoencoder, Autoencoder):
            raise TypeError(f"autoencoder must be a w1ot.Autoencoder or None, got {autoencoder!r}")
        self.autoencoder = autoencoder
        self.balance = _flag(balance, "balance")
        self.seed = _seed(seed)
        self.shift_: np.ndarray | None = None
        self.autoencoder_ = None
        self.fit_time_: dict[str, float] = {}

    def get_params(self) -> dict:
        return {"autoencoder": self.autoencoder, **super().get_params()}

    def fit(self, source, target) -> LatentMeanShift:
        """Fits the autoencoder (unless given fitted), then the latent mean shift."""
        from w1ot.solvers.autoencoder import fitted_for

        src, tgt = self._fit_inputs(source, target)
        ae = fitted_for(self.autoencoder, src, tgt, name="autoencoder", seed=self.seed)
        fitted_here = ae is not self.autoencoder
        self.fit_time_ = {"autoencoder": ae.fit_time_["autoencoder"]} if fitted_here else {}
        zs, zt = ae.encode(src).astype(np.float64), ae.encode(tgt).astype(np.float64)
        mean_src, mean_tgt = _balanced_means(zs, zt, self.balance, self.seed)
        self.shift_, self.autoencoder_ = mean_tgt - mean_src, ae
        self.n_features_ = src.shape[1]
        return self

    def transport(self, x) -> np.ndarray:
        """The decoded shifted latent codes (float64, non-negative: the decoder's ReLU)."""
        x = self._cells(x)
        z = self.autoencoder_.encode(x) + self.shift_.astype(np.float32)
        return self.autoencoder_.decode(z).astype(np.float64)

    def save(self, path) -> None:
        """Saves the shift and the autoencoder to ``path`` (the safe .npz model format)."""
        self._check_fitted()
        ae = self.autoencoder_
        meta = {
            "class": "LatentMeanShift",
            "config": {"balance": self.balance, "seed": self.seed},
            "n_features": int(self.n_features_),
            "autoencoder": {"config": ae.get_params(), "n_features": ae.n_features},
        }
        if self.fitted_on_ is not None:
            meta["fitted_on"] = self.fitted_on_
        arrays = {f"autoencoder/{k}": v for k, v in ae._core.get_state().items()}
        save_model(path, meta, {"shift_": self.shift_, **arrays})

    @classmethod
    def load(cls, path):
        """Loads a model written by :meth:`save`; raises :class:`~w1ot.ModelFileError` for
        any file that is not one."""
        from w1ot.solvers.autoencoder import Autoencoder

        meta, arrays = load_model(
            path, "LatentMeanShift", names=("shift_",), prefixes=("autoencoder/",)
        )

        def bad(reason: str) -> ModelFileError:
            return invalid(path, "LatentMeanShift", reason)

        config = meta["config"]
        if set(config) != {"balance", "seed"} or not isinstance(config["balance"], bool):
            raise bad(f"its configuration {config!r:.80} is not balance and seed")
        if (
            not isinstance(config["seed"], int)
            or isinstance(config["seed"], bool)
            or config["seed"] < 0
        ):
            raise bad(f"its seed {config['seed']!r} is not an integer >= 0")
        if not isinstance(meta.get("autoencoder"), dict):
            raise bad("its metadata lacks the autoencoder")
        params = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("autoencoder/")}
        ae = Autoencoder._from_stored(meta["autoencoder"], params, {}, {}, bad)
        if ae.n_features != meta["n_features"]:
            raise bad(f"its autoencoder has {ae.n_features} features, not {meta['n_features']}")
        shift = arrays.get("shift_")
        if shift is None or shift.dtype.kind != "f" or shift.shape != (ae.latent,):
            raise bad(f"its shift_ is not {ae.latent} floating-point values")
        if not np.isfinite(shift).all():
            raise bad("its shift_ holds NaN or infinite values")
        model = cls(autoencoder=ae, **config)
        model.shift_, model.autoencoder_ = shift.astype(np.float64), ae
        model.n_features_ = meta["n_features"]
        model.fitted_on_ = meta.get("fitted_on")
        return model


#: Baselines by the names the benchmark uses.
BASELINES = {
    "identity": Identity,
    "observed": Observed,
    "mean_shift": MeanShift,
    "scgen": LatentMeanShift,
}
