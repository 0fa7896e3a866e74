//! Core errors to Python exceptions, and the guard that keeps Rust panics out of Python.

use pyo3::exceptions::{
    PyFloatingPointError, PyKeyboardInterrupt, PyOverflowError, PyRuntimeError, PyValueError,
};
use pyo3::prelude::*;
use w1ot_core::Error;

// The full dotted path, so that the type's __module__ is importable (pickling, e.g. an
// error raised in a multiprocessing worker, looks the class up by it).
pyo3::create_exception!(
    w1ot._core,
    TrainingError,
    PyRuntimeError,
    "Training stopped because a loss or parameter became NaN or infinite."
);

pub fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::InvalidArgument { .. } | Error::Shape { .. } => PyValueError::new_err(msg),
        Error::Singular(_) => PyFloatingPointError::new_err(msg),
        Error::Diverged { .. } => TrainingError::new_err(msg),
        Error::Interrupted => PyKeyboardInterrupt::new_err(msg),
    }
}

pub trait IntoPyResult<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, Error> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// Runs `f` with the GIL released. Inputs are validated before this point, so a panic here
/// is a bug: it becomes a RuntimeError rather than tearing through the interpreter.
pub fn detached<T: Send, F: FnOnce() -> Result<T, Error> + Send>(
    py: Python<'_>,
    f: F,
) -> PyResult<T> {
    py.detach(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)))
        .map_err(internal_error)?
        .py()
}

/// An integer argument that must be >= `min`, as usize (negative Python ints included).
pub fn count_arg(v: i64, name: &str, min: i64) -> PyResult<usize> {
    if v < min {
        return Err(PyValueError::new_err(format!(
            "{name}: must be >= {min}, got {v}"
        )));
    }
    Ok(v as usize)
}

/// A finite number > 0.
pub fn positive_f64(v: f64, name: &str) -> PyResult<f64> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(PyValueError::new_err(format!(
            "{name}: must be a positive number, got {v}"
        )))
    }
}

/// A caught Rust panic as a RuntimeError: inputs are validated first, so it is a bug.
pub fn internal_error(payload: Box<dyn std::any::Any + Send>) -> PyErr {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    PyRuntimeError::new_err(format!("w1ot internal error (please report): {what}"))
}

/// Extracts a numeric argument (`#[pyo3(from_py_with = number)]`). PyO3 raises OverflowError
/// for an int beyond 64 bits or beyond float range, which is neither the ValueError nor the
/// TypeError the rest of the API raises for a bad value; PyO3 notes the argument's name.
pub fn number<'py, T>(obj: &Bound<'py, PyAny>) -> PyResult<T>
where
    T: for<'a> FromPyObject<'a, 'py>,
    for<'a> <T as FromPyObject<'a, 'py>>::Error: Into<PyErr>,
{
    obj.extract::<T>().map_err(|e| {
        let e: PyErr = e.into();
        let py = obj.py();
        if e.is_instance_of::<PyOverflowError>(py) {
            PyValueError::new_err(format!("out of range: {}", e.value(py)))
        } else {
            e
        }
    })
}
