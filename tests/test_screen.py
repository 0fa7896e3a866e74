"""w1ot.tl.fit_many: whole screens on local processes and Dask, the collection it returns,
resuming into a directory, per-perturbation failures, and solvers crossing processes."""

from __future__ import annotations

import concurrent.futures
import json
import os
import pickle
import time
import warnings
import zlib

import numpy as np
import pytest

anndata = pytest.importorskip("anndata")
pd = pytest.importorskip("pandas")

import w1ot  # noqa: E402
from w1ot import screen  # noqa: E402
from w1ot.datasets import simulate_perturbation  # noqa: E402

# Small and fast: a fit takes well under a second.
OPTS = {"potential_iters": 200, "step_iters": 200, "batch_size": 64}
EFFECTS = {"A": 0.5, "B": 1.0, "C": 1.5}
KEY, CTRL = "condition", "control"


def make_screen(tiny: int = 0):
    """Three simulated perturbations of the same control cells (the simulator gives the
    same control cells for one seed whatever the effect); optionally a perturbation
    ``"tiny"`` with ``tiny`` cells, too few to fit."""
    parts = []
    for i, (name, effect) in enumerate(EFFECTS.items()):
        sim = simulate_perturbation(300, 200, 20, seed=7, perturbation=name, effect=effect)
        if i == 0:
            parts.append(sim[sim.obs[KEY] == CTRL].copy())
        pert = sim[sim.obs[KEY] == name].copy()
        if name == "A" and tiny:
            small = pert[:tiny].copy()
            small.obs[KEY] = "tiny"
            small.obs_names = [f"tiny-{n}" for n in small.obs_names]
            parts.append(small)
        pert.obs_names = [f"{name}-{n}" for n in pert.obs_names]
        parts.append(pert)
    adata = anndata.concat(parts)
    adata.obs[KEY] = pd.Categorical(adata.obs[KEY].astype(str))
    return adata


@pytest.fixture(scope="module")
def adata():
    return make_screen()


@pytest.fixture(scope="module")
def sequential(adata):
    """The reference: every perturbation fitted in this process, one after the other."""
    return w1ot.tl.fit_many(
        adata, condition_key=KEY, control=CTRL, n_jobs=1, progress=False, **OPTS
    )


def control_cells(adata):
    return np.asarray(adata[adata.obs[KEY] == CTRL].X)


def assert_same_models(a, b, x, names=None):
    names = list(a) if names is None else names
    for name in names:
        np.testing.assert_array_equal(a[name].transport(x), b[name].transport(x), err_msg=name)


# -- solvers and baselines cross processes -------------------------------------------------


@pytest.mark.filterwarnings("ignore::w1ot.TrainingWarning")
def test_fitted_models_pickle_and_transport_identically(adata):
    x = control_cells(adata)
    for method, opts in (
        ("w1ot", OPTS),
        ("w1ot", {**OPTS, "n_components": 5}),  # with a projection
        ("w2ot", {"iters": 50, "batch_size": 64}),
        ("mean_shift", {}),
        ("observed", {}),
        ("identity", {}),
    ):
        model = w1ot.tl.fit(
            adata, condition_key=KEY, control=CTRL, perturbation="B", method=method, **opts
        )
        back = pickle.loads(pickle.dumps(model))
        assert type(back) is type(model)
        assert back.get_params() == model.get_params()
        assert back.fitted_on_ == model.fitted_on_
        np.testing.assert_array_equal(back.transport(x), model.transport(x), err_msg=method)
        if hasattr(model, "history"):
            assert back.history.keys() == model.history.keys()
            assert back.fit_time_ == model.fit_time_
    unfitted = pickle.loads(pickle.dumps(w1ot.W1OT(seed=3)))
    assert not unfitted.is_fitted and unfitted.seed == 3


# -- local processes -------------------------------------------------------------------------


def test_two_workers_give_the_models_of_one(adata, sequential):
    assert list(sequential) == ["A", "B", "C"] and len(sequential) == 3
    assert sequential.failures == {}
    parallel = w1ot.tl.fit_many(
        adata, condition_key=KEY, control=CTRL, n_jobs=2, progress=False, **OPTS
    )
    x = control_cells(adata)
    assert_same_models(sequential, parallel, x)
    cores = screen._cores()
    assert sequential["A"].n_threads == cores  # in process: each fit on all cores
    assert parallel["A"].n_threads == max(1, cores // min(2, cores))
    # Each is the model tl.fit gives, with what tl.fit records.
    single = w1ot.tl.fit(adata, condition_key=KEY, control=CTRL, perturbation="C", **OPTS)
    np.testing.assert_array_equal(single.transport(x), parallel["C"].transport(x))
    assert parallel["C"].fitted_on_ == single.fitted_on_


def _probe(task, source, target, method, options, fitted_on):
    return task, isinstance(source, np.memmap), getattr(source, "filename", None), len(target)


def test_workers_receive_the_control_cells_as_one_memory_map(adata):
    """The control matrix reaches every worker as a read-only memmap of one file (joblib
    passes it by name), never pickled per task."""
    tasks = [screen._Task(n, 0, 0) for n in ("A", "B", "C")]
    source = control_cells(adata)
    out = list(
        screen._run_loky(tasks, source, lambda t: np.zeros((5, 20)), "w1ot", {}, {}, 2, fit=_probe)
    )
    assert sorted(o[0].perturbation for o in out) == ["A", "B", "C"]
    assert all(o[1] for o in out)
    files = {o[2] for o in out}
    assert len(files) == 1 and os.path.basename(files.pop()) == "control.npy"


def test_repeats_take_distinct_seeds_reproducibly(adata, sequential):
    col = w1ot.tl.fit_many(
        adata,
        condition_key=KEY,
        control=CTRL,
        perturbations=["A", "B"],
        repeats=2,
        n_jobs=2,
        progress=False,
        seed=0,
        **OPTS,
    )
    x = control_cells(adata)
    for name in ("A", "B"):
        # Repeat 0 takes the screen's seed; repeat 1 the CRC-32 of seed, name and repeat.
        expected = [0, zlib.crc32(f"0\x00{name}\x001".encode())]
        assert col.seeds(name) == expected == [screen.task_seed(0, name, r) for r in (0, 1)]
        first, second = col.models(name)
        assert [first.seed, second.seed] == expected
        np.testing.assert_array_equal(first.transport(x), sequential[name].transport(x))
        assert not np.array_equal(first.transport(x), second.transport(x))
    assert col.seeds("A") != col.seeds("B")


class Warner:
    """An estimator whose fit warns, naming itself, while another fit runs."""

    def __init__(self, *, tag="x", pause=0.0):
        self.tag, self.pause = tag, pause

    def get_params(self):
        return {"tag": self.tag, "pause": self.pause}

    def fit(self, source, target):
        time.sleep(self.pause)
        warnings.warn(f"from {self.tag}", UserWarning, stacklevel=2)
        time.sleep(self.pause)
        return self

    def transport(self, x):
        return x


def test_fits_in_threads_keep_their_own_warnings():
    """Dask runs fits in a worker's threads: each fit's warnings are its own, and warnings
    outside fits are shown as before."""
    x = np.zeros((4, 2), np.float32)
    spec = {"representation": {}, "condition_key": KEY, "control": CTRL}
    spec.update(nonnegative=True, method="Warner")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        outs = list(
            pool.map(
                lambda tag: screen._fit_task(
                    screen._Task(tag, 0, None), x, x, Warner(tag=tag, pause=0.05), {}, spec
                ),
                ["A", "B", "C", "D"],
            )
        )
    for tag, out in zip("ABCD", outs, strict=True):
        assert out.failure is None and out.warned == ((UserWarning, f"from {tag}"),)
    with pytest.warns(UserWarning, match="still shown"):
        warnings.warn("still shown", UserWarning, stacklevel=1)


# -- the collection ------------------------------------------------------------------------------


def test_collection_predicts_saves_and_loads(adata, sequential, tmp_path):
    pred = sequential.predict(adata, perturbation="B")
    ref = w1ot.tl.predict(sequential["B"], adata)
    np.testing.assert_array_equal(np.asarray(pred.X), np.asarray(ref.X))
    assert list(pred.obs[KEY].unique()) == ["B (predicted)"]

    both = sequential.predict_all(adata)
    assert both.n_obs == 3 * 300 and both.obs_names.is_unique
    assert both.obs[KEY].value_counts().to_dict() == {f"{n} (predicted)": 300 for n in "ABC"}
    assert set(both.uns["w1ot"]) == {"A", "B", "C"}
    rows = np.flatnonzero(both.obs[KEY] == "B (predicted)")
    np.testing.assert_array_equal(np.asarray(both.X[rows]), np.asarray(ref.X))

    sequential.save(tmp_path)
    index = json.loads((tmp_path / "index.json").read_text())
    assert [e["file"] for e in index["models"]] == ["A.0.w1ot", "B.0.w1ot", "C.0.w1ot"]
    back = w1ot.tl.ModelCollection.load(tmp_path)
    assert list(back) == list(sequential) and back.settings == sequential.settings
    assert back.failures == {} and back.seeds("B") == [0]
    assert_same_models(sequential, back, control_cells(adata))


def test_model_file_names_are_safe_and_distinct():
    assert screen.model_file("IFNGR1", 0) == "IFNGR1.0.w1ot"
    odd = [screen.model_file(n, 1) for n in ("CD4+", "CD4-", "a/b", "../x", "", 5)]
    assert len(set(odd)) == len(odd)
    assert all(os.path.basename(f) == f and not f.startswith(".") for f in odd)


# -- resuming into a directory ------------------------------------------------------------------


def test_directory_resumes_a_screen(adata, sequential, tmp_path, monkeypatch):
    fitted = []
    fit = screen._fit_task

    def counting(task, *args):
        fitted.append(task.perturbation)
        return fit(task, *args)

    monkeypatch.setattr(screen, "_fit_task", counting)
    run = dict(condition_key=KEY, control=CTRL, n_jobs=1, progress=False, directory=tmp_path)
    first = w1ot.tl.fit_many(adata, perturbations=["A", "B"], **run, **OPTS)
    assert fitted == ["A", "B"]
    assert sorted(os.listdir(tmp_path)) == ["A.0.w1ot", "B.0.w1ot", "index.json"]
    # Stopped after A and B: a run of the whole screen fits only C ...
    fitted.clear()
    whole = w1ot.tl.fit_many(adata, **run, **OPTS)
    assert fitted == ["C"] and list(whole) == ["A", "B", "C"]
    # ... and a further run fits nothing, returning the same models.
    fitted.clear()
    again = w1ot.tl.fit_many(adata, **run, **OPTS)
    assert fitted == []
    x = control_cells(adata)
    assert_same_models(sequential, again, x)
    assert_same_models(first, again, x, names=["A", "B"])
    assert list(w1ot.tl.ModelCollection.load(tmp_path)) == ["A", "B", "C"]
    # Other settings are refused, not mixed in.
    with pytest.raises(ValueError, match="other settings"):
        w1ot.tl.fit_many(adata, **run, **{**OPTS, "step_iters": 100})


# -- failures -------------------------------------------------------------------------------------


def test_a_failed_perturbation_is_recorded_and_the_others_fitted(sequential):
    small = make_screen(tiny=5)
    with pytest.warns(RuntimeWarning, match="'tiny'"):
        col = w1ot.tl.fit_many(
            small,
            condition_key=KEY,
            control=CTRL,
            perturbations=["A", "tiny"],
            n_jobs=2,
            progress=False,
            **OPTS,
        )
    assert list(col) == ["A"] and set(col.failures) == {"tiny"}
    assert col.failures["tiny"].startswith("ValueError: batch_size=64 exceeds")
    assert "\n" not in col.failures["tiny"]
    with pytest.raises(KeyError, match="failed"):
        col["tiny"]
    np.testing.assert_array_equal(
        col["A"].transport(control_cells(small)), sequential["A"].transport(control_cells(small))
    )
    with pytest.raises(ValueError, match=r"^perturbation 'tiny': ValueError: batch_size"):
        w1ot.tl.fit_many(
            small,
            condition_key=KEY,
            control=CTRL,
            perturbations=["tiny", "A"],
            n_jobs=1,
            progress=False,
            on_error="raise",
            **OPTS,
        )


def test_wrong_arguments_raise_before_any_fit(adata):
    run = dict(condition_key=KEY, control=CTRL, progress=False)
    with pytest.raises(ValueError, match="not values of"):
        w1ot.tl.fit_many(adata, perturbations=["A", "nope"], **run)
    with pytest.raises(ValueError, match="includes the control"):
        w1ot.tl.fit_many(adata, perturbations=["A", CTRL], **run)
    with pytest.raises(TypeError, match="potential_itrs"):
        w1ot.tl.fit_many(adata, potential_itrs=10, **run)
    with pytest.raises(ValueError, match="backend"):
        w1ot.tl.fit_many(adata, backend="spark", **run)
    with pytest.raises(ValueError, match="n_jobs"):
        w1ot.tl.fit_many(adata, n_jobs=0, **run)


# -- Dask -------------------------------------------------------------------------------------------


def test_dask_cluster_gives_the_local_models(sequential):
    distributed = pytest.importorskip(
        "distributed", reason="dask.distributed is not installed: pip install 'w1ot[dask]'"
    )
    small = make_screen(tiny=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cluster's own notices (ports, ...)
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
    with cluster, distributed.Client(cluster) as client:
        col = w1ot.tl.fit_many(
            small,
            condition_key=KEY,
            control=CTRL,
            backend=client,
            progress=False,
            on_error="ignore",
            **OPTS,
        )
        assert list(col) == ["A", "B", "C"] and set(col.failures) == {"tiny"}
        assert_same_models(sequential, col, control_cells(small))
        assert col["A"].n_threads == 1  # one core per task: a worker's threads are its cores
        # backend="dask": the current client.
        one = w1ot.tl.fit_many(
            small,
            condition_key=KEY,
            control=CTRL,
            perturbations=["B"],
            backend="dask",
            progress=False,
            **OPTS,
        )
        assert_same_models(sequential, one, control_cells(small), names=["B"])
        # Screens of the same cells back to back: with hashed scatter keys the scheduler was
        # still releasing the last screen's copy and cancelled these tasks (19 of 20 runs).
        quick = {**OPTS, "potential_iters": 20, "step_iters": 20}
        for _ in range(3):
            again = w1ot.tl.fit_many(
                small,
                condition_key=KEY,
                control=CTRL,
                perturbations=["A"],
                backend=client,
                progress=False,
                on_error="ignore",
                **quick,
            )
            assert not again.failures, again.failures


def test_dask_missing_says_how_to_install(adata, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    with pytest.raises(ImportError, match=r"pip install 'w1ot\[dask\]'"):
        w1ot.tl.fit_many(adata, condition_key=KEY, control=CTRL, backend="dask", progress=False)


def test_dask_without_a_client_says_so(adata):
    pytest.importorskip("distributed")
    from distributed import get_client

    try:
        get_client()
        pytest.skip("a dask client is running in this process")
    except ValueError:
        pass
    with pytest.raises(ValueError, match="there is none"):
        w1ot.tl.fit_many(adata, condition_key=KEY, control=CTRL, backend="dask", progress=False)


# -- a real screen ----------------------------------------------------------------------------------


def test_papalexi_screen():
    from datafiles import read_dataset

    adata = read_dataset("papalexi2021_crispr_ko.h5ad")
    adata = adata[adata.obs["assigned"].astype(bool).to_numpy()].copy()
    w1ot.pp.normalize_log1p(adata)
    counts = adata.obs["target"].value_counts()
    # Four targets of every size down to the smallest that a batch of 32 fits (MYC, 73
    # cells), and SPI1, whose 33 cells leave 30 to train on once 10% are held out.
    targets = ["IFNGR1", "IRF1", "STAT1", "CUL3", "MYC", "SPI1"]
    assert counts["MYC"] < 100 and counts["SPI1"] < 36
    col = w1ot.tl.fit_many(
        adata,
        condition_key="target",
        control="non-targeting",
        perturbations=targets,
        n_jobs=2,
        progress=False,
        on_error="ignore",
        potential_iters=200,
        step_iters=200,
        batch_size=32,
    )
    assert list(col) == targets[:5]
    assert set(col.failures) == {"SPI1"} and "batch_size=32" in col.failures["SPI1"]
    for name in col:
        spec = col[name].fitted_on_
        assert spec["perturbation"] == name
        assert spec["n_cells"] == {
            "control": int(counts["non-targeting"]),
            "perturbation": int(counts[name]),
        }
        assert col[name].latent_dim == 50  # 299 genes: fitted in principal components
    pred = col.predict(adata, perturbation="IRF1")
    assert pred.n_obs == counts["non-targeting"] and np.isfinite(np.asarray(pred.X.todense())).all()


# -- screen defaults ---------------------------------------------------------------------------


def test_screen_defaults_fill_only_the_options_not_given(adata):
    defaults = screen.SCREEN_DEFAULTS["w1ot"]
    assert defaults["potential_iters"] < 10_000 and defaults["step_iters"] < 10_000
    col = w1ot.tl.fit_many(
        adata,
        condition_key=KEY,
        control=CTRL,
        perturbations=["B"],
        n_jobs=1,
        progress=False,
        potential_iters=200,
        batch_size=64,
    )
    model = col["B"]
    assert model.potential_iters == 200  # given: kept
    assert model.step_iters == defaults["step_iters"]  # not given: the screen default
    assert col.settings["options"]["step_iters"] == defaults["step_iters"]
    # the same model as tl.fit with the screen's options
    alone = w1ot.tl.fit(
        adata,
        condition_key=KEY,
        control=CTRL,
        perturbation="B",
        seed=0,
        potential_iters=200,
        step_iters=defaults["step_iters"],
        batch_size=64,
    )
    x = control_cells(adata)
    np.testing.assert_array_equal(model.transport(x), alone.transport(x))


def test_screen_defaults_off_gives_the_estimators_defaults(adata, monkeypatch):
    made = []
    original = screen._make

    def spy(method, options):
        made.append(dict(options))
        raise ValueError("stop here")  # the options are all this test needs

    monkeypatch.setattr(screen, "_make", spy)
    for flag in (True, False):
        with pytest.raises(ValueError, match="stop here"):
            w1ot.tl.fit_many(
                adata, condition_key=KEY, control=CTRL, progress=False, screen_defaults=flag
            )
    assert made[0]["step_iters"] == screen.SCREEN_DEFAULTS["w1ot"]["step_iters"]
    assert "step_iters" not in made[1] and "potential_iters" not in made[1]
    monkeypatch.setattr(screen, "_make", original)
    with pytest.raises(TypeError, match="screen_defaults"):
        w1ot.tl.fit_many(adata, condition_key=KEY, control=CTRL, screen_defaults="yes")
    # an estimator passed as an object is used as it is configured
    est = w1ot.W1OT(potential_iters=50, step_iters=50, batch_size=64)
    col = w1ot.tl.fit_many(
        adata,
        condition_key=KEY,
        control=CTRL,
        method=est,
        perturbations=["A"],
        n_jobs=1,
        progress=False,
    )
    assert col["A"].potential_iters == 50 and col["A"].step_iters == 50
