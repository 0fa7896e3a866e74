"""Tests of w1ot.metrics against plain NumPy / SciPy computations."""

import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from w1ot import metrics as M

GAMMAS = np.logspace(1, -3, 50)


def mmd_reference(x, y, gammas=GAMMAS):
    """Full-matrix NumPy biased RBF MMD^2 averaged over gammas."""
    dxx, dyy, dxy = (cdist(a, b, "sqeuclidean") for a, b in ((x, x), (y, y), (x, y)))
    vals = [
        np.exp(-g * dxx).mean() + np.exp(-g * dyy).mean() - 2 * np.exp(-g * dxy).mean()
        for g in np.atleast_1d(gammas)
    ]
    return float(np.mean(vals))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# ------------------------------------------------------------------------------------- MMD


@pytest.mark.parametrize(("n", "m", "d"), [(60, 45, 5), (1, 7, 3), (2, 1, 2), (131, 130, 20)])
def test_mmd_matches_numpy(rng, n, m, d):
    x = rng.normal(size=(n, d))
    y = rng.normal(0.3, 1.2, size=(m, d))
    assert M.mmd(x, y) == pytest.approx(mmd_reference(x, y), rel=1e-5, abs=1e-14)
    assert M.mmd(y, x) == pytest.approx(mmd_reference(x, y), rel=1e-5, abs=1e-14)


def test_mmd_custom_gammas(rng):
    x = rng.normal(size=(40, 4))
    y = rng.normal(size=(30, 4)) + 0.5
    g = [3.0, 0.5, 0.01]
    assert M.mmd(x, y, gammas=g) == pytest.approx(mmd_reference(x, y, g), rel=1e-5)
    assert M.mmd(x, y, gammas=0.2) == pytest.approx(mmd_reference(x, y, [0.2]), rel=1e-5)


def test_mmd_far_apart_underflow(rng):
    # most kernel values underflow for the large gammas; the small ones still see the pairs
    x = rng.normal(scale=10.0, size=(50, 3))
    y = rng.normal(scale=10.0, size=(40, 3)) + 30.0
    assert M.mmd(x, y) == pytest.approx(mmd_reference(x, y), rel=1e-5)


def test_mmd_identical_is_zero(rng):
    x = rng.normal(size=(257, 10))
    assert abs(M.mmd(x, x)) <= 1e-12
    assert abs(M.mmd(x, x.copy()[::-1])) <= 1e-12


def test_mmd_detects_shift(rng):
    x = rng.normal(size=(300, 5))
    y_same = rng.normal(size=(300, 5))
    y_shift = rng.normal(size=(300, 5)) + 1.0
    assert M.mmd(x, y_shift) > 5 * M.mmd(x, y_same) > 0


def test_exp_kernel_accuracy():
    x = -np.concatenate([np.linspace(0.0, 750.0, 20001), np.geomspace(1e-300, 1.0, 200)])
    got = np.array([M._exp_nonpos(v) for v in x])
    ref = np.exp(x)
    normal = ref >= 3.4e-308
    assert np.max(np.abs(got[normal] - ref[normal]) / ref[normal]) <= 4 * np.finfo(float).eps
    assert np.all(got[~normal] <= 3.4e-308)


# ---------------------------------------------------------------------------------- energy


@pytest.mark.parametrize(("n", "m", "d"), [(50, 37, 4), (1, 5, 2), (128, 129, 11)])
def test_energy_matches_cdist(rng, n, m, d):
    x = rng.normal(size=(n, d))
    y = rng.normal(0.5, 2.0, size=(m, d))
    ref = 2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean()
    assert M.energy_distance(x, y) == pytest.approx(ref, rel=1e-5)


def test_energy_1d_matches_scipy(rng):
    u = rng.normal(size=80)
    v = rng.exponential(size=60)
    ref = stats.energy_distance(u, v) ** 2
    assert M.energy_distance(u[:, None], v[:, None]) == pytest.approx(ref, rel=1e-5)
    assert M.energy_distance(u[:, None], u[:, None]) <= 1e-12


# ------------------------------------------------------------------------------ r2 and l2


def test_r2_l2_match_scipy(rng):
    pred = rng.normal(size=(70, 12)) + np.arange(12)
    true = rng.normal(size=(90, 12)) + 0.8 * np.arange(12)
    mp, mt = pred.mean(0), true.mean(0)
    assert M.r2_means(pred, true) == pytest.approx(stats.pearsonr(mp, mt)[0] ** 2, rel=1e-5)
    assert M.l2_means(pred, true) == pytest.approx(np.sqrt(((mp - mt) ** 2).sum()), rel=1e-5)


def test_r2_constant_means_is_nan_without_warning(rng):
    pred = np.ones((5, 4))
    true = rng.normal(size=(6, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(M.r2_means(pred, true))
        assert np.isnan(M.r2_means(true, pred))
        assert np.isnan(M.r2_means(true[:, :1], true[:, :1]))


def test_accepts_array_likes(rng):
    x = rng.normal(size=(20, 3))
    y = rng.normal(size=(15, 3))
    ref = mmd_reference(x, y)
    assert M.mmd(x.tolist(), y.astype(np.float32)) == pytest.approx(
        mmd_reference(x, y.astype(np.float32).astype(float)), rel=1e-5
    )
    assert M.mmd(sp.csr_matrix(x), y) == pytest.approx(ref, rel=1e-5)
    assert M.mmd(np.asfortranarray(x), y[::-1]) == pytest.approx(ref, rel=1e-5)
    ints = rng.integers(0, 5, size=(10, 3))
    assert M.l2_means(ints, ints + 1) == pytest.approx(np.sqrt(3), rel=1e-12)


# ------------------------------------------------------------------------------- W1 (POT)


def test_wasserstein1_matches_assignment(rng):
    pytest.importorskip("ot")
    x = rng.normal(size=(40, 3))
    y = rng.normal(size=(40, 3)) + np.array([1.0, 0.0, -0.5])
    cost = cdist(x, y)
    rows, cols = linear_sum_assignment(cost)
    assert M.wasserstein1(x, y) == pytest.approx(cost[rows, cols].mean(), rel=1e-5)
    assert M.wasserstein1(x, x[::-1]) == pytest.approx(0.0, abs=1e-12)


def test_wasserstein1_weighted_1d_matches_scipy(rng):
    pytest.importorskip("ot")
    u, v = rng.normal(size=25), rng.normal(1.0, 2.0, size=31)
    wu, wv = rng.uniform(0.1, 1.0, 25), rng.uniform(0.1, 1.0, 31)
    ref = stats.wasserstein_distance(u, v, wu, wv)
    got = M.wasserstein1(u[:, None], v[:, None], a=wu, b=wv)
    assert got == pytest.approx(ref, rel=1e-5)


def test_wasserstein1_without_pot(monkeypatch, rng):
    monkeypatch.setitem(sys.modules, "ot", None)  # makes `import ot` raise ImportError
    with pytest.raises(ImportError, match="pip install pot"):
        M.wasserstein1(rng.normal(size=(3, 2)), rng.normal(size=(3, 2)))


def test_wasserstein1_bad_weights(rng):
    pytest.importorskip("ot")
    x = rng.normal(size=(4, 2))
    with pytest.raises(ValueError, match="a must"):
        M.wasserstein1(x, x, a=np.ones(3))
    with pytest.raises(ValueError, match="b must"):
        M.wasserstein1(x, x, b=-np.ones(4))


# ---------------------------------------------------------------------------------- logFC


def test_logfc_error_log_scale(rng):
    source = rng.normal(2.0, 1.0, size=(100, 6))
    shift = np.array([1.0, 0.0, -0.5, 0.0, 2.0, 0.0])
    true = rng.normal(2.0, 1.0, size=(80, 6)) + shift
    pred = source + shift  # the right fold change, other noise
    err, lp, lt = M.logfc_error(source, pred, true, return_vectors=True)
    np.testing.assert_allclose(lp, shift, atol=1e-12)
    np.testing.assert_allclose(lt, true.mean(0) - source.mean(0), rtol=1e-12)
    assert err == pytest.approx(np.abs(lp - lt).mean(), rel=1e-12)
    # identity prediction misses the whole fold change
    assert M.logfc_error(source, source, true) == pytest.approx(np.abs(lt).mean(), rel=1e-12)


def test_logfc_error_linear_two_fold(rng):
    # the paper's 4i test: 2-fold up-regulation of some features, logFC = log2(2) = 1
    source = rng.uniform(0.5, 3.0, size=(200, 8))
    true = source.copy()
    true[:, :3] *= 2.0
    err, _, lt = M.logfc_error(source, true, true, log_scale=False, return_vectors=True)
    np.testing.assert_allclose(lt, [1, 1, 1, 0, 0, 0, 0, 0], atol=1e-7)
    assert err == 0.0
    ident = M.logfc_error(source[:, :3], source[:, :3], true[:, :3], log_scale=False)
    assert ident == pytest.approx(1.0, abs=1e-7)
    with pytest.raises(ValueError, match="pred"):
        M.logfc_error(source, -source, true, log_scale=False)


# ---------------------------------------------------------------------------- DE genes


def _toy_adata(rng, sparse=False):
    anndata = pytest.importorskip("anndata")
    import pandas as pd

    n_ctrl, n_pert, n_genes = 40, 30, 12
    ctrl = rng.poisson(2.0, size=(n_ctrl, n_genes)).astype(float)
    pert = rng.poisson(2.0, size=(n_pert, n_genes)).astype(float)
    pert[:, 0] += 3.0  # up
    pert[:, 1] -= 1.5  # down
    pert[:, 2] += rng.normal(1.0, 0.1, size=n_pert)
    other = rng.poisson(5.0, size=(10, n_genes)).astype(float)
    X = np.log1p(np.clip(np.vstack([ctrl, pert, other]), 0, None))
    X[:, -1] = 1.0  # zero variance everywhere: t is nan, scored 0 (as scanpy)
    obs = pd.DataFrame(
        {"condition": pd.Categorical(["ctrl"] * n_ctrl + ["drug"] * n_pert + ["other"] * 10)},
        index=[f"c{i}" for i in range(X.shape[0])],
    )
    var = pd.DataFrame(index=[f"g{j}" for j in range(n_genes)])
    ad = anndata.AnnData(X=sp.csr_matrix(X) if sparse else X, obs=obs, var=var)
    ad.layers["dense"] = X.copy()
    return ad, X


def _scipy_ranking(X, mask_g, mask_r, names, by_abs=False, scores=False):
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        t = stats.ttest_ind(X[mask_g], X[mask_r], equal_var=False).statistic
    t = np.where(np.isnan(t), 0.0, t)
    order = np.argsort(-np.abs(t) if by_abs else -t, kind="stable")
    ranked = [names[i] for i in order]
    return (ranked, t[order]) if scores else ranked


@pytest.mark.parametrize("sparse", [False, True])
def test_top_de_genes_matches_scipy_ttest(rng, sparse):
    ad, X = _toy_adata(rng, sparse=sparse)
    names = list(ad.var_names)
    lab = ad.obs["condition"].to_numpy()
    g, r = lab == "drug", lab == "ctrl"
    got, got_t = M.top_de_genes(ad, "condition", "ctrl", "drug", k=5, return_scores=True)
    ref, ref_t = _scipy_ranking(X, g, r, names, scores=True)
    assert got == ref[:5]
    np.testing.assert_allclose(got_t, ref_t[:5], rtol=1e-5)
    got, got_t = M.top_de_genes(ad, "condition", "rest", "drug", k=12, return_scores=True)
    ref, ref_t = _scipy_ranking(X, g, ~g, names, scores=True)
    assert got == ref
    np.testing.assert_allclose(got_t, ref_t, rtol=1e-5)
    ranked_abs = _scipy_ranking(X, g, r, names, by_abs=True)
    assert M.top_de_genes(ad, "condition", "ctrl", "drug", k=5, rank_by="abs") == ranked_abs[:5]
    # fewer features than k: all of them, ranked
    ranked = _scipy_ranking(X, g, r, names)
    assert M.top_de_genes(ad, "condition", "ctrl", "drug", k=50) == ranked
    assert M.top_de_genes(ad, "condition", "ctrl", "drug", k=5, layer="dense") == ranked[:5]


def test_top_de_genes_validation(rng):
    ad, _ = _toy_adata(rng)
    with pytest.raises(ValueError, match="groupby"):
        M.top_de_genes(ad, "nope", "ctrl", "drug")
    with pytest.raises(ValueError, match="group"):
        M.top_de_genes(ad, "condition", "ctrl", "missing")
    with pytest.raises(ValueError, match="reference"):
        M.top_de_genes(ad, "condition", "missing", "drug")
    with pytest.raises(ValueError, match="rank_by"):
        M.top_de_genes(ad, "condition", "ctrl", "drug", rank_by="pval")
    with pytest.raises(ValueError, match="k must"):
        M.top_de_genes(ad, "condition", "ctrl", "drug", k=0)
    with pytest.raises(TypeError, match="AnnData"):
        M.top_de_genes(np.zeros((3, 3)), "condition", "ctrl", "drug")


# ------------------------------------------------------------------------------ validation


METRICS_XY = [M.mmd, M.energy_distance, M.r2_means, M.l2_means]


@pytest.mark.parametrize("fn", METRICS_XY)
def test_validation_errors_name_argument(fn, rng):
    a, b = fn.__code__.co_varnames[:2]
    x = rng.normal(size=(5, 3))
    with pytest.raises(ValueError, match=rf"{a} and {b} have different numbers of features"):
        fn(x, rng.normal(size=(5, 4)))
    with pytest.raises(ValueError, match=rf"{b} is empty"):
        fn(x, np.zeros((0, 3)))
    with pytest.raises(ValueError, match=rf"{a} has 0 features"):
        fn(np.zeros((4, 0)), x)
    bad = x.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=rf"{a} contains NaN"):
        fn(bad, x)
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match=rf"{b} contains NaN or infinite"):
        fn(x, bad)
    with pytest.raises(ValueError, match=rf"{a} must be a 2-D"):
        fn(x[0], x)
    with pytest.raises(TypeError, match=rf"{b} must be numeric"):
        fn(x, np.array([["a", "b", "c"]]))
    with pytest.raises(TypeError, match=rf"{a} must be numeric"):
        fn(np.array([[1 + 2j, 0, 0]]), x)


def test_gamma_validation(rng):
    x = rng.normal(size=(5, 2))
    for bad in ([], [1.0, -1.0], [np.nan], [0.0]):
        with pytest.raises(ValueError, match="gammas"):
            M.mmd(x, x, gammas=bad)


def test_compute_metrics(rng):
    src = rng.normal(size=(50, 6))
    pred = src + 0.5
    true = rng.normal(size=(60, 6)) + 0.6
    out = M.compute_metrics(pred, true, source=src)
    assert set(out) == {"r2", "l2", "mmd", "energy", "logfc_error"}
    assert out["r2"] == M.r2_means(pred, true)
    assert out["l2"] == M.l2_means(pred, true)
    assert out["mmd"] == pytest.approx(mmd_reference(pred, true), rel=1e-5)
    assert out["energy"] == M.energy_distance(pred, true)
    assert out["logfc_error"] == M.logfc_error(src, pred, true)
    assert set(M.compute_metrics(pred, true, energy=False)) == {"r2", "l2", "mmd"}
    with pytest.raises(ValueError, match="pred and true"):
        M.compute_metrics(pred, true[:, :5])


@pytest.mark.parametrize("scale", [1e-200, 1e-60, 1e60, 1e100, 1e155, 1e300])
def test_scale_equivariant_metrics_stay_exact_at_extreme_scales(scale):
    """Finite inputs never give NaN, inf or 0 by overflow: the metrics are computed where
    squares cannot overflow and scaled back (r2 is scale-free; the others have degree 1)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(40, 3)) + 1.0
    for name, degree in (
        ("energy_distance", 1),
        ("l2_means", 1),
        ("r2_means", 0),
        ("paired_error", 1),
        ("wasserstein1", 1),
    ):
        if name == "wasserstein1":
            pytest.importorskip("ot")
        f = getattr(M, name)
        got, want = f(x * scale, y * scale), f(x, y) * scale**degree
        assert np.isfinite(got) and got == pytest.approx(want, rel=1e-12), (name, got, want)
    assert np.isfinite(M.mmd(x * scale, y * scale))
