"""Benchmarks of w1ot.metrics (pytest-benchmark).

Run from the repository root (pyproject's addopts disable benchmarks by default)::

    PYTHONPATH=python python -m pytest benches/bench_metrics.py --benchmark-enable -q

The numba MMD and the full-matrix NumPy reference run in the same session on the same data, so
the ratio of their timings (same benchmark group) is meaningful.
"""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from w1ot import metrics as M

N, D = 2000, 50


def mmd_numpy(x, y, gammas=M.DEFAULT_GAMMAS):
    """Plain NumPy/SciPy biased RBF MMD^2: three full squared-distance matrices, one exp each
    per gamma."""
    dxx, dyy, dxy = (cdist(a, b, "sqeuclidean") for a, b in ((x, x), (y, y), (x, y)))
    return float(
        np.mean(
            [
                np.exp(-g * dxx).mean() + np.exp(-g * dyy).mean() - 2 * np.exp(-g * dxy).mean()
                for g in gammas
            ]
        )
    )


def energy_numpy(x, y):
    return float(2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean())


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D))
    y = rng.normal(size=(N, D)) + 0.1
    M.mmd(x[:16], y[:16])  # JIT warm-up (compilation is not timed)
    M.energy_distance(x[:16], y[:16])
    return x, y


@pytest.fixture(scope="module")
def mmd_expected(data):
    return mmd_numpy(*data)


@pytest.mark.benchmark(group=f"mmd {N}x{N} d={D}")
def test_mmd_numba(benchmark, data, mmd_expected):
    got = benchmark.pedantic(M.mmd, args=data, rounds=5, iterations=1, warmup_rounds=1)
    assert got == pytest.approx(mmd_expected, rel=1e-10)


@pytest.mark.benchmark(group=f"mmd {N}x{N} d={D}")
def test_mmd_numpy_reference(benchmark, data, mmd_expected):
    got = benchmark.pedantic(mmd_numpy, args=data, rounds=3, iterations=1)
    assert got == pytest.approx(mmd_expected, rel=1e-12)


@pytest.mark.benchmark(group=f"energy {N}x{N} d={D}")
def test_energy_numba(benchmark, data):
    got = benchmark.pedantic(M.energy_distance, args=data, rounds=5, iterations=1)
    assert got == pytest.approx(energy_numpy(*data), rel=1e-10)


@pytest.mark.benchmark(group=f"energy {N}x{N} d={D}")
def test_energy_numpy_reference(benchmark, data):
    benchmark.pedantic(energy_numpy, args=data, rounds=3, iterations=1)
