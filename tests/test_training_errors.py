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
