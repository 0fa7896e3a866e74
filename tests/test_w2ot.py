"""Acceptance tests of the W2 baseline (W2OT): maps and W2 estimates with known answers, toy
data, real data through the evaluation harness, persistence, determinism and the options.

Fits use fixed seeds and fewer outer iterations than the default 100,000 where that still
shows the property.
"""

from __future__ import annotations

import numpy as np
import pytest
from datafiles import read_dataset

from w1ot import W2OT, ModelFileError, Progress, TrainingError, datasets, metrics
from w1ot.benchmark import run_benchmark
from w1ot.datasets import _shift_vector

THREADS = 2
SMALL = {"iters": 40, "inner_iters": 2, "batch_size": 64, "eval_every": 10}


def _model(**kw) -> W2OT:
    kw.setdefault("seed", 0)
    kw.setdefault("n_threads", THREADS)
    return W2OT(**kw)


@pytest.fixture(scope="module")
def gauss():
    return datasets.shifted_gaussians(600, 2, 2.0, seed=0)


@pytest.fixture(scope="module")
def fitted(gauss):
    return _model(**SMALL).fit(*gauss)


# ------------------------------------------------------------------ known answers


@pytest.mark.parametrize(("d", "iters", "map_tol"), [(2, 2000, 0.05), (16, 4000, 0.15)])
def test_shifted_gaussians_map_and_w2_estimate(d, iters, map_tol):
    # The W2 map between Gaussians that differ by a shift is the shift, and W2^2 / 2 is
    # |shift|^2 / 2 (CellOT's convention). Measured at these lengths: map error 2.4% (d=2),
    # 12.4% (d=16, a plateau: 12.1% after 10,000 iterations; see the README); estimate
    # within 1.2% and 0.3%.
    source, target = datasets.shifted_gaussians(10_000, d, 3.0, seed=d)
    model = _model(iters=iters).fit(source, target)
    fresh_source, fresh_target = datasets.shifted_gaussians(5_000, d, 3.0, seed=100 + d)
    shift = _shift_vector(3.0, d)
    err = np.linalg.norm(model.transport(fresh_source) - fresh_source - shift, axis=1).mean()
    assert err < map_tol * 3.0
    assert model.w2_distance(fresh_source, fresh_target) == pytest.approx(4.5, rel=0.05)
    if d == 2:
        # The estimate recorded on the fit's own 1,000 held-out cells (in 16-D it is noisier:
        # 4.86 there, against 4.51 on these 5,000 fresh cells).
        best = list(model.history["eval_iters"]).index(int(model.history["best_iter"]))
        assert model.history["w2_valid"][best] == pytest.approx(4.5, rel=0.05)


def test_scaled_rotated_gaussian_map_within_10_percent():
    # x ~ N(0, I) to y = A x + m with A = R diag(2, 0.5) R^T symmetric positive definite:
    # the W2 map is T(x) = A x + m (Brenier; the gradient of |A^(1/2) x|^2 / 2 + <m, x>).
    rng = np.random.default_rng(10)
    th = np.pi / 6
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    a = rot @ np.diag([2.0, 0.5]) @ rot.T
    m = np.array([1.0, -1.0])
    x, y = rng.normal(size=(10_000, 2)), rng.normal(size=(10_000, 2)) @ a + m
    model = _model(iters=2000).fit(x, y)
    fresh = rng.normal(size=(5_000, 2))
    exact = fresh @ a + m
    err = np.linalg.norm(model.transport(fresh) - exact, axis=1).mean()
    assert err < 0.10 * np.linalg.norm(exact - fresh, axis=1).mean()  # measured: 5.3%


@pytest.mark.parametrize("name", ["eight_gaussians", "moons"])
def test_toy_mmd_at_most_a_fifth_of_the_source_target_mmd(name):
    source, target = datasets.load_toy(name, 4000, seed=0)
    model = _model(iters=3000).fit(source, target)
    fresh_source, fresh_target = datasets.load_toy(name, 1000, seed=50)
    ratio = metrics.mmd(model.transport(fresh_source), fresh_target) / metrics.mmd(
        fresh_source, fresh_target
    )
    assert ratio <= 0.2  # measured: 0.167 (eight gaussians), 0.032 (moons)


# ------------------------------------------------------------------ real data


@pytest.mark.slow
def test_bodenmiller_w2ot_beats_identity_and_mean_shift_on_mmd():
    ad = read_dataset("bodenmiller2012_bcrxl_cytof.h5ad")
    res = run_benchmark(
        ad,
        "condition",
        "Ref",
        ["BCRXL"],
        methods=["identity", "mean_shift", "w2ot"],
        layer="arcsinh_cof5",
        n_repeats=1,
        w2ot_kwargs={"iters": 3000, "n_threads": THREADS},
        progress=False,
    )
    df = res.results[(res.results["features"] == "all") & (res.results["metric"] == "mmd")]
    mmd = df.set_index("method")["value"]
    assert mmd["w2ot"] < mmd["mean_shift"] < mmd["identity"]


# ------------------------------------------------------------------ the estimator


def test_convex_potential_and_history(fitted):
    h = fitted.history
    assert len(h["g_loss"]) == len(h["f_loss"]) == SMALL["iters"]
    assert list(h["eval_iters"]) == [10, 20, 30, 40]
    assert len(h["w2_valid"]) == len(h["mmd_valid"]) == 4
    assert int(h["best_iter"]) in h["eval_iters"]
    best = list(h["eval_iters"]).index(int(h["best_iter"]))
    assert h["mmd_valid"][best] == h["mmd_valid"].min()
    assert fitted.fit_time_["w2"] > 0
    # g is convex in x: midpoint inequality along random chords.
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(500, 2)) * 3, rng.normal(size=(500, 2)) * 3
    ga, gb, gm = (fitted.potential(v) for v in (a, b, (a + b) / 2))
    assert (gm <= (ga + gb) / 2 + 1e-4).mean() > 0.99


def test_select_best_false_keeps_the_last_parameters(gauss):
    model = _model(**SMALL, select_best=False).fit(*gauss)
    assert int(model.history["best_iter"]) == SMALL["iters"]


def test_early_stopping_stops_and_keeps_the_best(gauss):
    model = _model(iters=3000, eval_every=20, batch_size=64, early_stopping=True, patience=3)
    model.fit(*gauss)
    h = model.history
    assert len(h["g_loss"]) < 3000
    best = list(h["eval_iters"]).index(int(h["best_iter"]))
    assert h["mmd_valid"][best] == h["mmd_valid"].min()


def test_same_seed_same_model_whatever_the_thread_count(gauss):
    probe = np.random.default_rng(1).normal(size=(50, 2))
    outs = [_model(**SMALL, n_threads=t).fit(*gauss).transport(probe) for t in (1, 2, 3)]
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    other = _model(**SMALL, seed=1).fit(*gauss).transport(probe)
    assert not np.array_equal(outs[0], other)


def test_save_load_round_trip(fitted, tmp_path):
    path = tmp_path / "w2.npz"
    fitted.save(path)
    loaded = W2OT.load(path)
    probe = np.random.default_rng(2).normal(size=(40, 2))
    assert np.array_equal(loaded.transport(probe), fitted.transport(probe))
    assert loaded.get_params() == fitted.get_params()
    assert loaded.w2_distance(probe, probe + 1) == fitted.w2_distance(probe, probe + 1)
    for k, v in fitted.history.items():
        assert np.array_equal(loaded.history[k], v)
    with pytest.raises(ModelFileError, match="holds a W2OT, not a W1OT"):
        from w1ot import W1OT

        W1OT.load(path)


def test_principal_components_for_wide_data():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(800, 100)).astype(np.float32)
    y = x + 1.0
    model = _model(**SMALL).fit(x, y)
    assert model.latent_dim == 50
    out = model.transport(x[:10])
    assert out.shape == (10, 100) and out.dtype == np.float32
    # Only the span of the components moves.
    resid = (out - x[:10]) - (out - x[:10]) @ model.pca.components.T @ model.pca.components
    assert np.abs(resid).max() < 1e-4
    assert _model(**SMALL, n_components=None).fit(x, y).latent_dim is None


def test_callback_progress_and_interrupt(gauss):
    seen: list[Progress] = []
    _model(**SMALL).fit(*gauss, callback=seen.append)
    assert seen and all(p.stage == "w2" for p in seen)
    assert seen[-1].iteration == seen[-1].total == SMALL["iters"]
    assert any(p.valid is not None for p in seen)
    model = _model(**SMALL)
    with pytest.raises(KeyboardInterrupt):
        model.fit(*gauss, callback=lambda p: False)
    assert not model.is_fitted
    with pytest.raises(TypeError, match="callback"):
        model.fit(*gauss, callback="not callable")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"iters": -1}, ValueError, "iters"),
        ({"inner_iters": 0}, ValueError, "inner_iters"),
        ({"batch_size": 2.5}, TypeError, "batch_size"),
        ({"lr": 0}, ValueError, "lr"),
        ({"lr": None}, TypeError, "lr"),
        ({"betas": (0.5,)}, TypeError, "betas"),
        ({"betas": (0.5, 1.0)}, ValueError, "betas"),
        ({"init": "zeros"}, ValueError, "init"),
        ({"hidden": "64"}, TypeError, "hidden"),
        ({"hidden": [16.7]}, TypeError, "hidden"),
        ({"select_best": "no"}, TypeError, "select_best"),
        ({"early_stopping": 1}, TypeError, "early_stopping"),
        ({"penalty": -1}, ValueError, "penalty"),
        ({"n_components": "all"}, ValueError, "n_components"),
        ({"negative_slope": 1.5}, ValueError, "negative_slope"),
    ],
)
def test_bad_options_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        W2OT(**kwargs)


def test_bad_data_and_unfitted_use(gauss):
    with pytest.raises(RuntimeError, match="W2OT is not fitted"):
        W2OT().transport(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="batch_size=256 exceeds the 225 training cells"):
        _model().fit(gauss[0][:250], gauss[1][:250])
    with pytest.raises(ValueError, match="target has 3 features, expected 2"):
        _model(**SMALL).fit(gauss[0], np.zeros((100, 3)))
    source = gauss[0].copy()
    source[0, 0] = np.nan
    with pytest.raises(ValueError, match="source contains NaN"):
        _model(**SMALL).fit(source, gauss[1])


def test_divergence_raises_training_error(gauss):
    import w1ot

    with pytest.raises(w1ot.TrainingError, match="w2"):
        _model(**SMALL, lr=1e30).fit(*gauss)


def test_a_map_that_blows_up_is_a_divergence_not_the_users_cells():
    # lr=16 sends the map's outputs beyond 1e12 within ten iterations; the held-out
    # evaluation used to report it as "x: has values of magnitude ..." (found by hypothesis).
    x = np.random.default_rng(5).normal(size=(40, 3))
    model = W2OT(lr=16, n_threads=1, seed=0, iters=200, batch_size=8, eval_every=10)
    with pytest.raises(TrainingError, match="fitted map"):
        model.fit(x, x + 1)
    assert not model.is_fitted
