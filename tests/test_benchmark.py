"""Tests of w1ot.benchmark (the evaluation harness) and w1ot.preprocessing."""

import argparse
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from datafiles import read_dataset
from scipy.stats import mannwhitneyu

from w1ot import metrics
from w1ot.benchmark import (
    add_benchmark_parser,
    format_summary,
    mann_whitney,
    plot_benchmark,
    run_benchmark,
    run_benchmark_cli,
    summarize,
    test_size,
)
from w1ot.preprocessing import highly_variable_genes, normalize_log1p

anndata = pytest.importorskip("anndata")

BASELINES = ["identity", "observed", "mean_shift"]
COLUMNS = ["method", "perturbation", "holdout", "repeat", "features", "metric", "value"]


def make_adata(n_ctrl=600, n_a=700, n_b=300, d=8, seed=0, counts=False):
    """Control, perturbation A (features 0-2 shifted up) and B (feature 3 shifted down);
    a 'group' column with three groups, group 'g2' marked by +100 on the last feature."""
    rng = np.random.default_rng(seed)
    n = n_ctrl + n_a + n_b
    X = rng.normal(size=(n, d))
    cond = np.array(["ctrl"] * n_ctrl + ["A"] * n_a + ["B"] * n_b)
    X[cond == "A", :3] += 2.0
    X[cond == "B", 3] -= 1.5
    group = rng.choice(["g0", "g1", "g2"], size=n)
    X[group == "g2", -1] += 100.0
    if counts:
        X = rng.poisson(np.exp(np.clip(X, -3, 3))[:, :] + 1).astype(np.float32)
    obs = pd.DataFrame(
        {"condition": pd.Categorical(cond), "group": group}, index=[f"c{i}" for i in range(n)]
    )
    var = pd.DataFrame(index=[f"gene{j}" for j in range(d)])
    return anndata.AnnData(X=X.astype(np.float32), obs=obs, var=var)


def run(adata, **kw):
    kw.setdefault("methods", BASELINES)
    kw.setdefault("n_repeats", 2)
    kw.setdefault("progress", False)
    return run_benchmark(adata, "condition", "ctrl", **kw)


def quality(df):
    return df[df["metric"] != "fit_time"].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# split rule
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (2, 1),
        (3, 1),
        (100, 50),  # clip gives 500, capped at n // 2
        (936, 468),
        (999, 499),
        (1000, 500),
        (1039, 500),
        (2500, 500),
        (2600, 520),
        (4000, 800),
        (5000, 1000),
        (7137, 1000),
        (9798, 1000),
    ],
)
def test_test_size_clip_rule(n, expected):
    assert test_size(n) == expected
    assert n - test_size(n) >= n / 2  # train keeps at least half


def test_test_size_rejects_tiny():
    with pytest.raises(ValueError, match="at least 2"):
        test_size(1)
    assert test_size(1000, fraction=0.5, min_size=10, max_size=300) == 300


def test_split_sizes():
    ad = make_adata(n_ctrl=600, n_a=2600, n_b=300)
    res = run(ad, n_repeats=1)
    s = res.splits.set_index("perturbation")
    assert s.loc["A", "n_test_control"] == 300 and s.loc["A", "n_train_control"] == 300
    assert s.loc["A", "n_test_perturbed"] == 520 and s.loc["A", "n_train_perturbed"] == 2080
    assert s.loc["A", "n_observed_reference"] == 2080
    assert s.loc["A", "n_eval"] == 300
    assert s.loc["B", "n_test_perturbed"] == 150 and s.loc["B", "n_eval"] == 150


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------


def test_tidy_output(tmp_path):
    ad = make_adata()
    path = tmp_path / "res.csv"
    res = run(ad, output=path, energy=True)
    df = res.results
    assert list(df.columns) == COLUMNS
    # 3 methods x 2 perturbations x 2 repeats x (2 feature sets x 4 metrics + fit time)
    assert len(df) == 3 * 2 * 2 * (2 * 4 + 1)
    assert set(df["features"]) == {"all", "top50"}
    assert set(df["metric"]) == {"r2", "l2", "mmd", "energy", "fit_time"}
    assert set(df["holdout"]) == {""}
    assert list(dict.fromkeys(df["method"])) == BASELINES
    assert set(df["perturbation"]) == {"A", "B"} and set(df["repeat"]) == {0, 1}
    assert df["value"].notna().all()
    assert (df.loc[df["metric"] == "fit_time", "features"] == "all").all()
    # 8 features < 50: the top-50 set is all features
    both = df[df["metric"] != "fit_time"].pivot_table(
        index=["method", "perturbation", "repeat", "metric"], columns="features", values="value"
    )
    np.testing.assert_allclose(both["all"], both["top50"])
    back = pd.read_csv(path)
    assert list(back.columns) == COLUMNS and len(back) == len(df)
    np.testing.assert_allclose(back["value"], df["value"])


def test_metric_values_match_direct_computation():
    ad = make_adata()
    genes = [f"gene{j}" for j in range(7)]  # without the group marker
    res = run(ad, methods=["identity"], n_repeats=1, perturbations="A", genes=genes)
    s = res.splits.iloc[0]
    assert s["n_eval"] == min(s["n_test_control"], s["n_test_perturbed"])
    df = res.results.set_index(["features", "metric"])["value"]
    assert 0 <= df[("all", "r2")] <= 1 and df[("all", "mmd")] > 0.05
    # identity on A: the mean difference is about 2 on three features
    assert df[("all", "l2")] == pytest.approx(2 * np.sqrt(3), rel=0.1)


def test_baseline_ordering():
    res = run(make_adata(), n_repeats=1, perturbations="A")
    mmd = res.results.query("metric == 'mmd' and features == 'all'").set_index("method")["value"]
    assert mmd["observed"] < mmd["mean_shift"] < mmd["identity"]


def test_top_de_genes_are_the_perturbed_features():
    ad = make_adata(d=60)
    res = run(ad, n_repeats=1, top_k=5, perturbations=["A", "B"], rank_by="abs")
    assert set(res.results["features"]) == {"all", "top5"}
    top_a = res.de_genes[("A", "", 0)]
    assert len(top_a) == 5 and set(top_a[:3]) == {"gene0", "gene1", "gene2"}
    assert res.de_genes[("B", "", 0)][0] == "gene3"  # down-regulated: needs rank_by="abs"
    res = run(ad, n_repeats=1, top_k=5, perturbations="B")  # signed ranking favours up
    assert "gene3" not in res.de_genes[("B", "", 0)]


def test_determinism_and_seed():
    ad = make_adata()
    a = run(ad, seed=3)
    b = run(ad, seed=3)
    pd.testing.assert_frame_equal(quality(a.results), quality(b.results))
    c = run(ad, seed=4)
    assert not np.allclose(quality(a.results)["value"], quality(c.results)["value"])
    # a run's split and scores do not depend on which other perturbations are evaluated
    alone = run(ad, seed=3, perturbations=["B"])
    both = quality(a.results)
    pd.testing.assert_frame_equal(
        quality(alone.results), both[both["perturbation"] == "B"].reset_index(drop=True)
    )
    # repeats differ
    r = both.query("method == 'identity' and metric == 'mmd' and features == 'all'")
    assert r["value"].nunique() == len(r)


def test_summary():
    res = run(make_adata(), n_repeats=3)
    s = summarize(res.results)
    assert list(s.columns) == ["n", "mean", "std", "median", "worst"]
    assert s.index.names == ["features", "metric", "method"]
    df = res.results
    for metric, worst in (("r2", np.min), ("mmd", np.max)):
        v = df.query("features == 'all' and metric == @metric and method == 'mean_shift'")["value"]
        row = s.loc[("all", metric, "mean_shift")]
        assert row["n"] == 6
        assert row["mean"] == pytest.approx(v.mean())
        assert row["std"] == pytest.approx(v.std(ddof=1))
        assert row["median"] == pytest.approx(v.median())
        assert row["worst"] == pytest.approx(worst(v))
    per = res.summary(by=["perturbation"])
    assert per.loc[("A", "all", "mmd", "identity"), "n"] == 3
    text = format_summary(res)
    assert "features: all" in text and "fit_time" in text and "mean_shift" in text


def test_mann_whitney():
    res = run(make_adata(), n_repeats=3)
    mw = mann_whitney(res.results)
    assert list(mw.columns) == [
        "features",
        "metric",
        "method_a",
        "method_b",
        "n_a",
        "n_b",
        "median_a",
        "median_b",
        "u_statistic",
        "p_value",
        "better",
    ]
    assert len(mw) == 2 * 3 * 3  # feature sets x metrics x method pairs
    assert "fit_time" not in set(mw["metric"])
    row = mw.query("features == 'all' and metric == 'mmd' and method_a == 'identity'")
    row = row[row["method_b"] == "observed"].iloc[0]
    df = res.results.query("features == 'all' and metric == 'mmd'")
    x = df.loc[df["method"] == "identity", "value"]
    y = df.loc[df["method"] == "observed", "value"]
    ref = mannwhitneyu(x, y, alternative="two-sided")
    assert row["u_statistic"] == ref.statistic and row["p_value"] == pytest.approx(ref.pvalue)
    assert row["n_a"] == row["n_b"] == 6
    assert row["better"] == "observed" and row["p_value"] < 0.01
    r2 = mw.query("features == 'all' and metric == 'r2' and method_a == 'identity'")
    assert (r2["better"] != "identity").all()
    # against a reference method only
    mw = mann_whitney(res.results, reference="mean_shift", metrics=["mmd"], features="all")
    assert len(mw) == 2 and set(mw["method_a"]) == {"mean_shift"}
    assert set(mw["method_b"]) == {"identity", "observed"}
    with pytest.raises(ValueError, match="'nope'"):
        mann_whitney(res.results, reference="nope")
    # identical samples
    tiny = pd.DataFrame(
        {
            "method": ["a", "a", "b", "b"],
            "features": "all",
            "metric": "mmd",
            "value": [1.0, 1.0, 1.0, 1.0],
        }
    )
    out = mann_whitney(tiny)
    assert out["p_value"].iloc[0] == 1.0 and out["better"].iloc[0] == ""


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    res = run(make_adata(), n_repeats=2)
    path = tmp_path / "fig.png"
    fig = plot_benchmark(res.results, reference="mean_shift", path=path)
    assert path.stat().st_size > 1000
    assert len(fig.axes) == 3
    assert [ax.get_title()[:3] for ax in fig.axes] == ["$r^", "$l_", "MMD"]
    path2 = tmp_path / "fig2.png"
    run(make_adata(), n_repeats=1, figure=path2)  # written by run_benchmark
    assert path2.exists()


# --------------------------------------------------------------------------------------------
# data input
# --------------------------------------------------------------------------------------------


def test_sparse_input_matches_dense():
    ad = make_adata(counts=True)
    dense = run(ad, normalize=True)
    ad_sp = ad.copy()
    ad_sp.X = sp.csr_matrix(ad.X)
    sparse = run(ad_sp, normalize=True)
    pd.testing.assert_frame_equal(quality(dense.results), quality(sparse.results))
    # normalize=True is normalize_log1p applied beforehand
    ad_norm = ad.copy()
    ad_norm.X = normalize_log1p(ad.X)
    pre = run(ad_norm)
    pd.testing.assert_frame_equal(quality(dense.results), quality(pre.results))


def test_layer_genes_and_hvg():
    ad = make_adata(d=30)
    ad.layers["shifted"] = ad.X + 1.0
    res = run(ad, layer="shifted", genes=["gene0", "gene3", "gene1"], n_repeats=1)
    assert res.config["n_features"] == 3
    base = run(ad, genes=["gene0", "gene3", "gene1"], n_repeats=1)
    a = quality(res.results).set_index(["method", "perturbation", "features", "metric"])
    b = quality(base.results).set_index(["method", "perturbation", "features", "metric"])
    np.testing.assert_allclose(
        a.loc[(slice(None), slice(None), "all", "l2"), "value"],
        b.loc[(slice(None), slice(None), "all", "l2"), "value"],
        rtol=1e-5,
    )
    assert res.de_genes[("A", "", 0)] == ["gene0", "gene1", "gene3"]  # < top_k: all, in order
    hvg = run(ad, n_top_genes=10, n_repeats=1)
    assert hvg.config["n_features"] == 10
    with pytest.raises(ValueError, match=r"genes not in adata\.var_names"):
        run(ad, genes=["gene0", "nope"])
    with pytest.raises(ValueError, match="layer 'missing'"):
        run(ad, layer="missing")


# --------------------------------------------------------------------------------------------
# out-of-distribution mode
# --------------------------------------------------------------------------------------------


class Recorder:
    """A method that remembers what it was trained on (class-level log)."""

    log: ClassVar[list] = []

    def __init__(self, seed=0):
        self.seed = seed

    def fit(self, source, target):
        Recorder.log.append((np.asarray(source).copy(), np.asarray(target).copy(), self.seed))
        return self

    def transport(self, x):
        return np.asarray(x, dtype=float)


def test_ood_held_out_value_never_in_training():
    ad = make_adata()
    Recorder.log = []
    res = run(
        ad,
        methods={"rec": Recorder, "mean_shift": "mean_shift", "observed": "observed"},
        ood_column="group",
        ood_value="g2",
        n_repeats=2,
    )
    assert len(Recorder.log) == 2 * 2  # perturbations x repeats
    for source, target, _ in Recorder.log:
        assert source[:, -1].max() < 50 and target[:, -1].max() < 50  # no g2 cell
    assert set(res.results["holdout"]) == {"g2"}
    is_g2 = ad.obs["group"].to_numpy() == "g2"
    cond = ad.obs["condition"].to_numpy()
    s = res.splits.set_index(["perturbation", "repeat"])
    for p in ("A", "B"):
        n_ctrl_out = int(((cond == "ctrl") & is_g2).sum())
        n_pert_out = int(((cond == p) & is_g2).sum())
        row = s.loc[(p, 0)]
        assert row["n_test_control"] == n_ctrl_out
        assert row["n_train_control"] == int(((cond == "ctrl") & ~is_g2).sum())
        assert row["n_train_perturbed"] == int(((cond == p) & ~is_g2).sum())
        assert row["n_test_perturbed"] == test_size(n_pert_out)
        assert row["n_test_perturbed"] + row["n_observed_reference"] == n_pert_out
    mmd = res.results.query("metric == 'mmd' and features == 'all'").groupby("method")["value"]
    assert mmd.mean()["observed"] < mmd.mean()["rec"]  # rec is the identity


def test_ood_iterates_over_values():
    ad = make_adata()
    res = run(ad, ood_column="group", n_repeats=1, perturbations="A")
    assert set(res.results["holdout"]) == {"g0", "g1", "g2"}
    # a value with too few cells is skipped with a warning when iterating, an error if asked
    obs = ad.obs.copy()
    obs["group"] = np.where(np.arange(ad.n_obs) == 5, "rare", obs["group"])
    ad.obs = obs
    with pytest.warns(RuntimeWarning, match="'rare'.*skipped"):
        res = run(ad, ood_column="group", n_repeats=1, perturbations="A")
    assert "rare" not in set(res.results["holdout"])
    with pytest.raises(ValueError, match="'rare'"):
        run(ad, ood_column="group", ood_value="rare", perturbations="A")


# --------------------------------------------------------------------------------------------
# methods and validation
# --------------------------------------------------------------------------------------------


def test_custom_methods():
    ad = make_adata()

    class Shift:
        def __init__(self):
            self.fitted = False

        def fit(self, source, target):
            assert not self.fitted  # a fresh copy every run
            self.fitted = True
            self.d = target.mean(0) - source.mean(0)
            return self

        def transport(self, x):
            return x + self.d

    Recorder.log = []
    res = run(ad, methods=[Shift(), ("rec", Recorder), ("ms", "mean_shift")], n_repeats=2)
    assert list(dict.fromkeys(res.results["method"])) == ["Shift", "rec", "ms"]
    seeds = [s for *_, s in Recorder.log]
    assert len(set(seeds)) == len(seeds) == 4  # a factory taking `seed` gets a per-run seed
    with pytest.raises(ValueError, match="duplicate method name 'identity'"):
        run(ad, methods=["identity", "identity"])


def test_on_error_warn():
    class Broken:
        def fit(self, source, target):
            raise RuntimeError("boom")

        def transport(self, x):
            return x

    ad = make_adata()
    with pytest.raises(RuntimeError, match="boom"):
        run(ad, methods=[Broken()], n_repeats=1)
    with pytest.warns(RuntimeWarning, match="boom"):
        res = run(ad, methods=[Broken(), "identity"], n_repeats=1, on_error="warn")
    df = res.results
    assert df.loc[df["method"] == "Broken", "value"].isna().all()
    assert df.loc[df["method"] == "identity", "value"].notna().all()


def test_validation_errors():
    ad = make_adata()
    with pytest.raises(ValueError, match="unknown method 'foo'"):
        run(ad, methods=["identity", "foo"])
    with pytest.raises(ValueError, match=r"column 'cond' not in adata\.obs"):
        run_benchmark(ad, "cond", "ctrl", progress=False)
    with pytest.raises(ValueError, match="control label 'DMSO' not found"):
        run_benchmark(ad, "condition", "DMSO", methods=BASELINES, progress=False)
    with pytest.raises(ValueError, match="perturbation 'C' not found"):
        run(ad, perturbations=["A", "C"])
    with pytest.raises(ValueError, match=r"column 'patient' not in adata\.obs"):
        run(ad, ood_column="patient")
    with pytest.raises(ValueError, match="ood_value 'g9' not found"):
        run(ad, ood_column="group", ood_value="g9")
    with pytest.raises(ValueError, match="n_repeats"):
        run(ad, n_repeats=0)
    with pytest.raises(TypeError):
        run(ad, methods=["w1ot"], w1ot_kwargs={"not_an_option": 1})
    with pytest.raises(TypeError, match="AnnData-like"):
        run_benchmark(np.zeros((3, 3)), "condition", "ctrl")


def test_w1ot_method_runs_with_kwargs():
    ad = make_adata(n_ctrl=400, n_a=400, n_b=100, d=4)
    res = run(
        ad,
        methods=["identity", "w1ot"],
        perturbations="A",
        n_repeats=1,
        w1ot_kwargs={"potential_iters": 200, "step_iters": 200, "batch_size": 64},
    )
    df = res.results
    w = df[df["method"] == "w1ot"].set_index(["features", "metric"])["value"]
    assert w[("all", "fit_time")] > 0 and np.isfinite(w.to_numpy()).all()


def test_cli(tmp_path, capsys):
    ad = make_adata()
    h5 = tmp_path / "toy.h5ad"
    ad.write_h5ad(h5)
    parser = argparse.ArgumentParser(prog="w1ot")
    sub = parser.add_subparsers(dest="command", required=True)
    add_benchmark_parser(sub)
    out = tmp_path / "res.csv"
    args = parser.parse_args(
        [
            "benchmark",
            str(h5),
            "--condition",
            "condition",
            "--control",
            "ctrl",
            "--methods",
            "identity",
            "mean_shift",
            "--repeats",
            "2",
            "--perturbations",
            "A",
            "--out",
            str(out),
            "--reference",
            "mean_shift",
            "--quiet",
        ]
    )
    assert args.func is run_benchmark_cli
    assert run_benchmark_cli(args) == 0
    text = capsys.readouterr().out
    assert "features: all" in text and "Mann-Whitney" in text
    df = pd.read_csv(out)
    assert list(df.columns) == COLUMNS and set(df["method"]) == {"identity", "mean_shift"}


def test_cli_runs_the_w2_baseline_with_its_options(tmp_path, capsys):
    ad = make_adata()
    h5 = tmp_path / "toy.h5ad"
    ad.write_h5ad(h5)
    parser = argparse.ArgumentParser(prog="w1ot")
    add_benchmark_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "res.csv"
    argv = ["benchmark", str(h5), "--condition", "condition", "--control", "ctrl"]
    argv += ["--methods", "mean_shift", "w2ot", "--perturbations", "A", "--repeats", "1"]
    argv += ["--w2ot", "iters=30", "--w2ot", "batch_size=32", "--out", str(out), "--quiet"]
    args = parser.parse_args(argv)
    assert run_benchmark_cli(args) == 0
    df = pd.read_csv(out)
    assert set(df["method"]) == {"mean_shift", "w2ot"}
    w2 = df[(df["method"] == "w2ot") & (df["metric"] == "fit_time")]["value"]
    assert (w2 > 0).all()
    assert "w2ot" in capsys.readouterr().out
    with pytest.raises(ValueError, match="iters"):
        run_benchmark(ad, "condition", "ctrl", methods=["w2ot"], w2ot_kwargs={"iters": -1})


# --------------------------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------------------------


def test_normalize_log1p():
    X = np.array([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0], [2.0, 2.0, 4.0]])
    out = normalize_log1p(X)
    expected = np.log1p(np.array([[2500.0, 7500.0, 0.0], [0, 0, 0], [2500.0, 2500.0, 5000.0]]))
    np.testing.assert_allclose(out, expected)
    sparse = normalize_log1p(sp.csr_matrix(X), target_sum=1e4)
    assert sp.issparse(sparse)
    np.testing.assert_allclose(sparse.toarray(), expected)
    np.testing.assert_array_equal(X[0], [1.0, 3.0, 0.0])  # input untouched
    with pytest.raises(ValueError, match="negative"):
        normalize_log1p(-X)


def test_highly_variable_genes():
    rng = np.random.default_rng(0)
    lam = rng.uniform(1.0, 20.0, size=1000)
    counts = rng.poisson(lam, size=(300, 1000)).astype(float)
    noisy = [7, 21, 90, 150, 999]  # overdispersed (gamma-Poisson) genes with the same means
    counts[:, noisy] = rng.poisson(lam[noisy] * rng.gamma(0.5, 2.0, size=(300, 5)))
    ad = anndata.AnnData(
        X=normalize_log1p(counts), var=pd.DataFrame(index=[f"g{j}" for j in range(1000)])
    )
    expected = {f"g{j}" for j in noisy}
    assert set(highly_variable_genes(ad, 5)) == expected
    assert set(highly_variable_genes(ad, 5, flavor="variance")) == expected
    ad.layers["sp"] = sp.csr_matrix(ad.X)
    assert highly_variable_genes(ad, 10, layer="sp") == highly_variable_genes(ad, 10)
    assert len(highly_variable_genes(ad, 5000)) == 1000
    with pytest.raises(ValueError, match="layer 'nope'"):
        highly_variable_genes(ad, 5, layer="nope")
    with pytest.raises(ValueError, match="n_top"):
        highly_variable_genes(ad, 0)


# --------------------------------------------------------------------------------------------
# real data
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_bodenmiller_end_to_end(tmp_path):
    ad = read_dataset("bodenmiller2012_bcrxl_cytof.h5ad")
    assert set(ad.obs["condition"].astype(str)) == {"Ref", "BCRXL"}
    assert ad.layers["arcsinh_cof5"].shape[1] == 24
    res = run_benchmark(
        ad,
        "condition",
        "Ref",
        ["BCRXL"],
        layer="arcsinh_cof5",
        n_repeats=2,
        w1ot_kwargs={"potential_iters": 1500, "step_iters": 1500},
        progress=False,
        output=tmp_path / "bodenmiller.csv",
    )
    s = res.splits
    assert (s["n_test_control"] == 1000).all() and (s["n_test_perturbed"] == 1000).all()
    assert (s["n_train_control"] == 6137).all() and (s["n_train_perturbed"] == 8798).all()
    df = res.results[res.results["features"] == "all"]
    v = df.pivot_table(index="repeat", columns=["metric", "method"], values="value")
    for r in v.index:
        row = v.loc[r]
        assert row[("mmd", "w1ot")] < 0.5 * row[("mmd", "identity")]
        assert row[("l2", "w1ot")] < 0.75 * row[("l2", "identity")]
        for m in ("identity", "mean_shift", "w1ot"):
            assert row[("mmd", "observed")] < row[("mmd", m)]
    mw = res.mann_whitney(reference="w1ot", metrics=["mmd"], features="all")
    assert set(mw["method_b"]) == {"identity", "observed", "mean_shift"}


def test_kang_sparse_hvg_baselines():
    ad = read_dataset("kang2018_ifnb_pbmc.h5ad")
    assert sp.issparse(ad.X)
    res = run_benchmark(
        ad,
        "condition",
        "control",
        "stimulated",
        methods=BASELINES,
        n_top_genes=1000,
        n_repeats=1,
        progress=False,
    )
    assert res.config["n_features"] == 1000
    s = res.splits.iloc[0]
    assert s["n_test_control"] == 468 and s["n_test_perturbed"] == 500  # 936 / 1039 cells
    for feats in ("all", "top50"):
        df = res.results[(res.results["metric"] == "mmd") & (res.results["features"] == feats)]
        mmd = df.set_index("method")["value"]
        assert mmd["observed"] < mmd["mean_shift"] < mmd["identity"]
    assert len(res.de_genes[("stimulated", "", 0)]) == 50
    assert metrics.DEFAULT_GAMMAS.shape == (50,)
