"""Plots of 2-D transport maps, potentials and training histories.

matplotlib is optional (``pip install w1ot[plot]``) and imported only when a function here is
called; importing this module does not import it. Every function draws on ``ax`` if given,
otherwise on a new figure, and returns the Axes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["plot_history", "plot_potential", "plot_transport"]

_SOURCE_COLOR = "tab:blue"
_TARGET_COLOR = "tab:red"
_TRANSPORTED_COLOR = "tab:green"
# Fig. 2a of the paper: triangle, square, diamond, circle, cross.
_MARKER_SHAPES = ("^", "s", "D", "o", "X")


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "w1ot.plotting needs matplotlib; install it with `pip install w1ot[plot]`"
        ) from exc
    return plt


def _new_axes(ax, figsize=(5.0, 5.0)):
    if ax is not None:
        return ax
    _, ax = _pyplot().subplots(figsize=figsize)
    return ax


def _points_2d(x, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric array of shape (n, 2)") from None
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (n, 2), got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} must contain at least one point")
    return arr


def plot_transport(
    source,
    target,
    transported=None,
    *,
    ax=None,
    n_rays: int | None = 200,
    seed: int = 0,
    markers: int | Sequence[int] | None = None,
    title: str | None = None,
):
    """Scatter source, target and transported points with transport rays (paper's Fig. 2).

    Draws three scatter collections (source blue, target red, transported green; small,
    translucent) and one ``LineCollection`` of grey rays from ``source[i]`` to
    ``transported[i]`` for ``n_rays`` source points drawn without replacement.

    Parameters
    ----------
    source, target : array_like of shape (n, 2) and (m, 2)
        The two samples.
    transported : array_like of shape (n, 2), optional
        Images of ``source`` (row ``i`` is the image of ``source[i]``). If omitted, only
        source and target are drawn.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure is made if omitted.
    n_rays : int or None
        Number of rays; ``None`` draws one per source point, 0 none.
    seed : int
        Seed for choosing the ray and marker points.
    markers : int or sequence of int, optional
        Highlight source points and their images with large distinct markers (triangle,
        square, diamond, circle, cross, repeating), to show whether the map keeps their
        order: an int ``k`` picks ``k`` random source points, a sequence gives their indices.
        Each highlighted point adds one scatter collection for the source and one for its image.
    title : str, optional
        Axes title.

    Returns
    -------
    matplotlib.axes.Axes
    """
    source = _points_2d(source, "source")
    target = _points_2d(target, "target")
    if transported is not None:
        transported = _points_2d(transported, "transported")
        if transported.shape[0] != source.shape[0]:
            raise ValueError(
                f"transported must have as many rows as source ({source.shape[0]}), "
                f"got {transported.shape[0]}"
            )
    n = source.shape[0]
    if n_rays is None:
        n_rays = n
    if isinstance(n_rays, bool) or not isinstance(n_rays, (int, np.integer)) or n_rays < 0:
        raise ValueError(f"n_rays must be a non-negative integer or None, got {n_rays!r}")
    rng = np.random.default_rng(seed)

    if markers is None:
        marked = np.empty(0, dtype=np.int64)
    elif isinstance(markers, (int, np.integer)) and not isinstance(markers, bool):
        if markers < 0:
            raise ValueError(f"markers must be non-negative, got {markers}")
        marked = rng.choice(n, size=min(int(markers), n), replace=False)
    else:
        marked = np.asarray(markers)
        if marked.size == 0:
            marked = marked.astype(np.int64)
        if marked.ndim != 1 or not np.issubdtype(marked.dtype, np.integer):
            raise ValueError("markers must be an int or a sequence of integer indices")
        if marked.size and (marked.min() < -n or marked.max() >= n):
            raise ValueError(f"markers indices must be in [-{n}, {n}), got {marked.tolist()}")

    ax = _new_axes(ax)
    from matplotlib.collections import LineCollection

    style = {"s": 3, "alpha": 0.4, "linewidths": 0, "rasterized": True}
    ax.scatter(source[:, 0], source[:, 1], color=_SOURCE_COLOR, label="source", **style)
    ax.scatter(target[:, 0], target[:, 1], color=_TARGET_COLOR, label="target", **style)
    if transported is not None:
        ax.scatter(
            transported[:, 0],
            transported[:, 1],
            color=_TRANSPORTED_COLOR,
            label="transported",
            **style,
        )
        if n_rays > 0:
            rays = rng.choice(n, size=min(n_rays, n), replace=False)
            segments = np.stack([source[rays], transported[rays]], axis=1)
            ax.add_collection(
                LineCollection(segments, colors="0.4", linewidths=0.4, alpha=0.4, zorder=1)
            )

    for k, i in enumerate(marked):
        shape = _MARKER_SHAPES[k % len(_MARKER_SHAPES)]
        marker_style = {"marker": shape, "s": 80, "edgecolors": "black", "linewidths": 0.8}
        ax.scatter(*source[i], color="orange", zorder=3, **marker_style)
        if transported is not None:
            ax.scatter(*transported[i], color="purple", zorder=3, **marker_style)

    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    ax.legend(loc="best", markerscale=4, frameon=False)
    if title is not None:
        ax.set_title(title)
    return ax


def plot_potential(
    potential_fn: Callable[[np.ndarray], Any],
    source,
    target,
    *,
    ax=None,
    grid: int = 100,
    levels: int | Sequence[float] = 20,
    colorbar: bool = True,
):
    """Filled contours of a scalar potential over the data, with the data on top.

    The potential is evaluated on a ``grid x grid`` lattice covering the bounding box of
    ``source`` and ``target`` enlarged on every side by 10% of its larger side.

    Parameters
    ----------
    potential_fn : callable
        Maps a float64 array of shape ``(m, 2)`` to ``m`` values.
    source, target : array_like of shape (n, 2) and (m, 2)
        Drawn as small blue and red points.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure is made if omitted.
    grid : int
        Lattice points per axis (at least 2).
    levels : int or sequence of float
        Passed to ``contourf``.
    colorbar : bool
        Add a colour bar next to ``ax``.

    Returns
    -------
    matplotlib.axes.Axes
    """
    if not callable(potential_fn):
        raise ValueError("potential_fn must be callable")
    source = _points_2d(source, "source")
    target = _points_2d(target, "target")
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or grid < 2:
        raise ValueError(f"grid must be an integer >= 2, got {grid!r}")

    both = np.concatenate([source, target])
    lo, hi = both.min(axis=0), both.max(axis=0)
    margin = 0.1 * max(float(np.max(hi - lo)), 1e-3)
    xs = np.linspace(lo[0] - margin, hi[0] + margin, grid)
    ys = np.linspace(lo[1] - margin, hi[1] + margin, grid)
    xx, yy = np.meshgrid(xs, ys)
    points = np.column_stack([xx.ravel(), yy.ravel()])
    values = np.asarray(potential_fn(points), dtype=np.float64)
    if values.size != points.shape[0]:
        raise ValueError(
            f"potential_fn must return {points.shape[0]} values for an input of shape "
            f"{points.shape}, got shape {values.shape}"
        )

    ax = _new_axes(ax)
    contours = ax.contourf(xx, yy, values.reshape(xx.shape), levels=levels, cmap="viridis")
    style = {"s": 2, "alpha": 0.5, "linewidths": 0, "rasterized": True}
    ax.scatter(source[:, 0], source[:, 1], color=_SOURCE_COLOR, label="source", **style)
    ax.scatter(target[:, 0], target[:, 1], color=_TARGET_COLOR, label="target", **style)
    if colorbar:
        ax.figure.colorbar(contours, ax=ax, label="potential")
    ax.legend(loc="best", markerscale=4, frameon=False)
    return ax


def plot_history(
    history,
    *,
    ax=None,
    keys: Sequence[str] | None = None,
    logy: bool = False,
):
    """One line per recorded quantity of a training history.

    Parameters
    ----------
    history : mapping or object
        Maps names (e.g. ``"potential_loss"``, ``"w1_valid"``) to sequences of values; an
        object that is not a mapping is read through its attributes (``vars``). A 1-D value
        is plotted against its index, a value of shape ``(k, 2)`` as ``(step, value)`` rows;
        other values (scalars, empty or non-numeric arrays) are skipped.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure is made if omitted.
    keys : sequence of str, optional
        Names to plot, in order; missing names are skipped. Default: all plottable entries.
    logy : bool
        Logarithmic y axis.

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    ValueError
        If nothing in ``history`` can be plotted.
    """
    if not isinstance(history, Mapping):
        if hasattr(history, "keys") and hasattr(history, "__getitem__"):
            history = {k: history[k] for k in history.keys()}
        elif hasattr(history, "__dict__"):
            history = vars(history)
        else:
            raise ValueError("history must be a mapping of names to sequences")
    names = list(history.keys()) if keys is None else [k for k in keys if k in history]

    curves = []
    for name in names:
        try:
            arr = np.asarray(history[name], dtype=np.float64)
        except (TypeError, ValueError):
            continue
        if arr.ndim == 1 and arr.size:
            curves.append((name, np.arange(arr.size), arr))
        elif arr.ndim == 2 and arr.shape[1] == 2 and arr.shape[0]:
            curves.append((name, arr[:, 0], arr[:, 1]))
    if not curves:
        raise ValueError(f"history has nothing to plot among {names}")

    ax = _new_axes(ax, figsize=(6.0, 4.0))
    for name, x, y in curves:
        ax.plot(x, y, label=str(name), linewidth=1.0)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.legend(loc="best", frameon=False)
    return ax
