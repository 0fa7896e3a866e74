"""The autoencoder of the paper's latent mode (as CellOT and scGen use one): an encoder and
a decoder MLP trained on control and perturbed cells together, in whose latent space the
transport is learned and from which predictions are decoded back to genes.

One autoencoder serves a whole screen (the paper trains one per dataset): fit it once,
``save`` it, and hand it to every solver of the screen.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

import numpy as np

from w1ot import _core
from w1ot._validation import as_cells
from w1ot.io import invalid, load_model, save_model
from w1ot.solvers._base import (
    Progress,
    ProgressReporter,
    config_of,
    flag,
    integer,
    iterations,
    number,
    positive,
    threads,
    widths,
)
from w1ot.solvers._base import betas as adam_betas

__all__ = ["Autoencoder", "fitted_for"]


def _param_count(dims: Sequence[int]) -> int:
    return sum(a * b + b for a, b in pairwise(dims))


def fitted_for(ae, *cells, name: str, **defaults) -> Autoencoder:
    """The autoencoder an option names, ready for ``cells``: a fitted one as it is (its
    feature count checked; the message names the option ``name``), else a copy of an unfitted
    one, or ``Autoencoder(**defaults)`` for None, fitted on the cells (the option is left as
    given)."""
    if ae is not None and ae.is_fitted:
        if ae.n_features != cells[0].shape[1]:
            raise ValueError(
                f"{name}: the autoencoder was fitted on {ae.n_features} features, the cells "
                f"have {cells[0].shape[1]}"
            )
        return ae
    return Autoencoder(**(ae.get_params() if ae is not None else defaults)).fit(*cells)


class Autoencoder:
    """Encoder and decoder MLPs with ReLU hidden layers, a linear latent layer and a ReLU
    output (expression is non-negative), trained by Adam on the mean squared reconstruction
    error, with a held-out split choosing the parameters kept and, by default, the stop.

    All arguments are keyword-only; defaults are the paper's (CellOT's) configuration.

    Parameters
    ----------
    hidden : widths of the encoder's hidden layers; the decoder mirrors them ([512, 512]).
    latent : latent dimensions (50).
    iters : training iterations at most (20,000).
    batch_size : cells per step (256).
    lr, betas, weight_decay : Adam's learning rate, betas and L2 weight decay (1e-3,
        (0.9, 0.999), 1e-5; PyTorch's semantics).
    valid_fraction : share of the cells held out (0.1) to score the reconstruction every
        ``eval_every`` iterations (``history["valid_loss"]``); the parameters with the lowest
        held-out error are kept.
    eval_every : iterations between held-out evaluations (250).
    early_stopping : stop once the held-out error has not fallen by ``min_rel_improvement``
        (0.1%) for ``patience`` (10) evaluations (on by default).
    seed : seed of initialisation, the held-out split and batch sampling.
    n_threads : worker threads (0: one per core); the model does not depend on the count.
    progress : show a progress bar.
    """

    _CONFIG = (
        "hidden",
        "latent",
        "iters",
        "batch_size",
        "lr",
        "betas",
        "weight_decay",
        "valid_fraction",
        "eval_every",
        "early_stopping",
        "patience",
        "min_rel_improvement",
        "seed",
        "n_threads",
        "progress",
    )

    def __init__(
        self,
        *,
        hidden: Sequence[int] = (512, 512),
        latent: int = 50,
        iters: int = 20_000,
        batch_size: int = 256,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 1e-5,
        valid_fraction: float = 0.1,
        eval_every: int = 250,
        early_stopping: bool = True,
        patience: int = 10,
        min_rel_improvement: float = 1e-3,
        seed: int = 0,
        n_threads: int = 0,
        progress: bool = False,
    ) -> None:
        self.hidden = widths(hidden, "hidden")
        self.latent = integer(latent, "latent", 1, 2**31)
        self.iters = iterations(iters, "iters")
        self.batch_size = integer(batch_size, "batch_size", 1)
        self.lr = positive(lr, "lr")
        self.betas = adam_betas(betas, "betas")
        self.weight_decay = number(weight_decay, "weight_decay")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.valid_fraction = number(valid_fraction, "valid_fraction")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction!r}")
        self.eval_every = integer(eval_every, "eval_every", 1)
        self.early_stopping = flag(early_stopping, "early_stopping")
        self.patience = integer(patience, "patience", 1)
        self.min_rel_improvement = number(min_rel_improvement, "min_rel_improvement")
        if self.min_rel_improvement < 0:
            raise ValueError(f"min_rel_improvement must be >= 0, got {min_rel_improvement!r}")
        self.seed = integer(seed, "seed", 0)
        self.n_threads = threads(n_threads)
        self.progress = flag(progress, "progress")
        self._core: Any = None
        self.history: dict[str, np.ndarray] = {}
        self.fit_time_: dict[str, float] = {}

    # -- the estimator -------------------------------------------------------------------

    def get_params(self) -> dict[str, Any]:
        """The configuration, as keyword arguments for ``Autoencoder(**params)``."""
        return config_of(self)

    def __repr__(self) -> str:
        fitted = "fitted" if self.is_fitted else "not fitted"
        return f"Autoencoder(hidden={self.hidden}, latent={self.latent}, {fitted})"

    @property
    def is_fitted(self) -> bool:
        return self._core is not None

    @property
    def n_features(self) -> int:
        return self._fitted_core().dim

    def _fitted_core(self) -> Any:
        if self._core is None:
            raise RuntimeError("this Autoencoder is not fitted yet: call fit(cells) first")
        return self._core

    def _new_core(self, dim: int) -> Any:
        return _core.AutoencoderCore(dim, hidden=self.hidden, latent=self.latent, seed=self.seed)

    def fit(self, *cells, callback: Callable[[Progress], object] | None = None) -> Autoencoder:
        """Trains on the cells given (one array or several with the same features, e.g.
        ``fit(control, perturbed)``; stacked). ``callback(progress)`` is called every few
        iterations; returning ``False`` stops the fit with KeyboardInterrupt, as Ctrl-C does.
        A stopped or failed fit leaves the model as it was."""
        if not cells:
            raise TypeError("fit needs at least one array of cells")
        arrays = [as_cells(cells[0], "cells", dtype=np.float32)]
        d = arrays[0].shape[1]
        arrays += [
            as_cells(c, f"cells[{i}]", dtype=np.float32, n_features=d)
            for i, c in enumerate(cells[1:], 1)
        ]
        x = arrays[0] if len(arrays) == 1 else np.vstack(arrays)
        rng = np.random.default_rng(self.seed)
        n_valid = math.floor(self.valid_fraction * x.shape[0])
        perm = rng.permutation(x.shape[0])
        train, valid = x[np.sort(perm[n_valid:])], (x[np.sort(perm[:n_valid])] if n_valid else None)
        if train.shape[0] < self.batch_size:
            raise ValueError(
                f"batch_size={self.batch_size} exceeds the {train.shape[0]} training cells "
                f"(after holding out valid_fraction={self.valid_fraction}); lower batch_size "
                "or supply more cells"
            )
        core = self._new_core(d)
        with ProgressReporter(self.progress, callback) as report:
            t0 = time.perf_counter()
            h = core.fit(
                train,
                valid,
                iters=self.iters,
                batch_size=self.batch_size,
                lr=self.lr,
                betas=self.betas,
                weight_decay=self.weight_decay,
                eval_every=self.eval_every,
                patience=self.patience if self.early_stopping else None,
                min_rel_improvement=self.min_rel_improvement,
                n_threads=self.n_threads,
                callback=report,
            )
            elapsed = time.perf_counter() - t0
        self._core = core
        self.history = {k: np.asarray(v) for k, v in h.items()}
        self.fit_time_ = {"autoencoder": elapsed}
        return self

    def encode(self, x) -> np.ndarray:
        """Latent codes, shape (n_cells, latent)."""
        core = self._fitted_core()
        return core.encode(as_cells(x, "x", dtype=np.float32, n_features=core.dim))

    def decode(self, z) -> np.ndarray:
        """Cells decoded from latent codes, shape (n_cells, n_features); non-negative."""
        core = self._fitted_core()
        return core.decode(as_cells(z, "z", dtype=np.float32, n_features=core.latent))

    def reconstruct(self, x) -> np.ndarray:
        """decode(encode(x))."""
        return self.decode(self.encode(x))

    def reconstruction_error(self, x) -> float:
        """Mean squared error of the reconstruction over every entry of ``x``."""
        core = self._fitted_core()
        return float(
            core.reconstruction_error(as_cells(x, "x", dtype=np.float32, n_features=core.dim))
        )

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Saves configuration, parameters and history to ``path`` (.npz, no pickle)."""
        core = self._fitted_core()
        arrays = {f"param/{k}": v for k, v in core.get_state().items()}
        arrays.update({f"history/{k}": np.asarray(v) for k, v in self.history.items()})
        meta = {
            "class": "Autoencoder",
            "config": self.get_params(),
            "n_features": core.dim,
            "fit_time": self.fit_time_,
        }
        save_model(path, meta, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Autoencoder:
        """Loads a model written by :meth:`save`; raises :class:`~w1ot.ModelFileError` for
        any file that is not one (sizes are checked before anything is allocated)."""
        meta, arrays = load_model(path, "Autoencoder", prefixes=("param/", "history/"))

        def bad(reason: str):
            return invalid(path, "Autoencoder", reason)

        if "fit_time" not in meta:
            raise bad("its metadata lacks 'fit_time'")
        params, history = {}, {}
        for k, v in arrays.items():
            group, name = k.split("/", 1)
            (params if group == "param" else history)[name] = v
        return cls._from_stored(meta, params, history, meta["fit_time"], bad)

    @classmethod
    def _from_stored(
        cls, meta: dict, params: dict, history: dict, fit_time: dict, bad: Callable
    ) -> Autoencoder:
        """A fitted autoencoder from stored metadata (``config``, ``n_features``) and
        parameter arrays, every size checked against the configuration before anything is
        allocated (also for the autoencoder inside a solver's model file)."""
        try:
            model = cls(**meta["config"])
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"its autoencoder configuration is refused ({exc!r})") from exc
        d = meta.get("n_features")
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise bad(f"its autoencoder's n_features must be a positive integer, got {d!r}")
        enc = [d, *model.hidden, model.latent]
        expected = {"encoder": _param_count(enc), "decoder": _param_count(enc[::-1])}
        if set(params) != set(expected):
            raise bad(f"its parameter arrays are {sorted(params)}, not {sorted(expected)}")
        for k, v in params.items():
            if v.dtype != np.float32 or v.shape != (expected[k],):
                raise bad(
                    f"parameter array {k!r} ({v.dtype}, {v.shape}) is not {expected[k]} float32 "
                    f"values, as {d} features and the configuration need"
                )
            if not np.isfinite(v).all():
                raise bad(f"parameter array {k!r} holds NaN or infinite values")
        for k, v in history.items():
            if v.ndim > 1:
                raise bad(f"history array {k!r} is not a vector")
        core = model._new_core(d)
        core.set_state(params)
        model._core, model.history = core, dict(history)
        model.fit_time_ = dict(fit_time)
        return model

    # -- pickling (worker processes) -------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = {"config": self.get_params()}
        if self._core is not None:
            state["n_features"] = self._core.dim
            state["params"] = {k: np.array(v) for k, v in self._core.get_state().items()}
            state["history"] = {k: np.array(v) for k, v in self.history.items()}
            state["fit_time"] = dict(self.fit_time_)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        type(self).__init__(self, **state["config"])
        if "params" in state:
            core = self._new_core(int(state["n_features"]))
            core.set_state(state["params"])
            self._core, self.history = core, state["history"]
            self.fit_time_ = state["fit_time"]
