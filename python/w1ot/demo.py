"""``w1ot demo``: W1OT with its defaults on embedded data, nothing downloaded.

- :func:`toy`: a 2-D toy dataset (moons by default), metrics and the paper's Fig. 2 picture.
- :func:`single_cell`: the perturbation simulator (:func:`w1ot.datasets.simulate_perturbation`),
  whose per-cell truth is known, through :mod:`w1ot.tl`; W1OT against mean shift and
  identity, per cell and per cell type.
"""

from __future__ import annotations

import time

import numpy as np

DEMO_DATASETS = ("moons", "circles", "swiss_roll", "bookshelf", "eight_gaussians", "checkerboard")


def toy(args) -> int:
    """The toy demo: W1OT with defaults on a 2-D dataset, metrics, a Fig. 2-style plot."""
    from w1ot import W1OT, metrics
    from w1ot.datasets import load_toy

    source, target = load_toy(args.dataset, n=args.n, seed=args.seed)[:2]
    # Fresh samples from the same distributions, to score the map out of sample.
    test_source, test_target = load_toy(args.dataset, n=args.n, seed=args.seed + 1)[:2]
    model = W1OT(
        potential_iters=args.iters,
        step_iters=args.iters,
        seed=args.seed,
        n_threads=args.threads,
        progress=not args.quiet,
    )
    print(f"w1ot demo: {args.dataset}, {args.n} source and {args.n} target cells, 2-D")
    t0 = time.perf_counter()
    model.fit(source, target)
    elapsed = time.perf_counter() - t0
    moved = model.transport(test_source)
    rows = [
        (
            "fit time (s)",
            f"{elapsed:.2f}  (potential {model.fit_time_['potential']:.2f}, "
            f"step size {model.fit_time_['step_size']:.2f})",
        ),
        ("dual W1 estimate", f"{model.w1_distance(test_source, test_target):.4f}"),
    ]
    try:
        k = min(args.n, 2000)
        rows.append(
            (
                "exact W1 (POT, 2,000 cells)",
                f"{metrics.wasserstein1(test_source[:k], test_target[:k]):.4f}",
            )
        )
    except ImportError:
        rows.append(("exact W1", "skipped (pip install pot)"))
    rows += [
        ("MMD(source, target)", f"{metrics.mmd(test_source, test_target):.5f}"),
        ("MMD(transported, target)", f"{metrics.mmd(moved, test_target):.5f}"),
        ("r2 of feature means", f"{metrics.r2_means(moved, test_target):.4f}"),
        ("l2 of feature means", f"{metrics.l2_means(moved, test_target):.4f}"),
    ]
    _print_rows(rows)
    if args.out:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            from w1ot.plotting import plot_potential, plot_transport
        except ImportError:
            print("  plot skipped: pip install 'w1ot[plot]'")
            return 0
        fig, axes = plt.subplots(1, 2, figsize=(11, 5))
        plot_transport(
            test_source,
            test_target,
            moved,
            ax=axes[0],
            markers=5,
            title=f"{args.dataset}: transport",
        )
        plot_potential(model.potential, test_source, test_target, ax=axes[1])
        axes[1].set_title("Kantorovich potential f")
        fig.tight_layout()
        fig.savefig(args.out, dpi=120)
        plt.close(fig)
        print(f"  plot written to {args.out}")
    return 0


def _print_rows(rows) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


def single_cell(args) -> int:
    """Fits the simulated perturbation through :mod:`w1ot.tl` on part of the control cells and
    scores the prediction of the others against their known perturbed state."""
    from w1ot import metrics, tl
    from w1ot.datasets import simulate_perturbation

    adata = simulate_perturbation(2 * args.n, args.n, args.genes, args.cell_types, seed=args.seed)
    control = np.flatnonzero(adata.obs["condition"].to_numpy() == "control")
    rng = np.random.default_rng(args.seed)
    test = np.sort(rng.choice(control, size=args.n, replace=False))
    train = np.setdiff1d(np.arange(adata.n_obs), test)
    fit_data, test_data = adata[train].copy(), adata[test].copy()
    truth = np.asarray(test_data.layers["truth"])
    source = np.asarray(test_data.X)
    keys = {"condition_key": "condition", "control": "control", "perturbation": "stimulated"}
    print(
        f"w1ot demo --single-cell: {args.n} control and {args.n} stimulated cells for fitting, "
        f"{args.genes} genes, {args.cell_types} cell types; {args.n} other control cells "
        "predicted and compared with their known perturbed state"
    )
    preds, times = {}, {}
    methods = (
        (
            "w1ot",
            {
                "potential_iters": args.iters,
                "step_iters": args.iters,
                "seed": args.seed,
                "n_threads": args.threads,
                "progress": not args.quiet,
            },
        ),
        ("mean_shift", {}),
        ("identity", {}),
    )
    for name, options in methods:
        t0 = time.perf_counter()
        model = tl.fit(fit_data, **keys, method=name, **options)
        times[name] = time.perf_counter() - t0
        preds[name] = np.asarray(tl.predict(model, test_data).X)
    types = test_data.obs["cell_type"].to_numpy()
    rows = [("", f"{'w1ot':>10}{'mean shift':>12}{'identity':>10}")]
    for label, fn in (
        ("per-cell error (L2)", lambda p: metrics.paired_error(p, truth)),
        ("MMD to the truth", lambda p: metrics.mmd(p, truth)),
        ("r2 of means", lambda p: metrics.r2_means(p, truth)),
    ):
        vals = [fn(preds[m]) for m, _ in methods]
        rows.append(
            (label, "".join(f"{v:>{w}.4f}" for v, w in zip(vals, (10, 12, 10), strict=True)))
        )
    rows.append(("fit time (s)", f"{times['w1ot']:>10.2f}"))
    _print_rows(rows)
    per_type = {
        m: {
            t: metrics.paired_error(preds[m][types == t], truth[types == t])
            for t in sorted(set(types))
        }
        for m, _ in methods
    }
    print("  per-cell error by cell type (response strength):")
    strength = adata.uns["simulation"].get("response_strength", {})
    for t in sorted(set(types)):
        vals = "".join(
            f"{per_type[m][t]:>{w}.3f}" for (m, _), w in zip(methods, (10, 12, 10), strict=True)
        )
        print(f"    {t} ({strength.get(t, float('nan')):.2f}){vals}")
    if args.out:
        _plot_single_cell(args.out, source, truth, preds, types, per_type)
    return 0


def _plot_single_cell(path, source, truth, preds, types, per_type) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  plot skipped: pip install 'w1ot[plot]'")
        return
    # Axes that show the perturbation: the main direction of the true displacements, then
    # the main direction of the control cells orthogonal to it.
    centre = source.mean(axis=0)
    u = np.linalg.svd(truth - source, full_matrices=False)[2][0]
    u *= np.sign(u @ (truth - source).mean(axis=0)) or 1.0
    rest = (source - centre) - np.outer((source - centre) @ u, u)
    v = np.linalg.svd(rest, full_matrices=False)[2][0]
    basis = np.stack([u, v])

    class _Axes:  # the two-vector projection, with PCA's encode interface
        @staticmethod
        def encode(x):
            return (np.asarray(x) - centre) @ basis.T

    pca = _Axes()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    names = {"w1ot": "W1OT", "mean_shift": "mean shift", "identity": "identity"}
    for ax, m in zip(axes[:2], ("w1ot", "mean_shift"), strict=True):
        t = pca.encode(truth)
        p = pca.encode(preds[m])
        ax.scatter(*pca.encode(source).T, s=3, c="#bbbbbb", label="control")
        ax.scatter(*t.T, s=3, c="#d62728", alpha=0.5, label="true perturbed state")
        ax.scatter(*p.T, s=3, c="#2ca02c", alpha=0.5, label=f"{names[m]} prediction")
        ax.set_title(
            f"{names[m]}: per-cell error {np.linalg.norm(preds[m] - truth, axis=1).mean():.2f}"
        )
        ax.set_xlabel("main direction of the true response")
        ax.set_ylabel("main direction of the control cells")
        ax.legend(markerscale=4, fontsize=8, loc="best")
    cell_types = sorted(set(types))
    x = np.arange(len(cell_types))
    for i, m in enumerate(("w1ot", "mean_shift", "identity")):
        axes[2].bar(x + (i - 1) * 0.27, [per_type[m][t] for t in cell_types], 0.27, label=names[m])
    axes[2].set_xticks(x, cell_types)
    axes[2].set_ylabel("mean per-cell error (L2, log-normalised)")
    axes[2].set_title("error against each cell's known perturbed state")
    axes[2].legend(fontsize=8)
    fig.suptitle("w1ot demo --single-cell: simulated cell-type-specific perturbation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"  plot written to {path}")
