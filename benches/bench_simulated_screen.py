"""A simulated screen at sciplex scale (188 perturbations x 5 repeats, one shared control
population, 2,000 cells per perturbation, 50 principal components), fitted and scored with
``w1ot.tl.fit_many``'s screen defaults on this machine's cores; and the study behind those
defaults. Run with

    python -m pytest benches/bench_simulated_screen.py --benchmark-enable -s

- ``test_screen_defaults_keep_quality``: a few perturbations of the screen, two repeats, the
  full default fit against the screen defaults (``w1ot.screen.SCREEN_DEFAULTS``), scored by
  the paper's protocol (:func:`w1ot.benchmark.run_benchmark`). The goal: the screen defaults'
  held-out MMD within 5% of the full default fit's. Also printed: how much of the gap between
  the observed cells (the estimate's noise floor) and the full default fit they add.
  W1OT_SCREEN_STUDY sets the number of perturbations (16; about 10 minutes).
- ``test_whole_screen``: every perturbation and repeat with the screen defaults, each fit
  scored on its held-out cells, on all cores. The goal: under one hour. W1OT_SCREEN_SIZE sets
  the number of perturbations (188; W1OT_SCREEN_REPEATS the repeats, 5).

Both write their tables beside this file (``simulated_screen_*.csv``, not committed).
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from pathlib import Path

import pytest

import w1ot
from w1ot.benchmark import run_benchmark
from w1ot.datasets import simulate_screen
from w1ot.screen import SCREEN_DEFAULTS

pytest.importorskip("anndata")

OUT = Path(__file__).resolve().parent
N_CONTROL, N_PER, N_GENES = 5000, 2000, 300
# peak memory (parent, largest worker) by number of perturbations, across the parametrised runs
PEAKS: dict[int, tuple[float, float]] = {}


def _screen(n_perturbations: int):
    t0 = time.perf_counter()
    adata = simulate_screen(n_perturbations, N_CONTROL, N_PER, N_GENES, seed=0)
    print(f"\nsimulated {n_perturbations} perturbations in {time.perf_counter() - t0:.1f} s")
    return adata


def _w1ot(**options):
    return functools.partial(w1ot.W1OT, n_threads=0, progress=False, **options)


def _mmd_table(result, features: str):
    r = result.results
    mmd = r[(r.metric == "mmd") & (r.features == features)]
    return mmd.pivot_table(index=["perturbation", "repeat"], columns="method", values="value")


def test_screen_defaults_keep_quality(benchmark):
    n = int(os.environ.get("W1OT_SCREEN_STUDY", 16))
    adata = _screen(n)
    methods = {
        "observed": "observed",
        "mean_shift": "mean_shift",
        "full default": _w1ot(),
        "screen default": _w1ot(**SCREEN_DEFAULTS["w1ot"]),
    }

    def run():
        return run_benchmark(
            adata, "condition", "control", methods=methods, n_repeats=2, n_jobs=-1, progress=False
        )

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    result.results.to_csv(OUT / "simulated_screen_study.csv", index=False)
    r = result.results
    fit = r[r.metric == "fit_time"].groupby("method").value.mean()
    print(f"mean fit time (s, one core each): {fit.round(2).to_dict()}")
    for features in ("all", "top50"):
        t = _mmd_table(result, features)
        ratio = t["screen default"].mean() / t["full default"].mean()
        excess = (t["screen default"] - t["observed"]).mean() / (
            t["full default"] - t["observed"]
        ).mean()
        print(
            f"MMD on {features}: means {t.mean().round(5).to_dict()}; screen / full default "
            f"{ratio:.3f}; excess over observed {excess:.3f}"
        )
        benchmark.extra_info[f"mmd_ratio_{features}"] = ratio
        benchmark.extra_info[f"excess_ratio_{features}"] = excess
        assert ratio <= 1.05, f"screen defaults lose {ratio - 1:.1%} MMD on {features}"
        assert t["screen default"].mean() < t["mean_shift"].mean()
    assert fit["screen default"] < fit["full default"] / 3


def test_whole_screen(benchmark):
    n = int(os.environ.get("W1OT_SCREEN_SIZE", 188))
    repeats = int(os.environ.get("W1OT_SCREEN_REPEATS", 5))
    adata = _screen(n)
    methods = {
        "identity": "identity",
        "observed": "observed",
        "mean_shift": "mean_shift",
        "w1ot": _w1ot(**SCREEN_DEFAULTS["w1ot"]),
    }

    def run():
        return run_benchmark(
            adata,
            "condition",
            "control",
            methods=methods,
            n_repeats=repeats,
            n_jobs=-1,
            progress=True,
        )

    t0 = time.perf_counter()
    result = benchmark.pedantic(run, rounds=1, iterations=1)
    wall = time.perf_counter() - t0
    result.results.to_csv(OUT / "simulated_screen_whole.csv", index=False)
    r = result.results
    fits = r[(r.metric == "fit_time") & (r.method == "w1ot")]
    assert len(fits) == n * repeats
    assert result.failures is None or result.failures.empty
    benchmark.extra_info["wall_s"] = wall
    print(
        f"{n} perturbations x {repeats} repeats fitted and scored in {wall:.0f} s "
        f"({wall / 60:.1f} min); W1OT fit {fits.value.mean():.2f} s on average"
    )
    for features in ("all", "top50"):
        t = _mmd_table(result, features)
        print(f"MMD on {features}, mean over runs: {t.mean().round(5).to_dict()}")
        assert t["w1ot"].mean() < t["mean_shift"].mean() < t["identity"].mean()
    if n >= 188 and repeats >= 5:
        assert wall < 3600, f"the screen took {wall / 60:.1f} min"


def _rss_peaks(fn, every: float = 0.05) -> tuple[float, float]:
    """Peak resident memory (MB) of this process above its level before ``fn()``, and of the
    largest child process (a loky worker), sampled while ``fn`` runs."""
    import threading

    import psutil

    me = psutil.Process()
    before = me.memory_info().rss
    peaks = [0, 0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peaks[0] = max(peaks[0], me.memory_info().rss - before)
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    peaks[1] = max(peaks[1], child.memory_info().rss)
            time.sleep(every)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return peaks[0] / 1e6, peaks[1] / 1e6


@pytest.mark.parametrize("n", [10, 40])
def test_peak_memory_grows_with_the_largest_perturbation(benchmark, n):
    """fit_many's memory above the AnnData it reads: the control cells, one perturbation's
    cells at a time and the fitted models; four times the perturbations must not take
    much more."""
    pytest.importorskip("psutil")
    adata = simulate_screen(n, N_CONTROL, N_PER, N_GENES, seed=0)

    def run():
        return w1ot.tl.fit_many(
            adata,
            condition_key="condition",
            control="control",
            n_jobs=2,
            progress=False,
            potential_iters=100,
            step_iters=100,
        )

    parent, worker = benchmark.pedantic(lambda: _rss_peaks(run), rounds=1, iterations=1)
    data = (adata.X.nbytes + adata.layers["counts"].nbytes) / 1e6
    PEAKS[n] = (parent, worker)
    benchmark.extra_info.update(parent_mb=parent, worker_mb=worker, data_mb=data)
    print(
        f"\n{n} perturbations ({data:.0f} MB of data): the parent's peak {parent:.0f} MB above "
        f"its level before fit_many, the largest worker's {worker:.0f} MB"
    )
    if len(PEAKS) == 2:
        (p10, w10), (p40, w40) = PEAKS[10], PEAKS[40]
        assert w40 < 1.2 * w10 + 20, "a worker's memory grew with the number of perturbations"
        assert p40 < 1.2 * p10 + 50, "the parent's memory grew with the number of perturbations"
