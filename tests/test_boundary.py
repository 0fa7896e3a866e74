"""Promises at the boundary (issue: no panic, no silent failure): every option of both
solvers is checked in the constructor, with a message naming it."""

from __future__ import annotations

import numpy as np
import pytest

from w1ot import W1OT, W2OT

BOTH = [W1OT, W2OT]


@pytest.mark.parametrize("cls", BOTH)
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_threads": 10_000}, ValueError, "n_threads must be at most 1024"),
        ({"n_threads": -1}, ValueError, "n_threads"),
        ({"n_threads": 2.0}, TypeError, "n_threads"),
        ({"seed": 2**70}, ValueError, "seed must be at most"),
        ({"seed": 2**63}, ValueError, "seed must be at most"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": "0"}, TypeError, "seed"),
        ({"batch_size": 2**64}, ValueError, "batch_size must be at most"),
        ({"batch_size": np.int64(0)}, ValueError, "batch_size"),
        ({"hidden": "64"}, TypeError, "hidden"),
        ({"hidden": [16.7]}, TypeError, "hidden"),
        ({"hidden": []}, ValueError, "hidden"),
        ({"early_stopping": "no"}, TypeError, "early_stopping"),
        ({"early_stopping": 0}, TypeError, "early_stopping"),
        ({"valid_fraction": None}, TypeError, "valid_fraction"),
        ({"valid_fraction": "0.1"}, TypeError, "valid_fraction"),
        ({"progress": "yes"}, TypeError, "progress"),
        ({"n_components": "all"}, ValueError, "n_components"),
        ({"n_components": 2.5}, TypeError, "n_components"),
    ],
)
def test_bad_options_fail_in_the_constructor_naming_the_option(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"potential_iters": 2**63}, ValueError, "potential_iters must be at most"),
        ({"step_iters": -5}, ValueError, "step_iters"),
        ({"potential_lr": None}, TypeError, "potential_lr"),
        ({"potential_lr": "1e-2"}, TypeError, "potential_lr"),
        ({"potential_lr": float("nan")}, ValueError, "potential_lr"),
        ({"disc_lr": 0}, ValueError, "disc_lr"),
        ({"positive": "false"}, TypeError, "positive"),
        ({"step_loss": "wgan"}, ValueError, "step_loss"),
        ({"orthogonal": "householder"}, ValueError, "orthogonal"),
        ({"group_size": 0}, ValueError, "group_size"),
        ({"label_smoothing": "0.1"}, TypeError, "label_smoothing"),
    ],
)
def test_w1ot_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        W1OT(**kwargs)


@pytest.mark.parametrize("cls", BOTH)
def test_a_non_callable_callback_fails_before_training(cls):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2)).astype(np.float32)
    model = cls(batch_size=64, seed=0)
    with pytest.raises(TypeError, match="callback must be callable"):
        model.fit(x, x + 1, callback="print")
    assert not model.is_fitted


# -- training that fails must not finish silently ------------------------------------------


@pytest.fixture(scope="module")
def shifted():
    from w1ot import datasets

    return datasets.shifted_gaussians(2000, 2, 2.0, seed=0)


FAST = {"potential_iters": 2000, "step_iters": 400, "seed": 0, "n_threads": 1}


def _training_warnings(model, data):
    import warnings

    from w1ot import TrainingWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(*data)
    return [str(w.message) for w in caught if issubclass(w.category, TrainingWarning)]


def test_a_potential_that_learned_nothing_is_reported(shifted):
    messages = _training_warnings(W1OT(**{**FAST, "potential_lr": 1e4}), shifted)
    assert any("potential stage learned little" in m and "potential_lr" in m for m in messages)
    assert any("did not bring the held-out cells closer" in m for m in messages)


def test_a_dead_discriminator_is_reported(shifted):
    model = W1OT(step_loss="gan", disc_lr=1e6, **FAST)
    messages = _training_warnings(model, shifted)
    assert any("discriminator is dead" in m and "disc_lr" in m for m in messages), messages


def test_a_good_fit_and_a_perturbation_without_effect_warn_nothing(shifted):
    assert _training_warnings(W1OT(**FAST), shifted) == []
    rng = np.random.default_rng(1)
    same = rng.normal(size=(2000, 5)), rng.normal(size=(2000, 5))
    assert _training_warnings(W1OT(**FAST), same) == []


# -- finite inputs that would overflow inside -----------------------------------------------


@pytest.fixture(scope="module")
def small_models():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    w1 = W1OT(potential_iters=50, step_iters=50, batch_size=64, n_threads=1, seed=0)
    w2 = W2OT(iters=20, batch_size=64, n_threads=1, seed=0)
    with pytest.warns(RuntimeWarning):  # 50 iterations learn little, and say so
        w1.fit(x, x + 1)
    return w1, w2.fit(x, x + 1)


@pytest.mark.parametrize("value", [3e38, -1e19, 1e39, 2e12])
def test_values_beyond_float32_safety_are_refused_by_name(small_models, value):
    w1, w2 = small_models
    z = np.full((4, 3), value)
    calls = [w1.transport, w1.potential, w1.step_size, w2.transport, w2.potential]
    for call in calls:
        with pytest.raises(ValueError, match=r"x has values up to .* rescale the data"):
            call(z)
    with pytest.raises(ValueError, match=r"source has values up to"):
        W1OT().fit(z, z)


@pytest.mark.parametrize("value", [9e11, -9e11, 1e6])
def test_large_but_accepted_values_give_finite_outputs(small_models, value):
    w1, w2 = small_models
    z = np.full((4, 3), value)
    for out in (
        w1.transport(z),
        w1.potential(z),
        w1.step_size(z),
        w2.transport(z),
        w2.potential(z),
    ):
        assert np.isfinite(out).all()


def test_data_at_scale_1e11_train_to_a_finite_model():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 3)) * 1e11
    model = W1OT(potential_iters=300, step_iters=300, batch_size=64, n_threads=1, seed=0)
    model.fit(x, x + 1e11)
    assert np.isfinite(model.transport(x)).all()
    assert np.isfinite(model.history["w1_valid"]).all()
