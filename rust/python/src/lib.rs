//! w1ot._core: the thin PyO3 binding of w1ot-core. Arrays in and out, errors mapped to
//! Python exceptions, the GIL released around numerical work. No numerics live here.

use pyo3::prelude::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod arrays;
mod autoencoder;
mod errors;
mod nn;
mod training;
mod w1;
mod w2;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("TrainingError", m.py().get_type::<errors::TrainingError>())?;
    m.add_class::<nn::PyPotential>()?;
    m.add_class::<nn::PyMlp>()?;
    m.add_class::<nn::PyAdam>()?;
    m.add_class::<w1::PyW1>()?;
    m.add_class::<w2::PyW2>()?;
    m.add_class::<autoencoder::PyAutoencoder>()?;
    m.add_function(wrap_pyfunction!(
        autoencoder::autoencoder_iteration_flops,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(w2::iteration_flops, m)?)?;
    m.add_function(wrap_pyfunction!(nn::cosine_lr, m)?)?;
    m.add_function(wrap_pyfunction!(nn::group_sort, m)?)?;
    m.add_function(wrap_pyfunction!(nn::group_sort_backward, m)?)?;
    m.add_function(wrap_pyfunction!(nn::cayley, m)?)?;
    m.add_function(wrap_pyfunction!(nn::bjorck, m)?)?;
    Ok(())
}
