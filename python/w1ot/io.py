"""The safe model file format: a NumPy ``.npz`` archive of numeric arrays plus a JSON
metadata entry, read without ever unpickling, so that opening a file never runs code.

Layout: ``__meta__`` holds UTF-8 JSON ``{"format": "w1ot-model", "version": N, "class": ...,
"config": {...}, "n_features": d, ...}`` as a uint8 array; every other entry is a named
array, stored uncompressed. From version 2 the metadata carries ``checksum``, a SHA-256 over
the rest of the metadata and every array's name, dtype, shape and bytes (in sorted name
order), so that a file that loads is the file that was saved. Version 1 files (no checksum)
still load.

Reading never trusts a size it has not checked: every member must be an uncompressed array
whose bytes are in the file, and the classes that load a file check every size in the
metadata against the arrays before they allocate anything. Whatever is wrong with a file,
loading it raises :class:`ModelFileError` (one sentence naming the file), never another
exception (a missing file is still ``FileNotFoundError``).
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import math
import numbers
import os
import zipfile
from collections.abc import Iterable
from typing import Any

import numpy as np

FORMAT = "w1ot-model"
VERSION = 2
_META = "__meta__"
_CHECKSUM = "checksum"
#: The most features a model file may declare.
MAX_FEATURES = 2**31 - 1
# Metadata entries and the ones every file has.
_META_KEYS = frozenset(
    {
        "format",
        "version",
        "class",
        "config",
        "n_features",
        "fit_time",
        "fitted_on",
        "autoencoder",
        _CHECKSUM,
    }
)
_REQUIRED = ("config", "n_features")


class ModelFileError(ValueError):
    """A file that is not a w1ot model, is truncated or damaged, or comes from a newer w1ot."""


# -- writing ------------------------------------------------------------------------------


def save_model(
    path: str | os.PathLike, meta: dict[str, Any], arrays: dict[str, np.ndarray]
) -> None:
    """Writes ``arrays`` and ``meta`` to ``path`` (a ``.npz`` archive) with their checksum."""
    if _META in arrays:
        raise ValueError(f"array name {_META!r} is reserved")
    if _CHECKSUM in meta:
        raise ValueError(f"metadata key {_CHECKSUM!r} is reserved")
    arrays = {k: np.asarray(v, order="C") for k, v in arrays.items()}
    # Through JSON and back, so that the checksum is taken over what a reader will see.
    header = json.loads(json.dumps({"format": FORMAT, "version": VERSION, **meta}, allow_nan=False))
    header[_CHECKSUM] = _checksum(header, arrays)
    blob = np.frombuffer(
        json.dumps(header, sort_keys=True, allow_nan=False).encode("utf-8"), dtype=np.uint8
    )
    with open(path, "wb") as fh:
        np.savez(fh, **{_META: blob}, **arrays)


def _checksum(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of the metadata (without its checksum) and of every array's name, dtype,
    shape and bytes (C order), arrays in sorted name order; each part length-prefixed."""
    h = hashlib.sha256()

    def part(data: bytes) -> None:
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)

    rest = {k: v for k, v in header.items() if k != _CHECKSUM}
    part(json.dumps(rest, sort_keys=True).encode("utf-8"))
    for name in sorted(arrays):
        a = arrays[name]
        part(json.dumps([name, a.dtype.str, list(a.shape)]).encode("utf-8"))
        part(np.ascontiguousarray(a).tobytes())
    return "sha256:" + h.hexdigest()


# -- reading ------------------------------------------------------------------------------


def read_class(path: str | os.PathLike) -> str:
    """The class name recorded in a model file (to pick the class that loads it)."""
    return _read(path)[0]["class"]


def load_model(
    path: str | os.PathLike,
    expected_class: str,
    *,
    names: Iterable[str] = (),
    prefixes: Iterable[str] = (),
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Reads a file written by :func:`save_model` and checks its metadata; raises
    :class:`ModelFileError` when it is not a w1ot model of ``expected_class``, is truncated or
    damaged, has a newer format version, or holds an array other than ``names`` and those
    starting with one of ``prefixes``."""
    meta, arrays = _read(path)
    where = repr(os.fspath(path))
    if meta["class"] != expected_class:
        raise ModelFileError(f"{where} holds a {meta['class']}, not a {expected_class}")
    _check_meta(where, meta)
    names, prefixes = set(names), tuple(prefixes)
    for k in sorted(arrays):
        if k not in names and not k.startswith(prefixes):
            raise ModelFileError(
                f"{where} is not a valid {expected_class} model file: "
                f"it holds an unexpected array {k!r}"
            )
    return meta, arrays


def invalid(path: str | os.PathLike, cls: str, reason: str) -> ModelFileError:
    """The error for a model file of class ``cls`` that is wrong in the way ``reason`` says."""
    return ModelFileError(f"{os.fspath(path)!r} is not a valid {cls} model file: {reason}")


def _read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(metadata, arrays) of a model file: its structure, format, version, class and
    checksum checked."""
    where = repr(os.fspath(path))
    # Opening errors (no such file, a directory, no permission) are clear as they are.
    with open(path, "rb") as fh:
        magic = fh.read(4)
        size = os.fstat(fh.fileno()).st_size
    if magic != b"PK\x03\x04":
        raise ModelFileError(f"{where} is not a w1ot model file (not an .npz archive)")
    try:
        arrays = _members(path, where, size)
        meta = _parse_meta(where, arrays.pop(_META))
    except ModelFileError:
        raise
    except Exception as exc:  # every way a damaged archive can fail to parse
        raise ModelFileError(
            f"{where} is not a readable w1ot model file (truncated or corrupt: {_reason(exc)})"
        ) from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{where} is not a w1ot model file (no w1ot metadata)")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(
            f"{where} is not a valid w1ot model file: its format version {version!r} "
            "is not a positive integer"
        )
    if version > VERSION:
        raise ModelFileError(
            f"{where} has model format version {version}; this w1ot reads up to "
            f"version {VERSION}: upgrade w1ot to load it"
        )
    if version >= 2:
        checksum = meta.get(_CHECKSUM)
        if not isinstance(checksum, str):
            raise ModelFileError(f"{where} is not a valid w1ot model file: it has no checksum")
        if checksum != _checksum(meta, arrays):
            raise ModelFileError(
                f"{where} is damaged: its contents do not match the checksum it was saved "
                "with (it was changed after it was saved)"
            )
    elif _CHECKSUM in meta:
        raise ModelFileError(
            f"{where} is not a valid w1ot model file: a version 1 file has no checksum"
        )
    if not isinstance(meta.get("class"), str):
        raise ModelFileError(f"{where} is not a valid w1ot model file: it names no model class")
    return meta, arrays


def _members(path, where: str, size: int) -> dict[str, np.ndarray]:
    """The arrays of the archive, each member checked before it is read (no allocation
    beyond the file's size)."""
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        counts = collections.Counter(i.filename for i in infos)
        twice = sorted(n for n, c in counts.items() if c > 1)
        if twice:
            raise ModelFileError(
                f"{where} is not a valid w1ot model file: it holds {twice[0]!r} more than once"
            )
        if _META + ".npy" not in counts:
            raise ModelFileError(f"{where} is not a w1ot model file (no w1ot metadata)")
        total = 0
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise ModelFileError(
                    f"{where} is not a valid w1ot model file: its member {info.filename!r} "
                    "is not an array"
                )
            if (
                info.compress_type != zipfile.ZIP_STORED
                or info.flag_bits & 0x1
                or info.file_size != info.compress_size
            ):
                raise ModelFileError(
                    f"{where} is not a valid w1ot model file: its member {info.filename!r} "
                    "is compressed or encrypted"
                )
            total += info.file_size
            if total > size:
                raise ModelFileError(
                    f"{where} is not a readable w1ot model file (truncated or corrupt: its "
                    "members are larger than the file)"
                )
        return {
            info.filename[: -len(".npy")]: _array(where, info.filename, zf.read(info))
            for info in infos
        }


def _array(where: str, member: str, raw: bytes) -> np.ndarray:
    """The numeric array in the .npy bytes ``raw`` (never an object array)."""
    buf = io.BytesIO(raw)
    version = np.lib.format.read_magic(buf)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf)
    else:
        raise ValueError(f"member {member!r} has .npy format version {version}")
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise ModelFileError(
            f"{where} is not a valid w1ot model file: its member {member!r} is not a numeric array"
        )
    if dtype.kind not in "biuf":
        raise ModelFileError(
            f"{where} is not a valid w1ot model file: its member {member!r} is not a "
            f"numeric array (dtype {dtype})"
        )
    if any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in shape):
        raise ValueError(f"member {member!r} has shape {shape}")
    data = raw[buf.tell() :]
    count = math.prod(shape)
    if len(data) != count * dtype.itemsize:
        raise ValueError(f"member {member!r} does not hold the {count} values it declares")
    arr = np.frombuffer(data, dtype=dtype, count=count).reshape(
        shape, order="F" if fortran else "C"
    )
    return np.array(arr, order="C")


def _parse_meta(where: str, blob: np.ndarray) -> Any:
    if blob.dtype != np.uint8 or blob.ndim != 1:
        raise ModelFileError(f"{where} is not a w1ot model file (no w1ot metadata)")

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError("metadata has a key twice")
        return dict(pairs)

    def no_constant(name):
        raise ValueError(f"metadata holds {name}")

    return json.loads(
        blob.tobytes().decode("utf-8"),
        object_pairs_hook=no_duplicates,
        parse_constant=no_constant,
    )


def _reason(exc: BaseException) -> str:
    """A short account of what failed (nothing that suggests unsafe loading)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if not text or "pickle" in text.lower() or len(text) > 200:
        return type(exc).__name__
    return text


# -- metadata schema ----------------------------------------------------------------------


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _check_meta(where: str, meta: dict[str, Any]) -> None:
    """The entries every model file has, each of the right type."""
    cls = meta["class"]

    def bad(reason: str) -> ModelFileError:
        return ModelFileError(f"{where} is not a valid {cls} model file: {reason}")

    unknown = sorted(set(meta) - _META_KEYS)
    if unknown:
        raise bad(f"its metadata has an unknown entry {unknown[0]!r}")
    for key in _REQUIRED:
        if key not in meta:
            raise bad(f"its metadata lacks {key!r}")
    if not isinstance(meta["config"], dict):
        raise bad(f"its configuration is not a mapping (got {type(meta['config']).__name__})")
    n = meta["n_features"]
    if not _is_int(n) or not 1 <= n <= MAX_FEATURES:
        raise bad(f"n_features must be a positive integer up to {MAX_FEATURES}, got {n!r}")
    if "fit_time" in meta:
        t = meta["fit_time"]
        if not isinstance(t, dict) or not all(_is_number(v) and v >= 0 for v in t.values()):
            raise bad(f"fit_time must map stages to seconds, got {t!r:.80}")
    if meta.get("fitted_on") is not None:
        _check_fitted_on(bad, meta["fitted_on"], n)


def _check_fitted_on(bad, spec, n_features: int) -> None:
    """What w1ot.tl.fit recorded about the AnnData (read back by w1ot.tl.predict)."""
    if not isinstance(spec, dict):
        raise bad("fitted_on is not a mapping")
    rep = spec.get("representation")
    if not isinstance(rep, dict):
        raise bad("fitted_on lacks its representation")
    for key in ("layer", "obsm_key"):
        if rep.get(key) is not None and not isinstance(rep[key], str):
            raise bad(f"fitted_on.representation.{key} must be a str or null")
    if rep.get("n_features") != n_features or not _is_int(rep.get("n_features")):
        raise bad(f"fitted_on.representation.n_features does not match n_features={n_features}")
    feats = rep.get("features")
    if feats is not None and (
        not isinstance(feats, list)
        or len(feats) != n_features
        or not all(isinstance(f, str) for f in feats)
    ):
        raise bad(f"fitted_on.representation.features must name the {n_features} features")
    if not isinstance(spec.get("condition_key"), str):
        raise bad("fitted_on.condition_key must be a str")
    for key in ("control", "perturbation"):
        if key not in spec or not (spec[key] is None or isinstance(spec[key], (str, int, float))):
            raise bad(f"fitted_on.{key} must be a label")
    if "nonnegative" in spec and not isinstance(spec["nonnegative"], bool):
        raise bad("fitted_on.nonnegative must be true or false")
    if "method" in spec and not isinstance(spec["method"], str):
        raise bad("fitted_on.method must be a str")
    cells = spec.get("n_cells", {})
    if not isinstance(cells, dict) or not all(_is_int(v) and v >= 0 for v in cells.values()):
        raise bad("fitted_on.n_cells must map groups to cell counts")
