"""Tests for w1ot.datasets.simulate_perturbation and w1ot.metrics.paired_error."""

import json

import numpy as np
import pytest
import scipy.sparse
from scipy.stats import nbinom

pytest.importorskip("anndata")

from w1ot import datasets
from w1ot.datasets import simulate_perturbation
from w1ot.metrics import mmd, paired_error
from w1ot.preprocessing import normalize_log1p

SMALL = dict(n_control=300, n_perturbed=200, n_genes=60, n_cell_types=3)


@pytest.fixture(scope="module")
def small():
    return simulate_perturbation(**SMALL, seed=0)


def _control(adata):
    return (adata.obs["condition"] == "control").to_numpy()


def _dense(m):
    return m.toarray() if scipy.sparse.issparse(m) else np.asarray(m)


def obs_names_ok(names) -> bool:
    return names.is_unique and all(isinstance(s, str) for s in names)


def _assert_same(a, b):
    np.testing.assert_array_equal(_dense(a.X), _dense(b.X))
    assert set(a.layers) == set(b.layers)
    for key in a.layers:
        np.testing.assert_array_equal(_dense(a.layers[key]), _dense(b.layers[key]))
    assert a.obs.equals(b.obs)
    assert a.var.equals(b.var)
    assert a.uns["simulation"] == b.uns["simulation"]


# --------------------------------------------------------------------------- structure


def test_determinism_by_seed(small):
    _assert_same(small, simulate_perturbation(**SMALL, seed=0))
    other = simulate_perturbation(**SMALL, seed=1)
    assert not np.array_equal(_dense(small.layers["counts"]), _dense(other.layers["counts"]))


def test_generator_seed():
    a = simulate_perturbation(**SMALL, seed=np.random.default_rng(5))
    b = simulate_perturbation(**SMALL, seed=np.random.default_rng(5))
    _assert_same(a, b)
    assert a.uns["simulation"]["seed"] == "Generator"


def test_shapes_dtypes_obs_var(small):
    n, g = 500, 60
    assert small.shape == (n, g)
    assert isinstance(small.X, np.ndarray) and small.X.dtype == np.float32
    assert set(small.layers) == {"counts", "truth"}
    for key in ("counts", "truth"):
        layer = small.layers[key]
        assert isinstance(layer, np.ndarray) and layer.dtype == np.float32
        assert layer.shape == (n, g)
    obs = small.obs
    assert list(obs.columns) == ["condition", "cell_type", "library_size"]
    assert list(obs["condition"].cat.categories) == ["control", "stimulated"]
    assert (obs["condition"].to_numpy()[:300] == "control").all()
    assert (obs["condition"].to_numpy()[300:] == "stimulated").all()
    assert list(obs["cell_type"].cat.categories) == ["type_0", "type_1", "type_2"]
    assert set(obs["cell_type"][_control(small)]) == {"type_0", "type_1", "type_2"}
    assert obs_names_ok(small.obs_names)
    np.testing.assert_array_equal(
        obs["library_size"].to_numpy(), small.layers["counts"].sum(axis=1).astype(np.int64)
    )
    assert list(small.var_names[:3]) == ["gene_000", "gene_001", "gene_002"]
    assert small.var["response"].dtype == bool
    assert (
        small.var["response"].sum() == round(0.2 * g) == small.uns["simulation"]["n_response_genes"]
    )


def test_uns_is_json_and_h5ad_round_trip(small, tmp_path):
    import anndata

    sim = small.uns["simulation"]
    assert json.loads(json.dumps(sim)) == sim
    for key in ("n_control", "n_genes", "effect", "perturbation", "dispersion", "library_size"):
        assert key in sim
    assert set(sim["response_strength"]) == {"type_0", "type_1", "type_2"}
    path = tmp_path / "sim.h5ad"
    small.write_h5ad(path)
    back = anndata.read_h5ad(path)
    np.testing.assert_array_equal(back.X, small.X)
    np.testing.assert_array_equal(back.layers["truth"], small.layers["truth"])
    assert back.obs.equals(small.obs)


def test_x_is_normalize_log1p_of_counts(small):
    expected = normalize_log1p(small.layers["counts"]).astype(np.float32)
    np.testing.assert_array_equal(small.X, expected)
    totals = np.expm1(small.X.astype(np.float64)).sum(axis=1)
    np.testing.assert_allclose(totals, 1e4, rtol=1e-4)


def test_counts_are_realistic():
    adata = simulate_perturbation(1000, 1000, 300, 4, seed=3)
    counts = adata.layers["counts"]
    assert (counts >= 0).all()
    np.testing.assert_array_equal(counts, np.round(counts))
    zero = float((counts == 0).mean())
    assert 0.2 < zero < 0.95, zero
    # overdispersed: within the control cells of one type, variance > mean for most genes
    ctrl = _control(adata) & (adata.obs["cell_type"] == "type_0").to_numpy()
    c = counts[ctrl].astype(np.float64)
    mean, var = c.mean(axis=0), c.var(axis=0, ddof=1)
    expressed = mean > 0.5
    assert expressed.sum() > 50
    assert (var[expressed] > 1.5 * mean[expressed]).mean() > 0.9
    lib = adata.obs["library_size"].to_numpy()
    assert 0.5 * 1500 < np.median(lib) < 2 * 1500
    assert np.std(np.log(lib)) > 0.2  # log-normal library sizes


def test_sparse_variant_matches_dense(small):
    sp = simulate_perturbation(**SMALL, seed=0, sparse=True)
    assert scipy.sparse.issparse(sp.X) and scipy.sparse.issparse(sp.layers["counts"])
    assert sp.X.format == "csr" and sp.layers["counts"].format == "csr"
    assert sp.X.dtype == np.float32 and sp.layers["counts"].dtype == np.float32
    assert isinstance(sp.layers["truth"], np.ndarray)
    np.testing.assert_array_equal(sp.X.toarray(), small.X)
    np.testing.assert_array_equal(sp.layers["counts"].toarray(), small.layers["counts"])
    np.testing.assert_array_equal(sp.layers["truth"], small.layers["truth"])
    assert sp.uns["simulation"]["sparse"] is True


# --------------------------------------------------------------------------- the truth


def test_truth_of_perturbed_cells_is_their_x(small):
    pert = ~_control(small)
    np.testing.assert_array_equal(small.layers["truth"][pert], small.X[pert])


def test_effect_zero_truth_equals_x():
    adata = simulate_perturbation(**SMALL, seed=2, effect=0.0)
    np.testing.assert_allclose(adata.layers["truth"], adata.X, rtol=0, atol=1e-6)
    # the same seed gives the same control cells whatever the effect
    ctrl = _control(adata)
    perturbed = simulate_perturbation(**SMALL, seed=2, effect=1.0)
    np.testing.assert_array_equal(perturbed.X[ctrl], adata.X[ctrl])
    assert not np.allclose(perturbed.layers["truth"][ctrl], adata.X[ctrl])


def test_truth_keeps_the_cells_noise(small):
    """Common random numbers: genes outside the response set keep their counts, so their
    zero pattern is the same in X and the truth, and their normalised values differ by one
    factor per cell (the change of the total)."""
    ctrl = _control(small)
    other = ~small.var["response"].to_numpy()
    x = small.X[ctrl][:, other].astype(np.float64)
    t = small.layers["truth"][ctrl][:, other].astype(np.float64)
    np.testing.assert_array_equal(x > 0, t > 0)
    ratio = np.where(x > 0, np.expm1(t) / np.where(x > 0, np.expm1(x), 1.0), np.nan)
    spread = np.nanmax(ratio, axis=1) / np.nanmin(ratio, axis=1)
    np.testing.assert_allclose(spread, 1.0, rtol=1e-3)
    # response genes change
    resp = small.var["response"].to_numpy()
    diff = small.layers["truth"][ctrl][:, resp] - small.X[ctrl][:, resp]
    assert np.abs(diff).mean() > 0.3


def test_effect_scales_the_perturbation():
    sizes = []
    for effect in (0.25, 0.5, 1.0):
        adata = simulate_perturbation(**SMALL, seed=4, effect=effect)
        ctrl = _control(adata)
        sizes.append(paired_error(adata.X[ctrl], adata.layers["truth"][ctrl]))
    assert sizes[0] < sizes[1] < sizes[2]


def _type_shifts(adata):
    ctrl = _control(adata)
    d = (adata.layers["truth"] - adata.X)[ctrl].astype(np.float64)
    types = adata.obs["cell_type"].to_numpy()[ctrl]
    shifts = np.array([d[types == k].mean(axis=0) for k in adata.obs["cell_type"].cat.categories])
    centre = shifts.mean(axis=0)
    return np.linalg.norm(shifts - centre, axis=1) / np.linalg.norm(centre)


def test_perturbation_depends_on_cell_type():
    kw = dict(n_control=1500, n_perturbed=10, n_genes=200, n_cell_types=4, seed=0)
    specific = _type_shifts(simulate_perturbation(**kw, cell_type_specific=True))
    shared = _type_shifts(simulate_perturbation(**kw, cell_type_specific=False))
    # per-type mean shifts of truth - X relative to their average: far apart when specific,
    # close (only the cell types' different baselines) when shared
    assert specific.min() > 0.6, specific
    assert shared.max() < 0.35, shared


def test_single_cell_type():
    adata = simulate_perturbation(50, 20, 10, 1, seed=0)
    assert list(adata.obs["cell_type"].cat.categories) == ["type_0"]
    assert adata.uns["simulation"]["response_strength"] == {"type_0": 1.0}


def test_custom_perturbation_name():
    adata = simulate_perturbation(20, 20, 10, 2, seed=0, perturbation="IFN-b")
    assert list(adata.obs["condition"].cat.categories) == ["control", "IFN-b"]


# --------------------------------------------------------------------------- NB quantiles


def test_nb_quantile_matches_scipy():
    rng = np.random.default_rng(0)
    u = np.clip(rng.random((400, 50)), 1e-12, 1 - 1e-12)
    mean = np.exp(rng.normal(0.0, 2.5, (400, 50)))
    disp = 0.3 * np.exp(0.5 * rng.normal(size=50))
    disp[:3] = (1e-4, 1e-3, 5.0)  # near-Poisson (scipy fallback for big means) and wide
    mean[:5, :2] = 1e5
    size = 1.0 / disp
    expected = nbinom.ppf(u, size, size / (size + mean))
    np.testing.assert_array_equal(datasets._nb_quantile(u, mean, disp), expected)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(n_control=0), ValueError, "n_control"),
        (dict(n_control=2.5), ValueError, "n_control"),
        (dict(n_perturbed=0), ValueError, "n_perturbed"),
        (dict(n_perturbed=True), ValueError, "n_perturbed"),
        (dict(n_genes=1), ValueError, "n_genes"),
        (dict(n_cell_types=0), ValueError, "n_cell_types"),
        (dict(n_control=3, n_cell_types=4), ValueError, "n_cell_types"),
        (dict(effect=-1.0), ValueError, "effect"),
        (dict(effect=float("nan")), ValueError, "effect"),
        (dict(effect=float("inf")), ValueError, "effect"),
        (dict(effect="big"), ValueError, "effect"),
        (dict(perturbation=3), TypeError, "perturbation"),
        (dict(perturbation=""), ValueError, "perturbation"),
        (dict(perturbation="control"), ValueError, "perturbation"),
        (dict(cell_type_specific=1), TypeError, "cell_type_specific"),
        (dict(sparse="yes"), TypeError, "sparse"),
        (dict(de_fraction=0.0), ValueError, "de_fraction"),
        (dict(de_fraction=1.5), ValueError, "de_fraction"),
        (dict(n_latent=0), ValueError, "n_latent"),
        (dict(latent_scale=-0.1), ValueError, "latent_scale"),
        (dict(type_scale=float("inf")), ValueError, "type_scale"),
        (dict(library_size=0.0), ValueError, "library_size"),
        (dict(library_spread=-1.0), ValueError, "library_spread"),
        (dict(dispersion=0.0), ValueError, "dispersion"),
        (dict(target_sum=-5.0), ValueError, "target_sum"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(seed="0"), TypeError, "seed"),
        (dict(effect=1e6), ValueError, "effect"),
    ],
)
def test_validation(kwargs, exc, match):
    args = dict(n_control=10, n_perturbed=10, n_genes=10, n_cell_types=2, seed=0)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        simulate_perturbation(**args)


def test_seed_is_keyword_only_and_required():
    with pytest.raises(TypeError):
        simulate_perturbation(10, 10, 10, 2, 0)
    with pytest.raises(TypeError):
        simulate_perturbation(10, 10, 10, 2)


# --------------------------------------------------------------------------- paired_error


def test_paired_error_value():
    pred = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    truth = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 2.0]])
    assert paired_error(pred, truth) == pytest.approx((0.0 + 5.0 + 1.0) / 3)
    assert paired_error(truth, truth) == 0.0
    # paired, not a population metric: permuting the rows of one side changes it
    assert paired_error(pred[::-1], truth) != paired_error(pred, truth)


@pytest.mark.parametrize(
    "pred, truth, match",
    [
        (np.zeros((3, 2)), np.zeros((2, 2)), "same shape"),
        (np.zeros((3, 2)), np.zeros((3, 3)), "same shape"),
        (np.zeros(3), np.zeros(3), "pred must be a 2-D"),
        (np.zeros((3, 2)), np.zeros((3, 2, 1)), "truth must be a 2-D"),
        (np.array([[np.nan, 0.0]]), np.zeros((1, 2)), "pred contains NaN"),
        (np.zeros((1, 2)), np.array([[np.inf, 0.0]]), "truth contains NaN"),
        (np.zeros((0, 2)), np.zeros((0, 2)), "empty"),
    ],
)
def test_paired_error_validation(pred, truth, match):
    with pytest.raises(ValueError, match=match):
        paired_error(pred, truth)


# --------------------------------------------------------------------------- W1OT vs baselines


def test_w1ot_beats_mean_shift_per_cell_on_cell_type_specific_response():
    """The key statistical check: on a cell-type-specific, nonlinear response, W1OT's
    per-cell predictions of held-out control cells are closer to their known counterfactuals
    than the global mean shift's and the identity's."""
    from w1ot import W1OT
    from w1ot.baselines import MeanShift

    adata = simulate_perturbation(3000, 2000, 300, 4, seed=0)
    ctrl = _control(adata)
    x = np.asarray(adata.X)
    xc, truth = x[ctrl], adata.layers["truth"][ctrl]
    train, test, test_truth = xc[:2000], xc[2000:], truth[2000:]
    perturbed = x[~ctrl]
    model = W1OT(potential_iters=2000, step_iters=2000, seed=0, n_threads=0)
    model.fit(train, perturbed)
    pred_w1 = model.transport(test)
    pred_ms = MeanShift().fit(train, perturbed).transport(test)
    errors = {
        "w1ot": paired_error(pred_w1, test_truth),
        "mean_shift": paired_error(pred_ms, test_truth),
        "identity": paired_error(test, test_truth),
    }
    assert errors["w1ot"] < 0.9 * errors["mean_shift"], errors
    assert errors["mean_shift"] < errors["identity"], errors
    # the population view agrees: W1OT's predictions are closer in distribution too
    assert mmd(pred_w1, test_truth) < mmd(pred_ms, test_truth) < mmd(test, test_truth)
