"""Benchmarks of the Rust core through the binding (pytest-benchmark).

Run from the repository root (pyproject's addopts disable benchmarks by default)::

    python -m pytest benches/bench_core.py --benchmark-enable -q

One call each, on a batch of 512 rows of the default potential (hidden 64 x 4, GroupSort groups
of 16, Cayley layers), at d = 2, 50 and 1000:

* ``value_and_grad``: the training step's forward + backward (weights, f, dL/dparams, dL/dx);
* ``gradient``: the transport's input gradient only (inference weights).

The times include the binding's input validation and float32 output allocation, as a Python
caller pays them.
"""

import numpy as np
import pytest

from w1ot import _core as C

BATCH = 512
DIMS = [2, 50, 1000]


@pytest.fixture(scope="module", params=DIMS, ids=[f"d={d}" for d in DIMS])
def setup(request):
    d = request.param
    pot = C.Potential(d, [64, 64, 64, 64], group_size=16, orthogonal="cayley", seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, d)).astype(np.float32)
    # the potential's loss: mean f(source) - mean f(target), a +-1/n weight per row
    df = np.where(np.arange(BATCH) < BATCH // 2, 1.0, -1.0).astype(np.float32) / (BATCH // 2)
    return pot, x, df


def test_value_and_grad(benchmark, setup):
    pot, x, df = setup
    benchmark.group = "value_and_grad (forward + backward), 512 rows"
    f, g, dx = benchmark.pedantic(
        pot.value_and_grad, args=(x, df), rounds=50, iterations=1, warmup_rounds=3
    )
    assert f.shape == (BATCH,) and g.shape == (pot.n_params,) and dx.shape == x.shape


def test_gradient(benchmark, setup):
    pot, x, _ = setup
    benchmark.group = "gradient (input gradient only), 512 rows"
    g = benchmark.pedantic(pot.gradient, args=(x,), rounds=50, iterations=1, warmup_rounds=3)
    assert g.shape == x.shape
