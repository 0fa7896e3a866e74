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
