"""Ctrl-C during a fit: KeyboardInterrupt within a fraction of a second, model untouched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from w1ot import W1OT, W2OT, Autoencoder

    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal((2000, 20))).astype(np.float32)
    y = x + 1.0
    model = {
        "W1OT": lambda: W1OT(potential_iters=10_000_000, step_iters=10),
        "W2OT": lambda: W2OT(iters=10_000_000),
        "Autoencoder": lambda: Autoencoder(iters=10_000_000, early_stopping=False),
    }[sys.argv[1]]()
    print("ready", flush=True)
    t0 = time.perf_counter()
    try:
        model.fit(x, y)
    except KeyboardInterrupt:
        print(f"interrupted fitted={model.is_fitted}", flush=True)
        sys.exit(0)
    print("finished", flush=True)
    sys.exit(1)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("model", ["W1OT", "W2OT", "Autoencoder"])
def test_ctrl_c_stops_a_fit_with_keyboard_interrupt(model):
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, model],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A background job of a non-interactive shell inherits SIGINT ignored, and Python
        # then installs no handler: restore the default so that the test sees Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.5)  # well inside the fit, which would take hours
        sent = time.perf_counter()
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        waited = time.perf_counter() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, f"stdout={out!r} stderr={err!r}"
    assert "interrupted fitted=False" in out
    assert waited < 5.0, f"took {waited:.1f} s to stop"
