"""The safe model file format: a NumPy ``.npz`` archive of float32 arrays plus a JSON
metadata entry, loaded with ``allow_pickle=False`` so that opening a file never runs code.

Layout: ``__meta__`` holds UTF-8 JSON ``{"format": "w1ot-model", "version": N, "class": ...,
"config": {...}, ...}`` as a uint8 array; every other entry is a named array.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any

import numpy as np

FORMAT = "w1ot-model"
VERSION = 1
_META = "__meta__"


class ModelFileError(ValueError):
    """A file that is not a w1ot model, is truncated or comes from a newer w1ot."""


def save_model(
    path: str | os.PathLike, meta: dict[str, Any], arrays: dict[str, np.ndarray]
) -> None:
    """Writes ``arrays`` and ``meta`` to ``path`` (a ``.npz`` archive)."""
    if _META in arrays:
        raise ValueError(f"array name {_META!r} is reserved")
    header = {"format": FORMAT, "version": VERSION, **meta}
    blob = np.frombuffer(json.dumps(header, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **{_META: blob}, **{k: np.asarray(v, order="C") for k, v in arrays.items()})


def read_class(path: str | os.PathLike) -> str:
    """The class name recorded in a model file (to pick the class that loads it)."""
    return str(_read(path)[0].get("class"))


def load_model(
    path: str | os.PathLike, expected_class: str
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Reads a file written by :func:`save_model`; raises :class:`ModelFileError` when it is
    not a w1ot model of ``expected_class``, is truncated, or has a newer format version."""
    meta, arrays = _read(path)
    if meta.get("class") != expected_class:
        raise ModelFileError(
            f"{os.fspath(path)!r} holds a {meta.get('class')}, not a {expected_class}"
        )
    return meta, arrays


def _read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    # np.load would try to unpickle anything that is neither .npz nor .npy (and its error
    # suggests allow_pickle): look at the magic bytes first.
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04":
        raise ModelFileError(f"{os.fspath(path)!r} is not a w1ot model file (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if _META not in npz.files:
                raise ModelFileError(f"{os.fspath(path)!r} is not a w1ot model file (no metadata)")
            arrays = {k: npz[k] for k in npz.files}
    except ModelFileError:
        raise
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise ModelFileError(
            f"{os.fspath(path)!r} is not a readable w1ot model file (truncated or another format): {exc}"
        ) from exc
    try:
        meta = json.loads(arrays.pop(_META).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{os.fspath(path)!r}: corrupt metadata") from exc
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{os.fspath(path)!r} is not a w1ot model file")
    version = meta.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise ModelFileError(
            f"{os.fspath(path)!r} has model format version {version}; this w1ot reads up to "
            f"version {VERSION}: upgrade w1ot to load it"
        )
    fitted_on = meta.get("fitted_on")
    if fitted_on is not None and not isinstance(fitted_on, dict):
        raise ModelFileError(f"{os.fspath(path)!r}: corrupt metadata (fitted_on)")
    return meta, arrays
