"""Acceptance tests of the W1OT model: accuracy on toy data with known answers, persistence,
input validation, determinism, callbacks, history and the training options.

Every fit uses fixed seeds and ``n_threads=2``; iteration counts are below the defaults
where that still shows the property (the thresholds are those of the issue).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

import w1ot
import w1ot.io
from w1ot import W1OT, ModelFileError, Progress, datasets, metrics

THREADS = 2


def _model(**kw) -> W1OT:
    kw.setdefault("seed", 0)
    kw.setdefault("n_threads", THREADS)
    return W1OT(**kw)


# Small, quick configuration for the API tests (not meant to be accurate).
SMALL = {"potential_iters": 60, "step_iters": 40, "batch_size": 64, "eval_every": 20}


@pytest.fixture(scope="module")
def gauss():
    """A small 2-D problem: source N(0, I), target shifted by 2."""
    return datasets.shifted_gaussians(600, 2, 2.0, seed=0)


@pytest.fixture(scope="module")
def fitted(gauss):
    """A quickly fitted model; tests must not refit or alter it."""
    return _model(**SMALL).fit(*gauss)


@pytest.fixture(scope="module")
def probe():
    return np.random.default_rng(7).normal(1.0, 1.5, size=(300, 2))


# ------------------------------------------------------------------ accuracy on toy data


@pytest.mark.parametrize("d", [2, 16])
def test_shifted_gaussians_dual_estimate_within_5_percent(d):
    # 20,000 cells per side: the 2,000 held out in the fit estimate W1 to ~1.5% (1 s.d.)
    source, target, exact = datasets.shifted_gaussians(20_000, d, 3.0, seed=d, return_w1=True)
    model = _model(potential_iters=500, step_iters=0, eval_every=50).fit(source, target)
    fresh_source, fresh_target = datasets.shifted_gaussians(5_000, d, 3.0, seed=100 + d)
    assert model.w1_distance(fresh_source, fresh_target) == pytest.approx(exact, rel=0.05)
    assert model.history["w1_valid"][-1] == pytest.approx(exact, rel=0.05)


# The toy models of the moons and swiss-roll tests: 20,000 potential iterations at a learning
# rate of 1e-3 (the default: 10,000 at 1e-2) and 4,000 step-size iterations (10,000), for a
# wider margin under the 2x below. On the moons, where both arcs are thin (noise 0.01), the
# rays of the potential must hit the target arc: at the default potential learning rate 10-15%
# of them missed it by more than 0.02 after 2,000 iterations, at 1e-3 after 20,000 4-8%. Full
# defaults give 0.80-1.63x the sampling noise on the moons and 1.23-1.43x on the swiss roll
# (seeds 0-3), these settings 0.69-1.03x and 1.26-1.43x (seeds 0-2).
TOY_SETTINGS = {"potential_iters": 20_000, "potential_lr": 1e-3, "step_iters": 4000}


@functools.cache
def _toy_model(name: str, seed: int = 0) -> W1OT:
    source, target = datasets.load_toy(name, n=4000, seed=seed)
    return _model(seed=seed, **TOY_SETTINGS).fit(source, target)


@pytest.mark.slow
def test_moons_dual_estimate_matches_exact_w1_of_held_out_samples():
    model = _toy_model("moons")
    held_source, held_target = datasets.moons(2000, seed=1)
    exact = metrics.wasserstein1(held_source, held_target)
    assert model.w1_distance(held_source, held_target) == pytest.approx(exact, rel=0.05)


def _independent_samples(name: str, n: int, repeats: int, seed: int):
    """``repeats`` source and ``3 * repeats`` target samples of ``n`` cells, disjoint random
    subsets of one large draw. (``moons`` places its points on a fixed grid, so two of its
    samples are near copies of each other, MMD ~1e-6: not independent samples of the
    distribution.)"""
    pool_source, pool_target = datasets.load_toy(name, n=3 * n * repeats, seed=seed)
    rng = np.random.default_rng(seed)
    pool_source = pool_source[rng.permutation(len(pool_source))]
    pool_target = pool_target[rng.permutation(len(pool_target))]
    return (
        [pool_source[k * n : (k + 1) * n] for k in range(repeats)],
        [pool_target[k * n : (k + 1) * n] for k in range(3 * repeats)],
    )


# The MMD between two independent samples of 1,000 cells is heavy-tailed: over 50 pairs of
# moons target samples it ranged from 0.12x to 4.1x its mean, so one pair says little. Both
# sides of the comparison are therefore means over 50 independent pairs of samples: the
# transported MMD over 50 source samples each against its own target sample, the sampling
# noise over 50 pairs of target samples. (Transporting one source sample, as this test first
# did, measured the draw more than the fit: single pairs score the seed-0 moons model 0.15x-4.8x.)
TOY_EVAL = {"n": 1000, "repeats": 50, "seed": 11}


@functools.cache
def _toy_reference(name: str):
    """The evaluation samples and the two fit-free MMDs: between two independent target
    samples (the sampling noise) and between source and target samples."""
    sources, targets = _independent_samples(name, **TOY_EVAL)
    r = TOY_EVAL["repeats"]
    noise = np.mean([metrics.mmd(targets[r + 2 * k], targets[r + 2 * k + 1]) for k in range(r)])
    source = np.mean([metrics.mmd(sources[k], targets[k]) for k in range(r)])
    return sources, targets[:r], float(noise), float(source)


@functools.cache
def _toy_mmds(name: str, seed: int = 0) -> dict[str, float]:
    sources, targets, noise, source = _toy_reference(name)
    model = _toy_model(name, seed)
    moved = np.mean(
        [metrics.mmd(model.transport(x), y) for x, y in zip(sources, targets, strict=True)]
    )
    return {"transported": float(moved), "source": source, "noise": noise}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["moons", "swiss_roll"])
def test_toy_transport_mmd_at_most_a_fifth_of_source_target_mmd(name):
    mmds = _toy_mmds(name)
    assert mmds["transported"] <= mmds["source"] / 5, mmds


# Every fit, each with its own seed and training draw, is held to the 2x. Measured:
# moons 0.76, 1.03, 0.69x for seeds 0-2 (0.69-1.33x over seeds 0-11), swiss roll 1.26, 1.33,
# 1.43x (1.35x for seed 3). It fails with the paper's GAN step size (moons 3.15x), with the
# energy step size at the reference's constant learning rate of 1e-4 for 10,000 iterations
# (moons 7.31x) and with this test's earlier swiss-roll settings (2,000 potential iterations at
# 1e-2, 3,000 step-size iterations from 3e-3): 2.04x and 2.09x for seeds 1 and 2.
TOY_SEEDS = {"moons": (0, 1, 2), "swiss_roll": (0, 1, 2)}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["moons", "swiss_roll"])
def test_toy_transport_mmd_near_sampling_noise(name):
    ratios = {}
    for seed in TOY_SEEDS[name]:
        mmds = _toy_mmds(name, seed)
        ratios[seed] = mmds["transported"] / mmds["noise"]
    assert max(ratios.values()) <= 2.0, f"transported MMD / sampling noise per seed: {ratios}"


def test_bookshelf_transport_keeps_the_order():
    source, target = datasets.bookshelf(2000, seed=3)
    model = _model(potential_iters=500, step_iters=2000, step_loss="gan", seed=3)
    model.fit(source, target)
    x, _ = datasets.bookshelf(1000, seed=99)
    moved = model.transport(x)[:, 0]
    assert spearmanr(x[:, 0], moved)[0] >= 0.99
    assert np.mean((moved >= 1.95) & (moved <= 3.05)) >= 0.95


# The game needs more iterations than the energy objective to settle: at 400 one seed in
# four still had the outer ring halfway in.
@pytest.mark.parametrize(
    "step",
    [
        {"step_iters": 400},
        {"step_iters": 1000, "step_loss": "gan", "step_lr": 1e-3, "disc_lr": 1e-3},
    ],
    ids=["energy", "gan"],
)
def test_circles_map_inner_to_inner_and_outer_to_outer(step):
    source, target = datasets.circles(2000, seed=0)
    model = _model(potential_iters=400, **step)
    model.fit(source, target)
    x, _, ring = datasets.circles(1000, seed=99, return_labels=True)
    radius = np.linalg.norm(model.transport(x), axis=1)
    inner, outer = radius[ring == 0], radius[ring == 1]
    assert np.mean(np.abs(inner - 1) < np.abs(inner - 2)) >= 0.98
    assert np.mean(np.abs(outer - 2) < np.abs(outer - 1)) >= 0.98


@pytest.mark.parametrize(
    ("kwargs", "lr", "decay"),
    [
        ({}, 1e-2, 0.01),  # the energy objective: 1e-2 annealed to 1e-4
        ({"step_loss": "gan"}, 1e-4, 1.0),  # the reference's, for its game
        ({"step_loss": "mmd"}, 1e-4, 1.0),
        ({"step_lr": 3e-3}, 3e-3, 0.01),
        ({"step_loss": "gan", "step_lr_decay": 0.5}, 1e-4, 0.5),
    ],
)
def test_step_learning_rate_defaults_follow_the_objective(kwargs, lr, decay):
    model = W1OT(**kwargs)
    assert (model.step_lr, model.step_lr_decay) == (lr, decay)
    # resolved values, so that get_params reproduces the model whatever the objective
    assert W1OT(**model.get_params()).get_params() == model.get_params()


# ---------------------------------------------------------------------------- save / load


def test_save_load_round_trip(fitted, probe, tmp_path):
    path = tmp_path / "model.npz"
    fitted.save(path)
    loaded = W1OT.load(path)
    assert loaded.is_fitted
    assert loaded.get_params() == fitted.get_params()
    assert loaded.n_features == fitted.n_features
    np.testing.assert_array_equal(loaded.transport(probe), fitted.transport(probe))
    np.testing.assert_array_equal(loaded.potential(probe), fitted.potential(probe))
    np.testing.assert_array_equal(loaded.step_size(probe), fitted.step_size(probe))
    assert loaded.history.keys() == fitted.history.keys()
    for key, values in fitted.history.items():
        np.testing.assert_array_equal(loaded.history[key], values, err_msg=key)
    # a str path works as well, and a reloaded model saves again identically
    loaded.save(str(tmp_path / "again.npz"))
    again = W1OT.load(str(tmp_path / "again.npz"))
    np.testing.assert_array_equal(again.transport(probe), fitted.transport(probe))


def test_model_file_error_is_a_value_error():
    assert issubclass(ModelFileError, ValueError)
    assert w1ot.ModelFileError is w1ot.io.ModelFileError


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.99])
def test_load_truncated_file(fitted, tmp_path, keep):
    path = tmp_path / "model.npz"
    fitted.save(path)
    data = path.read_bytes()
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(data[: math.floor(keep * len(data))])
    with pytest.raises(ModelFileError, match=r"truncated\.npz.*not a (readable )?w1ot model"):
        W1OT.load(bad)


def test_load_npz_without_metadata(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, a=np.zeros(3), b=np.ones((2, 2)))
    with pytest.raises(ModelFileError, match="not a w1ot model file"):
        W1OT.load(path)


def test_load_text_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("these are not the parameters you are looking for\n")
    with pytest.raises(ModelFileError, match="not a w1ot model file") as exc:
        W1OT.load(path)
    assert "pickle" not in str(exc.value)  # nothing may suggest unsafe loading


def test_load_npy_file(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.arange(10.0))
    with pytest.raises(ModelFileError, match="not a"):
        W1OT.load(path)


def test_load_other_format_or_class(tmp_path):
    path = tmp_path / "other.npz"
    w1ot.io.save_model(path, {"class": "W2OT"}, {"x": np.zeros(2, np.float32)})
    with pytest.raises(ModelFileError, match="W2OT"):
        W1OT.load(path)


def test_load_newer_format_version(fitted, tmp_path, monkeypatch):
    path = tmp_path / "future.npz"
    monkeypatch.setattr(w1ot.io, "VERSION", w1ot.io.VERSION + 1)
    fitted.save(path)
    monkeypatch.undo()
    v = w1ot.io.VERSION
    with pytest.raises(ModelFileError, match=rf"version {v + 1}.*up to version {v}.*upgrade"):
        W1OT.load(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        W1OT.load(tmp_path / "nowhere.npz")


# ------------------------------------------------------------------------------ bad input


def _cells(n=300, d=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def test_fit_rejects_mismatched_feature_counts():
    with pytest.raises(ValueError, match=r"target has 3 features, expected 2"):
        _model(**SMALL).fit(_cells(d=2), _cells(d=3))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("side", ["source", "target"])
def test_fit_rejects_non_finite_values(side, bad):
    data = {"source": _cells(), "target": _cells(seed=1)}
    data[side][5, 1] = bad
    with pytest.raises(ValueError, match=f"{side} contains NaN or infinite"):
        _model(**SMALL).fit(data["source"], data["target"])


@pytest.mark.parametrize(("n_source", "n_target"), [(100, 300), (300, 100), (280, 300)])
def test_fit_rejects_fewer_cells_than_a_batch(n_source, n_target):
    # 280 cells leave 252 for training after holding out 10%: fewer than a batch of 256
    model = _model(potential_iters=10, step_iters=10, batch_size=256)
    with pytest.raises(ValueError, match="batch_size=256"):
        model.fit(_cells(n_source), _cells(n_target))


def test_fit_rejects_strings():
    strings = np.array([["a", "b"]] * 300)
    with pytest.raises(TypeError, match="source"):
        _model(**SMALL).fit(strings, _cells())
    with pytest.raises(TypeError, match="target"):
        _model(**SMALL).fit(_cells(), strings)
    with pytest.raises(TypeError, match="source"):
        _model(**SMALL).fit([[1.0, "x"]] * 300, _cells())


def test_fit_rejects_1d_input():
    with pytest.raises(ValueError, match=r"source must be a 2-D array"):
        _model(**SMALL).fit(np.zeros(300), _cells())
    with pytest.raises(ValueError, match=r"target must be a 2-D array"):
        _model(**SMALL).fit(_cells(), np.zeros(300))


def test_fit_rejects_empty_input():
    with pytest.raises(ValueError, match="source is empty"):
        _model(**SMALL).fit(np.zeros((0, 2)), _cells())
    with pytest.raises(ValueError, match="target is empty"):
        _model(**SMALL).fit(_cells(), np.zeros((0, 2)))
    with pytest.raises(ValueError, match="0 features"):
        _model(**SMALL).fit(np.zeros((300, 0)), np.zeros((300, 0)))


def test_unfitted_model_raises_runtime_error(tmp_path):
    model = _model(**SMALL)
    assert not model.is_fitted
    for method in (model.transport, model.potential, model.gradient, model.direction):
        with pytest.raises(RuntimeError, match="not fitted"):
            method(_cells())
    with pytest.raises(RuntimeError, match="not fitted"):
        model.w1_distance(_cells(), _cells())
    with pytest.raises(RuntimeError, match="not fitted"):
        model.save(tmp_path / "m.npz")


def test_inference_rejects_wrong_feature_count(fitted):
    for method in (fitted.transport, fitted.potential, fitted.step_size, fitted.direction):
        with pytest.raises(ValueError, match="x has 3 features, expected 2"):
            method(_cells(d=3))
    with pytest.raises(ValueError, match="target has 1 features"):
        fitted.w1_distance(_cells(), _cells(d=1))
    with pytest.raises(ValueError, match="x must be a 2-D array"):
        fitted.transport(np.zeros(2))


# ---------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("n_threads", [1, 2])
def test_same_seed_same_model_bit_for_bit(gauss, probe, n_threads):
    fit = lambda seed: _model(**SMALL, seed=seed, n_threads=n_threads).fit(*gauss)  # noqa: E731
    a, b, c = fit(5), fit(5), fit(6)
    np.testing.assert_array_equal(a.transport(probe), b.transport(probe))
    np.testing.assert_array_equal(a.potential(probe), b.potential(probe))
    for key, values in a.history.items():
        np.testing.assert_array_equal(b.history[key], values, err_msg=key)
    assert not np.array_equal(a.potential(probe), c.potential(probe))
    assert not np.array_equal(a.transport(probe), c.transport(probe))


def test_the_same_model_for_any_thread_count_and_in_another_process(gauss, probe, tmp_path):
    import subprocess
    import sys

    fit = lambda n: _model(**SMALL, seed=5, n_threads=n).fit(*gauss)  # noqa: E731
    models = [fit(n) for n in (1, 2, 3, 0)]
    for other in models[1:]:
        np.testing.assert_array_equal(models[0].transport(probe), other.transport(probe))
        for key, values in models[0].history.items():
            np.testing.assert_array_equal(other.history[key], values, err_msg=key)
    np.save(tmp_path / "data.npy", np.stack(gauss))
    np.save(tmp_path / "probe.npy", probe)
    code = (
        "import numpy as np, sys; sys.path.insert(0, sys.argv[1]); "
        "from test_w1ot import SMALL, _model; "
        "s, t = np.load(sys.argv[2]); p = np.load(sys.argv[3]); "
        "m = _model(**SMALL, seed=5, n_threads=2).fit(s, t); np.save(sys.argv[4], m.transport(p))"
    )
    out = tmp_path / "moved.npy"
    here = str(Path(__file__).parent)
    args = [
        sys.executable,
        "-c",
        code,
        here,
        str(tmp_path / "data.npy"),
        str(tmp_path / "probe.npy"),
    ]
    subprocess.run([*args, str(out)], check=True)
    np.testing.assert_array_equal(np.load(out), models[0].transport(probe))


# ------------------------------------------------------------------------------- callback


def test_callback_receives_progress_of_both_stages(gauss):
    seen: list[Progress] = []
    model = _model(potential_iters=130, step_iters=70, batch_size=64, eval_every=50)
    assert model.fit(*gauss, callback=seen.append) is model
    assert seen and all(isinstance(p, Progress) for p in seen)
    stages = [p.stage for p in seen]
    n_potential = stages.count("potential")
    assert n_potential > 1 and stages.count("step_size") > 1
    assert stages == ["potential"] * n_potential + ["step_size"] * (len(seen) - n_potential)
    for stage, total in (("potential", 130), ("step_size", 70)):
        progress = [p for p in seen if p.stage == stage]
        iterations = [p.iteration for p in progress]
        assert np.all(np.diff(iterations) > 0)
        assert 1 <= iterations[0] and iterations[-1] == total
        assert all(p.total == total and math.isfinite(p.loss) for p in progress)
    # the held-out estimates reported at the evaluations are those of the history
    reported = {p.iteration: p.valid for p in seen if p.stage == "potential"}
    h = model.history
    for it, w1 in zip(h["potential_eval_iters"], h["w1_valid"], strict=True):
        assert reported[int(it)] == pytest.approx(float(w1), rel=1e-6)


@pytest.mark.parametrize("stage", ["potential", "step_size"])
def test_callback_returning_false_leaves_a_fitted_model_unchanged(gauss, probe, stage):
    model = _model(**SMALL).fit(*gauss)
    before = model.transport(probe)
    history = {k: v.copy() for k, v in model.history.items()}
    other_source, other_target = datasets.shifted_gaussians(600, 2, 4.0, seed=1)
    with pytest.raises(KeyboardInterrupt):
        model.fit(other_source, other_target, callback=lambda p: p.stage != stage)
    assert model.is_fitted
    np.testing.assert_array_equal(model.transport(probe), before)
    assert model.history.keys() == history.keys()
    for key, values in history.items():
        np.testing.assert_array_equal(model.history[key], values, err_msg=key)


@pytest.mark.parametrize("stage", ["potential", "step_size"])
def test_callback_returning_false_leaves_an_unfitted_model_unfitted(gauss, probe, stage):
    model = _model(**SMALL)
    with pytest.raises(KeyboardInterrupt):
        model.fit(*gauss, callback=lambda p: p.stage != stage)
    assert not model.is_fitted
    assert model.history == {}
    with pytest.raises(RuntimeError, match="not fitted"):
        model.transport(probe)


def test_callback_returning_none_or_true_continues(gauss):
    results = iter([None, True, 1, "yes"] * 100)
    model = _model(**SMALL).fit(*gauss, callback=lambda p: next(results))
    assert len(model.history["potential_loss"]) == SMALL["potential_iters"]
    assert len(model.history["step_loss"]) == SMALL["step_iters"]


class _Boom(Exception):
    pass


@pytest.mark.parametrize("stage", ["potential", "step_size"])
def test_callback_exception_propagates(gauss, probe, stage):
    def callback(p: Progress):
        if p.stage == stage:
            raise _Boom(f"stop in {p.stage}")

    model = _model(**SMALL)
    with pytest.raises(_Boom, match=f"stop in {stage}"):
        model.fit(*gauss, callback=callback)
    assert not model.is_fitted

    fitted = _model(**SMALL).fit(*gauss)
    before = fitted.transport(probe)
    with pytest.raises(_Boom):
        fitted.fit(*datasets.shifted_gaussians(600, 2, 4.0, seed=1), callback=callback)
    np.testing.assert_array_equal(fitted.transport(probe), before)


# -------------------------------------------------------------------------------- history


HISTORY_KEYS = (
    "potential_loss",
    "w1_valid",
    "potential_eval_iters",
    "potential_best_iter",
    "disc_loss",
    "step_loss",
    "step_eval_iters",
    "d_real_valid",
    "d_fake_valid",
    "eta_q05",
    "eta_q50",
    "eta_q95",
    "eta_mean",
)


def test_history_shapes(gauss):
    model = _model(
        potential_iters=130, step_iters=70, batch_size=64, eval_every=50, step_loss="gan"
    )
    h = model.fit(*gauss).history
    assert set(HISTORY_KEYS) <= h.keys()
    assert h["potential_loss"].shape == (130,)
    np.testing.assert_array_equal(h["potential_eval_iters"], [50, 100, 130])
    assert h["w1_valid"].shape == (3,)
    assert int(h["potential_best_iter"]) == 130
    assert h["disc_loss"].shape == (70,)
    assert h["step_loss"].shape == (70,)
    np.testing.assert_array_equal(h["step_eval_iters"], [50, 70])
    for key in ("d_real_valid", "d_fake_valid", "eta_q05", "eta_q50", "eta_q95", "eta_mean"):
        assert h[key].shape == (2,), key
    for key, values in h.items():
        assert np.all(np.isfinite(values)), key
    assert np.all((h["d_real_valid"] >= 0) & (h["d_real_valid"] <= 1))
    assert np.all((h["d_fake_valid"] >= 0) & (h["d_fake_valid"] <= 1))
    assert np.all((h["eta_q05"] >= 0) & (h["eta_q05"] <= h["eta_q50"]))
    assert np.all(h["eta_q50"] <= h["eta_q95"])


def test_history_without_a_discriminator(gauss):
    model = _model(potential_iters=30, step_iters=70, batch_size=64, eval_every=50)
    assert model.step_loss == "energy"
    h = model.fit(*gauss).history
    assert h["step_loss"].shape == (70,) and np.all(np.isfinite(h["step_loss"]))
    assert h["disc_loss"].shape == h["d_real_valid"].shape == h["d_fake_valid"].shape == (0,)
    assert h["energy_valid"].shape == h["eta_q50"].shape == (2,)


def test_history_without_held_out_cells(gauss):
    model = _model(**SMALL, valid_fraction=0.0).fit(*gauss)
    h = model.history
    assert h["potential_loss"].shape == (SMALL["potential_iters"],)
    assert h["step_loss"].shape == (SMALL["step_iters"],)
    for key in ("w1_valid", "potential_eval_iters", "step_eval_iters", "d_real_valid"):
        assert h[key].shape == (0,), key


# ------------------------------------------------------------------------------- options


def test_positive_transport_is_non_negative(tmp_path):
    rng = np.random.default_rng(0)
    source = np.abs(rng.normal(3.0, 1.0, size=(1000, 3)))
    target = np.maximum(rng.normal(0.2, 0.5, size=(1000, 3)), 0.0)  # many exact zeros
    model = _model(
        positive=True, potential_iters=200, step_iters=200, step_lr=1e-3, disc_lr=1e-3
    ).fit(source, target)
    moved = model.transport(source)
    assert moved.min() >= 0
    # the clip did something: without it some values would be negative
    x = source.astype(np.float32)
    unclipped = x - model.step_size(x)[:, None] * model.direction(x)
    assert (unclipped < 0).any()
    np.testing.assert_allclose(moved, np.maximum(unclipped, 0), atol=1e-5)
    # any input, even negative, is mapped into the non-negative orthant
    anywhere = rng.normal(0.0, 3.0, size=(500, 3))
    assert model.transport(anywhere).min() >= 0
    # and the option survives a save / load
    model.save(tmp_path / "positive.npz")
    loaded = W1OT.load(tmp_path / "positive.npz")
    assert loaded.positive
    np.testing.assert_array_equal(loaded.transport(anywhere), model.transport(anywhere))


def _held_out(source, target, seed, fraction=0.1):
    """The held-out cells W1OT.fit sets aside: with rng = default_rng(seed), the first
    floor(fraction n) entries of a permutation of each side, source first."""
    rng = np.random.default_rng(seed)
    out = []
    for x in (source, target):
        perm = rng.permutation(len(x))
        out.append(x[np.sort(perm[: math.floor(fraction * len(x))])])
    return out


def test_early_stopping_stops_early_and_keeps_the_best():
    source, target, exact = datasets.shifted_gaussians(20_000, 2, 3.0, seed=5, return_w1=True)
    iters = 5000
    model = _model(potential_iters=iters, step_iters=0, eval_every=50, early_stopping=True)
    h = model.fit(source, target).history
    n_done = len(h["potential_loss"])
    assert n_done < iters
    assert h["potential_eval_iters"][-1] == n_done
    best = float(h["w1_valid"].max())
    kept_at = int(h["potential_best_iter"])
    kept = float(h["w1_valid"][list(h["potential_eval_iters"]).index(kept_at)])
    assert kept >= best - 1e-3 * abs(best)
    # the model holds the kept parameters: it reproduces the recorded held-out estimate
    valid_source, valid_target = _held_out(source, target, seed=0)
    assert model.w1_distance(valid_source, valid_target) == pytest.approx(kept, rel=1e-5)
    fresh_source, fresh_target = datasets.shifted_gaussians(5_000, 2, 3.0, seed=6)
    assert model.w1_distance(fresh_source, fresh_target) == pytest.approx(exact, rel=0.05)
