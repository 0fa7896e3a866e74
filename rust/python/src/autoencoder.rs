//! The autoencoder of the latent mode (encoder and decoder MLPs) and its training.

use numpy::PyArray2;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use w1ot_core::rng::Rng;
use w1ot_core::solvers::autoencoder::{self as ae, Autoencoder, AutoencoderConfig};

use crate::arrays::{f32_dict, history, matrix_arg, on_cells, state_entry, to_numpy2, view};
use crate::errors::{IntoPyResult, count_arg, detached, number, positive_f64};
use crate::nn::{adam_config, checked_param_count, seed_arg, widths};
use crate::training;

/// Seed of the training stream, derived from the model seed (initialisation uses the seed).
const TRAIN_STREAM: u64 = 0x9e37_79b9_7f4a_7c15;

#[pyclass(module = "w1ot._core", name = "AutoencoderCore")]
pub struct PyAutoencoder {
    inner: Autoencoder,
    seed: u64,
}

#[pymethods]
impl PyAutoencoder {
    #[new]
    #[pyo3(signature = (dim, *, hidden = vec![512, 512], latent = 50, seed = 0))]
    fn new(
        #[pyo3(from_py_with = number)] dim: i64,
        #[pyo3(from_py_with = number)] hidden: Vec<i64>,
        #[pyo3(from_py_with = number)] latent: i64,
        #[pyo3(from_py_with = number)] seed: i64,
    ) -> PyResult<Self> {
        let dim = count_arg(dim, "dim", 1)?;
        let hidden = widths(hidden, "hidden")?;
        let latent = count_arg(latent, "latent", 1)?;
        let seed = seed_arg(seed)?;
        // Refuse sizes that overflow or cannot be allocated before allocating anything.
        let mut dims = vec![dim];
        dims.extend_from_slice(&hidden);
        dims.push(latent);
        let half = checked_param_count(&dims, 0, "dim, hidden, latent")?;
        dims.reverse();
        let other = checked_param_count(&dims, 0, "dim, hidden, latent")?;
        if half
            .checked_add(other)
            .is_none_or(|n| n > crate::nn::MAX_PARAMS)
        {
            return Err(PyValueError::new_err(format!(
                "dim, hidden, latent: {dim} features, widths {hidden:?} and latent {latent} give more than {} parameters",
                crate::nn::MAX_PARAMS
            )));
        }
        let inner = Autoencoder::new(dim, &hidden, latent, &mut Rng::new(seed)).py()?;
        Ok(Self { inner, seed })
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    #[getter]
    fn latent(&self) -> usize {
        self.inner.latent()
    }
    #[getter]
    fn hidden(&self) -> Vec<usize> {
        self.inner.hidden()
    }
    #[getter]
    fn n_params(&self) -> usize {
        self.inner.encoder.n_params() + self.inner.decoder.n_params()
    }

    /// Trains on `cells`; `valid` (held-out cells) picks the parameters kept and drives the
    /// early stop. Returns the history. On any error the model is unchanged.
    #[pyo3(signature = (cells, valid = None, *, iters = 20_000, batch_size = 256, lr = 1e-3, betas = (0.9, 0.999), eps = 1e-8, weight_decay = 1e-5, eval_every = 250, patience = Some(10), min_rel_improvement = 1e-3, n_threads = 0, callback = None))]
    #[allow(clippy::too_many_arguments)]
    fn fit<'py>(
        &mut self,
        py: Python<'py>,
        cells: &Bound<'py, PyAny>,
        valid: Option<&Bound<'py, PyAny>>,
        #[pyo3(from_py_with = number)] iters: i64,
        #[pyo3(from_py_with = number)] batch_size: i64,
        #[pyo3(from_py_with = number)] lr: f64,
        #[pyo3(from_py_with = number)] betas: (f64, f64),
        #[pyo3(from_py_with = number)] eps: f64,
        #[pyo3(from_py_with = number)] weight_decay: f64,
        #[pyo3(from_py_with = number)] eval_every: i64,
        #[pyo3(from_py_with = number)] patience: Option<i64>,
        #[pyo3(from_py_with = number)] min_rel_improvement: f64,
        #[pyo3(from_py_with = number)] n_threads: i64,
        callback: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let d = self.inner.dim();
        let x = matrix_arg(cells, "cells", Some(d))?;
        let v = valid.map(|v| matrix_arg(v, "valid", Some(d))).transpose()?;
        let cfg = AutoencoderConfig {
            iters: count_arg(iters, "iters", 0)?,
            batch_size: count_arg(batch_size, "batch_size", 1)?,
            lr: positive_f64(lr, "lr")?,
            adam: adam_config(betas, eps, weight_decay),
            eval_every: count_arg(eval_every, "eval_every", 1)?,
            patience: patience.map(|p| count_arg(p, "patience", 1)).transpose()?,
            min_rel_improvement,
        };
        let n_threads = count_arg(n_threads, "n_threads", 0)?;
        let (xv, vv) = (view(&x), v.as_ref().map(view));
        let mut model = self.inner.clone();
        let seed = self.seed;
        let hist = training::run(py, n_threads, callback.as_ref(), |monitor| {
            let mut rng = Rng::new(seed ^ TRAIN_STREAM);
            ae::train(&mut model, xv, vv, &cfg, &mut rng, monitor)
        })?;
        self.inner = model;
        history(
            py,
            vec![("loss", hist.loss), ("valid_loss", hist.valid_loss)],
            hist.eval_iters,
            hist.best_iter,
        )
    }

    /// Latent codes of cells.
    fn encode<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let m = &self.inner;
        to_numpy2(py, on_cells(x, m.dim(), |xv| m.encode(xv))?)
    }

    /// Cells decoded from latent codes.
    fn decode<'py>(
        &self,
        py: Python<'py>,
        z: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let m = &self.inner;
        let arr = matrix_arg(z, "z", Some(m.latent()))?;
        let zv = view(&arr);
        to_numpy2(py, detached(py, || m.decode(zv))?)
    }

    /// Mean squared reconstruction error over every entry of `x`.
    fn reconstruction_error(&self, x: &Bound<'_, PyAny>) -> PyResult<f64> {
        let m = &self.inner;
        on_cells(x, m.dim(), |xv| m.reconstruction_error(xv))
    }

    /// Parameters of the encoder and the decoder, as float32 arrays.
    fn get_state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        f32_dict(
            py,
            vec![
                ("encoder", self.inner.encoder.params().to_vec()),
                ("decoder", self.inner.decoder.params().to_vec()),
            ],
        )
    }

    fn set_state(&mut self, state: &Bound<'_, PyDict>) -> PyResult<()> {
        let e = state_entry(state, "encoder", self.inner.encoder.n_params())?;
        let d = state_entry(state, "decoder", self.inner.decoder.n_params())?;
        let mut m = self.inner.clone();
        m.encoder.set_params(e.as_slice()?).py()?;
        m.decoder.set_params(d.as_slice()?).py()?;
        self.inner = m;
        Ok(())
    }
}

/// Floating-point operations of one autoencoder training iteration (for the timing suite).
#[pyfunction]
#[pyo3(signature = (dim, *, hidden = vec![512, 512], latent = 50, batch_size = 256))]
pub fn autoencoder_iteration_flops(
    #[pyo3(from_py_with = number)] dim: i64,
    #[pyo3(from_py_with = number)] hidden: Vec<i64>,
    #[pyo3(from_py_with = number)] latent: i64,
    #[pyo3(from_py_with = number)] batch_size: i64,
) -> PyResult<u64> {
    Ok(ae::iteration_flops(
        count_arg(dim, "dim", 1)?,
        &widths(hidden, "hidden")?,
        count_arg(latent, "latent", 1)?,
        count_arg(batch_size, "batch_size", 1)?,
    ))
}
