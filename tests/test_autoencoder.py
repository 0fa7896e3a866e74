"""The latent mode's autoencoder: it learns, it is reproducible, its files are safe, and its
mistakes are named."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

import w1ot
from w1ot import Autoencoder, ModelFileError, _core
from w1ot.datasets import simulate_perturbation
from w1ot.io import save_model
from w1ot.preprocessing import normalize_log1p
from w1ot.projection import PCA

SMALL = {"hidden": [64, 64], "latent": 8, "iters": 600, "batch_size": 64, "eval_every": 50}


@pytest.fixture(scope="module")
def cells():
    """Log-normalised simulated control and perturbed cells, and held-out cells of both."""
    sim = simulate_perturbation(1200, 1200, 100, seed=3)
    x = normalize_log1p(np.asarray(sim.layers["counts"], dtype=np.float64)).astype(np.float32)
    ctrl = sim.obs["condition"].to_numpy() == "control"
    c, p = x[ctrl], x[~ctrl]
    return c[:1000], p[:1000], np.vstack([c[1000:], p[1000:]])


@pytest.fixture(scope="module")
def fitted(cells):
    c, p, _ = cells
    return Autoencoder(**{**SMALL, "iters": 3000}, seed=0).fit(c, p)


def test_reconstructs_held_out_cells_far_better_than_the_mean_cell(cells, fitted):
    # Counts carry per-gene sampling noise no latent code holds, so the bar is the mean cell
    # and principal components of the same size (the linear autoencoder).
    c, p, held = cells
    train = np.vstack([c, p])
    baseline = float(((held - train.mean(axis=0)) ** 2).mean())
    pca = PCA.fit(train, SMALL["latent"], seed=0)
    linear = float(((held - pca.mean - pca.lift(pca.encode(held))) ** 2).mean())
    err = fitted.reconstruction_error(held)
    assert err < 0.45 * baseline, (err, baseline)
    assert err < 1.15 * linear, (err, linear)
    recon = fitted.reconstruct(held)
    assert recon.shape == held.shape and recon.dtype == np.float32
    assert (recon >= 0).all()  # the decoder's ReLU output: expression is non-negative
    np.testing.assert_allclose(float(((recon - held) ** 2).mean()), err, rtol=1e-4)
    z = fitted.encode(held)
    assert z.shape == (held.shape[0], SMALL["latent"])


def test_history_keeps_the_best_held_out_error(fitted):
    h = fitted.history
    assert len(h["loss"]) <= 3000
    assert len(h["valid_loss"]) == len(h["eval_iters"]) >= 2
    best = int(np.argmin(h["valid_loss"]))
    assert int(h["best_iter"]) == int(h["eval_iters"][best])
    assert h["loss"][-50:].mean() < h["loss"][:50].mean()
    assert fitted.fit_time_["autoencoder"] > 0


def test_early_stopping_stops_before_the_last_iteration(cells):
    c, p, _ = cells
    opts = {**SMALL, "iters": 5000, "patience": 2, "min_rel_improvement": 0.2}
    ae = Autoencoder(**opts, seed=1).fit(c, p)
    assert len(ae.history["loss"]) < 5000
    full = Autoencoder(**{**opts, "early_stopping": False, "iters": 200}, seed=1).fit(c, p)
    assert len(full.history["loss"]) == 200


def test_same_seed_same_model_any_thread_count(cells):
    c, p, held = cells
    opts = {**SMALL, "iters": 30}
    runs = [Autoencoder(**opts, seed=5, n_threads=t).fit(c, p).encode(held) for t in (1, 2, 3)]
    assert all(np.array_equal(runs[0], r) for r in runs[1:])
    other = Autoencoder(**opts, seed=6).fit(c, p).encode(held)
    assert not np.array_equal(runs[0], other)


def test_save_load_and_pickle_give_identical_encodings(tmp_path, cells, fitted):
    held = cells[2]
    path = tmp_path / "ae.w1ot"
    fitted.save(path)
    back = Autoencoder.load(path)
    assert back.get_params() == fitted.get_params()
    np.testing.assert_array_equal(back.encode(held), fitted.encode(held))
    np.testing.assert_array_equal(back.reconstruct(held), fitted.reconstruct(held))
    for k, v in fitted.history.items():
        np.testing.assert_array_equal(back.history[k], v)
    assert w1ot.tl.load(path).get_params() == fitted.get_params()
    copy = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(copy.encode(held), fitted.encode(held))
    assert pickle.loads(pickle.dumps(Autoencoder(latent=3))).latent == 3


def test_crafted_files_are_refused_before_allocating(tmp_path, fitted):
    """Files with a valid checksum whose metadata lie about the sizes."""
    arrays = {f"param/{k}": v for k, v in fitted._core.get_state().items()}
    meta = {
        "class": "Autoencoder",
        "config": fitted.get_params(),
        "n_features": fitted.n_features,
        "fit_time": {},
    }
    path = tmp_path / "crafted.w1ot"
    for change, match in [
        ({"n_features": 10**7}, "encoder"),
        ({"config": {**meta["config"], "latent": 9}}, "encoder"),
        ({"config": {**meta["config"], "hidden": "64"}}, "configuration"),
    ]:
        save_model(path, {**meta, **change}, arrays)
        with pytest.raises(ModelFileError, match=match):
            Autoencoder.load(path)
    save_model(path, meta, {**arrays, "param/decoder": arrays["param/decoder"][:-1]})
    with pytest.raises(ModelFileError, match="decoder"):
        Autoencoder.load(path)
    save_model(path, meta, {"param/encoder": arrays["param/encoder"]})
    with pytest.raises(ModelFileError, match="parameter arrays"):
        Autoencoder.load(path)
    w1 = w1ot.W1OT(potential_iters=5, step_iters=5, batch_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", w1ot.TrainingWarning)  # five iterations learn little
        w1.fit(np.ones((40, 2)) + np.arange(40)[:, None], np.ones((40, 2)) * 50).save(path)
    with pytest.raises(ModelFileError, match="W1OT"):
        Autoencoder.load(path)


def test_mistakes_are_named(cells, fitted):
    c, p, held = cells
    for kwargs, name in [
        ({"hidden": []}, "hidden"),
        ({"hidden": "64"}, "hidden"),
        ({"latent": 0}, "latent"),
        ({"latent": 2.5}, "latent"),
        ({"iters": -1}, "iters"),
        ({"lr": 0}, "lr"),
        ({"weight_decay": -1e-5}, "weight_decay"),
        ({"valid_fraction": 1.0}, "valid_fraction"),
        ({"early_stopping": "no"}, "early_stopping"),
        ({"seed": 2**70}, "seed"),
        ({"n_threads": 10**6}, "n_threads"),
        ({"betas": (0.9, 1.0)}, "betas"),
    ]:
        with pytest.raises((TypeError, ValueError), match=name):
            Autoencoder(**kwargs)
    with pytest.raises(RuntimeError, match="not fitted"):
        Autoencoder().encode(held)
    with pytest.raises(ValueError, match="batch_size"):
        Autoencoder(batch_size=5000).fit(c)
    with pytest.raises(TypeError, match="at least one"):
        Autoencoder().fit()
    with pytest.raises(ValueError, match=r"cells\[1\]"):
        Autoencoder(**SMALL).fit(c, p[:, :10])
    bad = c.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="cells"):
        Autoencoder(**SMALL).fit(bad)
    with pytest.raises(ValueError, match="x"):
        fitted.encode(held[:, :10])
    with pytest.raises(ValueError, match="z"):
        fitted.decode(np.ones((3, SMALL["latent"] + 1), np.float32))


def test_callback_stops_the_fit_and_leaves_the_model_unfitted(cells):
    c, p, _ = cells
    seen = []

    def stop(progress):
        seen.append(progress)
        return False

    ae = Autoencoder(**SMALL)
    with pytest.raises(KeyboardInterrupt):
        ae.fit(c, p, callback=stop)
    assert not ae.is_fitted and seen[0].stage == "autoencoder"


def test_core_counts_flops_and_refuses_huge_networks():
    assert _core.autoencoder_iteration_flops(1000, hidden=[512, 512], latent=50) > 0
    small = _core.autoencoder_iteration_flops(10, hidden=[4], latent=2, batch_size=1)
    # Encoder 10-4-2 and decoder 2-4-10: 48 multiply-adds each way, three products per
    # layer, less the encoder's first input gradient (40): 2 * (6 * 48 - 40).
    assert small == 2 * (6 * 48 - 40)
    with pytest.raises(ValueError, match="parameters"):
        _core.AutoencoderCore(2**40, hidden=[2**20])
