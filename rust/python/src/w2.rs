//! The W2 baseline's state (the input-convex potentials f and g) and its training.

use numpy::{PyArray1, PyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use w1ot_core::nn::{Icnn, IcnnInit};
use w1ot_core::rng::Rng;
use w1ot_core::solvers::w2::{self, W2Config};

use crate::arrays::{
    f32_dict, history, matrix_arg, on_cells, state_entry, to_numpy1, to_numpy2, valid_pair, view,
};
use crate::errors::{IntoPyResult, count_arg, detached, number, positive_f64};
use crate::nn::{MAX_PARAMS, adam_config, seed_arg, widths};
use crate::training;

/// Seed of the training stream, derived from the model seed (initialisation uses the seed).
const TRAIN_STREAM: u64 = 0x2545_f491_4f6c_dd1d;

fn init_arg(init: &str, scale: f64) -> PyResult<IcnnInit> {
    match init {
        "uniform" => Ok(IcnnInit::Uniform(positive_f64(scale, "init_scale")?)),
        "torch" => Ok(IcnnInit::Torch),
        other => Err(PyValueError::new_err(format!(
            "init: expected 'uniform' (CellOT's) or 'torch' (PyTorch's default), got {other:?}"
        ))),
    }
}

/// The parameter count of an ICNN, refused before anything is allocated when it overflows
/// or exceeds what can be allocated: every A layer sees the input, W the layer below.
fn icnn_param_count(dim: usize, hidden: &[usize]) -> PyResult<usize> {
    let rows = hidden.iter().sum::<usize>().checked_add(1);
    let a = rows.and_then(|r| r.checked_mul(dim.checked_add(1)?));
    let w = hidden
        .windows(2)
        .chain(std::iter::once(&[hidden[hidden.len() - 1], 1][..]))
        .try_fold(0usize, |acc, p| acc.checked_add(p[0].checked_mul(p[1])?));
    match a.zip(w).and_then(|(a, w)| a.checked_add(w)) {
        Some(n) if n <= MAX_PARAMS => Ok(n),
        _ => Err(PyValueError::new_err(format!(
            "dim, hidden: {dim} features and widths {hidden:?} give more than {MAX_PARAMS} parameters"
        ))),
    }
}

#[pyclass(module = "w1ot._core", name = "W2Core")]
pub struct PyW2 {
    f: Icnn<f32>,
    g: Icnn<f32>,
    seed: u64,
}

#[pymethods]
impl PyW2 {
    #[new]
    #[pyo3(signature = (dim, *, hidden = vec![64, 64, 64, 64], negative_slope = 0.2, init = "uniform", init_scale = 0.1, seed = 0))]
    fn new(
        #[pyo3(from_py_with = number)] dim: i64,
        #[pyo3(from_py_with = number)] hidden: Vec<i64>,
        #[pyo3(from_py_with = number)] negative_slope: f64,
        init: &str,
        #[pyo3(from_py_with = number)] init_scale: f64,
        #[pyo3(from_py_with = number)] seed: i64,
    ) -> PyResult<Self> {
        let dim = count_arg(dim, "dim", 1)?;
        let hidden = widths(hidden, "hidden")?;
        if hidden.is_empty() {
            return Err(PyValueError::new_err("hidden: needs at least one layer"));
        }
        icnn_param_count(dim, &hidden)?;
        let seed = seed_arg(seed)?;
        let cfg = W2Config {
            hidden,
            negative_slope,
            init: init_arg(init, init_scale)?,
            ..Default::default()
        };
        let (f, g) = w2::networks(dim, &cfg, &mut Rng::new(seed)).py()?;
        Ok(Self { f, g, seed })
    }

    #[getter]
    fn dim(&self) -> usize {
        self.g.in_dim()
    }

    /// Trains f and g; returns the history. On any error the model is unchanged.
    #[pyo3(signature = (source, target, valid_source = None, valid_target = None, *, iters = 100_000, inner_iters = 10, batch_size = 256, lr = 1e-4, betas = (0.5, 0.9), eps = 1e-8, penalty = 1.0, eval_every = 250, select_best = true, patience = None, min_rel_improvement = 1e-2, mmd_gammas = None, n_threads = 0, callback = None))]
    #[allow(clippy::too_many_arguments)]
    fn fit<'py>(
        &mut self,
        py: Python<'py>,
        source: &Bound<'py, PyAny>,
        target: &Bound<'py, PyAny>,
        valid_source: Option<&Bound<'py, PyAny>>,
        valid_target: Option<&Bound<'py, PyAny>>,
        #[pyo3(from_py_with = number)] iters: i64,
        #[pyo3(from_py_with = number)] inner_iters: i64,
        #[pyo3(from_py_with = number)] batch_size: i64,
        #[pyo3(from_py_with = number)] lr: f64,
        #[pyo3(from_py_with = number)] betas: (f64, f64),
        #[pyo3(from_py_with = number)] eps: f64,
        #[pyo3(from_py_with = number)] penalty: f64,
        #[pyo3(from_py_with = number)] eval_every: i64,
        select_best: bool,
        #[pyo3(from_py_with = number)] patience: Option<i64>,
        #[pyo3(from_py_with = number)] min_rel_improvement: f64,
        #[pyo3(from_py_with = number)] mmd_gammas: Option<Vec<f64>>,
        #[pyo3(from_py_with = number)] n_threads: i64,
        callback: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let d = self.g.in_dim();
        let s = matrix_arg(source, "source", Some(d))?;
        let t = matrix_arg(target, "target", Some(d))?;
        let valid = valid_pair(valid_source, valid_target, d)?;
        let cfg = W2Config {
            hidden: self.g.hidden().to_vec(),
            negative_slope: self.g.negative_slope(),
            iters: count_arg(iters, "iters", 0)?,
            inner_iters: count_arg(inner_iters, "inner_iters", 1)?,
            batch_size: count_arg(batch_size, "batch_size", 1)?,
            lr: positive_f64(lr, "lr")?,
            adam: adam_config(betas, eps, 0.0),
            penalty,
            eval_every: count_arg(eval_every, "eval_every", 1)?,
            select_best,
            patience: patience.map(|p| count_arg(p, "patience", 1)).transpose()?,
            min_rel_improvement,
            mmd_gammas: mmd_gammas.unwrap_or_else(|| W2Config::default().mmd_gammas),
            ..Default::default()
        };
        let n_threads = count_arg(n_threads, "n_threads", 0)?;
        let (sv, tv) = (view(&s), view(&t));
        let vv = valid.as_ref().map(|(a, b)| (view(a), view(b)));
        let (mut f, mut g) = (self.f.clone(), self.g.clone());
        let seed = self.seed;
        let hist = training::run(py, n_threads, callback.as_ref(), |monitor| {
            let mut rng = Rng::new(seed ^ TRAIN_STREAM);
            w2::train(&mut f, &mut g, sv, tv, vv, &cfg, &mut rng, monitor)
        })?;
        (self.f, self.g) = (f, g);
        history(
            py,
            vec![
                ("g_loss", hist.g_loss),
                ("f_loss", hist.f_loss),
                ("w2_valid", hist.w2_valid),
                ("mmd_valid", hist.mmd_valid),
            ],
            hist.eval_iters,
            hist.best_iter,
        )
    }

    /// T(x) = grad g(x).
    fn transport<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let g = &self.g;
        to_numpy2(py, on_cells(x, g.in_dim(), |xv| w2::transport(g, xv))?)
    }

    /// f(x), the potential on the target side.
    fn potential_f<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let f = &self.f;
        Ok(to_numpy1(py, on_cells(x, f.in_dim(), |xv| f.value(xv))?))
    }

    /// g(x), whose gradient is the map.
    fn potential_g<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let g = &self.g;
        Ok(to_numpy1(py, on_cells(x, g.in_dim(), |xv| g.value(xv))?))
    }

    /// The estimate of W2^2 / 2 on the given cells (CellOT's convention).
    fn w2_distance(&self, source: &Bound<'_, PyAny>, target: &Bound<'_, PyAny>) -> PyResult<f64> {
        let d = self.g.in_dim();
        let s = matrix_arg(source, "source", Some(d))?;
        let t = matrix_arg(target, "target", Some(d))?;
        let (sv, tv) = (view(&s), view(&t));
        let (f, g) = (&self.f, &self.g);
        detached(source.py(), || w2::w2_estimate(f, g, sv, tv))
    }

    /// Parameters of f and g, as float32 arrays.
    fn get_state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        f32_dict(
            py,
            vec![
                ("f", self.f.params().to_vec()),
                ("g", self.g.params().to_vec()),
            ],
        )
    }

    fn set_state(&mut self, state: &Bound<'_, PyDict>) -> PyResult<()> {
        let f = state_entry(state, "f", self.f.n_params())?;
        let g = state_entry(state, "g", self.g.n_params())?;
        self.f.set_params(f.as_slice()?).py()?;
        self.g.set_params(g.as_slice()?).py()?;
        Ok(())
    }
}

/// Floating-point operations of one training iteration of a solver stage as the core
/// implements it (2 per multiply-add of the products, which dominate): "w1_potential",
/// "w1_step_gan", "w1_step_energy" or "w2" (one outer iteration). For the timing suite.
#[pyfunction]
#[pyo3(signature = (stage, dim, *, hidden = vec![64, 64, 64, 64], batch_size = 256, inner_iters = 10))]
pub fn iteration_flops(
    stage: &str,
    #[pyo3(from_py_with = number)] dim: i64,
    #[pyo3(from_py_with = number)] hidden: Vec<i64>,
    #[pyo3(from_py_with = number)] batch_size: i64,
    #[pyo3(from_py_with = number)] inner_iters: i64,
) -> PyResult<u64> {
    use w1ot_core::solvers::w1::{StepLoss, potential_iteration_flops, step_iteration_flops};
    let d = count_arg(dim, "dim", 1)?;
    let hidden = widths(hidden, "hidden")?;
    if hidden.is_empty() {
        return Err(PyValueError::new_err("hidden: needs at least one layer"));
    }
    icnn_param_count(d, &hidden)?;
    let b = count_arg(batch_size, "batch_size", 1)?;
    Ok(match stage {
        "w1_potential" => potential_iteration_flops(d, &hidden, b),
        "w1_step_gan" => step_iteration_flops(d, &hidden, b, StepLoss::Gan),
        "w1_step_energy" => step_iteration_flops(d, &hidden, b, StepLoss::Energy),
        "w2" => w2::outer_iteration_flops(d, &hidden, b, count_arg(inner_iters, "inner_iters", 1)?),
        other => {
            return Err(PyValueError::new_err(format!(
                "stage: expected 'w1_potential', 'w1_step_gan', 'w1_step_energy' or 'w2', got {other:?}"
            )));
        }
    })
}
