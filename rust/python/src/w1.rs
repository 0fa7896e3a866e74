//! The W1 solver's state (potential, step size, discriminator) and its training stages.

use numpy::{PyArray1, PyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use w1ot_core::linalg::{MatView, Matrix};
use w1ot_core::nn::{Mlp, Potential};
use w1ot_core::rng::Rng;
use w1ot_core::solvers::w1::{self, PotentialConfig, StepConfig, StepLoss, StepValid};

use crate::arrays::{
    f32_dict, history, matrix_arg, on_cells, state_entry, to_numpy1, to_numpy2, valid_pair, view,
};
use crate::errors::{IntoPyResult, count_arg, number, positive_f64};
use crate::nn::{adam_config, checked_param_count, ortho_kind, seed_arg, widths};
use crate::training;

/// Seeds of the stages' random streams, derived from the model seed so that each stage
/// can be re-run alone and still reproduce.
const POTENTIAL_STREAM: u64 = 0x9e37_79b9_7f4a_7c15;
const STEP_STREAM: u64 = 0xd1b5_4a32_d192_ed03;

#[pyclass(module = "w1ot._core", name = "W1Core")]
pub struct PyW1 {
    pot: Potential<f32>,
    eta: Mlp<f32>,
    disc: Mlp<f32>,
    seed: u64,
}

#[pymethods]
impl PyW1 {
    #[new]
    #[pyo3(signature = (dim, *, hidden = vec![64, 64, 64, 64], group_size = 16, orthogonal = "cayley", bjorck_iters = 20, step_hidden = vec![64, 64, 64, 64], negative_slope = 0.01, seed = 0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        #[pyo3(from_py_with = number)] dim: i64,
        #[pyo3(from_py_with = number)] hidden: Vec<i64>,
        #[pyo3(from_py_with = number)] group_size: i64,
        orthogonal: &str,
        #[pyo3(from_py_with = number)] bjorck_iters: i64,
        #[pyo3(from_py_with = number)] step_hidden: Vec<i64>,
        #[pyo3(from_py_with = number)] negative_slope: f64,
        #[pyo3(from_py_with = number)] seed: i64,
    ) -> PyResult<Self> {
        let dim = count_arg(dim, "dim", 1)?;
        let seed = seed_arg(seed)?;
        let hidden = widths(hidden, "hidden")?;
        let step_hidden = widths(step_hidden, "step_hidden")?;
        // Refuse sizes whose parameter count overflows or cannot be allocated, before any
        // allocation is attempted.
        for (widths, name) in [(&hidden, "dim, hidden"), (&step_hidden, "dim, step_hidden")] {
            let mut dims = vec![dim];
            dims.extend_from_slice(widths);
            dims.push(1);
            checked_param_count(&dims, 1, name)?;
        }
        if !(0.0..1.0).contains(&negative_slope) {
            return Err(PyValueError::new_err(format!(
                "negative_slope: must be in [0, 1), got {negative_slope}"
            )));
        }
        let mut rng = Rng::new(seed);
        let pot = Potential::new(
            dim,
            &hidden,
            count_arg(group_size, "group_size", 1)?,
            ortho_kind(orthogonal, bjorck_iters)?,
            &mut rng,
        )
        .py()?;
        let scfg = StepConfig {
            hidden: step_hidden,
            negative_slope,
            ..Default::default()
        };
        let (eta, disc) = w1::step_networks(dim, &scfg, &mut rng).py()?;
        Ok(Self {
            pot,
            eta,
            disc,
            seed,
        })
    }

    #[getter]
    fn dim(&self) -> usize {
        self.pot.in_dim()
    }

    /// Trains the potential; returns its history. On any error the model is unchanged.
    #[pyo3(signature = (source, target, valid_source = None, valid_target = None, *, iters = 10_000, batch_size = 256, lr = 1e-2, lr_min = 1e-4, betas = (0.5, 0.5), eps = 1e-8, weight_decay = 0.0, eval_every = 100, patience = None, min_rel_improvement = 1e-3, n_threads = 0, callback = None))]
    #[allow(clippy::too_many_arguments)]
    fn fit_potential<'py>(
        &mut self,
        py: Python<'py>,
        source: &Bound<'py, PyAny>,
        target: &Bound<'py, PyAny>,
        valid_source: Option<&Bound<'py, PyAny>>,
        valid_target: Option<&Bound<'py, PyAny>>,
        #[pyo3(from_py_with = number)] iters: i64,
        #[pyo3(from_py_with = number)] batch_size: i64,
        #[pyo3(from_py_with = number)] lr: f64,
        #[pyo3(from_py_with = number)] lr_min: f64,
        #[pyo3(from_py_with = number)] betas: (f64, f64),
        #[pyo3(from_py_with = number)] eps: f64,
        #[pyo3(from_py_with = number)] weight_decay: f64,
        #[pyo3(from_py_with = number)] eval_every: i64,
        #[pyo3(from_py_with = number)] patience: Option<i64>,
        #[pyo3(from_py_with = number)] min_rel_improvement: f64,
        #[pyo3(from_py_with = number)] n_threads: i64,
        callback: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let d = self.pot.in_dim();
        let s = matrix_arg(source, "source", Some(d))?;
        let t = matrix_arg(target, "target", Some(d))?;
        let valid = valid_pair(valid_source, valid_target, d)?;
        let cfg = PotentialConfig {
            hidden: self.pot.hidden(),
            group_size: self.pot.group_size(),
            kind: self.pot.kind(),
            iters: count_arg(iters, "iters", 0)?,
            batch_size: count_arg(batch_size, "batch_size", 1)?,
            lr: positive_f64(lr, "lr")?,
            lr_min,
            adam: adam_config(betas, eps, weight_decay),
            eval_every: count_arg(eval_every, "eval_every", 1)?,
            patience: patience.map(|p| count_arg(p, "patience", 1)).transpose()?,
            min_rel_improvement,
        };
        let n_threads = count_arg(n_threads, "n_threads", 0)?;
        let (sv, tv) = (view(&s), view(&t));
        let vv: Option<(MatView<'_, f32>, MatView<'_, f32>)> =
            valid.as_ref().map(|(a, b)| (view(a), view(b)));
        let mut pot = self.pot.clone();
        let seed = self.seed;
        let hist = training::run(py, n_threads, callback.as_ref(), |monitor| {
            let mut rng = Rng::new(seed ^ POTENTIAL_STREAM);
            w1::train_potential(&mut pot, sv, tv, vv, &cfg, &mut rng, monitor)
        })?;
        self.pot = pot;
        history(
            py,
            vec![("loss", hist.loss), ("w1_valid", hist.w1_valid)],
            hist.eval_iters,
            hist.best_iter,
        )
    }

    /// Trains the step size against a discriminator, f frozen; returns its history.
    #[pyo3(signature = (source, target, valid_source = None, valid_target = None, *, iters = 10_000, batch_size = 256, lr = 1e-4, disc_lr = 1e-4, betas = (0.9, 0.999), eps = 1e-8, weight_decay = 0.0, positive = false, eval_every = 100, patience = None, min_rel_improvement = 1e-2, loss = "gan", label_smoothing = 0.0, instance_noise = 0.0, mean_shift_penalty = 0.0, mmd_gammas = None, lr_final_fraction = 1.0, n_threads = 0, callback = None, reinit = true))]
    #[allow(clippy::too_many_arguments)]
    fn fit_step<'py>(
        &mut self,
        py: Python<'py>,
        source: &Bound<'py, PyAny>,
        target: &Bound<'py, PyAny>,
        valid_source: Option<&Bound<'py, PyAny>>,
        valid_target: Option<&Bound<'py, PyAny>>,
        #[pyo3(from_py_with = number)] iters: i64,
        #[pyo3(from_py_with = number)] batch_size: i64,
        #[pyo3(from_py_with = number)] lr: f64,
        #[pyo3(from_py_with = number)] disc_lr: f64,
        #[pyo3(from_py_with = number)] betas: (f64, f64),
        #[pyo3(from_py_with = number)] eps: f64,
        #[pyo3(from_py_with = number)] weight_decay: f64,
        positive: bool,
        #[pyo3(from_py_with = number)] eval_every: i64,
        #[pyo3(from_py_with = number)] patience: Option<i64>,
        #[pyo3(from_py_with = number)] min_rel_improvement: f64,
        loss: &str,
        #[pyo3(from_py_with = number)] label_smoothing: f64,
        #[pyo3(from_py_with = number)] instance_noise: f64,
        #[pyo3(from_py_with = number)] mean_shift_penalty: f64,
        #[pyo3(from_py_with = number)] mmd_gammas: Option<Vec<f64>>,
        #[pyo3(from_py_with = number)] lr_final_fraction: f64,
        #[pyo3(from_py_with = number)] n_threads: i64,
        callback: Option<Py<PyAny>>,
        reinit: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let d = self.pot.in_dim();
        let s = matrix_arg(source, "source", Some(d))?;
        let t = matrix_arg(target, "target", Some(d))?;
        let valid = valid_pair(valid_source, valid_target, d)?;
        let (hidden_act, _) = self.eta.activations();
        let negative_slope = match hidden_act {
            w1ot_core::nn::Activation::LeakyRelu(s) => s,
            _ => 0.01,
        };
        let dims = self.eta.dims();
        // The core names this check after W1OT's option; the binding's argument differs.
        if !(lr_final_fraction > 0.0 && lr_final_fraction <= 1.0) {
            return Err(PyValueError::new_err(format!(
                "lr_final_fraction: must be in (0, 1], got {lr_final_fraction}"
            )));
        }
        let cfg = StepConfig {
            hidden: dims[1..dims.len() - 1].to_vec(),
            negative_slope,
            iters: count_arg(iters, "iters", 0)?,
            batch_size: count_arg(batch_size, "batch_size", 1)?,
            lr_eta: positive_f64(lr, "lr")?,
            lr_disc: positive_f64(disc_lr, "disc_lr")?,
            lr_final_fraction,
            adam: adam_config(betas, eps, weight_decay),
            positive,
            eval_every: count_arg(eval_every, "eval_every", 1)?,
            patience: patience.map(|p| count_arg(p, "patience", 1)).transpose()?,
            min_rel_improvement,
            loss: match loss {
                "gan" => StepLoss::Gan,
                "energy" => StepLoss::Energy,
                "mmd" => StepLoss::Mmd,
                other => {
                    return Err(PyValueError::new_err(format!(
                        "loss: expected 'gan', 'energy' or 'mmd', got {other:?}"
                    )));
                }
            },
            label_smoothing,
            instance_noise,
            mean_shift_penalty,
            mmd_gammas: mmd_gammas.unwrap_or_else(|| StepConfig::default().mmd_gammas),
        };
        let n_threads = count_arg(n_threads, "n_threads", 0)?;
        let (sv, tv) = (view(&s), view(&t));
        let vv = valid.as_ref().map(|(a, b)| (view(a), view(b)));
        // Directions are computed before the step stage checks its data: check it here so a
        // message names the argument, not the potential's input.
        let mut inputs = vec![("source", sv), ("target", tv)];
        if let Some((vs, vt)) = vv {
            inputs.extend([("valid_source", vs), ("valid_target", vt)]);
        }
        for (name, v) in inputs {
            w1ot_core::nn::check_magnitude(name, v.as_slice()).py()?;
        }
        let pot = &self.pot;
        let (mut eta, mut disc) = (self.eta.clone(), self.disc.clone());
        let seed = self.seed;
        let hist = training::run(py, n_threads, callback.as_ref(), |monitor| {
            let mut rng = Rng::new(seed ^ STEP_STREAM);
            if reinit {
                (eta, disc) = w1::step_networks(d, &cfg, &mut rng)?;
            }
            let dirs = w1::directions(pot, sv)?;
            let vdirs = match vv {
                Some((vs, _)) => Some(w1::directions(pot, vs)?),
                None => None,
            };
            let valid = match (vv, vdirs.as_ref()) {
                (Some((vs, vt)), Some(u)) => Some(StepValid {
                    source: vs,
                    directions: u,
                    target: vt,
                }),
                _ => None,
            };
            w1::train_step(
                &mut eta, &mut disc, sv, &dirs, tv, valid, &cfg, &mut rng, monitor,
            )
        })?;
        self.eta = eta;
        self.disc = disc;
        history(
            py,
            vec![
                ("disc_loss", hist.disc_loss),
                ("step_loss", hist.eta_loss),
                ("d_real_valid", hist.d_real_valid),
                ("d_fake_valid", hist.d_fake_valid),
                ("eta_q05", hist.eta_q05),
                ("eta_q50", hist.eta_q50),
                ("eta_q95", hist.eta_q95),
                ("eta_mean", hist.eta_mean),
                ("energy_valid", hist.energy_valid),
            ],
            hist.eval_iters,
            hist.best_iter,
        )
    }

    fn potential<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let pot = &self.pot;
        Ok(to_numpy1(
            py,
            on_cells(x, self.pot.in_dim(), |xv| pot.value(xv))?,
        ))
    }

    fn gradient<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let pot = &self.pot;
        to_numpy2(
            py,
            on_cells(x, self.pot.in_dim(), |xv| pot.input_gradient(xv))?,
        )
    }

    fn direction<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let pot = &self.pot;
        to_numpy2(
            py,
            on_cells(x, self.pot.in_dim(), |xv| w1::directions(pot, xv))?,
        )
    }

    fn step_size<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let eta = &self.eta;
        Ok(to_numpy1(
            py,
            on_cells(x, self.pot.in_dim(), |xv| {
                eta.predict(xv).map(Matrix::into_vec)
            })?,
        ))
    }

    /// Mean D output per row (the step stage's discriminator; a diagnostic).
    fn discriminator<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let disc = &self.disc;
        Ok(to_numpy1(
            py,
            on_cells(x, self.pot.in_dim(), |xv| {
                disc.predict(xv).map(Matrix::into_vec)
            })?,
        ))
    }

    #[pyo3(signature = (x, positive = false))]
    fn transport<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        positive: bool,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let (pot, eta) = (&self.pot, &self.eta);
        to_numpy2(
            py,
            on_cells(x, self.pot.in_dim(), |xv| {
                w1::transport(pot, eta, xv, positive)
            })?,
        )
    }

    /// Parameters of the three networks, as float32 arrays.
    fn get_state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        f32_dict(
            py,
            vec![
                ("potential", self.pot.params().to_vec()),
                ("step", self.eta.params().to_vec()),
                ("discriminator", self.disc.params().to_vec()),
            ],
        )
    }

    fn set_state(&mut self, state: &Bound<'_, PyDict>) -> PyResult<()> {
        // Every entry is checked before any is set, so a bad state changes nothing.
        let p = state_entry(state, "potential", self.pot.n_params())?;
        let e = state_entry(state, "step", self.eta.n_params())?;
        let dc = state_entry(state, "discriminator", self.disc.n_params())?;
        self.pot.set_params(p.as_slice()?).py()?;
        self.eta.set_params(e.as_slice()?).py()?;
        self.disc.set_params(dc.as_slice()?).py()?;
        Ok(())
    }
}
