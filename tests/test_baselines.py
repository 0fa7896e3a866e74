"""Tests of w1ot.baselines: exact formulas, the shared interface and input validation."""

import numpy as np
import pytest
import scipy.sparse as sp

from w1ot import W1OT
from w1ot.baselines import BASELINES, Identity, MeanShift, Observed


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(120, 5))
    target = rng.normal(loc=2.0, size=(80, 5))
    return source, target


@pytest.mark.parametrize("cls", [Identity, Observed, MeanShift])
def test_interface(cls, data):
    source, target = data
    model = cls()
    assert not model.is_fitted
    with pytest.raises(RuntimeError, match="not fitted"):
        model.transport(source)
    assert model.fit(source, target) is model
    assert model.is_fitted and model.n_features == 5
    out = model.transport(source[:10])
    assert isinstance(out, np.ndarray) and out.shape == (10, 5) and out.dtype == np.float64
    # Same interface as the OT model.
    for attr in ("fit", "transport", "is_fitted"):
        assert hasattr(W1OT, attr) and hasattr(model, attr)


@pytest.mark.parametrize("cls", [Identity, Observed, MeanShift])
def test_validation(cls, data):
    source, target = data
    with pytest.raises(ValueError, match="target has 4 features, expected 5"):
        cls().fit(source, target[:, :4])
    bad = source.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="source contains NaN"):
        cls().fit(bad, target)
    with pytest.raises(ValueError, match="2-D"):
        cls().fit(source[:, 0], target)
    with pytest.raises(ValueError, match="empty"):
        cls().fit(source[:0], target)
    with pytest.raises(TypeError):
        cls().fit(np.array([["a", "b"]]), target)
    model = cls().fit(source, target)
    with pytest.raises(ValueError, match="x has 3 features, expected 5"):
        model.transport(source[:, :3])


def test_identity_returns_a_copy(data):
    source, target = data
    model = Identity().fit(source, target)
    out = model.transport(source)
    np.testing.assert_array_equal(out, source)
    assert out is not source and not np.shares_memory(out, source)


def test_mean_shift_formula_equal_sizes(data):
    source, target = data
    source = source[:80]
    model = MeanShift().fit(source, target)
    shift = target.mean(axis=0) - source.mean(axis=0)
    np.testing.assert_allclose(model.shift_, shift, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.transport(source), source + shift, rtol=0, atol=1e-12)


def test_mean_shift_balanced_subsample(data):
    source, target = data  # 120 source cells, 80 target cells
    model = MeanShift(seed=7).fit(source, target)
    idx = np.sort(np.random.default_rng(7).choice(120, size=80, replace=False))
    expected = target.mean(axis=0) - source[idx].mean(axis=0)
    np.testing.assert_allclose(model.shift_, expected, rtol=0, atol=1e-12)
    # the subsample is a real one: not the full-data shift
    full = target.mean(axis=0) - source.mean(axis=0)
    assert not np.allclose(model.shift_, full)
    # seeded: same seed same shift, other seed another subsample
    np.testing.assert_array_equal(MeanShift(seed=7).fit(source, target).shift_, model.shift_)
    assert not np.array_equal(MeanShift(seed=8).fit(source, target).shift_, model.shift_)
    # the larger side may be the target too
    model = MeanShift(seed=3).fit(target, source)
    idx = np.sort(np.random.default_rng(3).choice(120, size=80, replace=False))
    np.testing.assert_allclose(
        model.shift_, source[idx].mean(axis=0) - target.mean(axis=0), rtol=0, atol=1e-12
    )


def test_mean_shift_unbalanced_and_positive(data):
    source, target = data
    model = MeanShift(balance=False).fit(source, target)
    np.testing.assert_allclose(
        model.shift_, target.mean(axis=0) - source.mean(axis=0), rtol=0, atol=1e-12
    )
    pos = MeanShift(balance=False, positive=True).fit(source, target)
    out = pos.transport(source)
    np.testing.assert_array_equal(out, np.maximum(source + model.shift_, 0.0))
    assert out.min() == 0.0


def test_observed_returns_stored_cells(data):
    source, target = data
    model = Observed(seed=1).fit(source, target)
    out = model.transport(source[:50])
    assert out.shape == (50, 5)
    rows = {tuple(r) for r in target}
    assert all(tuple(r) in rows for r in out)
    assert len({tuple(r) for r in out}) == 50  # without replacement
    np.testing.assert_array_equal(model.transport(source[:50]), out)  # same draw every call
    # more cells asked than stored: with replacement, still only target cells
    out = model.transport(source)
    assert out.shape == (120, 5) and all(tuple(r) in rows for r in out)
    # the values of x do not matter, only its length
    np.testing.assert_array_equal(model.transport(source[:50] + 100), model.transport(source[:50]))


def test_sparse_input(data):
    source, target = data
    s, t = sp.csr_matrix(np.abs(source)), sp.csr_matrix(np.abs(target))
    dense = MeanShift().fit(np.abs(source), np.abs(target))
    sparse = MeanShift().fit(s, t)
    np.testing.assert_allclose(sparse.shift_, dense.shift_)
    np.testing.assert_allclose(sparse.transport(s), dense.transport(np.abs(source)))
    np.testing.assert_array_equal(Identity().fit(s, t).transport(s), np.abs(source))


def test_registry():
    from w1ot.baselines import LatentMeanShift

    assert BASELINES == {
        "identity": Identity,
        "observed": Observed,
        "mean_shift": MeanShift,
        "scgen": LatentMeanShift,
    }
    assert "not fitted" in repr(MeanShift()) and "fitted" in repr(Identity().fit([[1.0]], [[2.0]]))
