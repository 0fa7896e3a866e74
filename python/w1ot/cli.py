"""The ``w1ot`` command: ``fit`` and ``predict`` on .h5ad files, ``benchmark`` (the paper's
evaluation protocol) and ``demo``.

A user mistake (a missing file, an unknown column or label, a bad option value) prints one
line on stderr and exits non-zero; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


class UsageError(Exception):
    """A mistake in the command line or its files: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (usage is one ``--help`` away)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def parse_value(text: str) -> Any:
    """An option value given as text: true/false/yes/no/on/off (any case) are booleans,
    none/null is None, Python literals (numbers, lists, tuples, quoted strings) are
    themselves, anything else is the text."""
    t = text.strip()
    if t.lower() in _WORDS:
        return _WORDS[t.lower()]
    if t.lower() in ("none", "null"):
        return None
    try:
        return ast.literal_eval(t)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return t


def parse_options(specs: Sequence[str], flag: str, cls=None) -> dict[str, Any]:
    """``KEY=VALUE`` texts as keyword arguments; with ``cls``, every key must be one of its
    constructor's keyword arguments."""
    known = None
    if cls is not None:
        known = [p for p in inspect.signature(cls).parameters if p != "self"]
    out: dict[str, Any] = {}
    for spec in specs:
        key, sep, val = spec.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"{flag} {spec!r}: expected KEY=VALUE")
        if known is not None and key not in known:
            raise UsageError(
                f"{flag} {spec!r}: {cls.__name__} has no option {key!r} "
                f"(options: {', '.join(known)})"
            )
        out[key] = parse_value(val)
    return out


def read_h5ad(path: str, flag: str = "--h5ad"):
    """An AnnData read from ``path``; a missing or unreadable file is a :class:`UsageError`."""
    try:
        import anndata
    except ImportError as exc:
        raise UsageError("reading .h5ad files needs anndata: pip install 'w1ot[anndata]'") from exc
    if not os.path.isfile(path):
        raise UsageError(f"{flag} {path}: no such file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # anndata's notes on old layouts
        try:
            return anndata.read_h5ad(path)
        except Exception as exc:  # h5py and anndata raise many types for a foreign file
            raise UsageError(f"{flag} {path}: not a readable .h5ad file ({exc})") from exc


# --------------------------------------------------------------------------------------------
# benchmark
# --------------------------------------------------------------------------------------------


def add_benchmark_parser(subparsers) -> argparse.ArgumentParser:
    from w1ot.benchmark import DEFAULT_METHODS

    """Adds the ``benchmark`` subcommand to an argparse ``subparsers`` object; the parsed
    arguments go to :func:`run_benchmark_cli` (also set as the ``func`` default)."""
    p = subparsers.add_parser(
        "benchmark",
        help="run the paper's evaluation protocol on an .h5ad file",
        description="Train/test splits per perturbation and repeat, baselines and W1OT, "
        "metrics on all and on the top-k DE features, Mann-Whitney tests.",
    )
    p.add_argument("data", nargs="?", help="AnnData .h5ad file (or --h5ad)")
    p.add_argument("--h5ad", help="AnnData .h5ad file")
    p.add_argument(
        "--condition-key",
        "--condition",
        dest="condition",
        required=True,
        help="obs column with the condition labels",
    )
    p.add_argument("--control", required=True, help="control label")
    p.add_argument("--perturbations", nargs="+", help="perturbation labels (default: all)")
    p.add_argument(
        "--methods", nargs="+", default=list(DEFAULT_METHODS), help="(default: %(default)s)"
    )
    p.add_argument("--layer", help="use adata.layers[LAYER] instead of X")
    p.add_argument("--normalize", action="store_true", help="raw counts: normalise + log1p")
    p.add_argument("--hvg", type=int, help="restrict to the top HVG genes")
    p.add_argument("--genes-file", help="file with one gene (var name) per line")
    p.add_argument(
        "--obs-filter",
        action="append",
        default=[],
        metavar="COLUMN=VALUE",
        help="keep only cells with str(obs[COLUMN]) == VALUE (repeatable)",
    )
    p.add_argument("--repeats", type=int, default=5, help="repeats per perturbation (5)")
    p.add_argument(
        "--first-repeat", type=int, default=0, help="index of the first repeat (0): run in pieces"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top-k", type=int, default=50, help="DE features (50)")
    p.add_argument("--rank-by", choices=("score", "abs"), default="score")
    p.add_argument("--energy", action="store_true", help="also compute the energy distance")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--min-test", type=int, default=500)
    p.add_argument("--max-test", type=int, default=1000)
    p.add_argument("--iters", type=int, help="W1OT iterations of both stages")
    p.add_argument("--threads", type=int, default=0, help="solver threads (0: all cores)")
    p.add_argument(
        "--n-jobs",
        type=int,
        default=1,
        help="worker processes for the fits (default 1; -1: one per core); each gets an "
        "equal share of the cores, and the results do not depend on it",
    )
    _add_solver_flags(p)
    p.add_argument("--ood-column", help="o.o.d. mode: obs column of the held-out groups")
    p.add_argument("--ood-value", action="append", help="held-out value (repeatable; default: all)")
    p.add_argument("--reference", default="w1ot", help="method tested against the others")
    p.add_argument("--out", help="write the tidy results to this CSV")
    p.add_argument("--summary-out", help="write the summary table to this CSV")
    p.add_argument("--figure", help="write the box-plot figure to this file (PNG, PDF)")
    p.add_argument(
        "--on-error",
        choices=("warn", "raise"),
        default="warn",
        help="a perturbation or method that cannot be evaluated: warn and go on with the "
        "others (default), or stop with the error",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _debug_flag(p)
    p.set_defaults(func=run_benchmark_cli)
    return p


def run_benchmark_cli(args: argparse.Namespace) -> int:
    """Runs ``w1ot benchmark`` with parsed arguments; prints the summary and the tests."""
    import pandas as pd

    from w1ot.benchmark import format_summary, run_benchmark
    from w1ot.solvers import W1OT, W2OT

    if (args.data is None) == (args.h5ad is None):
        raise UsageError("give the .h5ad file once: as the first argument or with --h5ad")
    path = args.data or args.h5ad
    kwargs: dict[str, Any] = {"n_threads": args.threads}
    if args.iters is not None:
        kwargs["potential_iters"] = kwargs["step_iters"] = args.iters
    kwargs.update(parse_options(args.w1ot, "--w1ot", W1OT))
    w2_kwargs: dict[str, Any] = {"n_threads": args.threads}
    w2_kwargs.update(parse_options(args.w2ot, "--w2ot", W2OT))
    adata = read_h5ad(path, "the .h5ad file" if args.data else "--h5ad")
    for spec in args.obs_filter:
        col, sep, val = spec.partition("=")
        if not sep or col not in adata.obs.columns:
            raise UsageError(f"--obs-filter {spec!r}: expected COLUMN=VALUE with an obs column")
        adata = adata[adata.obs[col].astype(str).to_numpy() == val]
    genes = None
    if args.genes_file:
        try:
            with open(args.genes_file) as fh:
                genes = [g.strip() for g in fh if g.strip()]
        except OSError as exc:
            raise UsageError(f"--genes-file {args.genes_file}: cannot read it ({exc})") from exc
    ood_value = args.ood_value
    if ood_value is not None and len(ood_value) == 1:
        ood_value = ood_value[0]
    res = run_benchmark(
        adata,
        args.condition,
        args.control,
        args.perturbations,
        methods=args.methods,
        n_repeats=args.repeats,
        first_repeat=args.first_repeat,
        layer=args.layer,
        genes=genes,
        n_top_genes=args.hvg,
        normalize=args.normalize,
        w1ot_kwargs=kwargs,
        w2ot_kwargs=w2_kwargs,
        test_fraction=args.test_fraction,
        min_test=args.min_test,
        max_test=args.max_test,
        top_k=args.top_k,
        rank_by=args.rank_by,
        energy=args.energy,
        ood_column=args.ood_column,
        ood_value=ood_value,
        seed=args.seed,
        on_error=args.on_error,
        n_jobs=args.n_jobs,
        progress=not args.quiet,
        output=args.out,
        figure=args.figure,
        dataset=Path(path).stem,
    )
    print(format_summary(res))
    ref = args.reference if args.reference in res.config["methods"] else None
    tests = res.mann_whitney(reference=ref)
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print("\nMann-Whitney (two-sided):")
        print(tests.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.summary_out:
        res.summary().to_csv(args.summary_out)
    if res.failures is not None and len(res.failures):
        print(f"\nnot evaluated ({len(res.failures)}):")
        for msg in res.failures["error"]:
            print(f"  {msg}")
    for what, path in (("results", args.out), ("figure", args.figure)):
        if path:
            print(f"{what} written to {path}")
    return 0


# --------------------------------------------------------------------------------------------
# fit / predict
# --------------------------------------------------------------------------------------------

_SOLVER_FLAGS = {"w1ot": "--w1ot", "w2ot": "--w2ot"}


def _add_solver_flags(p: argparse.ArgumentParser) -> None:
    """``--w1ot`` / ``--w2ot KEY=VALUE``: the solvers' keyword arguments (repeatable)."""
    examples = {"w1ot": "step_lr=1e-3", "w2ot": "iters=20000"}
    for method, flag in _SOLVER_FLAGS.items():
        p.add_argument(
            flag,
            dest=method,
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"a {method.upper()} keyword argument for the {method!r} method, e.g. "
            f"{examples[method]} (repeatable)",
        )


def _method_options(args: argparse.Namespace) -> dict[str, Any]:
    from w1ot.tl import _estimator

    for method, flag in _SOLVER_FLAGS.items():
        if getattr(args, method) and args.method != method:
            raise UsageError(f"{flag} options given, but --method is {args.method}")
    cls = type(_estimator(args.method, {}))
    if args.method in _SOLVER_FLAGS:
        options = parse_options(getattr(args, args.method), _SOLVER_FLAGS[args.method], cls)
        options.setdefault("n_threads", args.threads)
        options.setdefault("progress", not args.quiet)
    else:
        options = {}
    if "seed" in inspect.signature(cls).parameters:
        options.setdefault("seed", args.seed)
    return options


def _genes(args: argparse.Namespace, adata):
    if args.genes and args.hvg:
        raise UsageError("pass --genes or --hvg, not both")
    if args.hvg:
        from w1ot.preprocessing import highly_variable_genes

        if args.obsm_key:
            raise UsageError("--hvg selects genes; it cannot be used with --obsm-key")
        return highly_variable_genes(adata, args.hvg, layer=args.layer)
    if not args.genes:
        return None
    if args.genes in adata.var.columns:
        return args.genes
    if os.path.isfile(args.genes):
        with open(args.genes) as fh:
            return [g.strip() for g in fh if g.strip()]
    raise UsageError(f"--genes {args.genes}: neither a column of adata.var nor a file of genes")


def _fit(args: argparse.Namespace) -> int:
    from w1ot import tl

    options = _method_options(args)
    adata = read_h5ad(args.h5ad)
    genes = _genes(args, adata)
    t0 = time.perf_counter()
    model = tl.fit(
        adata,
        condition_key=args.condition_key,
        control=_label(adata, args.condition_key, args.control),
        perturbation=_label(adata, args.condition_key, args.perturbation),
        layer=args.layer,
        obsm_key=args.obsm_key,
        genes=genes,
        method=args.method,
        **options,
    )
    elapsed = time.perf_counter() - t0
    try:
        model.save(args.out)
    except OSError as exc:
        raise UsageError(f"--out {args.out}: cannot write the model ({exc})") from exc
    spec = model.fitted_on_
    from w1ot._anndata import Representation

    rep = Representation.from_dict(spec["representation"])
    print(
        f"fitted {type(model).__name__} of {spec['perturbation']!s} on "
        f"{spec['n_cells']['control']} {spec['control']!s} and "
        f"{spec['n_cells']['perturbation']} {spec['perturbation']!s} cells "
        f"({rep.describe()}) in {elapsed:.1f} s; model written to {args.out}"
    )
    return 0


def _label(adata, key: str, text: str):
    """The obs label that ``text`` names (labels may be numbers in the file)."""
    from w1ot._anndata import labels

    values = labels(adata, key, "--condition-key")
    for v in dict.fromkeys(values.tolist()):
        if str(v) == text:
            return v
    return text  # tl.fit reports it with the labels present


def _predict(args: argparse.Namespace) -> int:
    from w1ot import tl
    from w1ot.io import ModelFileError

    if not os.path.isfile(args.model):
        raise UsageError(f"--model {args.model}: no such file")
    try:
        model = tl.load(args.model)
    except ModelFileError as exc:
        raise UsageError(f"--model {args.model}: {exc}") from exc
    adata = read_h5ad(args.h5ad)
    pred = tl.predict(model, adata, key_added=args.key_added)
    try:
        pred.write_h5ad(args.out)
    except OSError as exc:
        raise UsageError(f"--out {args.out}: cannot write ({exc})") from exc
    spec = model.fitted_on_
    print(
        f"predicted {pred.n_obs} cells of {spec['perturbation']!s} from {spec['control']!s} "
        f"cells; written to {args.out}"
    )
    return 0


def _add_fit_parser(sub) -> None:
    from w1ot.tl import METHODS

    p = sub.add_parser(
        "fit",
        help="fit a perturbation model on an .h5ad file and save it",
        description="Fit one perturbation (control -> perturbed cells of an .h5ad file) and "
        "write the model, which remembers the representation, genes and labels.",
    )
    p.add_argument("--h5ad", required=True, help="AnnData file with control and perturbed cells")
    p.add_argument("--condition-key", required=True, help="obs column of the condition labels")
    p.add_argument("--control", required=True, help="control label")
    p.add_argument("--perturbation", required=True, help="perturbation label")
    p.add_argument("--out", required=True, help="model file to write (e.g. model.w1ot)")
    p.add_argument("--method", choices=METHODS, default="w1ot", help="(default: %(default)s)")
    p.add_argument("--layer", help="use adata.layers[LAYER] instead of X")
    p.add_argument("--obsm-key", help="use the embedding adata.obsm[OBSM_KEY]")
    p.add_argument("--genes", help="a boolean var column (highly_variable) or a file of genes")
    p.add_argument("--hvg", type=int, help="use the top HVG most variable genes")
    _add_solver_flags(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="solver threads (0: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _debug_flag(p)
    p.set_defaults(func=_fit)


def _add_predict_parser(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="predict perturbed cells from control cells with a saved model",
        description="Predict the perturbed state of the control cells of an .h5ad file (all "
        "its cells if it has no condition column) and write them as a new .h5ad.",
    )
    p.add_argument("--model", required=True, help="model file written by w1ot fit")
    p.add_argument("--h5ad", required=True, help="AnnData file with the control cells")
    p.add_argument("--out", required=True, help=".h5ad file to write the predictions to")
    p.add_argument("--key-added", default="w1ot", help="prefix of the added columns (w1ot)")
    _debug_flag(p)
    p.set_defaults(func=_predict)


def _add_demo_parser(sub) -> None:
    from w1ot.datasets import TOY_DATASETS
    from w1ot.demo import DEMO_DATASETS

    demo = sub.add_parser(
        "demo",
        help="train on embedded data (a toy dataset, or simulated cells) and report metrics",
        description="W1OT with its defaults on a 2-D toy dataset (default: moons), or with "
        "--single-cell on simulated scRNA-seq whose per-cell truth is known, against mean "
        "shift and identity. Nothing is downloaded.",
    )
    demo.add_argument("--single-cell", action="store_true", help="simulated scRNA-seq instead")
    demo.add_argument(
        "--dataset", default="moons", choices=sorted(set(DEMO_DATASETS) & set(TOY_DATASETS))
    )
    demo.add_argument("--n", type=int, default=2000, help="cells per side (default 2000)")
    demo.add_argument("--genes", type=int, default=300, help="--single-cell: genes (300)")
    demo.add_argument("--cell-types", type=int, default=4, help="--single-cell: cell types (4)")
    demo.add_argument(
        "--iters", type=int, default=10_000, help="iterations per stage (default 10000)"
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=0, help="worker threads (0: all cores)")
    demo.add_argument("--out", help="PNG to write ('' for none; default w1ot_demo.png)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    _debug_flag(demo)
    demo.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from w1ot import demo

    if args.n < 300:
        raise UsageError("--n must be at least 300 (the default batch of 256 plus held-out cells)")
    if args.out is None:
        args.out = "w1ot_demo_single_cell.png" if args.single_cell else "w1ot_demo.png"
    np.seterr(all="ignore")
    return demo.single_cell(args) if args.single_cell else demo.toy(args)


def _debug_flag(p) -> None:
    p.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback of an error",
    )


def build_parser() -> argparse.ArgumentParser:
    from w1ot import __version__

    parser = _Parser(prog="w1ot", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"w1ot {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_fit_parser(sub)
    _add_predict_parser(sub)
    add_benchmark_parser(sub)
    _add_demo_parser(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"w1ot: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Runs the ``w1ot`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.debug:
        return args.func(args)
    from w1ot.io import ModelFileError
    from w1ot.solvers import TrainingError

    previous = warnings.showwarning
    warnings.showwarning = _one_line_warning
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"w1ot {args.command}: interrupted", file=sys.stderr)
        return 130
    except (UsageError, ModelFileError, TrainingError, ValueError, TypeError, OSError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        print(f"w1ot {args.command}: error: {text}", file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    sys.exit(main())
