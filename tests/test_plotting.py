"""Tests for w1ot.plotting: artists drawn, PNG output, validation, lazy matplotlib import."""

import os
import subprocess
import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402

from w1ot import plotting  # noqa: E402
from w1ot.datasets import circles, moons  # noqa: E402
from w1ot.plotting import plot_history, plot_potential, plot_transport  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def data():
    source, target = moons(300, seed=0)
    transported = source + np.array([1.0, -0.5])
    return source, target, transported


def _scatters(ax):
    return [c for c in ax.collections if isinstance(c, PathCollection)]


def _line_collections(ax):
    return [c for c in ax.collections if isinstance(c, LineCollection)]


def test_plot_transport_artists(data, tmp_path):
    source, target, transported = data
    ax = plot_transport(source, target, transported, n_rays=50, title="moons")
    assert isinstance(ax, Axes)
    scatters = _scatters(ax)
    assert len(scatters) == 3
    assert [len(s.get_offsets()) for s in scatters] == [300, 300, 300]
    np.testing.assert_allclose(scatters[0].get_offsets(), source)
    np.testing.assert_allclose(scatters[1].get_offsets(), target)
    np.testing.assert_allclose(scatters[2].get_offsets(), transported)
    (rays,) = _line_collections(ax)
    segments = rays.get_segments()
    assert len(segments) == 50
    # each ray joins a source point to its own image
    for seg in segments:
        i = np.flatnonzero(np.all(np.isclose(source, seg[0]), axis=1))
        assert i.size >= 1
        np.testing.assert_allclose(seg[1], transported[i[0]])
    assert ax.get_title() == "moons"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "source",
        "target",
        "transported",
    ]
    path = tmp_path / "transport.png"
    ax.figure.savefig(path)
    assert path.exists() and path.stat().st_size > 0


def test_plot_transport_rays_are_seeded_and_capped(data):
    source, target, transported = data
    a = plot_transport(source, target, transported, n_rays=20, seed=3)
    b = plot_transport(source, target, transported, n_rays=20, seed=3)
    c = plot_transport(source, target, transported, n_rays=20, seed=4)
    seg = [np.asarray(_line_collections(ax)[0].get_segments()) for ax in (a, b, c)]
    np.testing.assert_array_equal(seg[0], seg[1])
    assert not np.array_equal(seg[0], seg[2])
    every = plot_transport(source, target, transported, n_rays=10_000)
    assert len(_line_collections(every)[0].get_segments()) == 300
    everyone = plot_transport(source, target, transported, n_rays=None)
    assert len(_line_collections(everyone)[0].get_segments()) == 300
    none = plot_transport(source, target, transported, n_rays=0)
    assert _line_collections(none) == []


def test_plot_transport_without_transported(data):
    source, target, _ = data
    ax = plot_transport(source, target)
    assert len(_scatters(ax)) == 2
    assert _line_collections(ax) == []


def test_plot_transport_markers(data):
    source, target, transported = data
    ax = plot_transport(source, target, transported, markers=5)
    extra = _scatters(ax)[3:]
    assert len(extra) == 10
    shapes = [s.get_paths()[0] for s in extra[::2]]
    # five distinct marker shapes
    assert len({tuple(np.round(p.vertices, 6).ravel()) for p in shapes}) == 5
    # each marked source point is paired with its image
    for src, img in zip(extra[::2], extra[1::2], strict=True):
        (p,) = src.get_offsets()
        (q,) = img.get_offsets()
        i = np.flatnonzero(np.all(np.isclose(source, p), axis=1))[0]
        np.testing.assert_allclose(q, transported[i])
    ax = plot_transport(source, target, transported, markers=[0, 10, -1])
    extra = _scatters(ax)[3:]
    assert len(extra) == 6
    np.testing.assert_allclose(extra[4].get_offsets()[0], source[-1])


def test_plot_transport_uses_given_axes(data):
    source, target, transported = data
    fig, (ax0, ax1) = plt.subplots(1, 2)
    out = plot_transport(source, target, transported, ax=ax1)
    assert out is ax1
    assert len(_scatters(ax0)) == 0
    assert len(fig.axes) == 2


@pytest.mark.parametrize(
    ("args", "argname"),
    [
        ((np.zeros((5, 3)), np.zeros((5, 2)), np.zeros((5, 2))), "source"),
        ((np.zeros(5), np.zeros((5, 2)), np.zeros((5, 2))), "source"),
        ((np.zeros((5, 2)), np.zeros((5, 2, 1)), np.zeros((5, 2))), "target"),
        ((np.zeros((5, 2)), np.zeros((5, 2)), np.zeros((5, 1))), "transported"),
        ((np.zeros((5, 2)), np.zeros((5, 2)), np.zeros((4, 2))), "transported"),
        ((np.zeros((0, 2)), np.zeros((5, 2)), None), "source"),
    ],
)
def test_plot_transport_rejects_bad_shapes(args, argname):
    with pytest.raises(ValueError, match=argname):
        plot_transport(*args)


def test_plot_transport_rejects_bad_options(data):
    source, target, transported = data
    with pytest.raises(ValueError, match="n_rays"):
        plot_transport(source, target, transported, n_rays=-1)
    with pytest.raises(ValueError, match="markers"):
        plot_transport(source, target, transported, markers=[0, 300])
    with pytest.raises(ValueError, match="markers"):
        plot_transport(source, target, transported, markers=[0.5])


def test_plot_potential(tmp_path):
    source, target, _ring = circles(400, seed=1, return_labels=True)
    calls = []

    def potential(x):
        calls.append(x.copy())
        return np.linalg.norm(x, axis=1)

    ax = plot_potential(potential, source, target, grid=30, levels=7)
    assert isinstance(ax, Axes)
    (x,) = calls
    assert x.shape == (900, 2) and x.dtype == np.float64
    # the grid covers the data with a margin
    assert np.all(x.min(axis=0) < np.minimum(source.min(axis=0), target.min(axis=0)))
    assert np.all(x.max(axis=0) > np.maximum(source.max(axis=0), target.max(axis=0)))
    assert len(_scatters(ax)) == 2
    filled = [c for c in ax.collections if not isinstance(c, PathCollection)]
    assert filled  # the contour set
    assert len(ax.figure.axes) == 2  # plus the colour bar
    path = tmp_path / "potential.png"
    ax.figure.savefig(path)
    assert path.exists() and path.stat().st_size > 0


def test_plot_potential_degenerate_extent_and_no_colorbar():
    # bookshelf-like data: almost no vertical extent still gives a proper grid
    source = np.column_stack([np.linspace(0, 1, 50), np.zeros(50)])
    target = source + np.array([2.0, 0.0])
    ax = plot_potential(lambda x: x[:, 0], source, target, grid=10, colorbar=False)
    assert len(ax.figure.axes) == 1
    y0, y1 = ax.get_ylim()
    assert y1 - y0 > 0.1


def test_plot_potential_validation():
    source = np.zeros((4, 2))
    with pytest.raises(ValueError, match="potential_fn"):
        plot_potential(lambda x: np.zeros(3), source, source, grid=5)
    with pytest.raises(ValueError, match="potential_fn"):
        plot_potential("not callable", source, source)
    with pytest.raises(ValueError, match="grid"):
        plot_potential(lambda x: x[:, 0], source, source, grid=1)
    with pytest.raises(ValueError, match="target"):
        plot_potential(lambda x: x[:, 0], source, np.zeros((4, 3)))


def test_plot_history(tmp_path):
    history = {
        "potential_loss": np.linspace(0, -1, 40),
        "w1_valid": [0.1, 0.5, 0.9],
        "lr": 1e-3,  # scalar: skipped
        "notes": "text",  # non-numeric: skipped
        "empty": [],
    }
    ax = plot_history(history)
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["potential_loss", "w1_valid"]
    np.testing.assert_allclose(lines[0].get_ydata(), history["potential_loss"])
    np.testing.assert_allclose(lines[1].get_xdata(), [0, 1, 2])
    path = tmp_path / "history.png"
    ax.figure.savefig(path)
    assert path.exists() and path.stat().st_size > 0


def test_plot_history_keys_steps_and_objects():
    history = {"w1_valid": np.array([[0, 0.2], [100, 0.5], [200, 0.7]]), "loss": [3.0, 2.0]}
    ax = plot_history(history, keys=["w1_valid", "missing"], logy=True)
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_xdata(), [0, 100, 200])
    assert ax.get_yscale() == "log"

    class History:
        def __init__(self):
            self.potential_loss = [1.0, 0.5]

    ax = plot_history(History())
    assert [ln.get_label() for ln in ax.get_lines()] == ["potential_loss"]
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_history({"a": 1.0})
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_history({"a": [1.0]}, keys=["b"])


def test_missing_matplotlib_gives_install_hint(monkeypatch, data):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    source, target, transported = data
    with pytest.raises(ImportError, match=r"pip install w1ot\[plot\]"):
        plot_transport(source, target, transported)
    with pytest.raises(ImportError, match=r"pip install w1ot\[plot\]"):
        plot_history({"a": [1.0, 2.0]})


def test_import_does_not_import_matplotlib():
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(plotting.__file__)))
    code = "import sys, w1ot.plotting; assert 'matplotlib' not in sys.modules"
    env = {**os.environ, "PYTHONPATH": package_parent}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
