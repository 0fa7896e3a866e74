"""Whole perturbation screens: one model per perturbation (and per seed), fitted in parallel
on local processes (joblib's loky backend) or on a Dask cluster, collected in a
:class:`ModelCollection` that predicts, saves and loads them together.

.. code-block:: python

    models = w1ot.tl.fit_many(adata, condition_key="target", control="non-targeting",
                              genes="highly_variable", directory="screen/")
    models["IFNGR1"]                       # one fitted model (w1ot.W1OT by default)
    pred = models.predict_all(adata)       # every perturbation's prediction, one AnnData
    models.failures                        # {"SPI1": "ValueError: batch_size=256 exceeds ..."}

How the data travel. The parent process reads the AnnData: it makes the control cells dense
once (in the chosen representation and genes) and each perturbation's cells when its fit is
dispatched, so a screen never holds all perturbations dense at once. Local workers receive
the control matrix as a read-only memory map of one temporary ``.npy`` file (joblib passes a
file-backed ``numpy.memmap`` by its file name and offset, so it is written once and never
pickled per task); Dask workers receive it once each, scattered to the cluster. Only the
perturbation's own cells and the small options travel with each task, and only the fitted
model (its parameters, as :meth:`~w1ot.W1OT.save` stores them) comes back.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import numbers
import os
import pickle
import re
import tempfile
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from w1ot._anndata import Representation, check_adata, labels

__all__ = ["SCREEN_DEFAULTS", "ModelCollection", "fit_many"]

#: The collection's index file, beside one model file per perturbation and repeat.
INDEX = "index.json"
FORMAT = "w1ot-screen"
VERSION = 1
_SUFFIX = ".w1ot"
# Options that change how fast a model is fitted, never what it is (the core gives the same
# model bit for bit for any thread count): a resumed screen may differ in them.
_SPEED_OPTIONS = frozenset({"n_threads"})
#: The options :func:`fit_many` gives a method named by a string when the call does not set
#: them (``screen_defaults=False``: the estimator's own defaults). W1OT: the same cosine
#: schedules over 1,500 instead of 10,000 iterations per stage. On a simulated screen
#: (benches/bench_simulated_screen.py: 16 perturbations x 2 repeats, 50 components) this
#: fit took 3.95 s against 27.4 s and its held-out MMD was the full fit's within 0.1%
#: (0.7% of the gap above the observed cells' noise floor), where early stopping lost 12% of
#: that gap on the top-50 genes.
SCREEN_DEFAULTS: dict[str, dict[str, Any]] = {
    "w1ot": {"potential_iters": 1500, "step_iters": 1500},
}
# Seconds between rewrites of the index of a screen being fitted into a directory.
_INDEX_EVERY = 30.0


# -- seeds, tasks and names ------------------------------------------------------------------


def task_seed(seed: int, perturbation, repeat: int) -> int:
    """The seed of ``repeat`` of ``perturbation`` in a screen seeded with ``seed``.

    Repeat 0 takes ``seed`` itself, so that a screen's first model of each perturbation is
    the model :func:`w1ot.tl.fit` gives with the same options. Repeat ``r >= 1`` takes the
    CRC-32 of ``seed``, the perturbation's name and ``r``: the same in every process and on
    every machine (unlike Python's ``hash``), different between perturbations and repeats.
    """
    if repeat == 0:
        return int(seed)
    return zlib.crc32(f"{int(seed)}\x00{perturbation}\x00{int(repeat)}".encode())


def model_file(perturbation, repeat: int) -> str:
    """The file name of a perturbation's model in a collection's directory.

    Names of letters, digits, ``_`` and ``-`` (up to 80 characters) are kept; any other
    name is made safe and suffixed by its CRC-32, so that two names never share a file.
    """
    name = str(perturbation)
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:80]
    if stem != name or not stem:
        stem = f"{stem}-{zlib.crc32(name.encode()):08x}"
    return f"{stem}.{int(repeat)}{_SUFFIX}"


@dataclass(frozen=True)
class _Task:
    perturbation: Any
    repeat: int
    seed: int | None


@dataclass(frozen=True)
class _Failure:
    message: str  # one line: "TypeName: message"
    error: BaseException | None  # the exception itself, when it survives pickling


@dataclass(frozen=True)
class _Outcome:
    task: _Task
    model: Any
    failure: _Failure | None
    warned: tuple[tuple[type[Warning], str], ...]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _failure(exc: BaseException) -> _Failure:
    try:
        kept: BaseException | None = pickle.loads(pickle.dumps(exc))
    except Exception:
        kept = None
    return _Failure(_one_line(exc), kept)


def _jsonable(v):
    return v.item() if isinstance(v, np.generic) else v


# -- estimators ---------------------------------------------------------------------------


def _accepts(method) -> set[str]:
    """The constructor options (of those fit_many sets) that ``method`` takes."""
    if isinstance(method, str):
        from w1ot.baselines import BASELINES
        from w1ot.solvers import W1OT, W2OT

        cls = {"w1ot": W1OT, "w2ot": W2OT, **BASELINES}.get(method)
        if cls is None:
            return set()  # tl._estimator names the methods
        names = set(inspect.signature(cls).parameters)
    else:
        get = getattr(method, "get_params", None)
        names = set(get()) if callable(get) else set()
    return names & {"seed", "n_threads"}


def _make(method, options: dict[str, Any]):
    """A new, unfitted estimator: by name, or a copy of an estimator with ``options``."""
    from w1ot.tl import _estimator

    if isinstance(method, str):
        return _estimator(method, options)
    _estimator(method, {})  # its type checks
    get = getattr(method, "get_params", None)
    if callable(get):
        return type(method)(**{**get(), **options})
    import copy

    return copy.deepcopy(method)


_thread_log = threading.local()
_hook_lock = threading.Lock()


def _install_hook() -> None:
    """Routes the warnings of a thread that collects them (``_thread_log.log``) to its own
    list, and every other warning to the ``showwarning`` that was there; installed once."""
    with _hook_lock:
        if getattr(warnings.showwarning, "_w1ot_screen", False):
            return
        shown = warnings.showwarning

        def hook(message, category, filename, lineno, file=None, line=None):
            log = getattr(_thread_log, "log", None)
            if log is None:
                return shown(message, category, filename, lineno, file, line)
            log.append((category, str(message)))

        hook._w1ot_screen = True  # type: ignore[attr-defined]
        warnings.showwarning = hook


@contextlib.contextmanager
def _captured_warnings() -> Iterator[list[tuple[type[Warning], str]]]:
    """Collects the warnings given inside as (category, message), instead of showing them.

    In a process's main thread (fits in process, loky workers) ``catch_warnings`` does it,
    every warning recorded. It swaps process-wide state, so two threads using it at once
    (a Dask worker's threads) would take each other's warnings and could leave the process
    silent; there a hook routes each thread's warnings to its own list instead (the
    process's filters still apply).
    """
    log: list[tuple[type[Warning], str]] = []
    if threading.current_thread() is threading.main_thread():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield log
        log.extend((w.category, str(w.message)) for w in caught)
        return
    _install_hook()
    previous = getattr(_thread_log, "log", None)
    _thread_log.log = log
    try:
        yield log
    finally:
        _thread_log.log = previous


def _fit_task(
    task: _Task,
    source: np.ndarray,
    target: np.ndarray,
    method,
    options: dict[str, Any],
    fitted_on: dict[str, Any],
) -> _Outcome:
    """Fits one model (in a worker, or in process); never raises for a failed fit. The
    warnings it gives are returned, to be given again by the parent naming the task."""
    opts = dict(options)
    if task.seed is not None:
        opts["seed"] = task.seed
    failure: _Failure | None = None
    with _captured_warnings() as warned:
        try:
            model = _make(method, opts)
            model.fit(source, target)
        except Exception as exc:
            failure = _failure(exc)
            model = None
        else:
            model.fitted_on_ = {
                "representation": fitted_on["representation"],
                "condition_key": fitted_on["condition_key"],
                "control": fitted_on["control"],
                "perturbation": _jsonable(task.perturbation),
                "n_cells": {"control": len(source), "perturbation": len(target)},
                # as tl.fit: non-negative training data (not an embedding) clip predictions
                "nonnegative": bool(fitted_on["nonnegative"] and target.min() >= 0),
                "method": fitted_on["method"],
            }
    return _Outcome(task, model, failure, tuple(warned))


# -- the collection -------------------------------------------------------------------------


class ModelCollection(Mapping):
    """The models of a screen, by perturbation: what :func:`fit_many` returns.

    A read-only mapping from perturbation label to fitted model (repeat 0): ``len``,
    iteration over the perturbations that have a model, ``collection["drugX"]``,
    ``"drugX" in collection``.

    Attributes
    ----------
    failures : dict
        Perturbation -> one-line error message (``"ValueError: ..."``) for every
        perturbation whose fit failed (with repeats: any of its repeats; the message names
        the repeat).
    settings : dict
        What the screen was fitted with: ``condition_key``, ``control``, ``method``,
        ``options`` (the method's options, without the per-fit ``seed`` and ``n_threads``),
        ``seed`` (the base seed) and ``representation``.
    """

    def __init__(
        self,
        models: Mapping[Any, Mapping[int, Any]],
        *,
        seeds: Mapping[tuple[Any, int], int | None] | None = None,
        failures: Mapping[Any, str] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self._models = {
            name: dict(sorted(reps.items())) for name, reps in models.items() if len(reps)
        }
        self._seeds = dict(seeds or {})
        self.failures: dict[Any, str] = dict(failures or {})
        self.settings: dict[str, Any] = dict(settings or {})

    # -- mapping ---------------------------------------------------------------------------

    def _repeats(self, perturbation) -> dict[int, Any]:
        reps = self._models.get(perturbation)
        if reps is not None:
            return reps
        if perturbation in self.failures:
            raise KeyError(
                f"{perturbation!r} has no model: its fit failed ({self.failures[perturbation]})"
            )
        raise KeyError(f"{perturbation!r} is not a perturbation of this collection")

    def __getitem__(self, perturbation):
        reps = self._repeats(perturbation)
        return reps[0] if 0 in reps else next(iter(reps.values()))

    def __iter__(self) -> Iterator:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def __repr__(self) -> str:
        n = sum(len(r) for r in self._models.values())
        failed = f", {len(self.failures)} failed" if self.failures else ""
        return f"ModelCollection({len(self)} perturbations, {n} models{failed})"

    def models(self, perturbation) -> list:
        """All fitted repeats of ``perturbation``, by repeat (repeat 0 first)."""
        return list(self._repeats(perturbation).values())

    def repeats(self, perturbation) -> list[int]:
        """The repeat numbers of the models of :meth:`models`."""
        return list(self._repeats(perturbation))

    def seeds(self, perturbation) -> list[int | None]:
        """The seeds of the models of :meth:`models` (``None``: a method without seed)."""
        return [self._seeds.get((perturbation, r)) for r in self.repeats(perturbation)]

    # -- prediction ------------------------------------------------------------------------

    def predict(
        self,
        adata,
        *,
        perturbation,
        repeat: int = 0,
        key_added: str = "w1ot",
        nonnegative: bool | None = None,
    ):
        """The predicted ``perturbation`` of the control cells of ``adata``: an AnnData, as
        :func:`w1ot.tl.predict` gives it, from the model of ``repeat``."""
        from w1ot.tl import predict

        reps = self._repeats(perturbation)
        if repeat not in reps:
            raise KeyError(f"{perturbation!r} has no model of repeat {repeat} (has {list(reps)})")
        return predict(reps[repeat], adata, key_added=key_added, nonnegative=nonnegative)

    def predict_all(
        self,
        adata,
        *,
        perturbations: Iterable | None = None,
        key_added: str = "w1ot",
        nonnegative: bool | None = None,
    ):
        """The predictions of every perturbation (or of ``perturbations``), one AnnData.

        Each perturbation's predictions are those of :meth:`predict` (condition
        ``"<perturbation> (predicted)"``), concatenated in the collection's order
        (``anndata.concat``, keeping the var columns all share). Obs names get the
        perturbation as a further suffix, ``"<cell>-<key_added>-<perturbation>"``, so that they
        are unique; ``uns[key_added]`` describes each perturbation's model by name.
        """
        import anndata
        import pandas as pd

        names = list(self) if perturbations is None else list(perturbations)
        if not names:
            raise ValueError("no perturbation to predict: the collection has no model")
        preds, described = [], {}
        for name in names:
            pred = self.predict(
                adata, perturbation=name, key_added=key_added, nonnegative=nonnegative
            )
            pred.obs_names = pd.Index([f"{n}-{name}" for n in pred.obs_names])
            described[str(name)] = pred.uns.pop(key_added)
            preds.append(pred)
        out = anndata.concat(preds, merge="same")
        key = self.settings.get("condition_key")
        if key in out.obs and not isinstance(out.obs[key].dtype, pd.CategoricalDtype):
            out.obs[key] = pd.Categorical(out.obs[key])
        out.uns[key_added] = described
        return out

    # -- files -----------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> None:
        """Writes one model file per perturbation and repeat (each model's own ``save``: the
        safe format, no pickle) and ``index.json`` into ``directory`` (created if needed)."""
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        for name, reps in self._models.items():
            for r, model in reps.items():
                _save_model(model, os.path.join(directory, model_file(name, r)))
        _write_index(directory, self._index())

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ModelCollection:
        """Reads a collection written by :meth:`save` (or by :func:`fit_many` with
        ``directory=``); every model file through :func:`w1ot.tl.load`."""
        from w1ot.tl import load

        directory = os.fspath(directory)
        index = _read_index(directory)
        models: dict[Any, dict[int, Any]] = {}
        seeds = {}
        for entry in index["models"]:
            name, r = entry["perturbation"], int(entry["repeat"])
            models.setdefault(name, {})[r] = load(os.path.join(directory, _checked(entry["file"])))
            seeds[(name, r)] = entry.get("seed")
        return cls(
            models,
            seeds=seeds,
            failures=_failures(index["failures"]),
            settings=index["settings"],
        )

    def _index(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "settings": self.settings,
            "models": [
                {
                    "perturbation": _jsonable(name),
                    "repeat": r,
                    "seed": self._seeds.get((name, r)),
                    "file": model_file(name, r),
                }
                for name, reps in self._models.items()
                for r in reps
            ],
            "failures": [
                {"perturbation": _jsonable(name), "error": msg}
                for name, msg in self.failures.items()
            ],
        }


def _failures(entries: list[dict[str, Any]]) -> dict[Any, str]:
    out: dict[Any, str] = {}
    for e in entries:
        out.setdefault(e["perturbation"], e["error"])
    return out


def _checked(file: str) -> str:
    """A model file name from an index: a plain name inside the directory, nothing else."""
    if (
        not isinstance(file, str)
        or os.path.basename(file) != file
        or file.startswith(".")
        or not file.endswith(_SUFFIX)
    ):
        raise ValueError(f"{INDEX} names a model file outside its directory: {file!r}")
    return file


def _save_model(model, path: str) -> None:
    """``model.save(path)`` through a temporary file, so a file present is a whole one."""
    tmp = f"{path}.part"
    model.save(tmp)
    os.replace(tmp, path)


def _write_index(directory: str, index: dict[str, Any]) -> None:
    path = os.path.join(directory, INDEX)
    tmp = f"{path}.part"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(index, fh, indent=1, allow_nan=False)
    os.replace(tmp, path)


def _read_index(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, INDEX)
    try:
        with open(path, encoding="utf-8") as fh:
            index = json.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: not a directory of w1ot models") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a w1ot screen index ({exc})") from exc
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ValueError(f"{path} is not a w1ot screen index")
    if not isinstance(index.get("version"), int) or index["version"] > VERSION:
        raise ValueError(f"{path} comes from a newer w1ot (version {index.get('version')!r})")
    for key, kind in (("settings", dict), ("models", list), ("failures", list)):
        if not isinstance(index.get(key), kind):
            raise ValueError(f"{path} lacks its {key!r}")
    return index


# -- how many workers, how many threads ----------------------------------------------------------


def _cores() -> int:
    """The cores this process may use (affinity and container quotas included)."""
    import joblib

    return max(1, int(joblib.cpu_count()))


def check_n_jobs(n_jobs) -> int:
    """``n_jobs`` as an int: non-zero (negative counts back from all cores, joblib's rule)."""
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral) or n_jobs == 0:
        raise ValueError(f"n_jobs must be a non-zero integer (-1: all cores), got {n_jobs!r}")
    return int(n_jobs)


def _workers(n_jobs, n_tasks: int, cores: int, threads: int | None) -> int:
    """Worker processes: ``n_jobs`` (negative: ``cores + 1 + n_jobs``, joblib's rule), at most
    one per task and one per core, and fewer when each fit is given ``threads`` threads, so
    that workers x threads stays within the cores."""
    n = check_n_jobs(n_jobs)
    wanted = n if n > 0 else max(1, cores + 1 + n)
    limit = cores if not threads else max(1, cores // threads)
    return max(1, min(wanted, n_tasks, limit))


# -- runners: each yields the outcome of every task, as they complete --------------------------


Targets = Callable[[_Task], np.ndarray]


def _run_in_process(tasks, source, targets: Targets, method, options, fitted_on):
    for task in tasks:
        yield _fit_task(task, source, targets(task), method, options, fitted_on)


def _run_loky(
    tasks, source, targets: Targets, method, options, fitted_on, n_workers: int, fit=_fit_task
):
    import joblib

    major, minor = (int(p) for p in re.findall(r"\d+", joblib.__version__)[:2])
    unordered = (major, minor) >= (1, 4)
    with tempfile.TemporaryDirectory(prefix="w1ot-screen-") as tmp:
        # The control cells once, as a file-backed memmap: joblib sends workers its file name.
        path = os.path.join(tmp, "control.npy")
        np.save(path, source)
        shared = np.load(path, mmap_mode="r")
        parallel = joblib.Parallel(
            n_jobs=n_workers,
            backend="loky",
            return_as="generator_unordered" if unordered else "generator",
            max_nbytes="1M",
            mmap_mode="r",
        )
        calls = (
            joblib.delayed(fit)(task, shared, targets(task), method, options, fitted_on)
            for task in tasks
        )
        results = parallel(calls)
        try:
            for outcome in results:  # noqa: UP028 -- ``yield from`` would close results itself
                yield outcome
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                with warnings.catch_warnings():
                    # joblib's notice that it cancelled them: the point of stopping
                    warnings.filterwarnings("ignore", message=".*have been cancelled")
                    close()  # a stopped screen cancels the fits not yet finished
            del shared


def _dask_client(backend):
    if backend == "dask":
        try:
            from distributed import get_client
        except ImportError:
            raise ImportError(
                "backend='dask' needs dask.distributed: pip install 'w1ot[dask]'"
            ) from None
        try:
            return get_client()
        except ValueError as exc:
            raise ValueError(
                "backend='dask' uses the current dask.distributed client, and there is none: "
                "create one first (client = distributed.Client(cluster)) or pass backend=client"
            ) from exc
    try:
        from distributed import Client
    except ImportError:
        Client = None
    if Client is not None and isinstance(backend, Client):
        return backend
    raise ValueError(
        f"backend must be None (local processes), 'loky', 'dask' or a distributed.Client, "
        f"got {backend!r}"
    )


def _run_dask(tasks, source, targets: Targets, method, options, fitted_on, client):
    from distributed import as_completed

    # Once: each worker fetches it once, then keeps it. Unhashed keys: a hashed key equals the
    # one an earlier screen of the same cells scattered, and the scheduler may still be
    # releasing that one, which cancels this screen's tasks ("lost dependencies").
    control = client.scatter(source, hash=False)
    pending = iter(tasks)
    running = as_completed()
    by_key: dict[str, _Task] = {}
    shipped: dict[Any, Any] = {}  # the perturbation's scattered cells, for its repeats
    left: dict[Any, int] = {}
    for task in tasks:
        left[task.perturbation] = left.get(task.perturbation, 0) + 1

    def submit() -> bool:
        task = next(pending, None)
        if task is None:
            return False
        name = task.perturbation
        if name not in shipped:
            shipped[name] = client.scatter(targets(task), hash=False)
        fut = client.submit(
            _fit_task, task, control, shipped[name], method, options, fitted_on, pure=False
        )
        by_key[fut.key] = task
        running.add(fut)
        return True

    def in_flight() -> int:
        # Enough to keep every worker thread busy, few enough that the perturbations'
        # cells are not all on the cluster at once; re-read as workers join or leave.
        return max(4, 2 * sum(client.nthreads().values()))

    try:
        for _ in range(in_flight()):
            if not submit():
                break
        for fut in running:
            task = by_key.pop(fut.key)
            try:
                outcome = fut.result()
            except Exception as exc:  # the worker died, the task was cancelled, ...
                outcome = _Outcome(task, None, _failure(exc), ())
            left[task.perturbation] -= 1
            if not left[task.perturbation]:
                shipped.pop(task.perturbation).release()
            yield outcome
            while running.count() < in_flight() and submit():
                pass
    finally:
        for fut in list(running.futures):
            fut.cancel()
        for fut in shipped.values():
            fut.release()
        control.release()


# -- the screen -----------------------------------------------------------------------------------


def _perturbations(values: np.ndarray, column, control, wanted, key: str) -> list:
    present = [v for v in dict.fromkeys(values.tolist()) if v == v]  # NaN is no label
    if hasattr(column, "cat"):  # a categorical column: its categories' order
        order = {c: i for i, c in enumerate(column.cat.categories.tolist())}
        present.sort(key=lambda v: order.get(v, len(order)))
    if control not in present:
        shown = ", ".join(map(repr, present[:12])) + (", ..." if len(present) > 12 else "")
        raise ValueError(f"control={control!r} is not a value of adata.obs[{key!r}] ({shown})")
    if wanted is None:
        names = [v for v in present if v != control]
        if not names:
            raise ValueError(f"adata.obs[{key!r}] has no label besides the control {control!r}")
        return names
    if isinstance(wanted, str) or not isinstance(wanted, Iterable):
        wanted = [wanted]
    names = list(dict.fromkeys(wanted))
    if not names:
        raise ValueError("perturbations is empty")
    if control in names:
        raise ValueError(f"perturbations includes the control {control!r}")
    known = set(present)
    missing = [p for p in names if p not in known]
    if missing:
        raise ValueError(
            f"{len(missing)} of the perturbations are not values of adata.obs[{key!r}], "
            f"e.g. {missing[:5]}"
        )
    return names


def _check_settings(settings: dict[str, Any], stored: dict[str, Any], directory: str) -> None:
    differ = [
        k
        for k in ("condition_key", "control", "method", "seed", "representation", "options")
        if settings.get(k) != stored.get(k)
    ]
    if differ:
        raise ValueError(
            f"{directory} holds a screen fitted with other settings ({', '.join(differ)} "
            "differ): pass another directory, or the same settings to resume it"
        )


def fit_many(
    adata,
    *,
    condition_key: str,
    control,
    perturbations=None,
    n_jobs: int = -1,
    backend=None,
    method="w1ot",
    repeats: int = 1,
    layer: str | None = None,
    obsm_key: str | None = None,
    genes=None,
    on_error: str = "warn",
    progress: bool = True,
    directory: str | os.PathLike | None = None,
    screen_defaults: bool = True,
    **options,
) -> ModelCollection:
    """Fits one model per perturbation of a screen, each from the same ``control`` cells.

    Every fit is the one :func:`w1ot.tl.fit` makes (the same model, bit for bit, for the
    same options and seed; by default the options include :data:`SCREEN_DEFAULTS`, shorter
    training schedules measured to keep the full fit's quality), run in parallel: on local
    worker processes (joblib, loky backend) by default, or on a Dask cluster.

    Parameters
    ----------
    adata : AnnData
        Cells x genes, log-normalised (see :func:`w1ot.tl.fit`).
    condition_key : str
        Column of ``adata.obs`` with the condition labels.
    control : label of ``condition_key``
        The source cells of every fit.
    perturbations : list of labels, optional
        The perturbations to fit; default: every label but the control (in the order of
        the column's categories, else of first appearance).
    n_jobs : int
        Local worker processes: ``-1`` (default) one per core, ``-2`` all cores but one,
        ... (joblib's rule), at most one per core and per fit. Each fit gets
        ``cores // workers`` threads of the Rust core (the ``n_threads`` option), so that
        workers x threads never exceed the cores; a given ``n_threads`` option is kept and
        lowers the number of workers instead. ``n_jobs=1`` fits in this process, one
        perturbation after the other, each on all cores. Ignored with Dask.
    backend : None, "loky", "dask" or distributed.Client
        ``None``/``"loky"``: local processes. ``"dask"``: the current ``dask.distributed``
        client (``distributed.get_client()``); or pass a client. On Dask the control cells
        are scattered once, one task is submitted per perturbation and repeat, and each fit
        runs on one thread of a worker (``n_threads=1``, unless given): a worker with k
        threads fits k perturbations at once. Needs ``pip install 'w1ot[dask]'``.
    method : str or estimator
        As for :func:`w1ot.tl.fit`: ``"w1ot"`` (default), ``"w2ot"``, a baseline, or an
        unfitted estimator (copied for every fit, with ``options`` set on the copies).
    repeats : int
        Models per perturbation, with different seeds: repeat 0 uses
        ``options.get("seed", 0)``, repeat r the CRC-32 of that seed, the perturbation's
        name and r (:func:`task_seed`): the same on every run and machine.
    layer, obsm_key, genes
        The representation, as for :func:`w1ot.tl.fit`.
    on_error : {"warn", "raise", "ignore"}
        What a failed fit (a :class:`ValueError` for too few cells, a
        :class:`~w1ot.TrainingError`, ...) does: ``"warn"`` (default) records it in
        ``collection.failures`` and warns once at the end, naming every failed
        perturbation; ``"ignore"`` only records it; ``"raise"`` stops the screen and raises
        an exception of the same type whose message starts with the perturbation's name.
        Wrong options or labels raise before any fit starts.
    progress : bool
        Show one progress bar for the screen (fits done, time left).
    directory : path, optional
        Save every model into this directory as soon as it is fitted (its own safe model
        file, ``index.json`` beside them, as :meth:`ModelCollection.save`), and skip the
        perturbations and repeats already saved there: a stopped screen, run again with the
        same arguments, resumes. Fits that failed are tried again. Refused when the
        directory holds a screen of other settings (labels, method, options, seed,
        representation); ``n_jobs``, ``backend``, ``n_threads``, ``perturbations`` and
        ``repeats`` may differ.
    screen_defaults : bool
        Give a method named by a string the options of :data:`SCREEN_DEFAULTS` that the call
        does not set (default). For ``"w1ot"``: 1,500 iterations per stage instead of 10,000,
        about 7x faster at the held-out quality of the full fit on a simulated screen (see
        :data:`SCREEN_DEFAULTS`). ``False``: the estimator's own defaults, the fit
        :func:`w1ot.tl.fit` makes with the same options.
    **options
        Keyword arguments of the method's constructor (``W1OT(**options)``).

    Returns
    -------
    ModelCollection
        The fitted models by perturbation, ``failures``, and ``predict`` /
        ``predict_all`` / ``save`` / ``load``.

    Notes
    -----
    Warnings of a fit (a :class:`~w1ot.TrainingWarning`, say) are given again in this
    process, prefixed with the perturbation's name, whichever backend ran it.
    """
    check_adata(adata)
    if on_error not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_error must be 'warn', 'raise' or 'ignore', got {on_error!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, numbers.Integral) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be True or False, got {progress!r}")
    if not isinstance(screen_defaults, (bool, np.bool_)):
        raise TypeError(f"screen_defaults must be True or False, got {screen_defaults!r}")
    if screen_defaults and isinstance(method, str):
        options = {**SCREEN_DEFAULTS.get(method, {}), **options}
    client = None if backend is None or backend == "loky" else _dask_client(backend)

    values = labels(adata, condition_key)
    names = _perturbations(values, adata.obs[condition_key], control, perturbations, condition_key)
    rep = Representation.select(adata, layer=layer, obsm_key=obsm_key, genes=genes)

    accepts = _accepts(method)
    base_seed = options.pop("seed", 0) if "seed" in accepts else options.get("seed")
    user_threads = options.pop("n_threads", None) if "n_threads" in accepts else None
    tasks = [
        _Task(name, r, task_seed(base_seed, name, r) if "seed" in accepts else None)
        for name in names
        for r in range(int(repeats))
    ]

    # Wrong options fail here, once, not as a failure of every perturbation.
    probe = {"seed": base_seed} if "seed" in accepts else {}
    if user_threads is not None:
        probe["n_threads"] = user_threads
    _make(method, {**options, **probe})

    settings = _json_safe(
        {
            "condition_key": condition_key,
            "control": _jsonable(control),
            "method": method if isinstance(method, str) else type(method).__name__,
            "seed": _jsonable(base_seed),
            "options": {k: v for k, v in options.items() if k not in _SPEED_OPTIONS},
            "representation": rep.to_dict(),
        }
    )

    # What an earlier run saved into the directory: a model file present is a whole one.
    stored: dict[str, Any] = {"models": [], "failures": []}
    saved: set[tuple[Any, int]] = set()
    if directory is not None:
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        if os.path.exists(os.path.join(directory, INDEX)):
            stored = _read_index(directory)
            _check_settings(settings, stored["settings"], directory)
        else:
            _write_index(directory, _merged_index(stored, settings, tasks, saved, {}))
        saved = {
            (t.perturbation, t.repeat)
            for t in tasks
            if os.path.isfile(os.path.join(directory, model_file(t.perturbation, t.repeat)))
        }
    todo = [t for t in tasks if (t.perturbation, t.repeat) not in saved]

    # The data, read once: the control cells dense; each perturbation's when dispatched.
    src_rows = np.flatnonzero(values == control)
    source = rep.cells(adata, src_rows) if todo else np.empty((0, rep.n_features), np.float32)
    cache: dict[Any, np.ndarray] = {}

    def targets(task: _Task) -> np.ndarray:
        if task.perturbation not in cache:
            cache.clear()  # tasks come perturbation by perturbation
            rows = np.flatnonzero(values == task.perturbation)
            cache[task.perturbation] = rep.cells(adata, rows, check_scale=False)
        return cache[task.perturbation]

    fitted_on = {
        "representation": rep.to_dict(),
        "condition_key": condition_key,
        "control": _jsonable(control),
        "nonnegative": bool(rep.obsm_key is None and (source.size == 0 or source.min() >= 0)),
        "method": settings["method"],
    }

    if client is not None:
        threads = 1 if user_threads is None else user_threads
        n_workers = 0
    else:
        cores = _cores()
        n_workers = _workers(n_jobs, max(1, len(todo)), cores, user_threads)
        threads = user_threads if user_threads is not None else max(1, cores // n_workers)
    run_options = dict(options)
    if "n_threads" in accepts:
        run_options["n_threads"] = threads

    args = (todo, source, targets, method, run_options, fitted_on)
    if client is not None:
        runner = _run_dask(*args, client)
    elif n_workers > 1:
        runner = _run_loky(*args, n_workers)
    else:
        runner = _run_in_process(*args)

    models: dict[Any, dict[int, Any]] = {name: {} for name in names}
    failed: dict[tuple[Any, int], str] = {}
    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(tasks),
        initial=len(tasks) - len(todo),
        desc="w1ot screen",
        unit="fit",
        disable=not progress,
    )
    last_index = time.monotonic()
    try:
        with contextlib.closing(runner):
            for outcome in runner:
                task, key = outcome.task, (outcome.task.perturbation, outcome.task.repeat)
                for category, message in outcome.warned:
                    warnings.warn(f"{task.perturbation!r}: {message}", category, stacklevel=2)
                if outcome.failure is not None:
                    if on_error == "raise":
                        _raise(task, outcome.failure, repeats)
                    failed[key] = outcome.failure.message
                else:
                    if directory is not None:
                        _save_model(outcome.model, os.path.join(directory, model_file(*key)))
                        saved.add(key)
                    models[task.perturbation][task.repeat] = outcome.model
                bar.update(1)
                if failed:
                    bar.set_postfix(failed=len(failed), refresh=False)
                if directory is not None and time.monotonic() - last_index > _INDEX_EVERY:
                    _write_index(directory, _merged_index(stored, settings, tasks, saved, failed))
                    last_index = time.monotonic()
    finally:
        bar.close()
        if directory is not None:
            _write_index(directory, _merged_index(stored, settings, tasks, saved, failed))

    # The models an earlier run saved, read back (what it fitted, bit for bit).
    for t in tasks:
        if (t.perturbation, t.repeat) in saved and t.repeat not in models[t.perturbation]:
            models[t.perturbation][t.repeat] = _load_saved(directory, t.perturbation, t.repeat)

    seeds = {(t.perturbation, t.repeat): t.seed for t in tasks}
    failures: dict[Any, str] = {}
    for (name, r), msg in failed.items():
        failures.setdefault(name, f"repeat {r}: {msg}" if repeats > 1 else msg)
    if failures and on_error == "warn":
        shown = "; ".join(f"{n!r} ({m})" for n, m in list(failures.items())[:5])
        more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
        warnings.warn(
            f"{len(failures)} of {len(names)} perturbations failed and have no model: "
            f"{shown}{more} (collection.failures has every message)",
            RuntimeWarning,
            stacklevel=2,
        )
    return ModelCollection(models, seeds=seeds, failures=failures, settings=settings)


def _json_safe(v):
    """``v`` as JSON will give it back (tuples as lists; what JSON cannot hold as its repr)."""
    return json.loads(
        json.dumps(v, default=lambda o: _jsonable(o) if isinstance(o, np.generic) else repr(o))
    )


def _load_saved(directory: str, name, repeat: int):
    from w1ot.tl import load

    path = os.path.join(directory, model_file(name, repeat))
    model = load(path)
    spec = getattr(model, "fitted_on_", None) or {}
    if spec.get("perturbation") != _jsonable(name):
        raise ValueError(
            f"{path} holds a model of {spec.get('perturbation')!r}, not of {name!r}: "
            "the directory was changed by hand"
        )
    return model


def _merged_index(stored, settings, tasks, saved, failed) -> dict[str, Any]:
    """The index of a screen's directory: the models saved there (by earlier runs too, of
    perturbations this run did not ask for as well) and this run's failures."""
    seeds = {(t.perturbation, t.repeat): t.seed for t in tasks}
    entries = {
        (e["perturbation"], int(e["repeat"])): e
        for e in stored["models"]
        if (e["perturbation"], int(e["repeat"])) not in seeds
    }
    for name, r in saved:
        entries[(name, r)] = {
            "perturbation": _jsonable(name),
            "repeat": r,
            "seed": seeds[(name, r)],
            "file": model_file(name, r),
        }
    asked = {t.perturbation for t in tasks}
    return {
        "format": FORMAT,
        "version": VERSION,
        "settings": settings,
        "models": sorted(entries.values(), key=lambda e: (str(e["perturbation"]), e["repeat"])),
        "failures": [f for f in stored["failures"] if f["perturbation"] not in asked]
        + [
            {"perturbation": _jsonable(name), "repeat": r, "error": msg}
            for (name, r), msg in failed.items()
        ],
    }


def _raise(task: _Task, failure: _Failure, repeats: int):
    where = f"perturbation {task.perturbation!r}" + (
        f" (repeat {task.repeat}, seed {task.seed})" if repeats > 1 else ""
    )
    text = f"{where}: {failure.message}"
    exc = failure.error
    if exc is not None:
        try:
            new = type(exc)(text)
        except Exception:
            new = None
        if new is not None:
            raise new from exc
    raise RuntimeError(text)
