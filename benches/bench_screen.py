"""Whole screens: ``w1ot.tl.fit_many`` on both cores in two worker processes against the same
fits one after another, each on both cores (the 8 largest Papalexi targets), with W1OT's full
defaults and with fit_many's screen defaults. Run with

    W1OT_DATA=../shared/data python -m pytest benches/bench_screen.py --benchmark-enable -s

(about 4 minutes on 2 cores). It prints the wall times and, for each kind of defaults, their
ratio; the goal is a ratio under 0.75.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import w1ot

DATA = Path(
    os.environ.get("W1OT_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)
N_TARGETS = 8
WALL: dict[tuple[bool, int], float] = {}


@pytest.fixture(scope="module")
def screen():
    path = DATA / "papalexi2021_crispr_ko.h5ad"
    if not path.exists():
        pytest.skip(f"{path} not found: set W1OT_DATA to the shared data folder")
    import anndata

    adata = anndata.read_h5ad(path)
    adata = adata[adata.obs["assigned"].astype(bool).to_numpy()].copy()
    w1ot.pp.normalize_log1p(adata)
    counts = adata.obs["target"].value_counts().drop("non-targeting")
    return adata, list(counts.index[:N_TARGETS])


@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize("screen_defaults", [False, True], ids=["full", "screen_defaults"])
def test_fit_many_papalexi(benchmark, screen, screen_defaults, n_jobs):
    adata, targets = screen

    def run():
        return w1ot.tl.fit_many(
            adata,
            condition_key="target",
            control="non-targeting",
            perturbations=targets,
            n_jobs=n_jobs,
            progress=False,
            seed=0,
            screen_defaults=screen_defaults,  # False: W1OT's full fits
        )

    t0 = time.perf_counter()
    col = benchmark.pedantic(run, rounds=1, iterations=1)
    wall = WALL[screen_defaults, n_jobs] = time.perf_counter() - t0
    assert list(col) == targets and not col.failures
    benchmark.extra_info["wall_s"] = wall
    kind = "screen defaults" if screen_defaults else "full defaults"
    print(f"\nfit_many, {len(targets)} Papalexi targets, {kind}, n_jobs={n_jobs}: {wall:.1f} s")
    if (screen_defaults, 1) in WALL and (screen_defaults, 2) in WALL:
        ratio = WALL[screen_defaults, 2] / WALL[screen_defaults, 1]
        benchmark.extra_info["ratio_n_jobs_2_over_1"] = ratio
        print(f"n_jobs=2 / n_jobs=1: {ratio:.2f}x (goal: under 0.75x)")
