"""Timing of the W1 solver (pytest-benchmark; run with ``--benchmark-enable``).

Per-iteration cost of each stage at d = 2, 50 and 1000 with the default networks (batch 256
per side), a full default fit at d = 50 with 5,000 cells per side, and the same fit with
early stopping, reporting time saved and the change in held-out MMD.

    python -m pytest benches/bench_w1.py --benchmark-enable -q
"""

from __future__ import annotations

import numpy as np
import pytest

from w1ot import W1OT, _core, metrics

ITERS = 200


def _data(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = (rng.standard_normal((n, d)) + 2.0 / np.sqrt(d)).astype(np.float32)
    return x, y


@pytest.mark.parametrize("d", [2, 50, 1000])
def test_potential_iteration(benchmark, d):
    x, y = _data(5000, d)
    core = _core.W1Core(d)
    core.fit_potential(x, y, iters=20)  # warm-up: thread pool, page faults
    benchmark.pedantic(lambda: core.fit_potential(x, y, iters=ITERS), rounds=3, iterations=1)
    benchmark.extra_info["ms_per_iteration"] = benchmark.stats.stats.mean / ITERS * 1e3


@pytest.mark.parametrize("loss", ["gan", "energy"])
@pytest.mark.parametrize("d", [2, 50, 1000])
def test_step_iteration(benchmark, d, loss):
    x, y = _data(5000, d)
    core = _core.W1Core(d)
    core.fit_potential(x, y, iters=20)
    # Directions are computed once per stage; time them apart from the iterations.
    benchmark.pedantic(lambda: core.fit_step(x, y, iters=ITERS, loss=loss), rounds=3, iterations=1)
    benchmark.extra_info["ms_per_iteration_incl_directions"] = (
        benchmark.stats.stats.mean / ITERS * 1e3
    )


@pytest.mark.parametrize("early_stopping", [False, True])
def test_full_default_fit_d50(benchmark, early_stopping):
    x, y = _data(5000, 50, seed=1)
    xt, yt = _data(2000, 50, seed=2)
    model = W1OT(seed=0, early_stopping=early_stopping)
    benchmark.pedantic(lambda: model.fit(x, y), rounds=1, iterations=1)
    benchmark.extra_info["fit_time"] = dict(model.fit_time_)
    benchmark.extra_info["potential_iters_run"] = len(model.history["potential_loss"])
    benchmark.extra_info["step_iters_run"] = len(model.history["step_loss"])
    benchmark.extra_info["mmd_test"] = metrics.mmd(model.transport(xt), yt)
