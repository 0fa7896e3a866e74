"""Divergence is reported as TrainingError naming the stage and iteration; the model is left
as it was."""

from __future__ import annotations

import numpy as np
import pytest

import w1ot


@pytest.fixture
def cells():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 3))
    return x, x + 1.0


def test_potential_divergence_names_stage_and_iteration(cells):
    model = w1ot.W1OT(potential_iters=200, step_iters=10, potential_lr=1e38, potential_lr_min=0)
    with pytest.raises(w1ot.TrainingError, match=r"potential at iteration \d+"):
        model.fit(*cells)
    assert not model.is_fitted


def test_step_size_divergence_names_stage(cells):
    model = w1ot.W1OT(potential_iters=20, step_iters=300, step_lr=1e30, disc_lr=1e30)
    with pytest.raises(w1ot.TrainingError, match=r"step_size at iteration \d+"):
        model.fit(*cells)
    assert not model.is_fitted


def test_training_error_is_a_runtime_error():
    assert issubclass(w1ot.TrainingError, RuntimeError)


def test_collapse_diagnostics_warn(monkeypatch, cells):
    model = w1ot.W1OT(potential_iters=30, step_iters=30, batch_size=64, step_loss="gan")
    model.fit(*cells)
    h = model.history
    assert len(h["d_real_valid"]) == len(h["eta_q95"]) == len(h["step_eval_iters"]) >= 1
    # A saturated discriminator and step sizes thrown 10x the mean shift are both reported.
    h["d_real_valid"][-1], h["d_fake_valid"][-1] = 0.999, 1e-4
    h["eta_q50"][-1], h["eta_q95"][-1], h["eta_mean"][-1] = 0.1, 10.0 * np.sqrt(3), 2.0
    with pytest.warns(RuntimeWarning) as record:
        model._warn_on_collapse(scale=float(np.sqrt(3)))
    messages = " ".join(str(r.message) for r in record)
    assert "discriminator saturated" in messages and "spread far" in messages
    # Healthy statistics stay quiet.
    h["d_real_valid"][-1], h["d_fake_valid"][-1] = 0.6, 0.4
    h["eta_q50"][-1], h["eta_q95"][-1], h["eta_mean"][-1] = 1.7, 2.0, 1.7
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model._warn_on_collapse(scale=float(np.sqrt(3)))
