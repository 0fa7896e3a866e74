"""The numba kernels of w1ot.metrics are cached on disk: a new process does not recompile them."""

from __future__ import annotations

import os
import subprocess
import sys

import numba
import numpy as np
import pytest

from w1ot import metrics

# Times import + first mmd call in a fresh interpreter; prints the seconds and the value.
SCRIPT = (
    "import time; t=time.perf_counter(); from w1ot import metrics; import numpy as np; "
    "v = metrics.mmd(np.zeros((5,2)), np.ones((5,2))); print(time.perf_counter()-t, repr(v))"
)


def _fresh_process(cache_dir) -> tuple[float, float]:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    env.pop("NUMBA_DISABLE_JIT", None)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    seconds, value = out.stdout.split()
    return float(seconds), float(value)


def _cache_files(cache_dir) -> list[str]:
    return [
        name
        for _, _, files in os.walk(cache_dir)
        for name in files
        if name.endswith((".nbi", ".nbc"))
    ]


def test_second_process_loads_kernels_from_cache(tmp_path):
    cache_dir = tmp_path / "numba_cache"
    t_first, v_first = _fresh_process(cache_dir)
    files = _cache_files(cache_dir)
    assert any(f.startswith("metrics._pair_sums") and f.endswith(".nbc") for f in files), files
    t_second, v_second = _fresh_process(cache_dir)
    # Compiling takes seconds; loading the cache (plus numba's own start-up) a fraction of that.
    assert t_second < 0.5 * t_first, (t_first, t_second)
    # The cached kernel computes what the freshly compiled one did, and what this process does.
    assert v_second == v_first == metrics.mmd(np.zeros((5, 2)), np.ones((5, 2)))


def test_njit_falls_back_without_a_cache_location():
    # A function without a source file has no cache locator: numba refuses cache=True.
    namespace: dict = {}
    exec(compile("def f(a):\n    return 2.0 * a + 1.0\n", "<no-file>", "exec"), namespace)
    with pytest.raises(RuntimeError, match="cannot cache"):
        numba.njit(cache=True)(namespace["f"])
    jitted = metrics._njit(fastmath=False)(namespace["f"])
    assert jitted(3.0) == 7.0
