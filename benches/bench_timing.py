"""The timing suite: the W1 solver against the W2 baseline, engine for engine (the paper's
Fig. 4a and its 25-45x claim, measured here). Run with

    python -m pytest benches/bench_timing.py --benchmark-enable -q

(about 25 minutes on 2 cores, most of it the default W2 fit; ``-k "not full_fit"`` skips
the whole fits). It writes ``timing.csv``, ``timing.md`` and ``timing.png`` to
``$W1OT_BENCH_OUT`` (default ``benches/results``):

- seconds per 1,000 iterations of the W1 potential, the W1 step size (the paper's GAN) and
  the W2 outer iteration (10 g steps and one f step), at d = 2, 10, 50, 250 and 1000, in the
  feature space, batch 256 per side, 2 threads, with the GFLOP/s achieved;
- the same steps written in PyTorch (``benches/torch_reference.py``, as the paper's code and
  CellOT write them) in the same run when torch is installed (``pip install '.[bench]'``),
  skipped with a message when it is not;
- each solver fitted with its defaults (and with early stopping) at d = 50 on 5,000 cells
  per side, with the MMD it reaches on fresh cells, so "faster" is shown at equal quality.
- the latent mode's autoencoder (hidden [512, 512], latent 50): seconds per 1,000 training
  iterations at 50, 300 and 1,000 genes, Rust against the same model in PyTorch.

GFLOP/s use one count per step for both engines, the multiply-adds of the products the Rust
core performs (``w1ot._core.iteration_flops``); PyTorch's double backward does more, so its
figure is the useful work per second, and the ratio of two figures is the ratio of times.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from w1ot import W1OT, W2OT, _core, metrics

THREADS = 2
DIMS = [2, 10, 50, 250, 1000]
BATCH = 256
# Iterations per timed round (each round is then 0.1-2 s).
RUST_ITERS = {"w1_potential": 200, "w1_step_gan": 200, "w2": 20}
TORCH_ITERS = {"w1_potential": 40, "w1_step_gan": 40, "w2": 3}
OUT = Path(os.environ.get("W1OT_BENCH_OUT", Path(__file__).parent / "results"))

ROWS: list[dict] = []


def _data(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = (rng.standard_normal((n, d)) + 2.0 / np.sqrt(d)).astype(np.float32)
    return x, y


def _record(benchmark, solver: str, engine: str, d: int, iters: int) -> None:
    seconds = benchmark.stats.stats.min / iters
    if solver == "autoencoder":
        flops = _core.autoencoder_iteration_flops(d, batch_size=BATCH)
    else:
        flops = _core.iteration_flops(solver, d, batch_size=BATCH)
    row = {
        "solver": solver,
        "engine": engine,
        "d": d,
        "s_per_1000_iters": seconds * 1000,
        "gflops": flops / seconds / 1e9,
        "gflop_per_iter": flops / 1e9,
    }
    ROWS.append(row)
    benchmark.extra_info.update(row)


def _rust_runner(solver: str, d: int, iters: int):
    x, y = _data(2000, d)
    if solver == "w2":
        core = _core.W2Core(d)
        return lambda: core.fit(x, y, iters=iters, n_threads=THREADS)
    core = _core.W1Core(d)
    core.fit_potential(x, y, iters=20, n_threads=THREADS)
    if solver == "w1_potential":
        return lambda: core.fit_potential(x, y, iters=iters, n_threads=THREADS)
    return lambda: core.fit_step(x, y, iters=iters, loss="gan", n_threads=THREADS)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("solver", ["w1_potential", "w1_step_gan", "w2"])
def test_rust_iteration(benchmark, solver, d):
    iters = RUST_ITERS[solver]
    run = _rust_runner(solver, d, iters)
    run()  # warm-up: thread pool, page faults
    benchmark.pedantic(run, rounds=3, iterations=1)
    _record(benchmark, solver, "rust", d, iters)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("solver", ["w1_potential", "w1_step_gan", "w2"])
def test_torch_iteration(benchmark, solver, d):
    pytest.importorskip("torch", reason="the PyTorch peers need torch: pip install '.[bench]'")
    sys.path.insert(0, str(Path(__file__).parent))
    import torch_reference as ref

    ref.set_threads(THREADS)
    step = {"w1_potential": ref.w1_potential_step, "w1_step_gan": ref.w1_gan_step}.get(
        solver, ref.w2_outer_step
    )(d, BATCH)
    iters = TORCH_ITERS[solver]
    step()

    def run():
        for _ in range(iters):
            step()

    benchmark.pedantic(run, rounds=3, iterations=1)
    _record(benchmark, solver, "torch", d, iters)


# The autoencoder of the latent mode (hidden [512, 512], latent 50), at gene counts.
AE_DIMS = [50, 300, 1000]
AE_ITERS = {"rust": 50, "torch": 20}


@pytest.mark.parametrize("d", AE_DIMS)
def test_rust_autoencoder_iteration(benchmark, d):
    cells = np.abs(_data(1024, d)[0])
    core = _core.AutoencoderCore(d, seed=0)
    iters = AE_ITERS["rust"]

    def run():
        core.fit(cells, iters=iters, batch_size=BATCH, patience=None, n_threads=THREADS)

    run()
    benchmark.pedantic(run, rounds=3, iterations=1)
    _record(benchmark, "autoencoder", "rust", d, iters)


@pytest.mark.parametrize("d", AE_DIMS)
def test_torch_autoencoder_iteration(benchmark, d):
    pytest.importorskip("torch", reason="the PyTorch peers need torch: pip install '.[bench]'")
    sys.path.insert(0, str(Path(__file__).parent))
    import torch_reference as ref

    ref.set_threads(THREADS)
    step = ref.autoencoder_step(d, BATCH)
    iters = AE_ITERS["torch"]
    step()

    def run():
        for _ in range(iters):
            step()

    benchmark.pedantic(run, rounds=3, iterations=1)
    _record(benchmark, "autoencoder", "torch", d, iters)


FITS = {
    "W1OT": lambda **kw: W1OT(seed=0, n_threads=THREADS, **kw),
    "W2OT": lambda **kw: W2OT(seed=0, n_threads=THREADS, **kw),
}


@pytest.mark.parametrize("early_stopping", [False, True])
@pytest.mark.parametrize("solver", ["W1OT", "W2OT"])
def test_full_fit_d50(benchmark, solver, early_stopping):
    x, y = _data(5000, 50, seed=1)
    xt, yt = _data(2000, 50, seed=2)
    model = FITS[solver](early_stopping=early_stopping)
    t0 = time.perf_counter()
    benchmark.pedantic(lambda: model.fit(x, y), rounds=1, iterations=1)
    seconds = time.perf_counter() - t0
    h = model.history
    iters = (
        f"{len(h['potential_loss'])} + {len(h['step_loss'])}"
        if solver == "W1OT"
        else str(len(h["g_loss"]))
    )
    row = {
        "solver": solver,
        "engine": "rust",
        "d": 50,
        "early_stopping": early_stopping,
        "fit_s": seconds,
        "iterations": iters,
        "mmd_test": metrics.mmd(model.transport(xt), yt),
        "mmd_identity": metrics.mmd(xt, yt),
    }
    ROWS.append(row)
    benchmark.extra_info.update(row)


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    if ROWS:
        write_report(ROWS, OUT)


def write_report(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r})
    with open(out / "timing.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    (out / "timing.md").write_text(markdown(rows))
    try:
        plot(rows, out / "timing.png")
    except ImportError:
        pass


NAMES = {"w1_potential": "W1 potential", "w1_step_gan": "W1 step size (GAN)", "w2": "W2 outer"}


def markdown(rows: list[dict]) -> str:
    it = {
        (r["solver"], r["engine"], r["d"]): r
        for r in rows
        if "s_per_1000_iters" in r and r["solver"] in NAMES
    }
    lines = []
    if it:
        dims = sorted({k[2] for k in it})
        cols = [
            (s, e) for s in NAMES for e in ("rust", "torch") if any(k[:2] == (s, e) for k in it)
        ]
        head = ["d", *[f"{NAMES[s]}, {e}" for s, e in cols]]
        if all(("w2", "rust", d) in it and ("w1_potential", "rust", d) in it for d in dims):
            head.append("W2 / W1 potential, rust")
        if all(("w2", "torch", d) in it and ("w2", "rust", d) in it for d in dims):
            head.append("W2: torch / rust")
        lines += [
            "Seconds per 1,000 iterations (GFLOP/s), batch 256 per side, 2 threads:",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        for d in dims:
            cells = [str(d)]
            for s, e in cols:
                r = it.get((s, e, d))
                cells.append(f"{r['s_per_1000_iters']:.2f} ({r['gflops']:.0f})" if r else "-")
            if "W2 / W1 potential, rust" in head:
                ratio = (
                    it[("w2", "rust", d)]["s_per_1000_iters"]
                    / it[("w1_potential", "rust", d)]["s_per_1000_iters"]
                )
                cells.append(f"{ratio:.1f}x")
            if "W2: torch / rust" in head:
                ratio = (
                    it[("w2", "torch", d)]["s_per_1000_iters"]
                    / it[("w2", "rust", d)]["s_per_1000_iters"]
                )
                cells.append(f"{ratio:.1f}x")
            lines.append("| " + " | ".join(cells) + " |")
    ae = {(r["engine"], r["d"]): r for r in rows if r.get("solver") == "autoencoder"}
    if ae:
        lines += [
            "",
            "Autoencoder training iterations (hidden [512, 512], latent 50, batch 256, 2 threads),"
            " seconds per 1,000 (GFLOP/s):",
            "",
            "| genes | rust | torch | torch / rust |",
            "|---|---|---|---|",
        ]
        for d in sorted({k[1] for k in ae}):
            rust, torch = ae.get(("rust", d)), ae.get(("torch", d))
            cell = [
                f"{r['s_per_1000_iters']:.2f} ({r['gflops']:.0f})" if r else "-"
                for r in (rust, torch)
            ]
            ratio = (
                f"{torch['s_per_1000_iters'] / rust['s_per_1000_iters']:.1f}x"
                if rust and torch
                else "-"
            )
            lines.append(f"| {d} | {cell[0]} | {cell[1]} | {ratio} |")
    fits = [r for r in rows if "fit_s" in r]
    if fits:
        lines += [
            "",
            "Whole fits with defaults at d = 50, 5,000 cells per side (MMD on 2,000 fresh cells):",
            "",
            "| solver | early stopping | iterations | fit (s) | MMD | MMD of the identity |",
            "|---|---|---|---|---|---|",
        ]
        for r in fits:
            lines.append(
                f"| {r['solver']} | {'yes' if r['early_stopping'] else 'no'} | {r['iterations']} "
                f"| {r['fit_s']:.1f} | {r['mmd_test']:.5f} | {r['mmd_identity']:.5f} |"
            )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    styles = {"rust": "-", "torch": "--"}
    colors = {"w1_potential": "C0", "w1_step_gan": "C2", "w2": "C3"}
    for solver in NAMES:
        for engine in ("rust", "torch"):
            pts = sorted(
                (r["d"], r["s_per_1000_iters"] * 10)
                for r in rows
                if r.get("solver") == solver and r.get("engine") == engine and "gflops" in r
            )
            if pts:
                d, s = zip(*pts, strict=True)
                ax.plot(
                    d,
                    s,
                    styles[engine],
                    marker="o",
                    color=colors[solver],
                    label=f"{NAMES[solver]} ({engine})",
                )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("seconds per 10,000 iterations")
    ax.set_title("Training time against dimension (batch 256, 2 threads)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
