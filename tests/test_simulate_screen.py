"""Tests for w1ot.datasets.simulate_screen: a control population and many perturbations."""

import numpy as np
import pytest
import scipy.sparse

pytest.importorskip("anndata")

from w1ot.datasets import simulate_perturbation, simulate_screen

SMALL = dict(n_perturbations=4, n_control=300, n_per_perturbation=150, n_genes=40, n_cell_types=3)


@pytest.fixture(scope="module")
def screen():
    return simulate_screen(**SMALL, seed=0)


def _dense(m):
    return m.toarray() if scipy.sparse.issparse(m) else np.asarray(m)


def _cells(adata, name):
    return _dense(adata.X[(adata.obs["condition"] == name).to_numpy()])


def test_layout(screen):
    n = 300 + 4 * 150
    assert screen.shape == (n, 40)
    counts = screen.obs["condition"].value_counts()
    assert counts["control"] == 300
    assert all(counts[f"pert_{p:03d}"] == 150 for p in range(4))
    assert list(screen.obs["condition"].cat.categories) == ["control"] + [
        f"pert_{p:03d}" for p in range(4)
    ]
    assert screen.X.dtype == np.float32 and screen.layers["counts"].dtype == np.float32
    assert screen.obs_names.is_unique
    response = screen.varm["response"]
    assert response.shape == (40, 4) and response.to_numpy().dtype == bool
    assert (response.sum(axis=0) == 8).all()  # de_fraction 0.2 of 40 genes
    effects = screen.uns["simulation"]["perturbation_effect"]
    assert len(effects) == 4 and all(0.2 <= e <= 1.2 for e in effects.values())
    assert len(set(effects.values())) == 4


def test_x_is_log_normalised_counts(screen):
    counts = _dense(screen.layers["counts"])
    np.testing.assert_array_equal(counts, np.round(counts))
    expected = np.log1p(1e4 * counts / counts.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(_dense(screen.X), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(
        screen.obs["library_size"].to_numpy(), counts.sum(axis=1).round().astype(np.int64)
    )


def test_deterministic_and_sparse_is_the_same_data(screen):
    again = simulate_screen(**SMALL, seed=0)
    np.testing.assert_array_equal(_dense(again.X), _dense(screen.X))
    assert again.obs.equals(screen.obs)
    sparse = simulate_screen(**SMALL, seed=0, sparse=True)
    assert scipy.sparse.issparse(sparse.X) and scipy.sparse.issparse(sparse.layers["counts"])
    np.testing.assert_array_equal(sparse.X.toarray(), _dense(screen.X))
    other = simulate_screen(**SMALL, seed=1)
    assert not np.array_equal(_dense(other.X), _dense(screen.X))


def _lfc(adata, name):
    """|log fold change| of each gene's mean raw count, perturbation against control."""
    raw = _dense(adata.layers["counts"])
    condition = adata.obs["condition"].to_numpy()
    ctrl, mine = raw[condition == "control"].mean(0), raw[condition == name].mean(0)
    return np.abs(np.log((mine + 1) / (ctrl + 1)))


def test_effect_changes_only_the_response_genes_of_perturbed_cells():
    """Common random numbers: one seed gives the same control cells, and the same counts of
    every gene a perturbation does not touch, whatever the effect."""
    null = simulate_screen(**SMALL, seed=2, effect=0.0)
    real = simulate_screen(**SMALL, seed=2, effect=1.0)
    assert set(null.uns["simulation"]["perturbation_effect"].values()) == {0.0}
    a, b = _dense(null.layers["counts"]), _dense(real.layers["counts"])
    condition = real.obs["condition"].to_numpy()
    np.testing.assert_array_equal(a[condition == "control"], b[condition == "control"])
    for name in real.varm["response"].columns:
        genes = real.varm["response"][name].to_numpy()
        mine = condition == name
        np.testing.assert_array_equal(a[mine][:, ~genes], b[mine][:, ~genes])
        assert _lfc(real, name)[genes].mean() > 2 * _lfc(null, name)[genes].mean()


def test_each_perturbation_moves_its_own_genes():
    adata = simulate_screen(
        **{**SMALL, "n_control": 600, "n_per_perturbation": 600}, seed=3, effect=1.0
    )
    response = adata.varm["response"].to_numpy()
    assert not (response[:, 0] == response[:, 1]).all()
    for p in range(4):
        genes = response[:, p]
        lfc = _lfc(adata, f"pert_{p:03d}")
        # raw counts: the response genes' means move, the others' expected counts do not
        assert lfc[genes].mean() > 3 * lfc[~genes].mean()


def test_effect_range_orders_strength():
    adata = simulate_screen(**{**SMALL, "n_perturbations": 6}, seed=4, effect=(0.0, 1.5))
    effects = adata.uns["simulation"]["perturbation_effect"]
    weak, strong = min(effects, key=effects.get), max(effects, key=effects.get)
    moved = {
        name: _lfc(adata, name)[adata.varm["response"][name].to_numpy()].mean()
        for name in (weak, strong)
    }
    assert moved[strong] > 2 * moved[weak]


def test_a_different_api_from_simulate_perturbation_is_not_needed():
    """The single-perturbation simulator is unchanged by the screen's refactoring: it still
    keeps its truth layer and one seed's control cells for any effect."""
    a = simulate_perturbation(100, 50, 20, 2, seed=0, effect=0.0)
    b = simulate_perturbation(100, 50, 20, 2, seed=0, effect=2.0)
    ctrl = (a.obs["condition"] == "control").to_numpy()
    np.testing.assert_array_equal(_dense(a.X)[ctrl], _dense(b.X)[ctrl])
    assert "truth" in b.layers


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(n_perturbations=0), ValueError, "n_perturbations"),
        (dict(n_per_perturbation=0), ValueError, "n_per_perturbation"),
        (dict(n_control=0), ValueError, "n_control"),
        (dict(n_cell_types=20, n_control=10), ValueError, "n_cell_types"),
        (dict(effect=-1.0), ValueError, "effect"),
        (dict(effect=(1.0, 0.5)), ValueError, "low <= high"),
        (dict(effect=(0.1, 0.2, 0.3)), ValueError, "effect"),
        (dict(effect="big"), ValueError, "effect"),
        (dict(sparse=1), TypeError, "sparse"),
        (dict(de_fraction=2.0), ValueError, "de_fraction"),
        (dict(seed="x"), TypeError, "seed"),
    ],
)
def test_validation(kwargs, exc, match):
    args = dict(n_perturbations=2, n_control=10, n_per_perturbation=10, n_genes=10, seed=0)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        simulate_screen(**args)
