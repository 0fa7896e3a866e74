"""The AnnData workflow (w1ot.tl): fit on an AnnData, predict into a new one, save and load."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

anndata = pytest.importorskip("anndata")
sp = pytest.importorskip("scipy.sparse")

from datafiles import read_dataset  # noqa: E402

from w1ot import W1OT, Autoencoder, metrics, tl  # noqa: E402
from w1ot.datasets import simulate_perturbation  # noqa: E402
from w1ot.preprocessing import highly_variable_genes  # noqa: E402

QUICK = {"potential_iters": 300, "step_iters": 300, "eval_every": 50, "n_threads": 1, "seed": 0}
KEYS = {"condition_key": "condition", "control": "control", "perturbation": "stimulated"}


@pytest.fixture(scope="module")
def sim():
    return simulate_perturbation(600, 600, 80, 3, seed=1)


@pytest.fixture(scope="module")
def fitted(sim):
    return tl.fit(sim, **KEYS, **QUICK)


def test_predict_returns_one_predicted_cell_per_control_cell(sim, fitted):
    pred = tl.predict(fitted, sim)
    control = sim[sim.obs["condition"] == "control"]
    assert pred.shape == control.shape
    assert list(pred.var_names) == list(sim.var_names)
    assert set(pred.obs["condition"]) == {"stimulated (predicted)"}
    assert list(pred.obs["w1ot_source"]) == list(control.obs_names)
    assert all(n.endswith("-w1ot") for n in pred.obs_names)
    assert pred.var["w1ot_predicted"].all()
    assert pred.uns["w1ot"]["perturbation"] == "stimulated"
    # the prediction is the model's transport of the control cells (clipped at 0)
    expected = np.maximum(fitted.transport(np.asarray(control.X)), 0)
    np.testing.assert_allclose(pred.X, expected, rtol=1e-6, atol=1e-6)
    both = anndata.concat([sim, pred])
    assert (both.obs["condition"] == "stimulated (predicted)").sum() == control.n_obs


def test_nonnegative_data_give_nonnegative_predictions(sim, fitted):
    raw = fitted.transport(np.asarray(sim[sim.obs["condition"] == "control"].X))
    assert (raw < 0).any()  # the map itself leaves the orthant ...
    assert (np.asarray(tl.predict(fitted, sim).X) >= 0).all()  # ... predict clips by default
    assert (np.asarray(tl.predict(fitted, sim, nonnegative=False).X) < 0).any()


def test_a_saved_model_predicts_the_same_in_a_new_process(sim, fitted, tmp_path):
    path = tmp_path / "stim.w1ot"
    fitted.save(path)
    data = tmp_path / "sim.h5ad"
    sim.write_h5ad(data)
    code = (
        "import anndata, numpy as np, sys; from w1ot import tl; "
        f"m = tl.load({str(path)!r}); p = tl.predict(m, anndata.read_h5ad({str(data)!r})); "
        f"np.save({str(tmp_path / 'p.npy')!r}, np.asarray(p.X))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), tl.predict(fitted, sim).X)
    assert tl.load(path).fitted_on_ == fitted.fitted_on_


def test_genes_pick_the_features_and_the_rest_is_carried_over(sim):
    genes = list(sim.var_names[:30])
    model = tl.fit(sim, **KEYS, genes=genes, **QUICK)
    assert model.n_features == 30
    pred = tl.predict(model, sim)
    control = np.asarray(sim[sim.obs["condition"] == "control"].X)
    np.testing.assert_array_equal(np.asarray(pred.X)[:, 30:], control[:, 30:])
    assert not np.allclose(np.asarray(pred.X)[:, :30], control[:, :30])
    assert pred.var["w1ot_predicted"].sum() == 30
    # a boolean var column and a mask select the same genes
    sim2 = sim.copy()
    sim2.var["chosen"] = np.arange(sim.n_vars) < 30
    assert tl.fit(sim2, **KEYS, genes="chosen", **QUICK).fitted_on_ == model.fitted_on_
    mask = sim2.var["chosen"].to_numpy()
    assert tl.fit(sim2, **KEYS, genes=mask, **QUICK).fitted_on_ == model.fitted_on_


def test_sparse_x_gives_the_same_model_and_stays_sparse():
    dense = simulate_perturbation(500, 500, 60, 2, seed=3)
    sparse = dense.copy()
    sparse.X = sp.csr_matrix(dense.X)
    m_dense = tl.fit(dense, **KEYS, **QUICK)
    m_sparse = tl.fit(sparse, **KEYS, **QUICK)
    p_dense, p_sparse = tl.predict(m_dense, dense), tl.predict(m_sparse, sparse)
    assert sp.issparse(p_sparse.X)
    np.testing.assert_array_equal(p_sparse.X.toarray(), p_dense.X)


def test_layer_and_obsm_representations(sim):
    with pytest.warns(UserWarning, match="looks like raw counts"):
        counts_model = tl.fit(sim, **KEYS, layer="counts", method="mean_shift")
    pred = tl.predict(counts_model, sim)
    assert "counts" in pred.layers
    np.testing.assert_array_equal(pred.layers["counts"], pred.X)
    emb = sim.copy()
    emb.obsm["X_emb"] = np.asarray(sim.X)[:, :5] * 2.0
    model = tl.fit(emb, **KEYS, obsm_key="X_emb", **QUICK)
    out = tl.predict(model, emb)
    assert out.X is None and out.obsm["X_emb"].shape == (600, 5)
    with pytest.raises(ValueError, match=r"obsm_key='X_emb' is not in adata\.obsm"):
        tl.predict(model, sim)


def test_baselines_through_tl_and_their_model_files(sim, tmp_path):
    for method in ("identity", "mean_shift", "observed"):
        model = tl.fit(sim, **KEYS, method=method)
        path = tmp_path / f"{method}.w1ot"
        model.save(path)
        again = tl.load(path)
        assert type(again) is type(model)
        np.testing.assert_array_equal(tl.predict(again, sim).X, tl.predict(model, sim).X)
    control = np.asarray(sim[sim.obs["condition"] == "control"].X)
    pred = tl.predict(tl.fit(sim, **KEYS, method="identity"), sim)
    np.testing.assert_array_equal(pred.X, control)


def test_the_model_refuses_an_anndata_without_its_genes(sim, fitted):
    fewer = sim[:, 5:].copy()
    with pytest.raises(ValueError, match="adata lacks 5 of the model's 80 genes"):
        tl.predict(fitted, fewer)
    with pytest.warns(UserWarning, match="raw counts"):
        model = tl.fit(sim, **KEYS, layer="counts", method="identity")
    no_layer = sim.copy()
    del no_layer.layers["counts"]
    with pytest.raises(ValueError, match=r"layer='counts' is not in adata\.layers"):
        tl.predict(model, no_layer)
    with pytest.raises(ValueError, match="not fitted on an AnnData"):
        tl.predict(W1OT(**QUICK).fit(np.asarray(sim.X), np.asarray(sim.X)), sim)


def test_predict_takes_all_cells_of_an_anndata_without_condition_labels(sim, fitted):
    control = sim[sim.obs["condition"] == "control"].copy()
    del control.obs["condition"]
    assert tl.predict(fitted, control).n_obs == control.n_obs


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"condition_key": "drug"}, ValueError, r"condition_key='drug' is not a column"),
        ({"perturbation": "stim"}, ValueError, r"perturbation='stim' is not a value.*'stimulated'"),
        ({"control": "ctrl"}, ValueError, r"control='ctrl' is not a value"),
        ({"perturbation": "control"}, ValueError, "same label"),
        ({"layer": "logcounts"}, ValueError, r"layer='logcounts' is not in adata.layers"),
        ({"obsm_key": "X_pca"}, ValueError, r"obsm_key='X_pca' is not in adata.obsm"),
        ({"layer": "counts", "obsm_key": "X"}, ValueError, "not both"),
        ({"genes": ["gene_000", "nope"]}, ValueError, r"1 of the 2 genes are not in"),
        ({"genes": "highly_variable"}, ValueError, "neither a boolean column"),
        ({"method": "cellot"}, ValueError, "method must be one of"),
        ({"early_stopping": "no"}, TypeError, "early_stopping"),
    ],
)
def test_user_mistakes_are_one_clear_error(sim, kwargs, error, match):
    with pytest.raises(error, match=match):
        tl.fit(sim, **{**KEYS, **kwargs})


def test_fit_rejects_what_is_not_an_anndata():
    with pytest.raises(TypeError, match="adata must be an AnnData"):
        tl.fit(np.zeros((10, 3)), **KEYS)


# -- real data ---------------------------------------------------------------------------


def _split(adata, key, seed=0):
    rng = np.random.default_rng(seed)
    train = np.zeros(adata.n_obs, dtype=bool)
    for label in adata.obs[key].unique():
        idx = np.flatnonzero(adata.obs[key].to_numpy() == label)
        train[rng.choice(idx, size=idx.size // 2, replace=False)] = True
    return adata[train].copy(), adata[~train].copy()


def _top50_mmd(test, pred_X, condition_key, control, perturbation):
    key = condition_key
    de = metrics.top_de_genes(test, key, control, perturbation, k=50)
    cols = [list(test.var_names).index(g) for g in de]
    truth = test[test.obs[key] == perturbation].X
    truth = truth.toarray() if sp.issparse(truth) else np.asarray(truth)
    pred = pred_X.toarray() if sp.issparse(pred_X) else np.asarray(pred_X)
    return metrics.mmd(pred[:, cols], truth[:, cols])


def test_kang_round_trip_beats_identity_and_mean_shift():
    adata = read_dataset("kang2018_ifnb_pbmc.h5ad")
    assert sp.issparse(adata.X)
    hvg = highly_variable_genes(adata, 1000)
    train, test = _split(adata, "condition")
    keys = {"condition_key": "condition", "control": "control", "perturbation": "stimulated"}
    scores = {}
    for method, options in (
        ("w1ot", {"early_stopping": True, "seed": 0}),
        ("mean_shift", {}),
        ("identity", {}),
    ):
        model = tl.fit(train, **keys, genes=hvg, method=method, **options)
        pred = tl.predict(model, test)
        assert pred.n_obs == (test.obs["condition"] == "control").sum()
        sub = test[:, hvg]
        scores[method] = _top50_mmd(sub, pred[:, hvg].X, **keys)
    assert scores["w1ot"] < scores["mean_shift"] < scores["identity"], scores


@pytest.mark.slow
def test_kang_round_trip_in_an_autoencoder_latent_space_beats_identity_and_mean_shift(tmp_path):
    """The paper's scRNA-seq mode through w1ot.tl: an autoencoder fitted once on the training
    cells (fewer iterations than the default), W1OT in its latent space, predictions decoded
    to genes, and the model file read back in place of the fitted model."""
    adata = read_dataset("kang2018_ifnb_pbmc.h5ad")
    hvg = highly_variable_genes(adata, 1000)
    train, test = _split(adata, "condition")
    keys = {"condition_key": "condition", "control": "control", "perturbation": "stimulated"}
    x = train[:, hvg].X
    ae = Autoencoder(iters=3000, seed=0).fit(x.toarray() if sp.issparse(x) else x)
    scores = {}
    for method, options in (
        ("w1ot", {"latent": ae, "early_stopping": True, "seed": 0}),
        ("mean_shift", {}),
        ("identity", {}),
    ):
        model = tl.fit(train, **keys, genes=hvg, method=method, **options)
        if method == "w1ot":
            assert model.autoencoder is ae and model.latent_dim == 50
            model.save(tmp_path / "kang.w1ot")
            model = tl.load(tmp_path / "kang.w1ot")
        pred = tl.predict(model, test)
        scores[method] = _top50_mmd(test[:, hvg], pred[:, hvg].X, **keys)
    assert scores["w1ot"] < scores["mean_shift"] < scores["identity"], scores


def test_zhao_through_the_logcounts_layer():
    adata = read_dataset("zhao2021_glioblastoma_panobinostat.h5ad")
    keys = {"condition_key": "condition", "control": "ctrl", "perturbation": "panobinostat"}
    train, test = _split(adata, "condition")
    model = tl.fit(train, **keys, layer="logcounts", early_stopping=True, seed=0)
    assert model.fitted_on_["representation"]["layer"] == "logcounts"
    pred = tl.predict(model, test)
    truth = test[test.obs["condition"] == "panobinostat"].layers["logcounts"]
    truth = truth.toarray() if sp.issparse(truth) else np.asarray(truth)
    control = test[test.obs["condition"] == "ctrl"].layers["logcounts"]
    control = control.toarray() if sp.issparse(control) else np.asarray(control)
    P = pred.layers["logcounts"]
    P = P.toarray() if sp.issparse(P) else np.asarray(P)
    assert (P >= 0).all()
    assert metrics.mmd(P, truth) < 0.5 * metrics.mmd(control, truth)


def test_bodenmiller_through_its_arcsinh_layer():
    adata = read_dataset("bodenmiller2012_bcrxl_cytof.h5ad")
    keys = {"condition_key": "condition", "control": "Ref", "perturbation": "BCRXL"}
    train, test = _split(adata, "condition")
    model = tl.fit(train, **keys, layer="arcsinh_cof5", early_stopping=True, seed=0)
    pred = tl.predict(model, test)
    truth = np.asarray(test[test.obs["condition"] == "BCRXL"].layers["arcsinh_cof5"])
    control = np.asarray(test[test.obs["condition"] == "Ref"].layers["arcsinh_cof5"])
    assert metrics.mmd(pred.layers["arcsinh_cof5"], truth) < 0.5 * metrics.mmd(control, truth)


def test_pp_normalize_log1p_on_an_anndata_and_its_warning(sim):
    from w1ot import pp

    a = sim.copy()
    a.X = a.layers["counts"].copy()
    pp.normalize_log1p(a)  # raw counts in X -> log-normalised, in place
    np.testing.assert_allclose(a.X, sim.X, rtol=1e-5, atol=1e-5)
    pp.normalize_log1p(sim.copy(), layer="counts", key_added="lognorm")
    with pytest.warns(UserWarning, match="does not look like raw counts"):
        pp.normalize_log1p(a)  # twice
    with pytest.raises(ValueError, match="layer='nope'"):
        pp.normalize_log1p(a, layer="nope")
