"""Property-based tests of the Python boundary (hypothesis).

The promise under test: every public call either returns finite results or raises
ValueError, TypeError, :class:`w1ot.ModelFileError` or :class:`w1ot.TrainingError` whose
message names the offending argument -- never a Rust panic (``pyo3_runtime.PanicException``,
a BaseException subclass, so every call here is wrapped in ``except BaseException``), a
crash, a hang, a silent NaN or another exception type.

Inputs are generated over shapes (0..5 rows and columns, 0-D to 3-D), dtypes (float16..64,
signed and unsigned ints, bool, complex, object, str), layouts (C, Fortran, strided,
transposed, unaligned, byte-swapped, read-only views, nested lists, scipy.sparse) and values
(ordinary, tiny, huge, NaN, inf). A small oracle (``python_view`` / ``core_view`` and
``accepts``) says which inputs a call must accept; an accepted input must give the result of
its float32 C-contiguous copy bit for bit, and a refused one an error naming the argument.
Options of both solvers, the baselines and the ``_core`` solver are generated the same way.

Values the generators keep clear of (each exclusion said where it is made) have tests of
their own at the end.
"""

from __future__ import annotations

import functools
import json
import math
import re
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.extra import numpy as hnp

from w1ot import W1OT, W2OT, ModelFileError, TrainingError, _core, baselines
from w1ot._validation import MAX_ABS_FLOAT32

F32 = np.float32


def budget(n: int) -> settings:
    """Hypothesis settings for a property of ``n`` examples: no deadline (fits vary with the
    machine's load), no example database (no files in the source tree)."""
    return settings(
        max_examples=n,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ---------------------------------------------------------------- outcomes and messages


def message(exc: BaseException) -> str:
    """The exception's message with any notes PyO3 attached (``while processing 'arg'``)."""
    return " ".join([str(exc), *getattr(exc, "__notes__", [])])


def names(msg: str, candidates) -> bool:
    """Whether ``msg`` names one of ``candidates`` as a word (``x`` is not in "expected")."""
    return any(re.search(rf"(?<!\w){re.escape(c)}(?!\w)", msg) for c in candidates)


def attempt(fn: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """``(result, None)`` or ``(None, exception)``; catches BaseException, so that a Rust
    panic (PanicException) is seen and failed on rather than tearing through pytest."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn(), None
        except BaseException as exc:
            return None, exc


def outcome(label: str) -> None:
    """Counts an outcome for ``--hypothesis-show-statistics`` (inside a property only)."""
    if currently_in_test_context():
        event(label)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {message(exc)}"


def assert_refused(exc: BaseException | None, *argnames: str, allowed=(ValueError, TypeError)):
    """``exc`` is an allowed error type naming one of ``argnames`` (TrainingError, which
    reports divergence, names no argument)."""
    assert exc is not None, f"accepted, but must refuse (naming {argnames})"
    outcome(f"refused: {type(exc).__name__}")
    assert isinstance(exc, allowed), f"wrong exception type: {describe(exc)}"
    if not isinstance(exc, TrainingError):
        assert names(message(exc), argnames), f"the message names none of {argnames}: {exc!r}"


def assert_ok(exc: BaseException | None) -> None:
    assert exc is None, f"refused, but must accept: {describe(exc)}"
    outcome("accepted")


def all_finite(v) -> bool:
    if isinstance(v, dict):
        return all(all_finite(x) for x in v.values())
    if isinstance(v, (tuple, list)):
        return all(all_finite(x) for x in v)
    return bool(np.isfinite(np.asarray(v, dtype=np.float64)).all())


# ------------------------------------------------------------------------- generators

TINY32 = float(np.finfo(F32).tiny)
MAX32 = float(np.finfo(F32).max)
MAX64 = float(np.finfo(np.float64).max)
EXTREMES = [
    0.0,
    -0.0,
    5e-324,
    -5e-324,
    1e-45,
    TINY32,
    -TINY32,
    1e12,
    -1e12,
    1.0000001e12,
    1e30,
    -1e30,
    3e38,
    -3e38,
    MAX32,
    1e39,
    1e300,
    -1e300,
    MAX64,
    -MAX64,
    math.nan,
    math.inf,
    -math.inf,
]
ORDINARY = st.floats(-8, 8, allow_nan=False)
HUGE = st.sampled_from([2e12, -1e30, MAX32, 1e300, -1e300, MAX64, MAX64, -MAX64, -MAX64])
WILD = st.one_of(ORDINARY, st.sampled_from(EXTREMES), st.floats())

DTYPES = [
    "float16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
    "complex64",
    "complex128",
    "object",
    "object-junk",
    "str",
]
LAYOUTS = [
    "C",
    "fortran",
    "strided",
    "strided-cols",
    "negative-stride",
    "transposed",
    "unaligned",
    "byteswapped",
    "readonly",
    "list",
    "csr_matrix",
    "csc_array",
    "coo_array",
]
# Inputs no array generator makes.
ODD_INPUTS = [
    None,
    "abc",
    b"abc",
    3.0,
    {"a": 1},
    [],
    [[]],
    [[1.0, 2.0], [3.0]],
    [[1.0, "a", 2.0]],
    [[1, 2, 3], [4, 5, 6]],
    [[True, False, True]],
    np.array([[np.ones(3), np.ones(2)]], dtype=object),
    np.zeros((2, 3), dtype="datetime64[s]"),
    np.zeros((2, 3), dtype=[("a", "f4")]),
]


def cast(values: np.ndarray, dtype: str, junk) -> np.ndarray:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dtype == "str":
            return values.astype(str)
        if dtype.startswith("object"):
            out = values.astype(object)
            if dtype == "object-junk" and out.size:
                out.flat[0] = junk
            return out
        return values.astype(dtype)


def lay_out(base: np.ndarray, layout: str):
    """The values of ``base`` in another memory layout or container (``base`` itself when
    the layout does not apply, e.g. a sparse matrix of strings)."""
    try:
        if layout == "fortran":
            return np.asfortranarray(base)
        if layout == "strided" and base.ndim:
            return np.repeat(base, 2, axis=0)[::2]
        if layout == "strided-cols" and base.ndim:
            return np.repeat(base, 2, axis=-1)[..., ::2]
        if layout == "negative-stride" and base.ndim:
            return np.ascontiguousarray(base[::-1])[::-1]
        if layout == "transposed":
            return np.ascontiguousarray(base.T).T
        if layout == "unaligned" and base.dtype.kind != "O":
            n = base.size
            buf = bytearray(base.dtype.itemsize * n + 1)
            out = np.frombuffer(buf, base.dtype, n, offset=1).reshape(base.shape)
            out[...] = base
            return out
        if layout == "byteswapped" and base.dtype.kind in "iufc" and base.dtype.itemsize > 1:
            return base.astype(base.dtype.newbyteorder("S"))
        if layout == "readonly":
            out = base.copy()
            out.setflags(write=False)
            return out
        if layout == "list":
            return base.tolist()
        if layout == "csr_matrix" and base.ndim == 2:
            return sp.csr_matrix(base)
        if layout == "csc_array" and base.ndim == 2:
            return sp.csc_array(base)
        if layout == "coo_array" and base.ndim in (1, 2):
            return sp.coo_array(base)
    except (TypeError, ValueError):  # e.g. scipy.sparse refuses float16, object, str
        pass
    return base


@st.composite
def extreme_values(draw, shape: tuple[int, ...]):
    """float64 values of ``shape``: ordinary, ordinary but for one extreme value (the most
    telling case: one bad value among good ones), all huge (sums overflow), or anything."""
    mode = draw(st.sampled_from(["ordinary", "ordinary", "one-extreme", "one-extreme", "wild"]))
    mode = draw(st.sampled_from([mode] * 5 + ["huge"]))
    elements = {"wild": WILD, "huge": HUGE}.get(mode, ORDINARY)
    values = draw(hnp.arrays(np.float64, shape, elements=elements))
    if mode == "one-extreme" and values.size:
        at = draw(st.integers(0, values.size - 1))
        values.flat[at] = draw(st.sampled_from(EXTREMES))
    return values


@st.composite
def cell_inputs(draw, n_features: int, *, max_rows: int = 5):
    """Anything a caller might pass as cells: mostly (n, n_features) arrays, in every dtype
    and layout, with ordinary or extreme values; sometimes other shapes or odd objects."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from(ODD_INPUTS))
    ndim = draw(st.sampled_from([2] * 12 + [1, 3, 0]))
    rows = draw(st.integers(0, max_rows))
    cols = draw(st.sampled_from([n_features] * 12 + [0, 1, 2, 3, 4, 5]))
    shape = {0: (), 1: (cols,), 2: (rows, cols), 3: (rows, 2, cols)}[ndim]
    values = draw(extreme_values(shape))
    dtype = draw(st.sampled_from(["float64"] * 6 + ["float32"] * 6 + DTYPES))
    junk = draw(st.sampled_from([None, "abc", object(), 1j]))
    return lay_out(cast(values, dtype, junk), draw(st.sampled_from(LAYOUTS)))


def python_view(obj) -> np.ndarray | None:
    """The numeric array w1ot's Python layer must read ``obj`` as, or None (not numeric):
    scipy.sparse densified, object arrays of numbers read as float64."""
    if sp.issparse(obj):
        obj = obj.toarray()
    try:
        arr = np.asarray(obj)
    except (TypeError, ValueError):
        return None
    if arr.dtype.kind == "O":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            return None
    return arr if arr.dtype.kind in "biuf" else None


def core_view(obj) -> np.ndarray | None:
    """The numeric array ``w1ot._core`` must read ``obj`` as, or None: real (no bool, no
    object) NumPy arrays, or what ``numpy.asarray`` makes of anything else."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            arr = obj if isinstance(obj, np.ndarray) else np.asarray(obj)
        except (TypeError, ValueError):
            return None
    return arr if arr.dtype.kind in "iuf" else None


def accepts(view, n_features: int, *, ndim: int = 2, max_abs: float | None = MAX_ABS_FLOAT32):
    """Whether a call taking cells of ``n_features`` must accept the input seen as ``view``:
    2-D, non-empty, the right features, finite, magnitudes up to ``max_abs``."""
    if view is None or view.ndim != ndim or 0 in view.shape or view.shape[-1] != n_features:
        return False
    with np.errstate(all="ignore"):
        vals = view.astype(np.float64)
    if not np.isfinite(vals).all():
        return False
    return max_abs is None or float(np.abs(vals).max()) <= max_abs


def core_accepts(view, n: int, *, ndim: int = 2, max_abs: float = MAX_ABS_FLOAT32) -> bool:
    """The core's rule for cells: real numeric, the right shape, finite once read as float32
    and at most 1e12 in magnitude (beyond, float32 arithmetic inside would overflow);
    parameters (``max_abs=inf``) need only be finite."""
    if view is None or view.ndim != ndim or 0 in view.shape or view.shape[-1] != n:
        return False
    with np.errstate(all="ignore"):
        vals = view.astype(F32)
    return bool(np.isfinite(vals).all() and np.abs(vals).max() <= max_abs)


def float32_copy(view: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(view, dtype=F32)


def snapshot(obj):
    """A copy of an ndarray input, to check it is not modified (None for other inputs)."""
    return obj.copy() if isinstance(obj, np.ndarray) and obj.dtype.kind != "O" else None


def assert_unmodified(obj, before) -> None:
    if before is not None:
        np.testing.assert_array_equal(obj, before, err_msg="an input was modified")


def clean(n: int, d: int, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


# ------------------------------------------------------------------------ fitted models


@pytest.fixture(scope="module")
def models():
    """Small fitted models, once per module: 3 features, and 80 (a PCA projection)."""
    x3, x80 = clean(200, 3), clean(200, 80, seed=1)
    w1_opts = {"potential_iters": 50, "step_iters": 50, "batch_size": 32, "n_threads": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 50 iterations learn little, and say so
        out = {
            "w1": W1OT(**w1_opts, seed=0).fit(x3, x3 + 1),
            "w1-pca": W1OT(**w1_opts, seed=0).fit(x80, x80 + 1),
            "w2": W2OT(iters=20, batch_size=32, n_threads=1, seed=0).fit(x3, x3 + 1),
            "w2-pca": W2OT(iters=20, batch_size=32, n_threads=1, seed=0).fit(x80, x80 + 1),
        }
    assert out["w1-pca"].latent_dim == 50 and out["w2-pca"].latent_dim == 50
    assert out["w1"].latent_dim is None
    return out


INFERENCE = {
    "w1": ["transport", "potential", "gradient", "direction", "step_size"],
    "w2": ["transport", "potential"],
}
DISTANCE = {"w1": "w1_distance", "w2": "w2_distance"}


def test_the_inference_methods_under_test_are_all_there(models):
    for name, model in models.items():
        kind = name.split("-")[0]
        public = {m for m in dir(model) if not m.startswith("_")}
        fitted_only = {"n_features", "latent_dim", "pca", "fit", "load", "save", "get_params"}
        methods = {m for m in public if callable(getattr(model, m))} - fitted_only
        assert methods == {*INFERENCE[kind], DISTANCE[kind]}, methods


# ---------------------------------------------------------------- inference properties


@budget(800)
@given(data=st.data())
def test_inference_returns_the_float32_result_or_names_x(models, data):
    name = data.draw(st.sampled_from(sorted(models)), label="model")
    model = models[name]
    method = data.draw(st.sampled_from(INFERENCE[name.split("-")[0]]), label="method")
    obj = data.draw(cell_inputs(model.n_features), label="x")
    before = snapshot(obj)
    call = getattr(model, method)
    out, exc = attempt(lambda: call(obj))
    assert_unmodified(obj, before)
    view = python_view(obj)
    if not accepts(view, model.n_features):
        assert_refused(exc, "x")
        return
    assert_ok(exc)
    assert out.dtype == F32 and all_finite(out), out
    np.testing.assert_array_equal(out, call(float32_copy(view)))


@budget(400)
@given(data=st.data())
def test_distances_are_finite_or_name_the_argument(models, data):
    name = data.draw(st.sampled_from(sorted(models)), label="model")
    model = models[name]
    which = data.draw(st.sampled_from(["source", "target"]), label="which")
    obj = data.draw(cell_inputs(model.n_features), label=which)
    good = clean(4, model.n_features, seed=2)
    call = getattr(model, DISTANCE[name.split("-")[0]])
    args = (obj, good) if which == "source" else (good, obj)
    out, exc = attempt(lambda: call(*args))
    view = python_view(obj)
    if not accepts(view, model.n_features):
        assert_refused(exc, which)
        return
    assert_ok(exc)
    assert isinstance(out, float) and math.isfinite(out), out
    ref = (float32_copy(view), good) if which == "source" else (good, float32_copy(view))
    assert out == call(*ref)


# ----------------------------------------------------------------------- fit properties

FIT = {
    W1OT: {"potential_iters": 2, "step_iters": 2, "batch_size": 1, "n_threads": 1, "seed": 0},
    W2OT: {"iters": 2, "inner_iters": 1, "batch_size": 1, "n_threads": 1, "seed": 0},
}


def fit_refusal_names(which: str, view, partner: np.ndarray) -> tuple[str, ...]:
    """The names a refused fit may give: the bad argument, and the other one as well when
    the two disagree on the number of features (either may be called wrong)."""
    other = "target" if which == "source" else "source"
    mismatch = view is not None and view.ndim == 2 and view.shape[1] != partner.shape[1]
    return (which, other) if mismatch else (which,)


@budget(300)
@given(data=st.data())
def test_fit_learns_a_finite_model_or_names_the_data(data):
    cls = data.draw(st.sampled_from([W1OT, W2OT]), label="solver")
    which = data.draw(st.sampled_from(["source", "target"]), label="which")
    obj = data.draw(cell_inputs(3, max_rows=6), label=which)
    partner = clean(6, 3, seed=3, shift=1.0 if which == "source" else 0.0)
    model = cls(**FIT[cls])
    args = (obj, partner) if which == "source" else (partner, obj)
    before = snapshot(obj)
    _, exc = attempt(lambda: model.fit(*args))
    assert_unmodified(obj, before)
    view = python_view(obj)
    if not accepts(view, 3):
        assert_refused(exc, *fit_refusal_names(which, view, partner))
        assert not model.is_fitted, "a refused fit must leave the model unfitted"
        return
    if isinstance(exc, TrainingError):  # divergence is a fair answer, if rare
        assert not model.is_fitted
        return
    assert_ok(exc)
    assert all_finite(model.history), model.history
    assert all_finite(model.transport(float32_copy(view)))
    assert all_finite(model.transport(partner))


BASELINES = [
    lambda: baselines.Identity(),
    lambda: baselines.Observed(seed=1),
    lambda: baselines.MeanShift(),
    lambda: baselines.MeanShift(balance=False, positive=True),
]


@budget(800)
@given(data=st.data())
def test_baselines_fit_and_transport_are_finite_or_name_the_argument(data):
    model = data.draw(st.sampled_from(BASELINES), label="baseline")()
    which = data.draw(st.sampled_from(["source", "target"]), label="which")
    obj = data.draw(cell_inputs(3), label=which)
    partner = clean(4, 3, seed=4)
    args = (obj, partner) if which == "source" else (partner, obj)
    _, exc = attempt(lambda: model.fit(*args))
    view = python_view(obj)
    # The baselines compute in float64: no float32 limit, but sums of values near float64's
    # largest may overflow, and then a refusal (naming the data) is the right answer.
    if not accepts(view, 3, max_abs=None):
        assert_refused(exc, *fit_refusal_names(which, view, partner))
        assert not model.is_fitted
        return
    if exc is not None and not accepts(view, 3, max_abs=1e300):
        assert_refused(exc, "source", "target")
        return
    assert_ok(exc)
    x = obj if data.draw(st.booleans(), label="transport the fitted cells") else None
    x = data.draw(cell_inputs(3), label="x") if x is None else x
    out, exc = attempt(lambda: model.transport(x))
    view = python_view(x)
    if not accepts(view, 3, max_abs=None):
        assert_refused(exc, "x")
        return
    if exc is not None and not accepts(view, 3, max_abs=1e300):
        assert_refused(exc, "x")
        return
    assert_ok(exc)
    assert out.dtype == np.float64 and out.shape == view.shape and all_finite(out)


# ---------------------------------------------------------------------- option values

# Integers, floats, None, strings and sequences: valid and invalid for every option.
INTS = st.one_of(
    st.sampled_from(
        [
            -(2**70),
            -(2**63),
            -1,
            0,
            1,
            2,
            3,
            16,
            64,
            1000,
            1024,
            1025,
            2**31,
            10**8,
            10**8 + 1,
            2**62,
            2**63 - 1,
            2**63,
            2**64,
            2**70,
        ]
    ),
    st.integers(),
)
NUMPY_SCALARS = st.sampled_from(
    [
        np.int8(1),
        np.int64(2),
        np.int64(-3),
        np.uint64(2**64 - 1),
        np.int32(16),
        np.float16(0.5),
        np.float32(0.1),
        np.float64(0.9),
        np.float64(np.nan),
        np.True_,
        np.False_,
        np.str_("auto"),
        np.str_("bjorck"),
    ]
)
FLOATS = st.one_of(
    st.sampled_from(
        [
            math.nan,
            math.inf,
            -math.inf,
            -1.0,
            -0.0,
            0.0,
            5e-324,
            1e-8,
            1e-4,
            0.01,
            0.1,
            0.5,
            0.9,
            0.99,
            1.0,
            1.5,
            2.0,
            1e12,
            1e300,
        ]
    ),
    st.floats(),
)
STRINGS = st.sampled_from(
    [
        "",
        "auto",
        "cayley",
        "bjorck",
        "gan",
        "energy",
        "mmd",
        "uniform",
        "torch",
        "0",
        "abc",
        "1e-3",
        "True",
        b"auto",
    ]
)
SEQUENCES = st.sampled_from(
    [
        [],
        [0],
        [-16],
        [16],
        [32, 32],
        (16, 16, 16),
        [16] * 6,
        np.array([16, 32]),
        [16.0],
        ["16"],
        [True],
        [np.int64(16)],
        [2**31],
        [2**63],
        [2**70],
        (0.5, 0.9),
        (0.5,),
        (0.5, 1.0),
        (math.nan, 0.5),
        ("a", "b"),
        [0.9, 0.999],
        {16, 32},
        range(16, 48, 16),
    ]
)
OPTION_VALUES = st.one_of(
    INTS, NUMPY_SCALARS, FLOATS, STRINGS, SEQUENCES, st.sampled_from([None, True, False])
)

WIDTHS = st.sampled_from([1, 2, 4, 8, 16, 32, 48, 64, 2**31])


def typed_like(default) -> st.SearchStrategy:
    """Values of the type of an option's default (most of them valid), so that accepted
    configurations, and so fits, are reached often."""
    if isinstance(default, bool):
        return st.sampled_from([True, False, np.True_, np.False_])
    if isinstance(default, int):
        return st.one_of(INTS, st.integers(0, 100), st.integers(0, 100).map(np.int64))
    if isinstance(default, float) or default is None:
        return st.one_of(FLOATS, st.floats(0, 1), st.floats(0, 1).map(np.float32))
    if isinstance(default, (list, tuple)) and isinstance(default[0], float):  # betas
        return st.tuples(st.floats(0, 1), st.floats(0, 1)) | st.lists(FLOATS, max_size=3)
    if isinstance(default, list):  # widths
        return st.lists(WIDTHS, max_size=5) | st.lists(WIDTHS, max_size=3).map(tuple)
    return st.one_of(STRINGS, st.none(), st.integers(1, 4))  # choices, n_components


# How each solver is trained to check a configuration is usable, and a few bases the
# option under test is combined with (so that options that matter only with others, e.g.
# bjorck_iters, instance_noise, patience, are reached).
OPTION_FIT = {
    W1OT: {"potential_iters": 3, "step_iters": 3, "batch_size": 8, "eval_every": 2},
    W2OT: {"iters": 3, "inner_iters": 2, "batch_size": 8, "eval_every": 2},
}
OPTION_BASES = {
    W1OT: [
        {},
        {"orthogonal": "bjorck"},
        {"step_loss": "gan"},
        {"step_loss": "mmd"},
        {"early_stopping": True},
    ],
    W2OT: [{}, {"init": "torch"}, {"select_best": False}, {"early_stopping": True}],
}
# Iterations after which the stopping callback ends a long fit (KeyboardInterrupt).
STOP_AFTER = 50


def plain(v):
    """``v`` as the plain Python value ``get_params`` must report for it."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple, np.ndarray, range)):
        return [plain(e) for e in v]
    return v


def option_names(option: str) -> tuple[str, ...]:
    # potential_lr_min is checked against potential_lr, and vice versa; group_size against
    # the hidden widths, and vice versa.
    pairs = {"potential_lr": ("potential_lr_min",), "hidden": ("group_size",)}
    pairs["group_size"] = ("hidden",)
    pairs["potential_lr_min"] = ("potential_lr",)
    return (option, *pairs.get(option, ()))


@budget(800)
@given(data=st.data())
def test_every_option_is_checked_named_and_round_trips(data):
    cls = data.draw(st.sampled_from([W1OT, W2OT]), label="solver")
    defaults = cls().get_params()
    option = data.draw(st.sampled_from(sorted(defaults)), label="option")
    typed = data.draw(st.booleans(), label="typed like the default")
    value = data.draw(typed_like(defaults[option]) if typed else OPTION_VALUES, label="value")
    base = data.draw(st.sampled_from(OPTION_BASES[cls]), label="base")
    kwargs = {**OPTION_FIT[cls], "n_threads": 1, "seed": 0, **base, option: value}
    model, exc = attempt(lambda: cls(**kwargs))
    if exc is not None:
        assert_refused(exc, *option_names(option))
        return
    params = model.get_params()
    if value is not None:
        # A float option stores float(value), so compare in the option's own type.
        want = plain(value)
        want = float(want) if isinstance(params[option], float) else want
        assert params[option] == want, (params[option], value)
    assert cls(**params).get_params() == params
    json.dumps(params, allow_nan=False)  # what save() writes
    repr(model)
    # Usable: it fits (or stops when asked, or diverges), or fails naming the option.
    if option == "n_threads" and params["n_threads"] > 8:
        return  # a pool of up to 1024 threads is valid, but takes seconds to start
    if option == "inner_iters" and params["inner_iters"] > 1000:
        return  # W2OT checks for a stop only between outer iterations: see the report
    x = clean(40, 3, seed=5)
    calls = []

    def stop_when_long(p):
        calls.append(p.iteration)
        return p.iteration < STOP_AFTER

    _, exc = attempt(lambda: model.fit(x, x + 1, callback=stop_when_long))
    outcome(f"fit: {'fitted' if exc is None else type(exc).__name__}")
    if isinstance(exc, KeyboardInterrupt):
        assert calls and calls[-1] >= STOP_AFTER, "interrupted, but not by the callback"
        assert not model.is_fitted
    elif isinstance(exc, TrainingError):
        assert not model.is_fitted
    elif exc is not None:
        assert_refused(exc, *option_names(option))
        assert not model.is_fitted
    else:
        assert all_finite(model.transport(x)) and all_finite(model.history)


BASELINE_OPTIONS = {
    baselines.Observed: ["seed"],
    baselines.MeanShift: ["balance", "positive", "seed"],
}


@budget(300)
@given(data=st.data())
def test_baseline_options_are_checked_and_named(data):
    cls = data.draw(st.sampled_from(sorted(BASELINE_OPTIONS, key=str)), label="baseline")
    option = data.draw(st.sampled_from(BASELINE_OPTIONS[cls]), label="option")
    value = data.draw(OPTION_VALUES, label="value")
    model, exc = attempt(lambda: cls(**{option: value}))
    if exc is not None:
        assert_refused(exc, option)
        return
    params = model.get_params()
    assert params[option] == plain(value) and type(params[option]) in (bool, int)
    assert cls(**params).get_params() == params
    x = clean(6, 3, seed=6)
    out, exc = attempt(lambda: model.fit(x, x[:4] + 1).transport(x))
    assert_ok(exc)
    assert all_finite(out)


# ----------------------------------------------------------------- model files (io)


@pytest.fixture(scope="module")
def saved(models, tmp_path_factory):
    """The bytes of a saved model (W1OT with a projection), and a path to write copies to."""
    path = tmp_path_factory.mktemp("models") / "w1.npz"
    models["w1-pca"].save(path)
    return path.read_bytes(), path.with_name("damaged.npz")


@budget(200)
@given(data=st.data())
def test_a_damaged_model_file_is_a_model_file_error_or_the_same_model(models, saved, data):
    original_bytes, path = saved
    kind = data.draw(st.sampled_from(["flip", "truncate", "garbage", "splice"]), label="kind")
    blob = bytearray(original_bytes)
    if kind == "flip":
        at = data.draw(st.integers(0, len(blob) - 1), label="at")
        blob[at] ^= data.draw(st.integers(1, 255), label="xor")
    elif kind == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1), label="length")]
    elif kind == "garbage":
        blob = bytearray(data.draw(st.binary(max_size=200), label="bytes"))
    else:  # a run of bytes overwritten
        at = data.draw(st.integers(0, len(blob) - 1), label="at")
        run = data.draw(st.binary(min_size=1, max_size=64), label="run")
        blob[at : at + len(run)] = run
    path.write_bytes(bytes(blob))
    cls = data.draw(st.sampled_from([W1OT, W2OT]), label="loader")
    loaded, exc = attempt(lambda: cls.load(path))
    outcome("loaded" if exc is None else type(exc).__name__)
    if exc is not None:
        assert isinstance(exc, ModelFileError), describe(exc)
        return
    # Loaded after damage: only bytes nothing reads (e.g. zip timestamps) changed.
    original = models["w1-pca"]
    assert cls is W1OT
    for k, v in original._core.get_state().items():
        np.testing.assert_array_equal(loaded._core.get_state()[k], v)
    x = clean(3, 80, seed=7)
    np.testing.assert_array_equal(loaded.transport(x), original.transport(x))


# -------------------------------------------------------------------- the _core level

CORE_NET = {"hidden": [8, 8], "group_size": 2, "step_hidden": [8]}


@pytest.fixture(scope="module")
def core():
    x = clean(64, 3, seed=8).astype(F32)
    c = _core.W1Core(3, **CORE_NET, seed=0)
    c.fit_potential(x, x + 1, iters=30, batch_size=16, n_threads=1)
    c.fit_step(x, x + 1, iters=30, batch_size=16, loss="energy", n_threads=1)
    return c


CORE_INFERENCE = ["potential", "gradient", "direction", "step_size", "discriminator"]
CORE_INFERENCE += ["transport", "transport-positive"]


@budget(600)
@given(data=st.data())
def test_core_inference_is_the_float32_result_or_names_x(core, data):
    method = data.draw(st.sampled_from(CORE_INFERENCE), label="method")
    call = (
        (lambda x: core.transport(x, positive=True))
        if method == "transport-positive"
        else getattr(core, method)
    )
    obj = data.draw(cell_inputs(3), label="x")
    before = snapshot(obj)
    out, exc = attempt(lambda: call(obj))
    assert_unmodified(obj, before)
    view = core_view(obj)
    if not core_accepts(view, 3):
        assert_refused(exc, "x")
        return
    assert_ok(exc)
    assert out.dtype == F32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, call(float32_copy(view)))
    assert all_finite(out), out


CORE_FIT_ARRAYS = ["source", "target", "valid_source", "valid_target"]


@budget(300)
@given(data=st.data())
def test_core_fits_take_any_array_or_name_it_and_change_nothing(core, data):
    stage = data.draw(st.sampled_from(["fit_potential", "fit_step"]), label="stage")
    which = data.draw(st.sampled_from(CORE_FIT_ARRAYS), label="which")
    obj = data.draw(cell_inputs(3), label=which)
    arrays = {k: clean(6, 3, seed=9 + i).astype(F32) for i, k in enumerate(CORE_FIT_ARRAYS)}
    arrays[which] = obj
    c = _core.W1Core(3, **CORE_NET, seed=1)
    c.set_state(core.get_state())
    state = c.get_state()
    call = getattr(c, stage)
    history, exc = attempt(lambda: call(**arrays, iters=2, batch_size=1, eval_every=1, n_threads=1))
    view = core_view(obj)
    if not core_accepts(view, 3):
        assert_refused(exc, which)
    elif exc is None:
        assert all_finite(history) and all_finite(c.get_state()), history
        return
    else:
        assert isinstance(exc, TrainingError), describe(exc)
    for k, v in c.get_state().items():
        np.testing.assert_array_equal(v, state[k], err_msg="a failed fit changed the state")


@budget(300)
@given(data=st.data())
def test_core_set_state_takes_a_valid_state_or_names_the_entry(data):
    c = _core.W1Core(3, **CORE_NET, seed=2)
    state = c.get_state()
    key = data.draw(st.sampled_from(sorted(state)), label="key")
    n = state[key].size
    length = data.draw(st.sampled_from([n, n, n, n - 1, n + 1, 0, 1]), label="length")
    shape = data.draw(st.sampled_from([(length,)] * 4 + [(1, length), (), (length, 1)]))
    values = data.draw(extreme_values(shape), label="values")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    obj = lay_out(cast(values, dtype, None), data.draw(st.sampled_from(LAYOUTS)))
    new = {**state, key: obj}
    _, exc = attempt(lambda: c.set_state(new))
    view = core_view(obj)
    after = c.get_state()
    if core_accepts(view, n, ndim=1, max_abs=np.inf):
        assert_ok(exc)
        np.testing.assert_array_equal(after[key], float32_copy(view))
        return
    assert_refused(exc, f"state['{key}']")
    for k, v in after.items():
        np.testing.assert_array_equal(v, state[k], err_msg="a refused state changed the model")


def test_core_set_state_names_a_missing_entry_or_a_wrong_type():
    c = _core.W1Core(3, **CORE_NET, seed=2)
    state = c.get_state()
    for bad in (None, [], "state", list(state.values()), {"potential": state["potential"]}):
        _, exc = attempt(lambda b=bad: c.set_state(b))
        assert_refused(exc, "state")
    for k, v in c.get_state().items():
        np.testing.assert_array_equal(v, state[k])


# Scalar arguments of the core's solver: the values that work, by call.
CORE_ARGS = {
    "W1Core": {
        "dim": 3,
        "hidden": [8, 8],
        "group_size": 2,
        "orthogonal": "cayley",
        "bjorck_iters": 20,
        "step_hidden": [8],
        "negative_slope": 0.01,
        "seed": 0,
    },
    "fit_potential": {
        "iters": 2,
        "batch_size": 4,
        "lr": 1e-2,
        "lr_min": 1e-4,
        "betas": (0.5, 0.5),
        "eps": 1e-8,
        "weight_decay": 0.0,
        "eval_every": 1,
        "patience": None,
        "min_rel_improvement": 1e-3,
        "n_threads": 1,
    },
    "fit_step": {
        "iters": 2,
        "batch_size": 4,
        "lr": 1e-4,
        "disc_lr": 1e-4,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0.0,
        "positive": False,
        "eval_every": 1,
        "patience": None,
        "min_rel_improvement": 1e-2,
        "loss": "gan",
        "label_smoothing": 0.0,
        "instance_noise": 0.0,
        "mean_shift_penalty": 0.0,
        "mmd_gammas": None,
        "lr_final_fraction": 1.0,
        "n_threads": 1,
        "reinit": True,
    },
    "transport": {"positive": False},
}
CORE_INT_ARGS = {"dim", "group_size", "bjorck_iters", "seed", "iters", "batch_size"}
CORE_INT_ARGS |= {"eval_every", "patience", "n_threads"}
CORE_FLOAT_ARGS = {"negative_slope", "lr", "lr_min", "eps", "weight_decay", "disc_lr"}
CORE_FLOAT_ARGS |= {"min_rel_improvement", "label_smoothing", "instance_noise"}
CORE_FLOAT_ARGS |= {"mean_shift_penalty", "lr_final_fraction"}
# Names the core gives some arguments in its messages.
CORE_ALIASES = {
    ("fit_step", "lr"): "step_lr",
    ("fit_step", "lr_final_fraction"): "step_lr_final_fraction",
    ("fit_step", "loss"): "step_loss",
    ("fit_potential", "betas"): "beta1|beta2",
    ("fit_step", "betas"): "beta1|beta2",
}
I64 = (-(2**63), 2**63 - 1)


def core_value_is_generated(call: str, arg: str, v) -> bool:
    """Values the core property leaves to the tests below: integers beyond 64 bits and
    beyond float range, iteration counts the core would allocate a
    history for up front (abort or panic), thread counts that take minutes to start."""
    seq = v if isinstance(v, (list, tuple, np.ndarray, range)) else [v]
    ints = [int(e) for e in seq if isinstance(e, (int, np.integer))]
    if any(not I64[0] <= e <= I64[1] for e in ints):
        return False
    if arg in CORE_FLOAT_ARGS and isinstance(v, int) and abs(v) > 2**1000:
        return False
    if arg == "iters" and isinstance(v, (int, np.integer)) and v > 10**5:
        return False
    if arg == "n_threads" and isinstance(v, (int, np.integer)) and v > 8:
        return False
    if arg == "dim" and isinstance(v, (int, np.integer)) and 10**4 < v < 2**31:
        return False  # valid but a large allocation
    if arg in ("hidden", "step_hidden") and isinstance(v, (list, tuple, np.ndarray, range)):
        return all(not isinstance(e, (int, np.integer)) or e < 2**10 or e >= 2**31 for e in v)
    return True


def run_core_call(call: str, kwargs: dict, x: np.ndarray, stop: Callable):
    if call == "W1Core":
        args = dict(kwargs)
        return _core.W1Core(args.pop("dim"), **args)
    c = _core.W1Core(3, **CORE_NET, seed=3)
    if call == "transport":
        return c.transport(x, **kwargs)
    return getattr(c, call)(x, x + 1, **kwargs, callback=stop)


@budget(600)
@given(data=st.data())
def test_core_scalar_arguments_are_accepted_or_named(data):
    call = data.draw(st.sampled_from(sorted(CORE_ARGS)), label="call")
    arg = data.draw(st.sampled_from(sorted(CORE_ARGS[call])), label="arg")
    typed = data.draw(st.booleans(), label="typed like the default")
    values = typed_like(CORE_ARGS[call][arg]) if typed else OPTION_VALUES
    value = data.draw(values.filter(lambda v: core_value_is_generated(call, arg, v)), "value")
    kwargs = {**CORE_ARGS[call], arg: value}
    if call == "fit_step" and arg == "mmd_gammas":
        kwargs["loss"] = "mmd"
    x = clean(20, 3, seed=10).astype(F32)
    calls = []

    def stop(stage, iteration, total, loss, valid):
        calls.append(iteration)
        return iteration < STOP_AFTER

    out, exc = attempt(lambda: run_core_call(call, kwargs, x, stop))
    if exc is None:
        outcome("accepted")
        assert all_finite(out if call != "W1Core" else out.get_state()), out
    elif isinstance(exc, KeyboardInterrupt):
        outcome("stopped by the callback")
        assert calls and calls[-1] >= STOP_AFTER
    else:
        alias = CORE_ALIASES.get((call, arg), "")
        assert_refused(
            exc,
            *option_names(arg),  # hidden and group_size constrain each other
            *filter(None, alias.split("|")),
            allowed=(ValueError, TypeError, TrainingError),
        )


# --------------------------------------------- defects the properties found, now fixed

X3 = clean(40, 3, seed=19)
MIN_INT64 = np.zeros((2, 3), np.int64)
MIN_INT64[0, 0] = np.iinfo(np.int64).min  # np.abs() of it wraps to itself
HUGE64 = np.full((2, 3), MAX64)

FIXED = [
    # (label, call, exception, argument named)
    (
        "potential_iters=2**50 (aborted the process in fit)",
        lambda: W1OT(potential_iters=2**50),
        ValueError,
        "potential_iters",
    ),
    (
        "step_iters=2**62 (RuntimeError in fit)",
        lambda: W1OT(step_iters=2**62),
        ValueError,
        "step_iters",
    ),
    ("W2OT iters=2**62 (RuntimeError in fit)", lambda: W2OT(iters=2**62), ValueError, "iters"),
    (
        "a float option given 2**1100 (OverflowError)",
        lambda: W1OT(potential_lr=2**1100),
        ValueError,
        "potential_lr",
    ),
    (
        "W2OT betas with 2**1100 (OverflowError)",
        lambda: W2OT(betas=(2**1100, 0.5)),
        ValueError,
        "betas",
    ),
    (
        "a choice given an array (ambiguous truth value)",
        lambda: W1OT(orthogonal=np.array(["cayley", "bjorck"])),
        TypeError,
        "orthogonal",
    ),
    ("a choice given None", lambda: W2OT(init=None), TypeError, "init"),
    (
        "a width beyond 64 bits (OverflowError in fit)",
        lambda: W1OT(hidden=[2**70]),
        ValueError,
        "hidden",
    ),
    (
        "int64 minimum passed the 1e12 limit",
        lambda: W1OT(**FIT[W1OT]).fit(MIN_INT64, X3),
        ValueError,
        "source",
    ),
    (
        "MeanShift means overflow (silent -inf)",
        lambda: baselines.MeanShift().fit(HUGE64, -HUGE64),
        ValueError,
        "source",
    ),
    (
        "MeanShift transport overflows (silent inf)",
        lambda: baselines.MeanShift().fit(HUGE64[:1] * 0, HUGE64[:1] / 2).transport(HUGE64),
        ValueError,
        "x",
    ),
    (
        "Observed seed=-1 (NumPy's error, unnamed, at transport)",
        lambda: baselines.Observed(seed=-1),
        ValueError,
        "seed",
    ),
    (
        "MeanShift seed='x' (int()'s error, unnamed)",
        lambda: baselines.MeanShift(seed="x"),
        TypeError,
        "seed",
    ),
    (
        "Observed seed=inf (OverflowError)",
        lambda: baselines.Observed(seed=math.inf),
        TypeError,
        "seed",
    ),
    (
        "Observed seed=None (int()'s error, unnamed)",
        lambda: baselines.Observed(seed=None),
        TypeError,
        "seed",
    ),
    ("Observed seed=1.5 (silently 1)", lambda: baselines.Observed(seed=1.5), TypeError, "seed"),
    (
        "MeanShift balance='no' (silently True)",
        lambda: baselines.MeanShift(balance="no"),
        TypeError,
        "balance",
    ),
    (
        "MeanShift positive=1 (silently True)",
        lambda: baselines.MeanShift(positive=1),
        TypeError,
        "positive",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "arg"), [f[1:] for f in FIXED], ids=[f[0] for f in FIXED]
)
def test_fixed_defects_stay_fixed(call, error, arg):
    _, exc = attempt(call)
    assert isinstance(exc, error), describe(exc) if exc else "accepted"
    assert names(message(exc), [arg]), message(exc)


def test_the_largest_accepted_iteration_count_starts_and_stops():
    for model in (
        W1OT(potential_iters=10**8, batch_size=8, n_threads=1),
        W1OT(potential_iters=1, step_iters=10**8, batch_size=8, n_threads=1),
        W2OT(iters=10**8, batch_size=8, n_threads=1),
    ):
        with pytest.raises(KeyboardInterrupt):
            model.fit(X3, X3 + 1, callback=lambda p: p.stage == "potential" and p.iteration < 2)
        assert not model.is_fitted


# ------------------------------------------------------------------- interruption


@functools.cache
def fitted(kind: str, features: int):
    """A fitted model and its data, shared by the tests below: each checks that the model
    comes out of its test unchanged."""
    x = clean(200, features, seed=11)
    if kind == "w2":
        return W2OT(iters=100, inner_iters=2, batch_size=16, n_threads=1, seed=0).fit(x, x + 1), x
    model = W1OT(potential_iters=100, step_iters=100, batch_size=16, n_threads=1, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(x, x + 1), x


def everything(model, x) -> dict:
    """All a model's fitted state that a refit could change."""
    out = {f"state/{k}": v.copy() for k, v in model._core.get_state().items()}
    out.update({f"history/{k}": np.array(v, copy=True) for k, v in model.history.items()})
    out["transport"] = model.transport(x)
    out["potential"] = model.potential(x)
    if model.pca is not None:
        out["pca/mean"], out["pca/components"] = model.pca.mean, model.pca.components
    out["params"] = model.get_params()
    out["fit_time"] = dict(model.fit_time_)
    out["n_features"] = model.n_features
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        if isinstance(v, np.ndarray):
            assert v.dtype == b[k].dtype and v.shape == b[k].shape, k
            assert v.tobytes() == b[k].tobytes(), f"{k} changed"
        else:
            assert v == b[k], k


# Where a refit is stopped: (model, stage, first iteration the callback stops at), early and
# late in each stage (100 is the last report: the stage has finished, the fit has not).
STOPS = {
    "w1-potential-early": ("w1", "potential", 25),
    "w1-potential-late": ("w1", "potential", 75),
    "w1-step-early": ("w1", "step_size", 25),
    "w1-step-last": ("w1", "step_size", 100),
    "w2-early": ("w2", "w2", 25),
    "w2-late": ("w2", "w2", 75),
}
# Every stop, in 3 features and in 80 (a PCA projection), by returning False (Ctrl-C's
# path); a few by a callback raising its own exception.
INTERRUPTIONS = [(s, f, "return-false") for s in STOPS for f in (3, 80)] + [
    ("w1-potential-early", 3, "raise"),
    ("w1-step-last", 80, "raise"),
    ("w2-late", 3, "raise"),
]


@pytest.mark.parametrize(
    ("stop", "features", "how"),
    INTERRUPTIONS,
    ids=[f"{s}-{f}-features-{h}" for s, f, h in INTERRUPTIONS],
)
def test_an_interrupted_refit_leaves_a_fitted_model_unchanged(stop, features, how):
    kind, stage, at = STOPS[stop]
    model, x = fitted(kind, features)
    before = everything(model, x)
    seen = []

    class Stop(Exception):
        pass

    def callback(p):
        seen.append((p.stage, p.iteration))
        if p.stage == stage and p.iteration >= at:
            if how == "raise":
                raise Stop
            return False
        return True

    # Other data, so that a refit which went through would change everything.
    expected = KeyboardInterrupt if how == "return-false" else Stop
    with pytest.raises(expected):
        model.fit(x * 2 + 5, x - 3, callback=callback)
    assert seen[-1][0] == stage and seen[-1][1] >= at, "stopped, but not at the callback"
    assert sum(1 for s, i in seen if s == stage and i >= at) == 1, "called after stopping"
    assert model.is_fitted
    assert_same(before, everything(model, x))


def test_a_callback_returning_numpy_false_stops_the_fit():
    x = clean(200, 3, seed=12)
    for model in (
        W1OT(potential_iters=100, step_iters=10, batch_size=16, n_threads=1),
        W2OT(iters=100, inner_iters=1, batch_size=16, n_threads=1),
    ):
        with pytest.raises(KeyboardInterrupt):
            model.fit(x, x + 1, callback=lambda p: np.False_)
        assert not model.is_fitted


# ------------------------------------------------------------------------ GIL release


def bump_while_running(work) -> tuple[int, float]:
    """Runs ``work`` in a thread; returns how often this thread woke up and counted while the
    worker was inside the call, and how long it took. Counting needs the GIL."""
    started, finished = threading.Event(), threading.Event()
    errors = []

    def worker():
        started.set()
        try:
            work()
        except BaseException as e:  # re-raised below
            errors.append(e)
        finally:
            finished.set()

    t = threading.Thread(target=worker)
    t0 = time.perf_counter()
    t.start()
    started.wait()
    count = 0
    while not finished.is_set():
        time.sleep(0.002)
        count += 1
    t.join()
    if errors:
        raise errors[0]
    return count, time.perf_counter() - t0


@pytest.mark.parametrize(
    "make",
    [
        # Few, slow iterations (large batches): a handful of progress reports, at which a
        # fit holding the GIL would still let this thread in (a count or so each).
        lambda: W1OT(potential_iters=150, step_iters=150, batch_size=512, n_threads=1, seed=0),
        lambda: W2OT(iters=50, inner_iters=5, batch_size=512, n_threads=1, seed=0),
    ],
    ids=["W1OT", "W2OT"],
)
def test_the_gil_is_released_during_fit(make):
    x = clean(2000, 10, seed=13)
    model = make()
    reports = []

    def work():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(x, x + 1, callback=reports.append)

    count, elapsed = bump_while_running(work)
    assert model.is_fitted
    assert count >= max(50, 5 * len(reports)), (
        f"the main thread ran only {count} times in {elapsed:.2f} s of fit "
        f"({len(reports)} progress reports)"
    )


# ---------------------------------------------------------- known defects of the binding
#
# Each test below states the promise and fails today; strict, so that it shows up (XPASS
# fails the run) once the Rust binding is fixed and the test can become a plain one.


def core_calls_with(arg_values: dict[str, Any]):
    """(label, call) for every core argument in ``arg_values`` (one at a time)."""
    x = clean(20, 3, seed=14).astype(F32)
    for call, defaults in CORE_ARGS.items():
        for arg in defaults:
            if arg in arg_values:
                kwargs = {**defaults, arg: arg_values[arg]}
                yield (
                    f"{call}({arg}={arg_values[arg]!r})",
                    arg,
                    lambda c=call, k=kwargs: run_core_call(c, k, x, lambda *a: True),
                )


def test_core_integers_beyond_64_bits_or_float_range_are_value_errors():
    values = {a: 2**64 for a in CORE_INT_ARGS} | {a: 2**1100 for a in CORE_FLOAT_ARGS}
    numpy_values = {a: np.uint64(2**64 - 1) for a in CORE_INT_ARGS}
    wrong = []
    calls = [*core_calls_with(values), *core_calls_with(numpy_values)]
    for label, arg, call in calls:
        _, exc = attempt(call)
        if not (isinstance(exc, (ValueError, TypeError)) and names(message(exc), [arg])):
            wrong.append(f"{label}: {describe(exc) if exc else 'accepted'}")
    assert not wrong, "\n".join(wrong)


def test_core_iteration_counts_beyond_memory_are_value_errors():
    x = clean(20, 3, seed=15).astype(F32)
    calls = {
        "fit_potential": lambda: _core.W1Core(3, **CORE_NET).fit_potential(
            x, x, iters=2**62, batch_size=4
        ),
        "fit_step": lambda: _core.W1Core(3, **CORE_NET).fit_step(x, x, iters=2**62, batch_size=4),
        "W2Core.fit": lambda: _core.W2Core(3, hidden=[8]).fit(x, x, iters=2**62, batch_size=4),
    }
    wrong = []
    for label, call in calls.items():
        _, exc = attempt(call)
        if not (isinstance(exc, ValueError) and names(message(exc), ["iters"])):
            wrong.append(f"{label}: {describe(exc) if exc else 'accepted'}")
    assert not wrong, "\n".join(wrong)


def test_core_iteration_counts_beyond_memory_do_not_abort_the_process():
    script = textwrap.dedent(
        """
        import numpy as np
        from w1ot import _core
        x = np.ones((20, 3), np.float32)
        try:
            _core.W1Core(3, hidden=[8, 8], group_size=2, step_hidden=[8]).fit_potential(
                x, x, iters=2**50, batch_size=4, callback=lambda *a: False)
        except ValueError as e:
            print("ValueError", e)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "ValueError" in out.stdout, (out.returncode, out.stderr[-300:])


def test_core_fit_step_names_its_arguments_as_passed():
    x = clean(20, 3, seed=16).astype(F32)
    c = _core.W1Core(3, **CORE_NET)
    for arg, bad in (("lr", -1.0), ("lr_final_fraction", 2.0), ("loss", "wgan")):
        _, exc = attempt(lambda a=arg, b=bad: c.fit_step(x, x, batch_size=4, iters=2, **{a: b}))
        assert isinstance(exc, ValueError) and names(message(exc), [arg]), describe(exc)


def test_core_refuses_a_callback_that_is_not_callable():
    x = clean(20, 3, seed=17).astype(F32)
    _, exc = attempt(
        lambda: _core.W1Core(3, **CORE_NET).fit_potential(x, x, batch_size=4, callback=3)
    )
    assert isinstance(exc, TypeError) and names(message(exc), ["callback"]), describe(exc)


def test_core_gives_finite_outputs_for_every_finite_float32_input(models):
    w1, w2 = models["w1"]._core, models["w2"]._core  # the solvers' default networks
    calls = {
        "W1Core.step_size": w1.step_size,
        "W1Core.discriminator": w1.discriminator,
        "W1Core.transport": w1.transport,
        "W2Core.transport": w2.transport,
        "W2Core.potential_f": w2.potential_f,
        "W2Core.potential_g": w2.potential_g,
    }
    wrong = []
    for value in (1e30, 3e38, -3e38):
        z = np.full((2, 3), value, F32)
        for label, call in calls.items():
            out, exc = attempt(lambda c=call, z=z: c(z))
            if exc is None and not all_finite(out):
                wrong.append(f"{label}({value:g}) = {out.ravel()[:3]}")
        out, exc = attempt(lambda z=z: w2.w2_distance(z, z))
        if exc is None and not math.isfinite(out):
            wrong.append(f"W2Core.w2_distance({value:g}) = {out}")
    assert not wrong, "\n".join(wrong)
