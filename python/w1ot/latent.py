"""Where a solver learns its transport, by one rule for every solver: the feature space,
principal components (:mod:`w1ot.projection`) or the latent space of an autoencoder
(:class:`w1ot.Autoencoder`, the paper's scRNA-seq mode).

``latent`` (a solver option) and ``n_components`` decide it:

- ``latent="auto"`` (default): principal components when the data have more features than
  the potential's first layer is wide, else the feature space (``n_components`` as before:
  ``"auto"`` is 50 components, an int k is k, ``None`` is the feature space);
- ``latent="pca"``: principal components always (``n_components``, 50 by default);
- ``latent="autoencoder"``: an autoencoder with the paper's defaults, fitted on the pooled
  training cells; or a :class:`w1ot.Autoencoder` itself, used as it is when fitted (one
  autoencoder for a whole screen) and fitted first otherwise;
- ``latent=None``: the feature space.

With components, cells move inside their span and keep the rest of their profile; with an
autoencoder, predictions are decoded from the transported latent codes.
"""

from __future__ import annotations

from typing import Any

from w1ot.projection import AUTO_COMPONENTS, resolve_components

__all__ = ["LATENTS", "check_latent", "resolve"]

LATENTS = ("auto", "pca", "autoencoder")


def _is_autoencoder(v: Any) -> bool:
    from w1ot.solvers.autoencoder import Autoencoder

    return isinstance(v, Autoencoder)


def check_latent(latent: Any, n_components: Any) -> Any:
    """The ``latent`` option, checked against ``n_components`` (already checked)."""
    if latent is not None and not isinstance(latent, str) and not _is_autoencoder(latent):
        raise TypeError(
            "latent must be 'auto', 'pca', 'autoencoder', None or a w1ot.Autoencoder, "
            f"got {latent!r}"
        )
    if isinstance(latent, str) and latent not in LATENTS:
        raise ValueError(
            f"latent must be 'auto', 'pca', 'autoencoder', None or a w1ot.Autoencoder, "
            f"got {latent!r}"
        )
    numbered = n_components is not None and not isinstance(n_components, str)
    if numbered and (latent is None or latent == "autoencoder" or _is_autoencoder(latent)):
        what = "the feature space" if latent is None else "an autoencoder's latent space"
        raise ValueError(
            f"n_components={n_components} asks for principal components, but latent="
            f"{latent if isinstance(latent, str | None) else 'Autoencoder(...)'!r} is {what}; "
            "give one of them"
        )
    if latent == "pca" and n_components is None:
        raise ValueError("latent='pca' needs n_components to be 'auto' or an int, not None")
    return latent


def resolve(latent: Any, n_components: Any, n_features: int, first_width: int):
    """``("features", None)``, ``("pca", k)`` or ``("autoencoder", None)`` for data of
    ``n_features`` features."""
    if latent is None:
        return "features", None
    if latent == "autoencoder" or _is_autoencoder(latent):
        return "autoencoder", None
    if latent == "pca":
        k = min(AUTO_COMPONENTS, n_features) if n_components == "auto" else n_components
        return "pca", resolve_components(k, n_features, first_width)
    k = resolve_components(n_components, n_features, first_width)
    return ("features", None) if k is None else ("pca", k)
