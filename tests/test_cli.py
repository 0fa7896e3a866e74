"""The `w1ot` command: the demo runs end to end and writes its plot."""

from __future__ import annotations

import pytest

from w1ot.cli import main


def test_demo_prints_metrics_and_writes_the_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "demo.png"
    assert main(["demo", "--n", "400", "--iters", "150", "--quiet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for line in ("fit time", "dual W1 estimate", "MMD(transported, target)", "r2 of feature means"):
        assert line in text
    assert out.stat().st_size > 10_000


def test_demo_rejects_too_few_cells(capsys):
    assert main(["demo", "--n", "10"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--n must be at least 300" in err


def test_benchmark_subcommand_is_wired():
    with pytest.raises(SystemExit) as exc:
        main(["benchmark", "--help"])
    assert exc.value.code == 0


# -- fit / predict -----------------------------------------------------------------------

QUICK = ["--w1ot", "potential_iters=200", "--w1ot", "step_iters=200", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def h5ad(tmp_path_factory):
    pytest.importorskip("anndata")
    from w1ot.datasets import simulate_perturbation

    path = tmp_path_factory.mktemp("cli") / "sim.h5ad"
    simulate_perturbation(500, 500, 60, 2, seed=0).write_h5ad(path)
    return path


def _fit_args(h5ad, out, *extra):
    return [
        "fit",
        "--h5ad",
        str(h5ad),
        "--condition-key",
        "condition",
        "--control",
        "control",
        "--perturbation",
        "stimulated",
        "--out",
        str(out),
        *extra,
    ]


def test_fit_then_predict_end_to_end(h5ad, tmp_path, capsys):
    import anndata

    model = tmp_path / "stim.w1ot"
    assert main(_fit_args(h5ad, model, *QUICK, "--w1ot", "early_stopping=false")) == 0
    assert "model written to" in capsys.readouterr().out
    pred_path = tmp_path / "pred.h5ad"
    args = ["predict", "--model", str(model), "--h5ad", str(h5ad), "--out", str(pred_path)]
    assert main(args) == 0
    pred = anndata.read_h5ad(pred_path)
    assert pred.n_obs == 500 and set(pred.obs["condition"]) == {"stimulated (predicted)"}
    from w1ot import tl

    fitted = tl.load(model)
    assert fitted.early_stopping is False and fitted.potential_iters == 200


def test_python_m_w1ot_and_version():
    import subprocess
    import sys

    from w1ot import __version__

    out = subprocess.run(
        [sys.executable, "-m", "w1ot", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"w1ot {__version__}"


def _mistakes(h5ad, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a model\n")
    model = tmp_path / "m.w1ot"
    fit = lambda *extra: _fit_args(h5ad, model, *QUICK, *extra)  # noqa: E731
    swap = lambda i, v: [v if k == i else a for k, a in enumerate(fit())]  # noqa: E731
    return {
        "missing file": (swap(2, str(tmp_path / "nope.h5ad")), "no such file"),
        "not an h5ad": (swap(2, str(text)), "not a readable .h5ad file"),
        "unknown column": (swap(4, "drug"), "condition-key='drug' is not a column"),
        "unknown label": (swap(8, "stim"), "perturbation='stim' is not a value"),
        "bad option value": (fit("--w1ot", "early_stopping=maybe"), "early_stopping must be"),
        "unknown option": (fit("--w1ot", "potential_iter=5"), "W1OT has no option"),
        "no KEY=VALUE": (fit("--w1ot", "potential_iters"), "expected KEY=VALUE"),
        "wrong flag": (fit("--w2ot", "iters=5"), "--w2ot options given, but --method is w1ot"),
        "too few cells": (fit("--w1ot", "batch_size=5000"), "batch_size=5000 exceeds"),
        "unknown layer": (fit("--layer", "logcounts"), "layer='logcounts' is not in"),
        "not a model": (
            ["predict", "--model", str(text), "--h5ad", str(h5ad), "--out", str(model)],
            "not a w1ot model file",
        ),
        "missing argument": (["fit", "--h5ad", str(h5ad)], "the following arguments are required"),
        "bad choice": (fit("--method", "cellot"), "invalid choice"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "not an h5ad",
        "unknown column",
        "unknown label",
        "bad option value",
        "unknown option",
        "no KEY=VALUE",
        "wrong flag",
        "too few cells",
        "unknown layer",
        "not a model",
        "missing argument",
        "bad choice",
    ],
)
def test_every_user_mistake_is_one_line_and_a_nonzero_exit(h5ad, tmp_path, capsys, case):
    argv, needle = _mistakes(h5ad, tmp_path)[case]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code != 0
    assert needle in err, err
    assert err.strip().count("\n") == 0, err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(h5ad, tmp_path):
    with pytest.raises(ValueError, match="is not a value"):
        main(_fit_args(h5ad, tmp_path / "m.w1ot", "--perturbation", "stim", "--debug"))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("false", False),
        ("False", False),
        ("no", False),
        ("TRUE", True),
        ("on", True),
        ("none", None),
        ("1e-3", 1e-3),
        ("1000", 1000),
        ("64,64", (64, 64)),
        ("[32, 32]", [32, 32]),
        ("gan", "gan"),
    ],
)
def test_option_values_are_parsed_strictly(text, value):
    from w1ot.cli import parse_value

    assert parse_value(text) == value
    assert type(parse_value(text)) is type(value)


def test_single_cell_demo_reports_per_cell_errors_and_writes_the_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("anndata")
    out = tmp_path / "sc.png"
    argv = ["demo", "--single-cell", "--n", "500", "--iters", "500"]
    assert main([*argv, "--quiet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "per-cell error (L2)" in text and "by cell type" in text
    errors = [float(v) for v in text.split("per-cell error (L2)")[1].split()[:3]]
    assert errors[0] < errors[1] < errors[2]  # w1ot, then mean shift, beat identity
    assert out.stat().st_size > 10_000


def test_benchmark_mistakes_are_one_line_too(h5ad, tmp_path, capsys):
    base = ["benchmark", "--h5ad", str(h5ad), "--condition-key", "condition"]
    base += ["--control", "control", "--methods", "w1ot", "--repeats", "1", "--quiet"]
    cases = {
        "unknown option": ([*base, "--w1ot", "potential_iter=5"], "W1OT has no option"),
        "no file": (["benchmark", "--condition", "c", "--control", "x"], "give the .h5ad file"),
        "missing file": ([*base[:2], str(tmp_path / "x.h5ad"), *base[3:]], "no such file"),
        "unknown label": ([*base, "--perturbations", "stim"], "stim"),
        "negative first repeat": ([*base, "--first-repeat", "-1"], "first_repeat"),
    }
    for argv, needle in cases.values():
        assert main(argv) != 0
        err = capsys.readouterr().err
        assert needle in err and err.strip().count("\n") == 0, err
