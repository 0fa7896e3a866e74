"""The ``w1ot`` command.

``w1ot demo`` trains a W1OT model with the default settings on a toy dataset, prints the
fit time and the quality metrics, and writes a Fig. 2-style plot of the transport.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from w1ot.datasets import TOY_DATASETS, load_toy

DEMO_DATASETS = ("moons", "circles", "swiss_roll", "bookshelf", "eight_gaussians", "checkerboard")


def _demo(args: argparse.Namespace) -> int:
    from w1ot import W1OT, metrics

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
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="w1ot", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train on a toy dataset and report metrics and timing")
    demo.add_argument(
        "--dataset", default="moons", choices=sorted(set(DEMO_DATASETS) & set(TOY_DATASETS))
    )
    demo.add_argument("--n", type=int, default=2000, help="cells per side (default 2000)")
    demo.add_argument(
        "--iters", type=int, default=10_000, help="iterations per stage (default 10000)"
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=0, help="worker threads (0: all cores)")
    demo.add_argument("--out", default="w1ot_demo.png", help="PNG to write ('' for none)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    from w1ot.benchmark import add_benchmark_parser

    add_benchmark_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "benchmark":
        return args.func(args)
    if args.n < 300:
        parser.error("--n must be at least 300 (the default batch of 256 plus held-out cells)")
    np.seterr(all="ignore")
    return _demo(args)


if __name__ == "__main__":
    sys.exit(main())
