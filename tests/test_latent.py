"""The latent option: one rule for every solver (feature space, principal components, an
autoencoder's latent space), and models in an autoencoder's latent space that transport,
save, load and pickle like the others."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import w1ot
from w1ot import W1OT, W2OT, Autoencoder, ModelFileError
from w1ot.io import load_model, save_model
from w1ot.latent import resolve

AE = {"hidden": [32], "latent": 4, "iters": 200, "batch_size": 64, "eval_every": 50}
FAST = {
    W1OT: {"potential_iters": 60, "step_iters": 60, "batch_size": 64},
    W2OT: {"iters": 30, "inner_iters": 2, "batch_size": 64},
}


@pytest.fixture(scope="module")
def cells():
    rng = np.random.default_rng(0)
    basis = rng.uniform(0, 1, (3, 30))
    x = (rng.uniform(0, 2, (900, 3)) @ basis).astype(np.float32)
    y = (rng.uniform(0, 2, (900, 3)) @ basis + 0.5).astype(np.float32)
    return x[:600], y[:600], x[600:]


@pytest.fixture(scope="module")
def ae(cells):
    return Autoencoder(**AE, seed=1).fit(cells[0], cells[1])


def test_the_rule():
    assert resolve("auto", "auto", 30, 64) == ("features", None)
    assert resolve("auto", "auto", 100, 64) == ("pca", 50)
    assert resolve("auto", 7, 30, 64) == ("pca", 7)
    assert resolve("auto", None, 100, 64) == ("features", None)
    assert resolve("pca", "auto", 30, 64) == ("pca", 30)
    assert resolve("pca", 5, 30, 64) == ("pca", 5)
    assert resolve(None, "auto", 100, 64) == ("features", None)
    assert resolve("autoencoder", "auto", 100, 64) == ("autoencoder", None)
    assert resolve(Autoencoder(), "auto", 10, 64) == ("autoencoder", None)


@pytest.mark.parametrize("cls", [W1OT, W2OT])
def test_option_mistakes_are_named(cls):
    for kwargs, err in [
        ({"latent": "umap"}, ValueError),
        ({"latent": 3}, TypeError),
        ({"latent": None, "n_components": 5}, ValueError),
        ({"latent": "autoencoder", "n_components": 5}, ValueError),
        ({"latent": Autoencoder(), "n_components": 5}, ValueError),
        ({"latent": "pca", "n_components": None}, ValueError),
    ]:
        with pytest.raises(err, match="latent"):
            cls(**kwargs)


@pytest.mark.parametrize("cls", [W1OT, W2OT])
def test_pca_and_feature_space_by_option(cls, cells):
    x, y, held = cells
    pca = cls(latent="pca", n_components=6, **FAST[cls]).fit(x, y)
    assert pca.latent_dim == 6 and pca.pca is not None and pca.autoencoder is None
    feats = cls(latent=None, **FAST[cls]).fit(x, y)
    assert feats.latent_dim is None and feats.pca is None
    # latent="auto" with n_components=None is the feature space, as before the option.
    same = cls(n_components=None, **FAST[cls]).fit(x, y)
    np.testing.assert_array_equal(same.transport(held), feats.transport(held))


@pytest.mark.parametrize("cls", [W1OT, W2OT])
def test_a_fitted_autoencoder_is_used_as_it_is(cls, cells, ae, tmp_path):
    x, y, held = cells
    before = {k: v.copy() for k, v in ae._core.get_state().items()}
    model = cls(latent=ae, **FAST[cls]).fit(x, y)
    assert model.autoencoder is ae and model.latent_dim == AE["latent"]
    assert "autoencoder" not in model.fit_time_  # not refitted
    for k, v in ae._core.get_state().items():
        np.testing.assert_array_equal(v, before[k])
    pred = model.transport(held)
    # Transport in the latent space, decoded back to the features.
    np.testing.assert_array_equal(pred, ae.decode(model._core.transport(ae.encode(held))))
    assert pred.shape == held.shape and (pred >= 0).all()
    path = tmp_path / "model.w1ot"
    model.save(path)
    back = cls.load(path)
    np.testing.assert_array_equal(back.transport(held), pred)
    np.testing.assert_array_equal(back.autoencoder.encode(held), ae.encode(held))
    assert back.get_params()["latent"].get_params() == ae.get_params()
    np.testing.assert_array_equal(w1ot.tl.load(path).transport(held), pred)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).transport(held), pred)


def test_latent_autoencoder_fits_one_and_an_unfitted_one_is_left_as_given(cells):
    x, y, held = cells
    given = Autoencoder(**AE, seed=3)
    model = W1OT(latent=given, **FAST[W1OT]).fit(x, y)
    assert not given.is_fitted and model.autoencoder.is_fitted
    assert model.autoencoder.get_params() == given.get_params()
    assert model.fit_time_["autoencoder"] > 0
    # The same configuration fitted alone on the same training cells is the same model.
    alone = Autoencoder(**AE, seed=3)
    src, tgt, *_ = W1OT(latent=None, **FAST[W1OT])._prepare(x, y)
    alone.fit(src, tgt)
    np.testing.assert_array_equal(alone.encode(held), model.autoencoder.encode(held))


def test_autoencoder_mistakes_are_named(cells, ae):
    x, y, held = cells
    with pytest.raises(ValueError, match=r"latent.*30"):
        W1OT(latent=ae, **FAST[W1OT]).fit(x[:, :20], y[:, :20])
    model = W1OT(latent=ae, **FAST[W1OT]).fit(x, y)
    with pytest.raises(NotImplementedError, match="autoencoder"):
        model.gradient(held)
    assert model.step_size(held).shape == (held.shape[0],)
    assert np.isfinite(model.w1_distance(held, y))


def test_model_files_whose_autoencoder_parts_disagree_are_refused(cells, ae, tmp_path):
    x, y, _ = cells
    path = tmp_path / "model.w1ot"
    W1OT(latent=ae, **FAST[W1OT]).fit(x, y).save(path)
    meta, arrays = load_model(
        path,
        "W1OT",
        names=("pca/mean", "pca/components"),
        prefixes=("param/", "history/", "autoencoder/"),
    )
    meta = {k: v for k, v in meta.items() if k not in ("format", "version", "checksum")}
    crafted = tmp_path / "crafted.w1ot"
    no_ae = {k: v for k, v in arrays.items() if not k.startswith("autoencoder/")}
    for m, a, match in [
        (meta, no_ae, "do not agree"),
        ({**meta, "config": {**meta["config"], "latent": "auto"}}, arrays, "do not agree"),
        ({**meta, "autoencoder": {**meta["autoencoder"], "n_features": 31}}, arrays, "encoder"),
        ({**meta, "n_features": 31}, arrays, "features"),
    ]:
        save_model(crafted, m, a)
        with pytest.raises(ModelFileError, match=match):
            W1OT.load(crafted)


def test_tl_fits_and_predicts_in_an_autoencoder_latent_space(ae, cells):
    anndata = pytest.importorskip("anndata")
    x, y, held = cells
    adata = anndata.AnnData(np.vstack([x, y]))
    adata.obs["condition"] = ["control"] * len(x) + ["stim"] * len(y)
    model = w1ot.tl.fit(
        adata,
        condition_key="condition",
        control="control",
        perturbation="stim",
        latent=ae,
        **FAST[W1OT],
    )
    ctrl = anndata.AnnData(held)
    pred = w1ot.tl.predict(model, ctrl)
    np.testing.assert_allclose(np.asarray(pred.X), model.transport(held), rtol=0, atol=0)


# -- scGen: the mean shift in the autoencoder's latent space ---------------------------------


def test_scgen_shifts_the_latent_mean_and_decodes(cells, ae, tmp_path):
    from w1ot.baselines import BASELINES, LatentMeanShift

    assert BASELINES["scgen"] is LatentMeanShift
    x, y, held = cells
    model = LatentMeanShift(autoencoder=ae).fit(x, y)
    assert model.autoencoder_ is ae and model.fit_time_ == {}
    shift = ae.encode(y).astype(np.float64).mean(0) - ae.encode(x).astype(np.float64).mean(0)
    np.testing.assert_allclose(model.shift_, shift, rtol=1e-6, atol=1e-6)
    pred = model.transport(held)
    want = ae.decode(ae.encode(held) + shift.astype(np.float32))
    np.testing.assert_allclose(pred, want, rtol=1e-6, atol=1e-6)
    assert (pred >= 0).all() and pred.shape == held.shape
    # Balanced means: the larger side subsampled to the smaller one's size.
    unbalanced = LatentMeanShift(autoencoder=ae, seed=4).fit(x, y[:100])
    assert not np.allclose(
        unbalanced.shift_, LatentMeanShift(autoencoder=ae, balance=False).fit(x, y[:100]).shift_
    )
    path = tmp_path / "scgen.w1ot"
    model.save(path)
    back = LatentMeanShift.load(path)
    np.testing.assert_array_equal(back.transport(held), pred)
    np.testing.assert_array_equal(w1ot.tl.load(path).transport(held), pred)
    # Without an autoencoder, one is fitted with the paper's defaults (here smaller).
    own = LatentMeanShift(autoencoder=Autoencoder(**AE, seed=9)).fit(x, y)
    assert own.autoencoder_.is_fitted and own.fit_time_["autoencoder"] > 0
    assert not own.autoencoder.is_fitted


def test_scgen_mistakes_are_named(cells, ae, tmp_path):
    from w1ot.baselines import LatentMeanShift

    x, y, _ = cells
    with pytest.raises(TypeError, match="autoencoder"):
        LatentMeanShift(autoencoder="yes")
    with pytest.raises(ValueError, match="autoencoder"):
        LatentMeanShift(autoencoder=ae).fit(x[:, :10], y[:, :10])
    path = tmp_path / "scgen.w1ot"
    LatentMeanShift(autoencoder=ae).fit(x, y).save(path)
    meta, arrays = load_model(
        path, "LatentMeanShift", names=("shift_",), prefixes=("autoencoder/",)
    )
    meta = {k: v for k, v in meta.items() if k not in ("format", "version", "checksum")}
    for m, a, match in [
        (meta, {**arrays, "shift_": arrays["shift_"][:-1]}, "shift_"),
        ({**meta, "n_features": 31}, arrays, "features"),
        ({k: v for k, v in meta.items() if k != "autoencoder"}, arrays, "autoencoder"),
        ({**meta, "config": {"balance": "yes", "seed": 0}}, arrays, "configuration"),
    ]:
        save_model(path, m, a)
        with pytest.raises(ModelFileError, match=match):
            LatentMeanShift.load(path)


def test_benchmark_runs_scgen_and_latent_w1ot_with_the_autoencoder_time_apart():
    anndata = pytest.importorskip("anndata")
    from w1ot.benchmark import run_benchmark

    rng = np.random.default_rng(2)
    basis = rng.uniform(0, 1, (3, 20))
    x = rng.uniform(0, 2, (700, 3)) @ basis
    y = rng.uniform(0, 2, (700, 3)) @ basis + 0.4
    adata = anndata.AnnData(np.vstack([x, y]).astype(np.float32))
    adata.obs["condition"] = ["ctrl"] * 700 + ["stim"] * 700
    methods = {
        "identity": "identity",
        "scgen": lambda seed: w1ot.baselines.LatentMeanShift(
            autoencoder=Autoencoder(**AE, seed=seed), seed=seed
        ),
        "w1ot_ae": lambda seed: W1OT(latent=Autoencoder(**AE, seed=seed), seed=seed, **FAST[W1OT]),
    }
    res = run_benchmark(adata, "condition", "ctrl", methods=methods, n_repeats=1, progress=False)
    df = res.results
    ae_time = df[df["metric"] == "autoencoder_time"]
    assert set(ae_time["method"]) == {"scgen", "w1ot_ae"} and (ae_time["value"] > 0).all()
    fit = df[df["metric"] == "fit_time"].set_index("method")["value"]
    assert (ae_time.set_index("method")["value"] <= fit[["scgen", "w1ot_ae"]]).all()
    assert np.isfinite(df[df["metric"] == "mmd"]["value"]).all()
    with pytest.raises(ValueError, match="scgen"):
        run_benchmark(adata, "condition", "ctrl", methods=["nope"], progress=False)


def test_fit_many_shares_one_fitted_autoencoder_across_a_screen(ae, cells):
    anndata = pytest.importorskip("anndata")
    x, y, held = cells
    adata = anndata.AnnData(np.vstack([x, y, y + 0.3]))
    adata.obs["condition"] = ["control"] * len(x) + ["A"] * len(y) + ["B"] * len(y)
    col = w1ot.tl.fit_many(
        adata,
        condition_key="condition",
        control="control",
        n_jobs=2,
        progress=False,
        latent=ae,
        **FAST[W1OT],
    )
    assert list(col) == ["A", "B"]
    for name in col:
        model = col[name]
        assert "autoencoder" not in model.fit_time_
        np.testing.assert_array_equal(model.autoencoder.encode(held), ae.encode(held))


@pytest.mark.parametrize("cls", [W1OT, W2OT])
def test_keep_residual_moves_each_cell_by_the_decoded_displacement(cls, cells, ae, tmp_path):
    x, y, held = cells
    model = cls(latent=ae, keep_residual=True, **FAST[cls]).fit(x, y)
    z = ae.encode(held)
    moved = model._core.transport(z)
    want = held + (ae.decode(moved) - ae.decode(z))
    np.testing.assert_allclose(model.transport(held), want, rtol=1e-6, atol=1e-6)
    plain = cls(latent=ae, **FAST[cls]).fit(x, y)
    np.testing.assert_array_equal(plain.transport(held), ae.decode(moved))
    path = tmp_path / "res.w1ot"
    model.save(path)
    assert cls.load(path).keep_residual is True
    with pytest.raises(TypeError, match="keep_residual"):
        cls(keep_residual="yes")
