"""The principal-component latent space (w1ot.projection) and W1OT fitted in it."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from w1ot import W1OT, datasets
from w1ot.projection import AUTO_COMPONENTS, EXACT_LIMIT, PCA, resolve_components

QUICK = {"potential_iters": 300, "step_iters": 300, "eval_every": 50, "n_threads": 1}


def test_auto_projects_only_when_the_first_layer_is_narrower_than_the_data():
    assert resolve_components("auto", 64, 64) is None
    assert resolve_components("auto", 65, 64) == AUTO_COMPONENTS
    assert resolve_components("auto", 40, 32) == 40
    assert resolve_components(None, 1000, 64) is None
    assert resolve_components(7, 10, 64) == 7


@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (11, ValueError), ("pca", ValueError), (2.5, TypeError), (True, TypeError)],
)
def test_bad_n_components_is_a_clear_error(value, error):
    with pytest.raises(error, match="n_components"):
        resolve_components(value, 10, 64)
    if value != 11:  # the feature count is known only at fit time
        with pytest.raises(error, match="n_components"):
            W1OT(n_components=value)


def test_pca_components_are_orthonormal_and_span_the_top_covariance_subspace():
    rng = np.random.default_rng(0)
    x = (
        rng.normal(size=(400, 30))
        * np.linspace(3.0, 0.1, 30)
        @ np.linalg.qr(rng.normal(size=(30, 30)))[0]
    )
    pca = PCA.fit(x, 5)
    p = pca.components
    np.testing.assert_allclose(p @ p.T, np.eye(5), atol=1e-12)
    _, evecs = np.linalg.eigh(np.cov(x.T))
    top = evecs[:, ::-1][:, :5]
    # same subspace: projecting one basis on the other loses nothing
    np.testing.assert_allclose(np.linalg.svd(top.T @ p.T, compute_uv=False), 1.0, atol=1e-9)
    # deterministic signs: the largest loading of each component is positive
    assert np.all(p[np.arange(5), np.argmax(np.abs(p), axis=1)] > 0)
    z = pca.encode(x[:3])
    np.testing.assert_allclose(pca.lift(z), (x[:3] - pca.mean) @ p.T @ p, rtol=1e-5, atol=1e-5)


def _low_rank_data(n, d, rank=60, seed=0):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, rank)) * np.geomspace(5.0, 0.5, rank)
    mix = rng.normal(size=(rank, d)) / np.sqrt(rank)
    return (latent @ mix + 0.3 * rng.normal(size=(n, d)) + 2.0).astype(np.float32)


def test_randomized_components_match_the_exact_subspace_on_wide_data():
    x = _low_rank_data(1500, 900)
    assert min(x.shape) > EXACT_LIMIT  # the randomized path
    fast = PCA.fit(x, 50, seed=0)
    exact_mean = x.astype(np.float64).mean(axis=0)
    vt = np.linalg.svd(x.astype(np.float64) - exact_mean, full_matrices=False)[2][:50]
    np.testing.assert_allclose(fast.mean, exact_mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fast.components @ fast.components.T, np.eye(50), atol=1e-10)
    cosines = np.linalg.svd(vt @ fast.components.T, compute_uv=False)
    assert cosines.min() > 1 - 1e-4, cosines.min()
    # each leading component matches its exact counterpart, signs included
    np.testing.assert_allclose(np.abs(np.sum(fast.components[:10] * vt[:10], axis=1)), 1, atol=1e-4)


def test_randomized_components_are_reproducible_by_seed():
    x = _low_rank_data(800, 700, seed=2)
    a, b = PCA.fit(x, 20, seed=5), PCA.fit(x, 20, seed=5)
    np.testing.assert_array_equal(a.components, b.components)
    c = PCA.fit(x, 20, seed=6)  # another sketch: the same subspace to rounding
    assert np.linalg.svd(a.components @ c.components.T, compute_uv=False).min() > 1 - 1e-4


def test_randomized_components_cost_a_fraction_of_the_exact_svd():
    x = _low_rank_data(1500, 1000, seed=3)
    t0 = time.perf_counter()
    PCA.fit(x, 50, seed=0)
    fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    np.linalg.svd(x.astype(np.float64) - x.mean(axis=0), full_matrices=False)
    exact = time.perf_counter() - t0
    assert fast < 0.5 * exact, (fast, exact)


def test_pca_needs_enough_cells():
    with pytest.raises(ValueError, match="n_components=8"):
        PCA.fit(np.ones((5, 20)), 8)


@pytest.fixture(scope="module")
def latent_fit():
    # 100 features > the first layer's 64: "auto" learns in 50 components
    source, target, w1 = datasets.shifted_gaussians(3000, 100, 2.0, seed=4, return_w1=True)
    model = W1OT(**QUICK).fit(source, target)
    return model, source, target, w1


def test_auto_fits_in_the_components_and_the_potential_stays_1_lipschitz(latent_fit):
    model, source, target, _ = latent_fit
    assert model.latent_dim == AUTO_COMPONENTS and model.n_features == 100
    rng = np.random.default_rng(1)
    a = source[:500] + rng.normal(0, 1.0, (500, 100))
    b = target[:500]
    ratio = np.abs(model.potential(a) - model.potential(b)) / np.linalg.norm(a - b, axis=1)
    assert ratio.max() <= 1.0 + 1e-4


def test_latent_transport_is_the_lifted_step_inside_the_span(latent_fit):
    model, source, _, _ = latent_fit
    x = source[:200]
    u, eta = model.direction(x), model.step_size(x)
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, atol=1e-4)
    p = model.pca.components
    np.testing.assert_allclose(u @ p.T @ p, u, atol=1e-5)  # u lies in the span
    moved = model.transport(x)
    np.testing.assert_allclose(moved, x - eta[:, None] * u, atol=2e-4 * (1 + eta.max()))
    assert np.linalg.norm(model.gradient(x), axis=1).max() <= 1.0 + 1e-4


def test_latent_model_estimates_w1_and_moves_the_mean(latent_fit):
    model, _, _, w1 = latent_fit
    fresh_s, fresh_t = datasets.shifted_gaussians(3000, 100, 2.0, seed=5)
    assert model.w1_distance(fresh_s, fresh_t) == pytest.approx(w1, rel=0.05)
    shift = np.full(100, 2.0 / 10.0)  # the generator's shift: norm 2 spread over 100 features
    moved = model.transport(fresh_s).mean(0) - fresh_s.mean(0)
    cos = moved @ shift / (np.linalg.norm(moved) * np.linalg.norm(shift))
    assert cos > 0.95 and np.linalg.norm(moved) == pytest.approx(2.0, rel=0.1)


def test_latent_model_round_trips_and_old_files_load_as_full_space(latent_fit, tmp_path):
    model, source, _, _ = latent_fit
    model.save(tmp_path / "m.npz")
    loaded = W1OT.load(tmp_path / "m.npz")
    assert loaded.latent_dim == model.latent_dim and loaded.n_components == "auto"
    np.testing.assert_array_equal(loaded.transport(source[:50]), model.transport(source[:50]))

    # a full-space model saved without the n_components key (files from before it existed)
    small_s, small_t = datasets.shifted_gaussians(600, 3, 1.0, seed=0)
    full = W1OT(**{**QUICK, "batch_size": 64}).fit(small_s, small_t)
    full.save(tmp_path / "full.npz")
    with np.load(tmp_path / "full.npz") as z:
        arrays = dict(z)
    meta = json.loads(arrays["__meta__"].tobytes().decode())
    del meta["config"]["n_components"]
    meta["version"] = 1  # files of that time had format version 1, without a checksum
    del meta["checksum"]
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "old.npz", **arrays)
    old = W1OT.load(tmp_path / "old.npz")
    assert old.n_components is None and old.latent_dim is None
    np.testing.assert_array_equal(old.transport(small_s[:20]), full.transport(small_s[:20]))


def test_n_components_none_keeps_the_feature_space_and_positive_clips_output():
    source, target = datasets.shifted_gaussians(1500, 80, -1.5, seed=2)
    full = W1OT(**QUICK, n_components=None).fit(source, target)
    assert full.latent_dim is None and full.n_features == 80
    clipped = W1OT(**QUICK, n_components=10, positive=True).fit(source, target)
    assert clipped.latent_dim == 10
    out = clipped.transport(source[:300])
    assert out.min() >= 0.0 and out.dtype == np.float32
