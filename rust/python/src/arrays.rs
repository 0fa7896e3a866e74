//! NumPy at the boundary: inputs are validated and, only when needed, converted once to
//! C-contiguous float32; outputs are fresh float32 arrays handed to NumPy without a copy.

use numpy::{
    PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use w1ot_core::{Error, MatView, Matrix};

use crate::errors::detached;

fn dtype_kind(arr: &Bound<'_, PyAny>) -> PyResult<(String, String)> {
    let dtype = arr.getattr("dtype")?;
    Ok((dtype.getattr("kind")?.extract()?, dtype.str()?.to_string()))
}

/// `obj` as a C-contiguous float32 array of `ndim` dimensions: the array itself when it
/// already is one (no copy), else one conversion. Non-numeric input is a TypeError, a
/// wrong dimensionality a ValueError, both naming the argument.
fn contiguous_f32<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    ndim: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    let np = py.import("numpy")?;
    let arr = if obj.is_instance(&np.getattr("ndarray")?)? {
        obj.clone()
    } else {
        np.call_method1("asarray", (obj,)).map_err(|e| {
            PyTypeError::new_err(format!("{name}: cannot be read as a numeric array ({e})"))
        })?
    };
    let (kind, dtype) = dtype_kind(&arr)?;
    if !matches!(kind.as_str(), "f" | "i" | "u") {
        return Err(PyTypeError::new_err(format!(
            "{name}: expected a real numeric array, got dtype {dtype}"
        )));
    }
    let got: usize = arr.getattr("ndim")?.extract()?;
    if got != ndim {
        let want = if ndim == 2 {
            "a 2-D array (n_cells, n_features)"
        } else {
            "a 1-D array"
        };
        return Err(PyValueError::new_err(format!(
            "{name}: expected {want}, got a {got}-D array"
        )));
    }
    let flags = arr.getattr("flags")?;
    let c_contig: bool = flags.getattr("c_contiguous")?.extract()?;
    let aligned: bool = flags.getattr("aligned")?.extract()?;
    let dt = arr.getattr("dtype")?;
    let native: bool = dt.getattr("isnative")?.extract()?;
    let itemsize: usize = dt.getattr("itemsize")?.extract()?;
    if kind == "f" && itemsize == 4 && c_contig && aligned && native {
        return Ok(arr);
    }
    // A fresh, aligned, native-order, C-contiguous float32 copy: `ascontiguousarray` would
    // hand back an unaligned buffer unchanged, which Rust cannot read as &[f32].
    let kwargs = PyDict::new(py);
    kwargs.set_item("dtype", np.getattr("float32")?)?;
    kwargs.set_item("order", "C")?;
    kwargs.set_item("copy", true)?;
    np.call_method("array", (arr,), Some(&kwargs))
}

fn check_finite(data: &[f32], name: &str) -> PyResult<()> {
    if data.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(PyValueError::new_err(format!(
            "{name}: contains NaN or infinite values"
        )))
    }
}

/// A validated (n, d) float32 input with n, d >= 1 and finite values.
pub fn matrix_arg<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    cols: Option<usize>,
) -> PyResult<PyReadonlyArray2<'py, f32>> {
    let arr = contiguous_f32(obj, name, 2)?;
    let arr = arr
        .cast_into::<PyArray2<f32>>()
        .map_err(PyErr::from)?
        .readonly();
    let shape = arr.shape();
    let (n, d) = (shape[0], shape[1]);
    if n == 0 || d == 0 {
        return Err(PyValueError::new_err(format!(
            "{name}: empty array of shape ({n}, {d})"
        )));
    }
    if let Some(c) = cols
        && d != c
    {
        return Err(PyValueError::new_err(format!(
            "{name}: expected {c} features (columns), got {d}"
        )));
    }
    check_finite(arr.as_slice().expect("contiguous by construction"), name)?;
    Ok(arr)
}

/// A validated 1-D float32 input of the given length (if any), finite.
pub fn vector_arg<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    len: Option<usize>,
) -> PyResult<PyReadonlyArray1<'py, f32>> {
    let arr = contiguous_f32(obj, name, 1)?;
    let arr = arr
        .cast_into::<PyArray1<f32>>()
        .map_err(PyErr::from)?
        .readonly();
    if let Some(l) = len
        && arr.len() != l
    {
        return Err(PyValueError::new_err(format!(
            "{name}: expected length {l}, got {}",
            arr.len()
        )));
    }
    check_finite(arr.as_slice().expect("contiguous by construction"), name)?;
    Ok(arr)
}

pub fn view<'a>(arr: &'a PyReadonlyArray2<'_, f32>) -> MatView<'a, f32> {
    let s = arr.shape();
    MatView::new(
        s[0],
        s[1],
        arr.as_slice().expect("contiguous by construction"),
    )
    .expect("shape matches buffer")
}

/// Validates `x` as cells of `dim` features and runs `f` on them with the GIL released: the
/// shape of every inference method.
pub fn on_cells<T: Send>(
    x: &Bound<'_, PyAny>,
    dim: usize,
    f: impl FnOnce(MatView<'_, f32>) -> Result<T, Error> + Send,
) -> PyResult<T> {
    let arr = matrix_arg(x, "x", Some(dim))?;
    let xv = view(&arr);
    detached(x.py(), || f(xv))
}

pub fn to_numpy2<'py>(py: Python<'py>, m: Matrix<f32>) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let (r, c) = m.shape();
    PyArray1::from_vec(py, m.into_vec()).reshape([r, c])
}

pub fn to_numpy1(py: Python<'_>, v: Vec<f32>) -> Bound<'_, PyArray1<f32>> {
    PyArray1::from_vec(py, v)
}

/// Named float32 vectors as a dict of NumPy arrays (training histories, parameter states).
pub fn f32_dict<'py>(
    py: Python<'py>,
    items: Vec<(&str, Vec<f32>)>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in items {
        d.set_item(k, to_numpy1(py, v))?;
    }
    Ok(d)
}

/// A training history: float32 series, the iterations of the held-out evaluations and the
/// iteration whose parameters were kept.
pub fn history<'py>(
    py: Python<'py>,
    series: Vec<(&str, Vec<f32>)>,
    eval_iters: Vec<usize>,
    best_iter: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let d = f32_dict(py, series)?;
    d.set_item("eval_iters", usize_array(py, eval_iters))?;
    d.set_item("best_iter", best_iter)?;
    Ok(d)
}

pub fn usize_array(py: Python<'_>, v: Vec<usize>) -> Bound<'_, PyArray1<i64>> {
    PyArray1::from_vec(py, v.into_iter().map(|x| x as i64).collect())
}

/// `state[key]` of a `set_state` dict as a validated float32 vector of `len` values.
pub fn state_entry<'py>(
    state: &Bound<'py, PyDict>,
    key: &str,
    len: usize,
) -> PyResult<PyReadonlyArray1<'py, f32>> {
    let v = state
        .get_item(key)?
        .ok_or_else(|| PyValueError::new_err(format!("state: missing {key:?}")))?;
    vector_arg(&v, &format!("state['{key}']"), Some(len))
}

/// Held-out source and target cells, validated, or neither.
pub type ValidPair<'py> = Option<(PyReadonlyArray2<'py, f32>, PyReadonlyArray2<'py, f32>)>;

pub fn valid_pair<'py>(
    vs: Option<&Bound<'py, PyAny>>,
    vt: Option<&Bound<'py, PyAny>>,
    d: usize,
) -> PyResult<ValidPair<'py>> {
    match (vs, vt) {
        (Some(s), Some(t)) => Ok(Some((
            matrix_arg(s, "valid_source", Some(d))?,
            matrix_arg(t, "valid_target", Some(d))?,
        ))),
        (None, None) => Ok(None),
        _ => Err(PyValueError::new_err(
            "valid_source and valid_target must be given together",
        )),
    }
}
