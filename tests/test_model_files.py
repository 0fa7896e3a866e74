"""Model files: round trips, and every corrupt, crafted or foreign file refused with a
ModelFileError that names it (never another exception, never a hint to unpickle)."""

import io
import json
import struct
import time
import warnings
import zipfile

import numpy as np
import pytest

import w1ot.io
from w1ot import W1OT, W2OT, ModelFileError, tl
from w1ot.baselines import Identity, MeanShift, Observed

KINDS = ("w1ot", "w1ot_pca", "w2ot", "mean_shift")
CLASSES = {"w1ot": W1OT, "w1ot_pca": W1OT, "w2ot": W2OT, "mean_shift": MeanShift}


def _data(n_features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, n_features)).astype(np.float32)
    y = (rng.normal(size=(300, n_features)) + 1.0).astype(np.float32)
    return x, y


def _fit(kind: str):
    small_w1 = {"potential_iters": 50, "step_iters": 50, "batch_size": 64, "seed": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny fits: the diagnostics may say they learned little
        if kind == "w1ot":
            return W1OT(**small_w1, n_threads=1).fit(*_data(3))
        if kind == "w1ot_pca":
            return W1OT(**small_w1, n_threads=1).fit(*_data(100))
        if kind == "w2ot":
            return W2OT(iters=20, batch_size=64, seed=0, n_threads=1).fit(*_data(3))
        return MeanShift().fit(*_data(3))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """kind -> (fitted model, path of its file, the file's bytes)."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for kind in KINDS:
        model = _fit(kind)
        path = root / f"{kind}.npz"
        model.save(path)
        out[kind] = (model, path, path.read_bytes())
    assert out["w1ot_pca"][0].latent_dim is not None  # the wide model has a projection
    return out


def _probe(model) -> np.ndarray:
    return np.random.default_rng(7).normal(size=(20, model.n_features)).astype(np.float32)


def _arrays(model) -> dict[str, np.ndarray]:
    if isinstance(model, (W1OT, W2OT)):
        out = {f"param/{k}": v for k, v in model._core.get_state().items()}
        out.update({f"history/{k}": v for k, v in model.history.items()})
        if model.pca is not None:
            out.update({"pca/mean": model.pca.mean, "pca/components": model.pca.components})
        return out
    return {k: getattr(model, k) for k in model._ARRAYS}


def _assert_same(loaded, model) -> None:
    assert type(loaded) is type(model)
    assert loaded.get_params() == model.get_params()
    assert loaded.n_features == model.n_features
    assert getattr(loaded, "fit_time_", None) == getattr(model, "fit_time_", None)
    assert loaded.fitted_on_ == model.fitted_on_
    a, b = _arrays(loaded), _arrays(model)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        assert a[k].dtype == b[k].dtype, k
    probe = _probe(model)
    np.testing.assert_array_equal(loaded.transport(probe), model.transport(probe))


def _refused(load, path) -> str:
    """Loading ``path`` raises a one-line ModelFileError naming it; its message."""
    with pytest.raises(ModelFileError) as exc:
        load(path)
    msg = str(exc.value)
    assert str(path) in msg, msg
    assert "pickle" not in msg.lower(), msg
    assert "\n" not in msg, msg
    return msg


# -- writing crafted files ----------------------------------------------------------------


def _members(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """(metadata, arrays) of a model file's bytes, read with NumPy."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays.pop("__meta__").tobytes().decode("utf-8"))
    return meta, arrays


def _write(path, meta: dict, arrays: dict[str, np.ndarray], *, reseal: bool = True) -> None:
    """A model file of ``meta`` and ``arrays``; with ``reseal``, the checksum is recomputed
    (so that what is checked is the content, not just the integrity)."""
    meta = dict(meta)
    if reseal and "checksum" in meta:
        meta["checksum"] = w1ot.io._checksum(meta, arrays)
    blob = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    np.savez(path, __meta__=blob, **arrays)


def _crafted(saved, kind, tmp_path, edit_meta=None, edit_arrays=None, reseal=True):
    meta, arrays = _members(saved[kind][2])
    if edit_meta is not None:
        edit_meta(meta)
    if edit_arrays is not None:
        edit_arrays(arrays)
    path = tmp_path / f"crafted-{kind}.npz"
    _write(path, meta, arrays, reseal=reseal)
    return path


def _npy(array: np.ndarray, *, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def _zip(path, members: list[tuple[str, bytes]], compression=zipfile.ZIP_STORED) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w", compression=compression) as zf:
            for name, data in members:
                zf.writestr(name, data)


def _zip_members(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


# -- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip(saved, kind):
    model, path, _ = saved[kind]
    _assert_same(CLASSES[kind].load(path), model)
    _assert_same(tl.load(path), model)


def test_round_trip_of_the_other_baselines(tmp_path):
    for cls in (Identity, Observed):
        model = cls().fit(*_data(3))
        model.save(tmp_path / "b.npz")
        loaded = cls.load(tmp_path / "b.npz")
        probe = _probe(model)
        np.testing.assert_array_equal(loaded.transport(probe), model.transport(probe))


@pytest.mark.parametrize("kind", KINDS)
def test_a_saved_file_has_version_2_and_a_checksum(saved, kind):
    meta, arrays = _members(saved[kind][2])
    assert meta["version"] == w1ot.io.VERSION == 2
    assert meta["checksum"].startswith("sha256:")
    assert meta["checksum"] == w1ot.io._checksum(meta, arrays)


@pytest.mark.parametrize("kind", KINDS)
def test_version_1_file_written_the_old_way_still_loads(saved, kind, tmp_path):
    model = saved[kind][0]
    meta, arrays = _members(saved[kind][2])
    del meta["checksum"]
    meta["version"] = 1
    # w1ot's version-1 writer: the header, then the arrays, with np.savez
    path = tmp_path / "v1.npz"
    blob = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, __meta__=blob, **{k: np.asarray(v, order="C") for k, v in arrays.items()})
    _assert_same(CLASSES[kind].load(path), model)
    _assert_same(tl.load(path), model)
    # a version-1 file cannot carry a checksum (no downgrade to skip its check)
    meta["checksum"] = "sha256:0"
    _write(path, meta, arrays, reseal=False)
    assert "version 1" in _refused(CLASSES[kind].load, path)


# -- the integrity check ------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_changed_arrays_or_metadata_fail_the_checksum(saved, kind, tmp_path):
    load = CLASSES[kind].load
    name = "shift_" if kind == "mean_shift" else "param/" + ("f" if kind == "w2ot" else "step")

    def nudge(arrays):
        a = arrays[name].copy()
        a[0] = np.nextafter(a[0], np.inf)
        arrays[name] = a

    path = _crafted(saved, kind, tmp_path, edit_arrays=nudge, reseal=False)
    assert "checksum" in _refused(load, path)
    path = _crafted(saved, kind, tmp_path, edit_meta=lambda m: m["config"].update(seed=5))
    load(path)  # resealed: a valid file of another seed
    path = _crafted(
        saved, kind, tmp_path, edit_meta=lambda m: m["config"].update(seed=5), reseal=False
    )
    assert "checksum" in _refused(load, path)
    path = _crafted(saved, kind, tmp_path, edit_meta=lambda m: m.update(checksum=7), reseal=False)
    assert "checksum" in _refused(load, path)


# -- truncations and bit flips ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_truncated_files_are_refused(saved, kind, tmp_path):
    data = saved[kind][2]
    path = tmp_path / "truncated.npz"
    for n in sorted({0, 1, 10, 100, len(data) // 2, len(data) - 100, len(data) - 1}):
        path.write_bytes(data[:n])
        _refused(CLASSES[kind].load, path)
        _refused(tl.load, path)


def _member_spans(data: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the members' contents (the .npy files) in a zip archive."""
    spans = []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            off = info.header_offset
            n_name, n_extra = struct.unpack("<HH", data[off + 26 : off + 30])
            start = off + 30 + n_name + n_extra
            spans.append((start, start + info.compress_size))
    return spans


@pytest.mark.parametrize("kind", KINDS)
def test_bit_flips_load_the_same_model_or_are_refused(saved, kind, tmp_path):
    model, _, data = saved[kind]
    load = CLASSES[kind].load
    spans = _member_spans(data)
    rng = np.random.default_rng(list(KINDS).index(kind))
    positions = rng.choice(len(data), size=200, replace=False)
    # and the zip's own records: the central directory and the end record
    positions = np.concatenate([positions, np.arange(max(0, len(data) - 300), len(data))])
    path = tmp_path / "flipped.npz"
    refused = 0
    for pos in positions:
        bad = bytearray(data)
        bad[pos] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(bad))
        try:
            loaded = load(path)
        except ModelFileError as exc:
            refused += 1
            msg = str(exc)
            assert str(path) in msg and "pickle" not in msg.lower() and "\n" not in msg, msg
            continue
        # a flip that loads hit a byte that does not matter; never one inside a member
        assert not any(a <= pos < b for a, b in spans), f"flip at {pos} inside a member loaded"
        _assert_same(loaded, model)
    assert refused > len(positions) // 2


@pytest.mark.parametrize("kind", KINDS)
def test_every_flip_inside_the_arrays_is_detected(saved, kind, tmp_path):
    """Flips inside array data, resealed in a fresh archive (so that the zip's CRC cannot
    catch them): the checksum does."""
    meta, arrays = _members(saved[kind][2])
    rng = np.random.default_rng(3)
    path = tmp_path / "flipped.npz"
    for name in sorted(arrays):
        raw = bytearray(np.ascontiguousarray(arrays[name]).tobytes())
        if not raw:
            continue
        pos = int(rng.integers(len(raw)))
        raw[pos] ^= 1 << int(rng.integers(8))
        flipped = dict(arrays)
        flipped[name] = np.frombuffer(bytes(raw), arrays[name].dtype).reshape(arrays[name].shape)
        _write(path, meta, flipped, reseal=False)
        _refused(CLASSES[kind].load, path)


# -- crafted metadata ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reseal", [True, False])
def test_huge_n_features_is_refused_before_allocating(saved, kind, reseal, tmp_path):
    path = _crafted(
        saved, kind, tmp_path, edit_meta=lambda m: m.update(n_features=10**7), reseal=reseal
    )
    t0 = time.perf_counter()
    msg = _refused(CLASSES[kind].load, path)
    _refused(tl.load, path)
    assert time.perf_counter() - t0 < 1.0
    if reseal:
        assert "n_features" in msg


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [-1, 0, True, "3", 3.0, None, [3], 2**40, 4])
def test_bad_n_features_is_refused(saved, kind, n, tmp_path):
    path = _crafted(saved, kind, tmp_path, edit_meta=lambda m: m.update(n_features=n))
    assert "n_features" in _refused(CLASSES[kind].load, path)


@pytest.mark.parametrize("kind", KINDS)
def test_each_missing_metadata_entry_is_refused(saved, kind, tmp_path):
    meta, _ = _members(saved[kind][2])
    for key in sorted(meta):
        path = _crafted(saved, kind, tmp_path, edit_meta=lambda m, key=key: m.pop(key))
        _refused(CLASSES[kind].load, path)
        _refused(tl.load, path)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "entry",
    [
        {"config": [1, 2]},
        {"config": "hidden=64"},
        {"config": None},
        {"fit_time": "fast"},
        {"fit_time": {"potential": "fast"}},
        {"fit_time": {"potential": -1.0}},
        {"fit_time": {"potential": True}},
        {"class": 3},
        {"class": None},
        {"format": "npz"},
        {"fitted_on": [1]},
        {"fitted_on": {"representation": {"n_features": 3}}},
        {"unknown": 1},
    ],
    ids=repr,
)
def test_wrong_metadata_types_are_refused(saved, kind, entry, tmp_path):
    path = _crafted(saved, kind, tmp_path, edit_meta=lambda m: m.update(entry))
    _refused(CLASSES[kind].load, path)
    _refused(tl.load, path)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("version", [-7, 0, True, False, 3, "1", "2", 1.5, 2.0, None, [2]])
def test_bad_format_versions_are_refused(saved, kind, version, tmp_path):
    path = _crafted(saved, kind, tmp_path, edit_meta=lambda m: m.update(version=version))
    msg = _refused(CLASSES[kind].load, path)
    _refused(tl.load, path)
    assert "version" in msg
    if version == 3:
        assert "upgrade w1ot" in msg


@pytest.mark.parametrize("kind", KINDS)
def test_an_unknown_or_other_class_is_refused(saved, kind, tmp_path):
    path = _crafted(saved, kind, tmp_path, edit_meta=lambda m: m.update({"class": "Foo"}))
    assert "holds a Foo" in _refused(CLASSES[kind].load, path)
    assert "unknown model class 'Foo'" in _refused(tl.load, path)
    path = saved[kind][1]
    for other in (W1OT, W2OT, MeanShift, Observed):
        if other is not CLASSES[kind]:
            assert f"not a {other.__name__}" in _refused(other.load, path)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "name",
    ["extra", "param/extra", "pca/extra", "history", "shift", "target_", "__meta"],
)
def test_an_extra_member_is_refused(saved, kind, name, tmp_path):
    def add(arrays):
        arrays[name] = np.zeros(3, np.float32)

    path = _crafted(saved, kind, tmp_path, edit_arrays=add)
    _refused(CLASSES[kind].load, path)
    _refused(tl.load, path)


@pytest.mark.parametrize("kind", KINDS)
def test_a_missing_array_is_refused(saved, kind, tmp_path):
    _, arrays = _members(saved[kind][2])
    for name in sorted(k for k in arrays if not k.startswith("history/")):
        path = _crafted(saved, kind, tmp_path, edit_arrays=lambda a, name=name: a.pop(name))
        _refused(CLASSES[kind].load, path)


@pytest.mark.parametrize("kind", KINDS)
def test_a_duplicate_member_is_refused(saved, kind, tmp_path):
    members = _zip_members(saved[kind][2])
    _, arrays = _members(saved[kind][2])
    path = tmp_path / "dup.npz"
    for name, data in members:
        # the second copy differs (zeros) and has the right shape: it must not load
        key = name[: -len(".npy")]
        other = _npy(np.zeros_like(arrays[key])) if key in arrays else data
        _zip(path, [*members, (name, other)])
        assert "more than once" in _refused(CLASSES[kind].load, path)
        _refused(tl.load, path)


@pytest.mark.parametrize("kind", ["w1ot", "w1ot_pca", "w2ot"])
@pytest.mark.parametrize(
    "change",
    [
        lambda a: a.astype(np.int32),
        lambda a: a.astype(np.float64),
        lambda a: a.astype(np.float16),
        lambda a: a.astype(bool),
        lambda a: a.reshape(1, -1),
        lambda a: a[:100],
        lambda a: np.concatenate([a, a]),
        lambda a: np.where(np.arange(a.size) == 5, np.nan, a).astype(np.float32),
        lambda a: np.where(np.arange(a.size) == 5, np.inf, a).astype(np.float32),
    ],
    ids=["int32", "float64", "float16", "bool", "2-d", "short", "long", "nan", "inf"],
)
def test_bad_parameter_arrays_are_refused(saved, kind, change, tmp_path):
    _, arrays = _members(saved[kind][2])
    for name in sorted(k for k in arrays if k.startswith("param/")):
        path = _crafted(
            saved, kind, tmp_path, edit_arrays=lambda a, n=name: a.update({n: change(a[n])})
        )
        _refused(CLASSES[kind].load, path)


@pytest.mark.parametrize(
    "change",
    [
        lambda a: a.update({"pca/components": a["pca/components"][:-1]}),
        lambda a: a.update({"pca/components": a["pca/components"][:, :-1]}),
        lambda a: a.update({"pca/mean": a["pca/mean"][:-1]}),
        lambda a: a.update({"pca/mean": a["pca/mean"].astype(np.int64)}),
        lambda a: a.update({"pca/mean": np.full_like(a["pca/mean"], np.nan)}),
        lambda a: a.update({"pca/components": a["pca/components"].T.copy()}),
    ],
    ids=["fewer-components", "fewer-features", "short-mean", "int-mean", "nan", "transposed"],
)
def test_a_broken_projection_is_refused(saved, change, tmp_path):
    path = _crafted(saved, "w1ot_pca", tmp_path, edit_arrays=change)
    _refused(W1OT.load, path)


@pytest.mark.parametrize(
    ("kind", "option"),
    [
        ("w1ot", {"hidden": "64"}),
        ("w1ot", {"hidden": [128, 128, 128, 128]}),
        ("w1ot", {"hidden": [10**6] * 4}),
        ("w1ot", {"step_hidden": [10**5] * 3}),
        ("w1ot", {"group_size": 7}),
        ("w1ot", {"orthogonal": "bjorck"}),
        ("w1ot", {"batch_size": 0}),
        ("w1ot", {"potential_lr": float("inf")}),
        ("w1ot", {"n_components": 2}),
        ("w1ot", {"no_such_option": 1}),
        ("w1ot_pca", {"n_components": None}),
        ("w1ot_pca", {"n_components": 7}),
        ("w2ot", {"hidden": [32, 32]}),
        ("w2ot", {"lr": -1}),
        ("w2ot", {"betas": "0.5"}),
        ("mean_shift", {"seed": "0"}),
        ("mean_shift", {"seed": -1}),
        ("mean_shift", {"balance": 1}),
        ("mean_shift", {"no_such_option": 1}),
    ],
    ids=repr,
)
def test_a_configuration_the_arrays_or_constructor_refuse(saved, kind, option, tmp_path):
    path = _crafted(saved, kind, tmp_path, edit_meta=lambda m: m["config"].update(option))
    t0 = time.perf_counter()
    msg = _refused(CLASSES[kind].load, path)
    assert time.perf_counter() - t0 < 1.0
    if kind == "w1ot" and "hidden" in option and option["hidden"] == "64":
        assert "hidden" in msg


@pytest.mark.parametrize("kind", ["w1ot", "mean_shift"])
def test_non_numeric_members_are_refused_without_unpickling(saved, kind, tmp_path):
    members = _zip_members(saved[kind][2])
    path = tmp_path / "objects.npz"
    for payload in (
        _npy(np.array([{"a": 1}, None], dtype=object), allow_pickle=True),
        _npy(np.array(["text"])),
        _npy(np.zeros(2, dtype=[("a", "f4"), ("b", "i4")])),
        _npy(np.array([1 + 2j])),
    ):
        for name in ("history/x.npy", "param/step.npy", "__meta__.npy"):
            _zip(path, [(n, d) for n, d in members if n != name] + [(name, payload)])
            _refused(CLASSES[kind].load, path)


def test_member_headers_that_lie_are_refused_fast(saved, tmp_path):
    members = _zip_members(saved["w1ot"][2])
    path = tmp_path / "lying.npz"
    real = dict(members)["param/step.npy"]
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**10,)}
    )
    huge = header.getvalue() + real[128:]  # the real data under a header of 40 GB
    bad_header = real.replace(b"'descr'", b"'dexcr'")
    unparsable = real.replace(b"'shape'", b"'sh\x00pe")
    for payload in (huge, bad_header, unparsable, b"\x93NUMPY\x09\x00", b"\x93NUMPY", b""):
        _zip(path, [(n, payload if n == "param/step.npy" else d) for n, d in members])
        t0 = time.perf_counter()
        _refused(W1OT.load, path)
        assert time.perf_counter() - t0 < 1.0


def test_compressed_members_are_refused(saved, tmp_path):
    # a deflated member could expand to any size: w1ot writes (and reads) stored members only
    path = tmp_path / "deflated.npz"
    _zip(path, _zip_members(saved["w1ot"][2]), compression=zipfile.ZIP_DEFLATED)
    assert "compressed" in _refused(W1OT.load, path)
    bomb = [("__meta__.npy", _npy(np.zeros(1, np.uint8))), ("x.npy", b"\0" * 10_000_000)]
    _zip(path, bomb, compression=zipfile.ZIP_DEFLATED)
    _refused(W1OT.load, path)


# -- foreign files ------------------------------------------------------------------------


def _foreign(tmp_path) -> dict[str, object]:
    files = {}
    p = tmp_path / "notes.txt"
    p.write_text("these are not the parameters you are looking for\n")
    files["text"] = p
    p = tmp_path / "array.npy"
    np.save(p, np.arange(10.0))
    files["npy"] = p
    p = tmp_path / "empty.npz"
    p.write_bytes(b"")
    files["empty"] = p
    p = tmp_path / "data.h5ad"
    p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    files["hdf5"] = p
    p = tmp_path / "plain.npz"
    np.savez(p, a=np.zeros(3), b=np.ones((2, 2)))
    files["npz"] = p
    p = tmp_path / "docs.zip"
    _zip(p, [("readme.txt", b"hello"), ("data/x.csv", b"1,2,3\n")])
    files["zip"] = p
    p = tmp_path / "empty.zip"
    _zip(p, [])
    files["empty-zip"] = p
    p = tmp_path / "fake.npz"
    p.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8)
    files["fake-zip"] = p
    p = tmp_path / "python-object.bin"
    p.write_bytes(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.")
    files["python-serialized"] = p
    p = tmp_path / "meta-only.npz"
    np.savez(p, __meta__=np.frombuffer(b'{"format": "w1ot-model"', np.uint8))
    files["bad-json"] = p
    p = tmp_path / "meta-text.npz"
    np.savez(p, __meta__=np.array(["not bytes"]))
    files["meta-not-bytes"] = p
    p = tmp_path / "meta-list.npz"
    np.savez(p, __meta__=np.frombuffer(b"[1, 2]", np.uint8))
    files["meta-list"] = p
    p = tmp_path / "meta-latin1.npz"
    np.savez(p, __meta__=np.frombuffer(b'{"format": "\xff"}', np.uint8))
    files["meta-not-utf8"] = p
    p = tmp_path / "meta-nan.npz"
    np.savez(p, __meta__=np.frombuffer(b'{"format": "w1ot-model", "version": NaN}', np.uint8))
    files["meta-nan"] = p
    p = tmp_path / "meta-twice.npz"
    meta = b'{"format": "w1ot-model", "version": 2, "version": 1, "class": "W1OT"}'
    np.savez(p, __meta__=np.frombuffer(meta, np.uint8))
    files["meta-duplicate-key"] = p
    p = tmp_path / "meta-deep.npz"
    np.savez(p, __meta__=np.frombuffer(b"[" * 100_000 + b"]" * 100_000, np.uint8))
    files["meta-deep"] = p
    return files


@pytest.mark.parametrize(
    "load",
    [W1OT.load, W2OT.load, MeanShift.load, tl.load],
    ids=["W1OT", "W2OT", "MeanShift", "tl"],
)
def test_foreign_files_are_refused(tmp_path, load):
    for kind, path in _foreign(tmp_path).items():
        msg = _refused(load, path)
        assert "w1ot model" in msg, (kind, msg)


def test_a_missing_file_is_a_file_not_found_error(tmp_path):
    for load in (W1OT.load, MeanShift.load, tl.load):
        with pytest.raises(FileNotFoundError):
            load(tmp_path / "nowhere.npz")
