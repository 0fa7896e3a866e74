"""Tests for w1ot.datasets: shapes, determinism, the documented distributions, validation."""

import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from w1ot import datasets
from w1ot.datasets import (
    TOY_DATASETS,
    bookshelf,
    checkerboard,
    circles,
    eight_gaussians,
    load_toy,
    moons,
    shifted_gaussians,
    shifted_gaussians_w1,
    swiss_roll,
)

NAMES = sorted(TOY_DATASETS)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [1, 2, 7, 500])
def test_shapes_and_dtypes(name, n):
    source, target = load_toy(name, n=n, seed=0)
    for arr in (source, target):
        assert arr.shape == (n, 2)
        assert arr.dtype == np.float64
        assert arr.flags.c_contiguous
        assert np.all(np.isfinite(arr))


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_data_different_seed_different_data(name):
    a = load_toy(name, n=300, seed=123)
    b = load_toy(name, n=300, seed=123)
    c = load_toy(name, n=300, seed=124)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("name", NAMES)
def test_generator_seed_equals_int_seed_and_global_rng_untouched(name):
    np.random.seed(7)  # noqa: NPY002
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    a = load_toy(name, n=50, seed=5)
    b = load_toy(name, n=50, seed=np.random.default_rng(5))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # noqa: NPY002


def test_generator_seed_advances():
    rng = np.random.default_rng(0)
    first = moons(100, seed=rng)
    second = moons(100, seed=rng)
    assert not np.array_equal(first[0], second[0])


def test_bookshelf():
    source, target = bookshelf(20_000, seed=1)
    assert source[:, 0].min() >= 0.0 and source[:, 0].max() <= 1.0
    assert target[:, 0].min() >= 2.0 and target[:, 0].max() <= 3.0
    # the strips fill their intervals
    assert source[:, 0].min() < 0.01 and source[:, 0].max() > 0.99
    assert target[:, 0].min() < 2.01 and target[:, 0].max() > 2.99
    for arr in (source, target):
        assert abs(arr[:, 1].std() - 0.001) < 0.00005
        assert abs(arr[:, 1].mean()) < 0.00005
        assert abs(arr[:, 0].mean() - arr[:, 0].min() - 0.5) < 0.02


def test_bookshelf_noise_parameter():
    source, _ = bookshelf(20_000, seed=1, noise=0.1)
    assert abs(source[:, 1].std() - 0.1) < 0.005
    source, target = bookshelf(10, seed=1, noise=0)
    assert np.all(source[:, 1] == 0) and np.all(target[:, 1] == 0)


def test_circles_radii_and_labels():
    noise = 0.01
    source, target, ring = circles(4001, seed=2, noise=noise, return_labels=True)
    assert ring.shape == (4001,) and ring.dtype == np.int64
    assert set(np.unique(ring)) == {0, 1}
    # n - n // 2 inner, n // 2 outer
    assert np.sum(ring == 0) == 2001 and np.sum(ring == 1) == 2000
    r_source = np.linalg.norm(source, axis=1)
    assert np.all(np.abs(r_source[ring == 0] - 0.5) < 6 * noise)
    assert np.all(np.abs(r_source[ring == 1] - 1.5) < 6 * noise)
    r_target = np.linalg.norm(target, axis=1)
    near_1 = np.abs(r_target - 1.0) < 6 * noise
    near_2 = np.abs(r_target - 2.0) < 6 * noise
    assert np.all(near_1 | near_2)
    assert near_1.sum() == 2001 and near_2.sum() == 2000
    # noise is isotropic with the requested std (radial deviation ~ N(0, noise^2))
    assert abs(np.std(r_source[ring == 1] - 1.5) - noise) < 0.1 * noise


def test_circles_rows_are_shuffled_and_angles_cover_circle():
    source, _, ring = circles(1000, seed=3, return_labels=True)
    # not grouped by ring
    assert 0 < np.argmax(ring != ring[0]) < 100
    angles = np.arctan2(source[ring == 1, 1], source[ring == 1, 0])
    hist, _ = np.histogram(angles, bins=8, range=(-np.pi, np.pi))
    assert hist.min() > 50


def test_circles_default_returns_pair():
    out = circles(10, seed=0)
    assert isinstance(out, tuple) and len(out) == 2


def test_moons():
    noise = 0.01
    source, target = moons(5000, seed=4, noise=noise)
    # source: upper arc of the unit circle centred at 0
    assert np.all(np.abs(np.linalg.norm(source, axis=1) - 1.0) < 6 * noise)
    assert np.all(source[:, 1] >= -5 * noise)
    assert abs(source[:, 0].mean()) < 0.02
    # target: lower arc of the unit circle centred at (1, 0.5)
    centred = target - np.array([1.0, 0.5])
    assert np.all(np.abs(np.linalg.norm(centred, axis=1) - 1.0) < 6 * noise)
    assert np.all(target[:, 1] <= 0.5 + 5 * noise)
    assert abs(target[:, 0].mean() - 1.0) < 0.02
    # evenly spaced parameter, as make_moons: mean height 2/pi of the arc
    assert abs(source[:, 1].mean() - 2 / np.pi) < 0.01
    assert abs(target[:, 1].mean() - (0.5 - 2 / np.pi)) < 0.01


def test_moons_noise_free_endpoints():
    source, target = moons(3, seed=0, noise=0.0)
    source = source[np.argsort(source[:, 0])]
    target = target[np.argsort(target[:, 0])]
    np.testing.assert_allclose(source, [[-1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(target, [[0.0, 0.5], [1.0, -0.5], [2.0, 0.5]], atol=1e-12)


def test_swiss_roll():
    source, target = swiss_roll(20_000, seed=5, noise=0.0)
    np.testing.assert_allclose(source.std(axis=0), [0.5, 0.5], atol=0.01)
    np.testing.assert_allclose(source.mean(axis=0), [0.0, 0.0], atol=0.01)
    # noise-free target lies on the spiral r = t / 4, angle = t (mod 2 pi)
    t = 4.0 * np.linalg.norm(target, axis=1)
    assert t.min() >= 1.5 * np.pi - 1e-9 and t.max() <= 4.5 * np.pi + 1e-9
    assert t.min() < 1.5 * np.pi + 0.01 and t.max() > 4.5 * np.pi - 0.01
    np.testing.assert_allclose(
        4.0 * target, np.column_stack([t * np.cos(t), t * np.sin(t)]), atol=1e-9
    )
    # t = 1.5 pi (1 + 2u) is uniform
    assert abs(t.mean() - 3.0 * np.pi) < 0.05
    assert np.all(np.abs(target) <= 4.5 * np.pi / 4 + 1e-9)


def test_swiss_roll_noise_is_scaled_by_a_quarter():
    _, clean = swiss_roll(20_000, seed=6, noise=0.0)
    _, noisy = swiss_roll(20_000, seed=6, noise=0.4)
    diff = noisy - clean
    np.testing.assert_allclose(diff.std(axis=0), [0.1, 0.1], rtol=0.05)


def test_eight_gaussians():
    n = 40_000
    source, target = eight_gaussians(n, seed=7, scale=2.0, std=0.1)
    np.testing.assert_allclose(source.mean(axis=0), [0, 0], atol=0.02)
    np.testing.assert_allclose(source.std(axis=0), [1, 1], atol=0.02)
    angle = np.arange(8) * np.pi / 4
    centres = 2.0 * np.column_stack([np.cos(angle), np.sin(angle)])
    dist = np.linalg.norm(target[:, None, :] - centres[None], axis=2)
    nearest = dist.argmin(axis=1)
    assert np.all(dist.min(axis=1) < 6 * 0.1)
    counts = np.bincount(nearest, minlength=8)
    assert np.all(np.abs(counts - n / 8) < 5 * np.sqrt(n / 8))
    residual = target - centres[nearest]
    np.testing.assert_allclose(residual.std(axis=0), [0.1, 0.1], rtol=0.05)
    np.testing.assert_allclose(target.mean(axis=0), [0, 0], atol=0.05)


def test_eight_gaussians_parameters():
    source, target = eight_gaussians(20_000, seed=8, scale=5.0, std=0.0, source_std=0.1)
    np.testing.assert_allclose(np.linalg.norm(target, axis=1), 5.0, atol=1e-12)
    assert len(np.unique(np.round(target, 9), axis=0)) == 8
    np.testing.assert_allclose(source.std(axis=0), [0.1, 0.1], rtol=0.05)


def test_checkerboard():
    n = 40_000
    source, target = checkerboard(n, seed=9)
    np.testing.assert_allclose(source.mean(axis=0), [0, 0], atol=0.03)
    np.testing.assert_allclose(source.std(axis=0), [1, 1], atol=0.02)
    assert target.min() >= -4.0 and target.max() < 4.0
    cells = np.floor(target / 2.0).astype(int)
    assert np.all((cells[:, 0] + cells[:, 1]) % 2 == 0)
    # the 8 black cells are equally likely and the density is uniform on each
    _, counts = np.unique(cells, axis=0, return_counts=True)
    assert counts.size == 8
    assert np.all(np.abs(counts - n / 8) < 5 * np.sqrt(n / 8))
    np.testing.assert_allclose(target.mean(axis=0), [0, 0], atol=0.05)
    within = target - 2.0 * cells
    np.testing.assert_allclose(within.mean(axis=0), [1, 1], atol=0.02)


def test_shifted_gaussians_scalar_shift():
    d, shift = 5, 3.0
    source, target = shifted_gaussians(50_000, d, shift, seed=10)
    assert source.shape == target.shape == (50_000, d)
    diff = target.mean(axis=0) - source.mean(axis=0)
    np.testing.assert_allclose(diff, np.full(d, shift / np.sqrt(d)), atol=0.03)
    np.testing.assert_allclose(source.std(axis=0), 1.0, atol=0.02)
    np.testing.assert_allclose(target.std(axis=0), 1.0, atol=0.02)
    assert shifted_gaussians_w1(shift, d) == pytest.approx(shift)


def test_shifted_gaussians_vector_shift_and_w1():
    shift = np.array([3.0, 0.0, -4.0])
    source, target, w1 = shifted_gaussians(50_000, 3, shift, seed=11, cov_scale=4.0, return_w1=True)
    assert w1 == pytest.approx(5.0)
    assert shifted_gaussians_w1(shift) == pytest.approx(5.0)
    np.testing.assert_allclose(target.mean(axis=0) - source.mean(axis=0), shift, atol=0.05)
    np.testing.assert_allclose(source.std(axis=0), 2.0, atol=0.03)
    np.testing.assert_allclose(target.std(axis=0), 2.0, atol=0.03)


def test_shifted_gaussians_w1_matches_empirical_w1():
    # exact W1 between the two samples (optimal assignment) is close to ||shift||
    source, target, w1 = shifted_gaussians(500, 2, -3.0, seed=0, return_w1=True)
    assert w1 == pytest.approx(3.0)
    cost = cdist(source, target)
    rows, cols = linear_sum_assignment(cost)
    assert abs(cost[rows, cols].mean() - w1) < 0.2
    assert shifted_gaussians_w1(-2.5, 4) == pytest.approx(2.5)
    assert shifted_gaussians_w1(0.0, 4) == 0.0


@pytest.mark.parametrize(
    ("func", "kwargs", "argname"),
    [
        (bookshelf, {"n": 0}, "n"),
        (bookshelf, {"n": -3}, "n"),
        (bookshelf, {"n": 2.5}, "n"),
        (bookshelf, {"n": 10.0}, "n"),
        (bookshelf, {"n": True}, "n"),
        (bookshelf, {"n": "10"}, "n"),
        (bookshelf, {"noise": -0.1}, "noise"),
        (circles, {"noise": -1.0}, "noise"),
        (circles, {"noise": float("nan")}, "noise"),
        (moons, {"noise": -0.01}, "noise"),
        (moons, {"n": 0}, "n"),
        (swiss_roll, {"noise": -1}, "noise"),
        (swiss_roll, {"source_std": -1}, "source_std"),
        (eight_gaussians, {"std": -1}, "std"),
        (eight_gaussians, {"scale": float("inf")}, "scale"),
        (checkerboard, {"n": 0}, "n"),
        (shifted_gaussians, {"d": 0}, "d"),
        (shifted_gaussians, {"d": 2.0}, "d"),
        (shifted_gaussians, {"n": 0}, "n"),
        (shifted_gaussians, {"cov_scale": 0.0}, "cov_scale"),
        (shifted_gaussians, {"cov_scale": -1.0}, "cov_scale"),
        (shifted_gaussians, {"d": 3, "shift": [1.0, 2.0]}, "shift"),
        (shifted_gaussians, {"shift": float("nan")}, "shift"),
    ],
)
def test_validation_errors_name_the_argument(func, kwargs, argname):
    with pytest.raises(ValueError, match=argname):
        func(**{"seed": 0, **kwargs})


def test_seed_is_required_and_typed():
    with pytest.raises(TypeError):
        moons(10)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="seed"):
        moons(10, seed=1.5)
    with pytest.raises(TypeError, match="seed"):
        moons(10, seed=None)
    with pytest.raises(ValueError, match="seed"):
        moons(10, seed=-1)
    source, _ = moons(10, seed=np.int64(3))
    np.testing.assert_array_equal(source, moons(10, seed=3)[0])


def test_load_toy_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown toy dataset") as info:
        load_toy("spirals", n=10, seed=0)
    for name in NAMES:
        assert name in str(info.value)


def test_load_toy_forwards_kwargs():
    a = load_toy("circles", n=20, seed=0, noise=0.0, return_labels=True)
    b = circles(20, seed=0, noise=0.0, return_labels=True)
    assert len(a) == 3
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    source, target = load_toy("shifted_gaussians", n=20, seed=0, d=6)
    assert source.shape == target.shape == (20, 6)


def test_registry_is_complete():
    assert set(TOY_DATASETS) == {
        "bookshelf",
        "circles",
        "swiss_roll",
        "moons",
        "eight_gaussians",
        "checkerboard",
        "shifted_gaussians",
    }
    for name, func in TOY_DATASETS.items():
        assert getattr(datasets, func.__name__) is func, name


def test_import_does_not_pull_in_matplotlib_or_core():
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(datasets.__file__)))
    code = (
        "import sys, w1ot.datasets; "
        "assert 'matplotlib' not in sys.modules; assert 'w1ot._core' not in sys.modules"
    )
    env = {**os.environ, "PYTHONPATH": package_parent}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
