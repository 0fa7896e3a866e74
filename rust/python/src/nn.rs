//! Python classes over the core's networks and optimiser, for users and for tests that
//! check the core's properties from NumPy.

use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadwriteArray1, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use w1ot_core::linalg::Matrix;
use w1ot_core::nn::{
    Activation, Mlp, Mode, OrthoKind, Potential, bjorck as bj, cayley as cy, groupsort,
};
use w1ot_core::optim::{Adam, AdamConfig, CosineSchedule};
use w1ot_core::rng::Rng;

use crate::arrays::{matrix_arg, on_cells, to_numpy1, to_numpy2, vector_arg, view};
use crate::errors::{IntoPyResult, count_arg, detached, number};

/// Largest parameter count of a network or optimiser (2^31 float32 values, 8 GiB). Larger
/// requests are mistakes that would otherwise overflow the size arithmetic (a silently
/// wrong network) or abort the interpreter on a failed allocation.
pub const MAX_PARAMS: usize = 1 << 31;

/// Most Björck iterations asked for (training keeps a copy of every weight matrix per
/// iteration for the backward pass; convergence takes a few dozen).
pub const MAX_BJORCK_ITERS: i64 = 1000;

/// Parameter count of the layers dims[i] -> dims[i+1] (out x in weights, out biases and
/// `extra` scalars each), checked against overflow and `MAX_PARAMS`.
pub fn checked_param_count(dims: &[usize], extra: usize, name: &str) -> PyResult<usize> {
    let total = dims.windows(2).try_fold(0usize, |acc, w| {
        w[0].checked_mul(w[1])?
            .checked_add(w[1])?
            .checked_add(extra)?
            .checked_add(acc)
    });
    match total {
        Some(n) if n <= MAX_PARAMS => Ok(n),
        _ => Err(PyValueError::new_err(format!(
            "{name}: layer widths {dims:?} give more than {MAX_PARAMS} parameters"
        ))),
    }
}

pub fn ortho_kind(name: &str, bjorck_iters: i64) -> PyResult<OrthoKind> {
    match name {
        "cayley" => Ok(OrthoKind::Cayley),
        "bjorck" => {
            let iters = count_arg(bjorck_iters, "bjorck_iters", 1)?;
            if bjorck_iters > MAX_BJORCK_ITERS {
                return Err(PyValueError::new_err(format!(
                    "bjorck_iters: must be <= {MAX_BJORCK_ITERS}, got {bjorck_iters}"
                )));
            }
            Ok(OrthoKind::Bjorck { train_iters: iters })
        }
        other => Err(PyValueError::new_err(format!(
            "orthogonal: expected 'cayley' or 'bjorck', got {other:?}"
        ))),
    }
}

pub fn activation(name: &str, negative_slope: f64, arg: &str) -> PyResult<Activation> {
    Ok(match name {
        "identity" | "linear" => Activation::Identity,
        "relu" => Activation::Relu,
        "leaky_relu" => {
            if !(0.0..1.0).contains(&negative_slope) {
                return Err(PyValueError::new_err(format!(
                    "negative_slope: must be in [0, 1), got {negative_slope}"
                )));
            }
            Activation::LeakyRelu(negative_slope)
        }
        "softplus" => Activation::Softplus,
        "sigmoid" => Activation::Sigmoid,
        other => {
            return Err(PyValueError::new_err(format!(
                "{arg}: expected one of 'identity', 'relu', 'leaky_relu', 'softplus', 'sigmoid', got {other:?}"
            )));
        }
    })
}

pub fn adam_config(betas: (f64, f64), eps: f64, weight_decay: f64) -> AdamConfig {
    AdamConfig {
        beta1: betas.0,
        beta2: betas.1,
        eps,
        weight_decay,
    }
}

pub fn widths(hidden: Vec<i64>, name: &str) -> PyResult<Vec<usize>> {
    hidden.into_iter().map(|h| count_arg(h, name, 1)).collect()
}

pub fn seed_arg(seed: i64) -> PyResult<u64> {
    Ok(count_arg(seed, "seed", 0)? as u64)
}

/// The 1-Lipschitz potential (orthogonal layers + GroupSort), float32.
#[pyclass(module = "w1ot._core", name = "Potential")]
pub struct PyPotential {
    pub inner: Potential<f32>,
}

#[pymethods]
impl PyPotential {
    #[new]
    #[pyo3(signature = (in_dim, hidden = vec![64, 64, 64, 64], *, group_size = 16, orthogonal = "cayley", bjorck_iters = 20, seed = 0))]
    fn new(
        #[pyo3(from_py_with = number)] in_dim: i64,
        #[pyo3(from_py_with = number)] hidden: Vec<i64>,
        #[pyo3(from_py_with = number)] group_size: i64,
        orthogonal: &str,
        #[pyo3(from_py_with = number)] bjorck_iters: i64,
        #[pyo3(from_py_with = number)] seed: i64,
    ) -> PyResult<Self> {
        let kind = ortho_kind(orthogonal, bjorck_iters)?;
        let in_dim = count_arg(in_dim, "in_dim", 1)?;
        let hidden = widths(hidden, "hidden")?;
        let dims: Vec<usize> = std::iter::once(in_dim)
            .chain(hidden.iter().copied())
            .chain(std::iter::once(1))
            .collect();
        checked_param_count(&dims, 1, "in_dim, hidden")?;
        let inner = Potential::new(
            in_dim,
            &hidden,
            count_arg(group_size, "group_size", 1)?,
            kind,
            &mut Rng::new(seed_arg(seed)?),
        )
        .py()?;
        Ok(Self { inner })
    }

    #[getter]
    fn in_dim(&self) -> usize {
        self.inner.in_dim()
    }
    #[getter]
    fn hidden(&self) -> Vec<usize> {
        self.inner.hidden()
    }
    #[getter]
    fn group_size(&self) -> usize {
        self.inner.group_size()
    }
    #[getter]
    fn orthogonal(&self) -> &'static str {
        self.inner.kind().name()
    }
    #[getter]
    fn n_params(&self) -> usize {
        self.inner.n_params()
    }

    /// A copy of the flat parameter vector.
    #[getter]
    fn params<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        to_numpy1(py, self.inner.params().to_vec())
    }

    fn set_params(&mut self, params: &Bound<'_, PyAny>) -> PyResult<()> {
        let p = vector_arg(params, "params", Some(self.inner.n_params()))?;
        self.inner.set_params(p.as_slice()?).py()
    }

    /// f(x) for every row of x.
    fn value<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let pot = &self.inner;
        Ok(to_numpy1(
            py,
            on_cells(x, self.inner.in_dim(), |xv| pot.value(xv))?,
        ))
    }

    /// grad_x f(x) for every row of x.
    fn gradient<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let pot = &self.inner;
        to_numpy2(
            py,
            on_cells(x, self.inner.in_dim(), |xv| pot.input_gradient(xv))?,
        )
    }

    /// (f(x), d<df, f(x)>/dparams, d<df, f(x)>/dx) with training-mode weights.
    #[allow(clippy::type_complexity)]
    fn value_and_grad<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        df: &Bound<'py, PyAny>,
    ) -> PyResult<(
        Bound<'py, PyArray1<f32>>,
        Bound<'py, PyArray1<f32>>,
        Bound<'py, PyArray2<f32>>,
    )> {
        let x = matrix_arg(x, "x", Some(self.inner.in_dim()))?;
        let df = vector_arg(df, "df", Some(x.shape()[0]))?;
        let xm = view(&x).to_matrix();
        let dfs = df.as_slice()?;
        let pot = &self.inner;
        let (f, g, dx) = detached(py, || pot.value_and_grad(&xm, dfs))?;
        Ok((to_numpy1(py, f), to_numpy1(py, g), to_numpy2(py, dx)?))
    }

    /// The orthonormal weight matrix Q (out x in) of every layer, inference mode.
    fn weights<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyArray2<f32>>>> {
        let pot = &self.inner;
        let w = detached(py, || pot.weights(Mode::Eval))?;
        w.matrices()
            .iter()
            .map(|q| to_numpy2(py, q.clone()))
            .collect()
    }

    fn __repr__(&self) -> String {
        format!(
            "Potential(in_dim={}, hidden={:?}, group_size={}, orthogonal='{}')",
            self.inner.in_dim(),
            self.inner.hidden(),
            self.inner.group_size(),
            self.inner.kind().name()
        )
    }
}

/// A plain MLP (dense layers), float32.
#[pyclass(module = "w1ot._core", name = "MLP")]
pub struct PyMlp {
    pub inner: Mlp<f32>,
}

#[pymethods]
impl PyMlp {
    #[new]
    #[pyo3(signature = (dims, *, hidden_activation = "leaky_relu", negative_slope = 0.01, output_activation = "identity", seed = 0))]
    fn new(
        #[pyo3(from_py_with = number)] dims: Vec<i64>,
        hidden_activation: &str,
        #[pyo3(from_py_with = number)] negative_slope: f64,
        output_activation: &str,
        #[pyo3(from_py_with = number)] seed: i64,
    ) -> PyResult<Self> {
        let dims = widths(dims, "dims")?;
        if dims.len() < 2 {
            return Err(PyValueError::new_err(
                "dims: need at least an input and an output width",
            ));
        }
        checked_param_count(&dims, 0, "dims")?;
        let inner = Mlp::new(
            &dims,
            activation(hidden_activation, negative_slope, "hidden_activation")?,
            activation(output_activation, negative_slope, "output_activation")?,
            &mut Rng::new(seed_arg(seed)?),
        )
        .py()?;
        Ok(Self { inner })
    }

    #[getter]
    fn dims(&self) -> Vec<usize> {
        self.inner.dims()
    }
    #[getter]
    fn n_params(&self) -> usize {
        self.inner.n_params()
    }
    #[getter]
    fn params<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        to_numpy1(py, self.inner.params().to_vec())
    }

    fn set_params(&mut self, params: &Bound<'_, PyAny>) -> PyResult<()> {
        let p = vector_arg(params, "params", Some(self.inner.n_params()))?;
        self.inner.set_params(p.as_slice()?).py()
    }

    fn predict<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let mlp = &self.inner;
        to_numpy2(py, on_cells(x, self.inner.in_dim(), |xv| mlp.predict(xv))?)
    }

    /// (mlp(x), d<dy, mlp(x)>/dparams, d<dy, mlp(x)>/dx).
    #[allow(clippy::type_complexity)]
    fn value_and_grad<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        dy: &Bound<'py, PyAny>,
    ) -> PyResult<(
        Bound<'py, PyArray2<f32>>,
        Bound<'py, PyArray1<f32>>,
        Bound<'py, PyArray2<f32>>,
    )> {
        let x = matrix_arg(x, "x", Some(self.inner.in_dim()))?;
        let dy = matrix_arg(dy, "dy", Some(self.inner.out_dim()))?;
        if dy.shape()[0] != x.shape()[0] {
            return Err(PyValueError::new_err(format!(
                "dy: expected {} rows (one per row of x), got {}",
                x.shape()[0],
                dy.shape()[0]
            )));
        }
        let (xm, dym) = (view(&x).to_matrix(), view(&dy).to_matrix());
        let mlp = &self.inner;
        let (y, g, dx) = detached(py, || mlp.value_and_grad(&xm, &dym))?;
        Ok((to_numpy2(py, y)?, to_numpy1(py, g), to_numpy2(py, dx)?))
    }

    fn __repr__(&self) -> String {
        let (h, o) = self.inner.activations();
        format!(
            "MLP(dims={:?}, hidden={}, output={})",
            self.inner.dims(),
            h.name(),
            o.name()
        )
    }
}

/// Adam over one flat float32 parameter vector, updated in place.
#[pyclass(module = "w1ot._core", name = "Adam")]
pub struct PyAdam {
    inner: Adam<f32>,
}

#[pymethods]
impl PyAdam {
    #[new]
    #[pyo3(signature = (n_params, *, betas = (0.9, 0.999), eps = 1e-8, weight_decay = 0.0))]
    fn new(
        #[pyo3(from_py_with = number)] n_params: i64,
        #[pyo3(from_py_with = number)] betas: (f64, f64),
        #[pyo3(from_py_with = number)] eps: f64,
        #[pyo3(from_py_with = number)] weight_decay: f64,
    ) -> PyResult<Self> {
        let config = AdamConfig {
            beta1: betas.0,
            beta2: betas.1,
            eps,
            weight_decay,
        };
        Ok(Self {
            inner: Adam::new(adam_len(n_params)?, config).py()?,
        })
    }

    #[getter]
    fn steps(&self) -> u64 {
        self.inner.steps()
    }

    /// One Adam step on `params` (a writable C-contiguous float32 array), in place.
    fn step(
        &mut self,
        params: &Bound<'_, PyAny>,
        grads: &Bound<'_, PyAny>,
        #[pyo3(from_py_with = number)] lr: f64,
    ) -> PyResult<()> {
        let arr = params.cast::<PyArray1<f32>>().map_err(|_| {
            PyTypeError::new_err(
                "params: must be a 1-D float32 NumPy array (it is updated in place)",
            )
        })?;
        if !arr.is_c_contiguous() {
            return Err(PyTypeError::new_err(
                "params: must be C-contiguous (it is updated in place)",
            ));
        }
        let n = arr.len();
        let g = vector_arg(grads, "grads", Some(n))?;
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(PyValueError::new_err(format!(
                "lr: must be a finite number >= 0, got {lr}"
            )));
        }
        let mut rw: PyReadwriteArray1<f32> = arr
            .try_readwrite()
            .map_err(|e| PyValueError::new_err(format!("params: {e}")))?;
        let p = rw.as_slice_mut()?;
        if p.len() != self.inner_len() {
            return Err(PyValueError::new_err(format!(
                "params: expected length {}, got {}",
                self.inner_len(),
                p.len()
            )));
        }
        self.inner.step(p, g.as_slice()?, lr);
        Ok(())
    }
}

fn adam_len(n_params: i64) -> PyResult<usize> {
    let n = count_arg(n_params, "n_params", 1)?;
    if n > MAX_PARAMS {
        return Err(PyValueError::new_err(format!(
            "n_params: must be <= {MAX_PARAMS}, got {n}"
        )));
    }
    Ok(n)
}

impl PyAdam {
    fn inner_len(&self) -> usize {
        self.inner.len()
    }
}

/// Learning rate at step k of a cosine annealing from lr_max to lr_min over `total` steps.
#[pyfunction]
pub fn cosine_lr(
    #[pyo3(from_py_with = number)] step: i64,
    #[pyo3(from_py_with = number)] total: i64,
    #[pyo3(from_py_with = number)] lr_max: f64,
    #[pyo3(from_py_with = number)] lr_min: f64,
) -> PyResult<f64> {
    // Checked here too so that the messages name this function's arguments (the core's
    // schedule calls its maximum "lr").
    if !(lr_max > 0.0 && lr_max.is_finite()) {
        return Err(PyValueError::new_err(format!(
            "lr_max: must be a positive number, got {lr_max}"
        )));
    }
    if !(0.0..=lr_max).contains(&lr_min) {
        return Err(PyValueError::new_err(format!(
            "lr_min: must be in [0, lr_max], got {lr_min}"
        )));
    }
    let s = CosineSchedule::new(lr_max, lr_min, count_arg(total, "total", 0)?).py()?;
    Ok(s.at(count_arg(step, "step", 0)?))
}

/// GroupSort of each row in contiguous groups (descending); returns (y, source column of
/// each output entry).
#[pyfunction]
#[allow(clippy::type_complexity)]
pub fn group_sort<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    #[pyo3(from_py_with = number)] group_size: i64,
) -> PyResult<(Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<u32>>)> {
    let x = matrix_arg(x, "x", None)?;
    let (n, w) = (x.shape()[0], x.shape()[1]);
    let gs = count_arg(group_size, "group_size", 1)?;
    groupsort::check_group_size(w, gs).py()?;
    let xm = view(&x).to_matrix();
    let (y, perm) = detached(py, || Ok(groupsort::forward(&xm, gs)))?;
    Ok((
        to_numpy2(py, y)?,
        PyArray1::from_vec(py, perm).reshape([n, w])?,
    ))
}

/// Back through GroupSort: dx[i, perm[i, j]] = dy[i, j].
#[pyfunction]
pub fn group_sort_backward<'py>(
    py: Python<'py>,
    dy: &Bound<'py, PyAny>,
    perm: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let dy = matrix_arg(dy, "dy", None)?;
    let (n, w) = (dy.shape()[0], dy.shape()[1]);
    let perm: Vec<Vec<u32>> = perm
        .extract()
        .or_else(|_| perm.call_method0("tolist")?.extract())
        .map_err(|_| PyTypeError::new_err("perm: expected an integer array of shape (n, width)"))?;
    if perm.len() != n || perm.iter().any(|r| r.len() != w) {
        return Err(PyValueError::new_err(format!(
            "perm: expected shape ({n}, {w})"
        )));
    }
    let flat: Vec<u32> = perm.into_iter().flatten().collect();
    // Each row must be a permutation of 0..w, or the scatter would be meaningless.
    for row in flat.chunks(w) {
        let mut seen = vec![false; w];
        for &j in row {
            if j as usize >= w || std::mem::replace(&mut seen[j as usize], true) {
                return Err(PyValueError::new_err(
                    "perm: each row must be a permutation of 0..width",
                ));
            }
        }
    }
    let dym = view(&dy).to_matrix();
    to_numpy2(py, groupsort::backward(&dym, &flat))
}

fn orthonormalise<'py>(
    py: Python<'py>,
    m: &Bound<'py, PyAny>,
    f: impl FnOnce(&Matrix<f32>) -> w1ot_core::Result<Matrix<f32>> + Send,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let m = matrix_arg(m, "m", None)?;
    let mm = view(&m).to_matrix();
    let wide = mm.rows() < mm.cols();
    let q = detached(py, || {
        let tall = if wide { mm.transpose() } else { mm };
        let q = f(&tall)?;
        Ok(if wide { q.transpose() } else { q })
    })?;
    to_numpy2(py, q)
}

/// The reference Cayley transform of m (tall: orthonormal columns; wide: orthonormal rows).
#[pyfunction]
pub fn cayley<'py>(py: Python<'py>, m: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray2<f32>>> {
    orthonormalise(py, m, |t| Ok(cy::cayley(t)?.0))
}

/// Björck orthonormalisation of m: `iters` steps, or until converged when None. Forward
/// only, so the iterates are not kept (the training variant stores one per step).
#[pyfunction]
#[pyo3(signature = (m, iters = None))]
pub fn bjorck<'py>(
    py: Python<'py>,
    m: &Bound<'py, PyAny>,
    #[pyo3(from_py_with = number)] iters: Option<i64>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    if let Some(i) = iters.filter(|&i| i > MAX_BJORCK_ITERS) {
        return Err(PyValueError::new_err(format!(
            "iters: must be <= {MAX_BJORCK_ITERS}, got {i}"
        )));
    }
    let iters = iters.map(|i| count_arg(i, "iters", 0)).transpose()?;
    orthonormalise(py, m, move |t| {
        Ok(match iters {
            // tol 0: exactly k steps unless already exactly orthonormal (a fixed point).
            Some(k) => bj::bjorck_converged(t, 0.0, k),
            None => bj::bjorck_converged(t, 1e-6, 200),
        })
    })
}
