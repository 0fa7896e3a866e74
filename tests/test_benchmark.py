"""Tests of w1ot.benchmark (the evaluation harness) and w1ot.preprocessing."""

import argparse
import math
import warnings
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from datafiles import read_dataset
from scipy.stats import mannwhitneyu

from w1ot import metrics
from w1ot.benchmark import (
    format_summary,
    mann_whitney,
    plot_benchmark,
    run_benchmark,
    summarize,
    test_size,
)
from w1ot.cli import add_benchmark_parser, run_benchmark_cli
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


def test_first_repeat_runs_a_benchmark_in_pieces():
    ad = make_adata()
    whole = quality(run(ad, seed=3, n_repeats=3).results)
    pieces = pd.concat(
        [quality(run(ad, seed=3, n_repeats=1, first_repeat=r).results) for r in range(3)]
    )
    key = ["method", "perturbation", "repeat", "features", "metric"]
    pd.testing.assert_frame_equal(
        pieces.sort_values(key).reset_index(drop=True),
        whole.sort_values(key).reset_index(drop=True),
    )
    tail = run(ad, seed=3, n_repeats=2, first_repeat=1)
    assert sorted(tail.results["repeat"].unique()) == [1, 2]
    assert tail.config["first_repeat"] == 1
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="first_repeat"):
            run(ad, first_repeat=bad)


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


def _sidebyside_results(identity_r2=-5.0, seed=0):
    """Tidy results of four methods over 6 runs on two feature sets; identity's r2 far below."""
    rng = np.random.default_rng(seed)
    centre = {
        "r2": {"identity": identity_r2, "observed": 0.95, "mean_shift": 0.85, "w1ot": 0.9},
        "mmd": {"identity": 0.08, "observed": 0.01, "mean_shift": 0.05, "w1ot": 0.03},
    }
    rows = [
        (m, f"p{r % 3}", "", r // 3, feats, metric, v + 0.02 * (abs(v) + 0.1) * rng.normal())
        for feats in ("all", "top50")
        for metric, c in centre.items()
        for m, v in c.items()
        for r in range(6)
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def test_plot_rows_per_feature_set_and_title(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # 60 features > top_k = 5: two rows (all, top5), labelled
    res = run(make_adata(d=60), n_repeats=1, top_k=5, dataset="toy_screen")
    fig = res.plot()
    assert len(fig.axes) == 6
    assert fig.axes[0].get_ylabel() == "all 60 features"
    assert fig.axes[3].get_ylabel() == "top 5 DE features"
    text = fig._suptitle.get_text()
    assert "toy_screen" in text and "all 60 features" in text and "top 5 DE" in text
    plt.close(fig)
    # 8 features <= 50: the top-50 set is all features, drawn once
    res = run(make_adata(), n_repeats=1)
    fig = plot_benchmark(res.results, title="my run", dataset="toy", n_features=8)
    assert len(fig.axes) == 3
    assert "= top 50" in fig.axes[0].get_ylabel()
    assert fig._suptitle.get_text().startswith("my run (toy)")
    plt.close(fig)
    # one feature set on request; axes of the caller
    fig, axes = plt.subplots(1, 3)
    assert plot_benchmark(res.results, features="top50", axes=axes) is fig
    with pytest.raises(ValueError, match="axes: need 3"):
        plot_benchmark(res.results, features="top50", axes=axes[:2])
    plt.close(fig)


def test_plot_far_off_method_does_not_squash_the_others(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = _sidebyside_results(identity_r2=-5.0)
    fig = plot_benchmark(df, path=None, metrics=("r2", "mmd"))
    assert len(fig.axes) == 4  # rows all, top50 x metrics r2, mmd
    for ax in (fig.axes[0], fig.axes[2]):  # the r2 panels
        feats = "all" if ax is fig.axes[0] else "top50"
        v = df[(df["metric"] == "r2") & (df["features"] == feats)]
        others = v.loc[v["method"] != "identity", "value"]
        spread = others.max() - others.min()
        lo, hi = ax.get_ylim()
        assert lo <= others.min() and hi >= others.max()  # every other run is visible
        assert hi - lo < 3 * spread  # and resolved: identity (-5) is off the axis
        notes = [t.get_text() for t in ax.texts if "median" in t.get_text()]
        med = v.loc[v["method"] == "identity", "value"].median()
        assert notes == [f"median\n{med:.3g}"]  # its arrow says where it is
    # the MMD panel has no far-off method: every method sets the axis, no arrow
    ax = fig.axes[1]
    v = df[(df["metric"] == "mmd") & (df["features"] == "all")]["value"]
    assert ax.get_ylim()[0] <= v.min() and ax.get_ylim()[1] >= v.max()
    assert not [t for t in ax.texts if "median" in t.get_text()]
    plt.close(fig)
    # without clipping the axis reaches identity
    fig = plot_benchmark(df, metrics=("r2",), outlier_factor=None)
    assert fig.axes[0].get_ylim()[0] < -5
    plt.close(fig)
    # a baseline that is merely worse is not clipped
    fig = plot_benchmark(_sidebyside_results(identity_r2=0.7), metrics=("r2",))
    assert fig.axes[0].get_ylim()[0] < 0.7
    plt.close(fig)
    path = tmp_path / "far.png"
    plot_benchmark(df, path=path, dataset="synthetic")
    assert path.stat().st_size > 1000


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


def relabel(ad, n, label, source="B"):
    """A copy of ``ad`` with the first ``n`` cells of ``source`` relabelled ``label``."""
    ad = ad.copy()
    cond = ad.obs["condition"].astype(str).to_numpy().copy()
    cond[np.flatnonzero(cond == source)[:n]] = label
    obs = ad.obs.copy()
    obs["condition"] = pd.Categorical(cond)
    ad.obs = obs
    return ad


class BatchRecorder:
    """An estimator with a batch_size in get_params (and no held-out split): records the
    batch of each fit and fails, as the solvers do, if a side has fewer cells."""

    log: ClassVar[list] = []

    def __init__(self, batch_size=100, seed=0):
        self.batch_size, self.seed = batch_size, seed

    def get_params(self):
        return {"batch_size": self.batch_size, "seed": self.seed}

    def fit(self, source, target):
        if min(len(source), len(target)) < self.batch_size:
            raise ValueError(f"batch_size={self.batch_size} exceeds the training cells")
        BatchRecorder.log.append((self.batch_size, len(source), len(target)))
        return self

    def transport(self, x):
        return np.asarray(x, dtype=float)


def test_harness_train_cells_follow_the_solvers_rule():
    from w1ot.benchmark import _batch_for_run, _solver_train_cells
    from w1ot.solvers import W1OT, W2OT

    rng = np.random.default_rng(0)
    cases = ((9, 0.1), (10, 0.1), (17, 0.1), (252, 0.1), (280, 0.1), (33, 0.3), (7, 0.0))
    for cls in (W1OT, W2OT):
        for n, vf in cases:
            x = rng.normal(size=(n, 3))
            src_train = cls(batch_size=1, valid_fraction=vf)._prepare(x, x[: n // 2 + 1])[0]
            assert src_train.shape[0] == _solver_train_cells(n, vf)
            # the harness's batch fits exactly: one more is refused by the solver
            big = cls(batch_size=10_000, valid_fraction=vf, seed=3)
            est, batch, note = _batch_for_run(big, n, n + 5)
            assert batch == _solver_train_cells(n, vf) and f"batch_size={batch}" in note
            assert type(est) is cls and est.batch_size == batch
            assert est.get_params() == {**big.get_params(), "batch_size": batch}
            est._prepare(x, x)
            with pytest.raises(ValueError, match=f"batch_size={batch + 1} exceeds"):
                cls(batch_size=batch + 1, valid_fraction=vf)._prepare(x, x)
            # a batch that fits is left alone
            fits = cls(batch_size=batch, valid_fraction=vf)
            assert _batch_for_run(fits, n, n) == (fits, batch, None)


def test_small_perturbations_use_the_largest_batch_that_fits():
    # A: 700 cells -> 200 train -> 180 after valid_fraction=0.1; B: 60 -> 30 -> 27;
    # control: 600 -> 300 -> 270. Requested: w1ot 128, w2ot 64, BatchRecorder 100.
    ad = make_adata(n_ctrl=600, n_a=700, n_b=60, d=4)
    BatchRecorder.log = []
    methods = {
        "identity": "identity",
        "w1ot": "w1ot",
        "w2ot": "w2ot",
        "rec": BatchRecorder,
    }
    with pytest.warns(RuntimeWarning, match="batch_size") as record:
        res = run(
            ad,
            methods=methods,
            n_repeats=2,
            w1ot_kwargs={"potential_iters": 50, "step_iters": 50, "batch_size": 128},
            w2ot_kwargs={"iters": 50, "batch_size": 64},
        )
    msgs = [str(w.message) for w in record if "batch_size" in str(w.message)]
    # one warning per method and perturbation (not per repeat), naming both and the batch
    assert len(msgs) == 3
    assert all("'B'" in m and "'A'" not in m for m in msgs)
    assert any("'w1ot'" in m and "fitted with batch_size=27" in m for m in msgs)
    assert any("'w2ot'" in m and "fitted with batch_size=27" in m for m in msgs)
    assert any("'rec'" in m and "fitted with batch_size=30" in m for m in msgs)  # no hold-out
    s = res.splits.set_index(["perturbation", "repeat"])
    assert s["batch_size"].tolist() == [128, 128, 27, 27]  # the first batch method: w1ot
    assert s["batch_size_w1ot"].tolist() == [128, 128, 27, 27]
    assert s["batch_size_w2ot"].tolist() == [64, 64, 27, 27]
    assert s["batch_size_rec"].tolist() == [100, 100, 30, 30]
    assert sorted({b for b, *_ in BatchRecorder.log}) == [30, 100]
    assert res.results["value"].notna().all() and res.failures.empty
    # only one mini-batch method: a single batch_size column; none: no column
    with pytest.warns(RuntimeWarning, match="fitted with batch_size=27"):
        res = run(
            ad,
            methods=["w1ot"],
            n_repeats=1,
            perturbations="B",
            w1ot_kwargs={"potential_iters": 20, "step_iters": 20},
        )
    assert [c for c in res.splits.columns if c.startswith("batch")] == ["batch_size"]
    assert res.splits["batch_size"].tolist() == [27]
    assert "batch_size" not in run(ad, n_repeats=1).splits.columns


def test_on_error_with_unfittable_perturbations(monkeypatch):
    from w1ot import metrics as metrics_module

    ad = relabel(relabel(make_adata(), 3, "tiny"), 10, "ten")  # B keeps 287 cells
    kw = {
        "methods": ["identity", "w1ot"],
        "n_repeats": 1,
        "w1ot_kwargs": {"potential_iters": 30, "step_iters": 30},
    }
    # warn: the 3-cell perturbation is reported by name and skipped, the others are scored
    # (10 cells: 5 test and 5 training cells, w1ot fitted with a batch of 5)
    with pytest.warns(RuntimeWarning) as record:
        res = run(ad, on_error="warn", **kw)
    msgs = [str(w.message) for w in record]
    assert "perturbation 'tiny' has 3 cells, need at least 4 to split; skipped" in msgs
    assert any("'ten'" in m and "fitted with batch_size=5" in m for m in msgs)
    assert set(res.results["perturbation"]) == {"A", "B", "ten"}
    assert res.results["value"].notna().all()
    assert res.splits.set_index("perturbation").loc["ten", "batch_size"] == 5
    assert res.failures[["perturbation", "repeat", "method"]].values.tolist() == [["tiny", -1, ""]]
    # raise: the error names the perturbation
    with pytest.raises(ValueError, match="perturbation 'tiny' has 3 cells"):
        run(ad, on_error="raise", **kw)
    # a control too small to split is always an error
    with pytest.raises(ValueError, match="control 'ctrl' has 2 cells"):
        run(relabel(make_adata(), 598, "C", source="ctrl"), on_error="warn", n_repeats=1)

    # a method failing on one perturbation: NaN scores there, the others are scored
    class Picky(BatchRecorder):
        def fit(self, source, target):
            if len(target) < 100:
                raise ValueError("too few target cells")
            return super().fit(source, target)

    ad = relabel(make_adata(), 50, "small")
    with pytest.warns(RuntimeWarning) as record:
        res = run(ad, methods=[Picky, "identity"], n_repeats=1, on_error="warn")
    msgs = [str(w.message) for w in record if "failed" in str(w.message)]
    assert len(msgs) == 1 and "method 'Picky' failed on perturbation 'small'" in msgs[0]
    df = res.results
    bad = (df["method"] == "Picky") & (df["perturbation"] == "small")
    assert df.loc[bad, "value"].isna().all() and df.loc[~bad, "value"].notna().all()
    assert res.failures["method"].tolist() == ["Picky"]
    with (
        pytest.raises(ValueError, match=r"'Picky' failed on perturbation 'small'.*too few"),
        pytest.warns(RuntimeWarning, match="fitted with batch_size=25"),
    ):
        run(ad, methods=[Picky], n_repeats=1, on_error="raise")

    # a run that cannot be prepared (here: the DE ranking fails) is skipped by name
    real = metrics_module.top_de_genes

    def fragile(adata, *args, **kwargs):
        if (adata.obs["g"] == "p").sum() < 100:
            raise FloatingPointError("degenerate t-test")
        return real(adata, *args, **kwargs)

    monkeypatch.setattr(metrics_module, "top_de_genes", fragile)
    ad = relabel(make_adata(d=60), 100, "small")  # 'small': 50 test cells
    with pytest.warns(RuntimeWarning, match="perturbation 'small', repeat 0 skipped"):
        res = run(ad, top_k=5, n_repeats=1, on_error="warn")
    assert set(res.results["perturbation"]) == {"A", "B"}
    assert set(res.splits["perturbation"]) == {"A", "B"}
    with pytest.raises(FloatingPointError, match="perturbation 'small', repeat 0"):
        run(ad, top_k=5, n_repeats=1, on_error="raise")
    with pytest.raises(ValueError, match="every run was skipped"), pytest.warns(RuntimeWarning):
        run(ad, top_k=5, n_repeats=1, on_error="warn", perturbations="small")


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


def test_cli_on_error_and_dataset_name(tmp_path, capsys, monkeypatch):
    import w1ot.benchmark as bm

    ad = relabel(make_adata(), 3, "tiny")
    h5 = tmp_path / "my_screen.h5ad"
    ad.write_h5ad(h5)
    parser = argparse.ArgumentParser(prog="w1ot")
    add_benchmark_parser(parser.add_subparsers(dest="command", required=True))
    argv = ["benchmark", str(h5), "--condition", "condition", "--control", "ctrl"]
    argv += ["--methods", "identity", "mean_shift", "--repeats", "1", "--quiet"]
    argv += ["--reference", "mean_shift", "--figure", str(tmp_path / "fig.png")]
    args = parser.parse_args(argv)
    assert args.on_error == "warn"
    seen = {}

    def fake_plot(results, **kwargs):
        seen.update(kwargs)

    monkeypatch.setattr(bm, "plot_benchmark", fake_plot)
    with pytest.warns(RuntimeWarning, match="'tiny'"):
        assert run_benchmark_cli(args) == 0
    out = capsys.readouterr().out
    assert "not evaluated (1)" in out and "perturbation 'tiny' has 3 cells" in out
    assert seen["dataset"] == "my_screen" and seen["n_features"] == 8
    args = parser.parse_args([*argv, "--on-error", "raise"])
    with pytest.raises(ValueError, match="perturbation 'tiny'"):
        run_benchmark_cli(args)
    with pytest.raises(SystemExit):
        parser.parse_args([*argv, "--on-error", "ignore"])


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


@pytest.mark.slow
def test_papalexi_screen_every_target_is_scored():
    """The whole CRISPR screen: 25 targets of 33 to 1,064 assigned cells; the small ones fit
    W1OT with the largest batch their training cells allow."""
    ad = read_dataset("papalexi2021_crispr_ko.h5ad")
    ad = ad[ad.obs["assigned"].astype(bool).to_numpy()].copy()
    targets = set(ad.obs["target"].astype(str)) - {"non-targeting"}
    assert len(targets) == 25
    # 200 iterations per stage: enough to exercise every fit (W1OT's collapse warnings at
    # this budget are expected and not checked); one thread: much faster on a busy machine
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        res = run_benchmark(
            ad,
            "target",
            "non-targeting",
            methods=["identity", "mean_shift", "w1ot"],
            n_repeats=1,
            normalize=True,
            w1ot_kwargs={"potential_iters": 200, "step_iters": 200, "n_threads": 1},
            on_error="warn",
            progress=False,
        )
    record = [w for w in record if "batch_size" in str(w.message)]
    assert res.failures.empty
    mmd = res.results[(res.results["metric"] == "mmd")]
    for feats in ("all", "top50"):
        v = mmd[mmd["features"] == feats].pivot_table(
            index="perturbation", columns="method", values="value", aggfunc="first"
        )
        assert set(v.index) == targets and list(v.columns) == ["identity", "mean_shift", "w1ot"]
        assert np.isfinite(v.to_numpy()).all()
    s = res.splits.set_index("perturbation")
    n_cells = ad.obs["target"].astype(str).value_counts()
    for t in targets:
        n_train = n_cells[t] - test_size(n_cells[t])
        assert s.loc[t, "n_train_perturbed"] == n_train
        assert s.loc[t, "batch_size"] == min(256, n_train - math.floor(0.1 * n_train))
    assert s.loc["SPI1", "batch_size"] == 16 and s.loc["IFNGR1", "batch_size"] == 256
    warned = {t for t in targets if any(f"'{t}'" in str(w.message) for w in record)}
    assert warned == set(s.index[s["batch_size"] < 256])


# --------------------------------------------------------------------------------------------
# parallel runs
# --------------------------------------------------------------------------------------------


class _Fails:
    """A method that fails on perturbation B only (feature 3 shifted down), with a warning."""

    def fit(self, source, target):
        warnings.warn("fitting _Fails", UserWarning, stacklevel=2)
        if target[:, 3].mean() < source[:, 3].mean() - 0.75:
            raise ArithmeticError("B is not for me")
        return self

    def transport(self, x):
        return np.asarray(x, dtype=np.float64)


def test_n_jobs_gives_the_same_results_failures_and_warnings():
    ad = make_adata(n_ctrl=400, n_a=400, n_b=300)
    kw = {
        "methods": {"identity": "identity", "w1ot": "w1ot", "fails": _Fails},
        "n_repeats": 2,
        "on_error": "warn",
        "w1ot_kwargs": {"potential_iters": 100, "step_iters": 100, "batch_size": 64},
    }
    outs = []
    for n_jobs in (1, 2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = run(ad, n_jobs=n_jobs, **kw)
        messages = [str(w.message) for w in caught]
        assert sum("fitting _Fails" in m for m in messages) == 4, messages
        assert sum("B is not for me" in m for m in messages) == 2, messages
        outs.append(res)
    one, two = outs
    qs = [quality(r.results).sort_values(COLUMNS[:-1]).reset_index(drop=True) for r in outs]
    pd.testing.assert_frame_equal(qs[0], qs[1])
    assert one.results[["method", "perturbation", "metric"]].equals(
        two.results[["method", "perturbation", "metric"]]
    )  # the same order, not only the same rows
    pd.testing.assert_frame_equal(one.splits, two.splits)
    pd.testing.assert_frame_equal(one.failures, two.failures)
    assert set(one.failures["perturbation"]) == {"B"} and len(one.failures) == 2
    assert one.de_genes == two.de_genes


def test_n_jobs_raises_a_workers_error_with_its_context():
    ad = make_adata(n_ctrl=300, n_a=300, n_b=300)
    with pytest.raises(ArithmeticError, match="'fails' failed on perturbation 'B'"):
        run(ad, methods={"fails": _Fails}, n_repeats=1, n_jobs=2)
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(ValueError, match="n_jobs"):
            run(ad, n_jobs=bad)


def test_cli_takes_n_jobs(tmp_path, capsys):
    h5 = tmp_path / "screen.h5ad"
    make_adata(n_ctrl=300, n_a=300, n_b=300, d=4).write_h5ad(h5)
    parser = argparse.ArgumentParser(prog="w1ot")
    add_benchmark_parser(parser.add_subparsers(dest="command", required=True))
    argv = ["benchmark", str(h5), "--condition", "condition", "--control", "ctrl"]
    argv += ["--methods", "identity", "mean_shift", "--repeats", "1", "--quiet", "--n-jobs", "2"]
    args = parser.parse_args(argv)
    assert args.n_jobs == 2 and run_benchmark_cli(args) == 0
    assert "mean_shift" in capsys.readouterr().out
