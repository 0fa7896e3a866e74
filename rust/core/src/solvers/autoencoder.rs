//! The autoencoder of the paper's latent mode (CellOT and scGen train one per dataset):
//! encoder and decoder MLPs with ReLU hidden layers, a linear latent layer and a ReLU output
//! (expression is non-negative), trained by Adam on the mean squared reconstruction error of
//! control and perturbed cells together. Held-out cells choose the parameters kept (the
//! lowest held-out error seen) and, when asked, when to stop.
//!
//! Batches are split into row blocks of a fixed size, processed in parallel and summed in
//! block order, so the model does not depend on the number of threads.

use crate::error::{Error, Result};
use crate::linalg::{MatView, Matrix};
use crate::nn::{Activation, Mlp};
use crate::optim::{Adam, AdamConfig};
use crate::parallel::{TRAIN_BLOCK, blocks, map_ranges};
use crate::rng::{EpochSampler, Rng};

use super::{EarlyStop, Monitor, check_batch, check_data, report};

/// Rows per block when scoring held-out cells (bounds the activations held at once).
const EVAL_BLOCK: usize = 1024;

#[derive(Clone, Debug)]
pub struct Autoencoder {
    pub encoder: Mlp<f32>,
    pub decoder: Mlp<f32>,
}

impl Autoencoder {
    /// Encoder `dim -> hidden... -> latent`, decoder the mirror image back to `dim`;
    /// PyTorch's default initialisation.
    pub fn new(dim: usize, hidden: &[usize], latent: usize, rng: &mut Rng) -> Result<Self> {
        if latent == 0 {
            return Err(Error::invalid("latent", "must be >= 1"));
        }
        let enc: Vec<usize> = std::iter::once(dim)
            .chain(hidden.iter().copied())
            .chain(std::iter::once(latent))
            .collect();
        let dec: Vec<usize> = enc.iter().rev().copied().collect();
        Ok(Self {
            encoder: Mlp::new(&enc, Activation::Relu, Activation::Identity, rng)?,
            decoder: Mlp::new(&dec, Activation::Relu, Activation::Relu, rng)?,
        })
    }

    pub fn dim(&self) -> usize {
        self.encoder.in_dim()
    }
    pub fn latent(&self) -> usize {
        self.encoder.out_dim()
    }
    pub fn hidden(&self) -> Vec<usize> {
        let d = self.encoder.dims();
        d[1..d.len() - 1].to_vec()
    }

    pub fn encode(&self, x: MatView<'_, f32>) -> Result<Matrix<f32>> {
        self.encoder.predict(x)
    }

    pub fn decode(&self, z: MatView<'_, f32>) -> Result<Matrix<f32>> {
        self.decoder.predict(z)
    }

    /// Mean squared reconstruction error over every entry of `x`.
    pub fn reconstruction_error(&self, x: MatView<'_, f32>) -> Result<f64> {
        check_data("x", x, self.dim())?;
        let parts = map_ranges(&blocks(x.rows(), EVAL_BLOCK), |r| {
            let xb = x.rows_range(r.start, r.end);
            let y = self.decoder.forward(&self.encoder.forward(&xb).0).0;
            squared_error(&y, &xb)
        });
        Ok(parts.iter().sum::<f64>() / (x.rows() * x.cols()) as f64)
    }
}

fn squared_error(y: &Matrix<f32>, x: &Matrix<f32>) -> f64 {
    y.as_slice()
        .iter()
        .zip(x.as_slice())
        .map(|(&a, &b)| ((a - b) as f64).powi(2))
        .sum()
}

#[derive(Clone, Debug, PartialEq)]
pub struct AutoencoderConfig {
    pub iters: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// Adam with PyTorch's L2-style weight decay.
    pub adam: AdamConfig,
    pub eval_every: usize,
    /// Stop after this many evaluations without a relative fall of `min_rel_improvement`
    /// in the held-out error (None: run every iteration, still keeping the best).
    pub patience: Option<usize>,
    pub min_rel_improvement: f64,
}

impl Default for AutoencoderConfig {
    fn default() -> Self {
        Self {
            iters: 20_000,
            batch_size: 256,
            lr: 1e-3,
            adam: AdamConfig {
                weight_decay: 1e-5,
                ..AdamConfig::default()
            },
            eval_every: 250,
            patience: Some(10),
            min_rel_improvement: 1e-3,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AutoencoderHistory {
    /// Mean squared error of each training batch.
    pub loss: Vec<f32>,
    pub eval_iters: Vec<usize>,
    /// Mean squared error on the held-out cells.
    pub valid_loss: Vec<f32>,
    /// Iteration whose parameters were kept (the last, or the best held-out error).
    pub best_iter: usize,
}

/// Mean squared error of a batch and its gradients in the encoder's and the decoder's
/// parameters.
pub fn loss_grad(ae: &Autoencoder, x: &Matrix<f32>) -> (f64, Vec<f32>, Vec<f32>) {
    let (enc, dec) = (&ae.encoder, &ae.decoder);
    let scale = 1.0 / (x.rows() * x.cols()) as f32;
    let parts = map_ranges(&blocks(x.rows(), TRAIN_BLOCK), |r| {
        let xb = x.rows_range(r.start, r.end);
        let (z, tape_e) = enc.forward(&xb);
        let (y, tape_d) = dec.forward(&z);
        let loss = squared_error(&y, &xb) * scale as f64;
        let mut dy = y;
        dy.as_mut_slice()
            .iter_mut()
            .zip(xb.as_slice())
            .for_each(|(v, &t)| *v = 2.0 * scale * (*v - t));
        let (mut ge, mut gd) = (vec![0.0; enc.n_params()], vec![0.0; dec.n_params()]);
        let dz = dec
            .backward(&tape_d, &dy, Some(&mut gd), true)
            .expect("dz requested");
        enc.backward(&tape_e, &dz, Some(&mut ge), false);
        (loss, ge, gd)
    });
    let (mut ge, mut gd) = (vec![0.0; enc.n_params()], vec![0.0; dec.n_params()]);
    let mut loss = 0.0;
    for (l, e, d) in parts {
        loss += l;
        ge.iter_mut().zip(&e).for_each(|(a, b)| *a += *b);
        gd.iter_mut().zip(&d).for_each(|(a, b)| *a += *b);
    }
    (loss, ge, gd)
}

/// One Adam step of both networks; refuses a non-finite loss or parameter.
fn step(
    ae: &mut Autoencoder,
    (opt_e, opt_d): (&mut Adam<f32>, &mut Adam<f32>),
    x: &Matrix<f32>,
    lr: f64,
    k: usize,
) -> Result<f64> {
    let (loss, ge, gd) = loss_grad(ae, x);
    let diverged = |msg: String| Error::Diverged {
        stage: "autoencoder",
        iteration: k,
        msg,
    };
    if !loss.is_finite() {
        return Err(diverged(format!("the reconstruction error is {loss}")));
    }
    opt_e.step(ae.encoder.params_mut(), &ge, lr);
    opt_d.step(ae.decoder.params_mut(), &gd, lr);
    let finite = |p: &[f32]| p.iter().all(|v| v.is_finite());
    if !(finite(ae.encoder.params()) && finite(ae.decoder.params())) {
        return Err(diverged("a parameter became non-finite".into()));
    }
    Ok(loss)
}

fn validate(cfg: &AutoencoderConfig, cells: MatView<'_, f32>, d: usize) -> Result<()> {
    check_data("cells", cells, d)?;
    check_batch(cfg.batch_size, cells.rows(), "input")?;
    super::check_iters(cfg.iters)?;
    if cfg.eval_every == 0 {
        return Err(Error::invalid("eval_every", "must be >= 1"));
    }
    if cfg.patience == Some(0) {
        return Err(Error::invalid("patience", "must be >= 1"));
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return Err(Error::invalid(
            "lr",
            format!("must be a positive number, got {}", cfg.lr),
        ));
    }
    if !(cfg.min_rel_improvement.is_finite() && cfg.min_rel_improvement >= 0.0) {
        return Err(Error::invalid(
            "min_rel_improvement",
            format!(
                "must be a finite number >= 0, got {}",
                cfg.min_rel_improvement
            ),
        ));
    }
    cfg.adam.validate()
}

/// Trains the autoencoder in place on `cells`; `valid` (held-out cells) is scored every
/// `eval_every` iterations and decides the parameters kept and the early stop.
pub fn train(
    ae: &mut Autoencoder,
    cells: MatView<'_, f32>,
    valid: Option<MatView<'_, f32>>,
    cfg: &AutoencoderConfig,
    rng: &mut Rng,
    monitor: &mut Monitor<'_>,
) -> Result<AutoencoderHistory> {
    let d = ae.dim();
    validate(cfg, cells, d)?;
    if let Some(v) = valid {
        check_data("valid", v, d)?;
    }
    let mut opt_e = Adam::<f32>::new(ae.encoder.n_params(), cfg.adam.clone())?;
    let mut opt_d = Adam::<f32>::new(ae.decoder.n_params(), cfg.adam.clone())?;
    let mut sampler = EpochSampler::new(cells.rows(), cfg.batch_size, rng);
    let mut hist = AutoencoderHistory {
        loss: Vec::with_capacity(super::history_capacity(cfg.iters)),
        ..Default::default()
    };
    let mut stop =
        valid.map(|_| EarlyStop::new(cfg.patience.unwrap_or(usize::MAX), cfg.min_rel_improvement));
    let n_enc = ae.encoder.n_params();
    for k in 0..cfg.iters {
        let x = cells.select_rows(sampler.next_batch(rng));
        let loss = step(ae, (&mut opt_e, &mut opt_d), &x, cfg.lr, k)?;
        hist.loss.push(loss as f32);
        let mut valid_now = None;
        if let Some(v) = valid
            && ((k + 1) % cfg.eval_every == 0 || k + 1 == cfg.iters)
        {
            let err = ae.reconstruction_error(v)?;
            hist.eval_iters.push(k + 1);
            hist.valid_loss.push(err as f32);
            valid_now = Some(err);
            let params = [ae.encoder.params(), ae.decoder.params()].concat();
            if let Some(stop) = &mut stop
                && stop.update(-err, &params, k + 1)
            {
                break;
            }
        }
        let shown = valid_now.or_else(|| hist.valid_loss.last().map(|&v| v as f64));
        let evaluated = valid_now.is_some();
        report(
            monitor,
            "autoencoder",
            (k + 1, cfg.iters),
            loss,
            shown,
            evaluated,
        )?;
    }
    hist.best_iter = hist.loss.len();
    if let Some((params, it)) = stop.and_then(EarlyStop::into_best) {
        ae.encoder.set_params(&params[..n_enc])?;
        ae.decoder.set_params(&params[n_enc..])?;
        hist.best_iter = it;
    }
    Ok(hist)
}

/// Floating-point operations of one training iteration (2 per multiply-add; forward and
/// the two backward products of every layer).
pub fn iteration_flops(dim: usize, hidden: &[usize], latent: usize, batch: usize) -> u64 {
    let mut widths = vec![dim];
    widths.extend_from_slice(hidden);
    widths.push(latent);
    let macs: usize = widths.windows(2).map(|w| w[0] * w[1]).sum();
    // Encoder and decoder have the same products: forward, parameter and input gradients of
    // both, less the input gradient of the encoder's first layer, which nothing needs.
    (2 * batch * (6 * macs - dim * widths[1])) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solvers::{Progress, silent};

    /// Non-negative training and held-out cells on one 3-dimensional subspace of `d`.
    fn cells(n: usize, n_valid: usize, d: usize, seed: u64) -> (Matrix<f32>, Matrix<f32>) {
        let mut rng = Rng::new(seed);
        let basis = Matrix::<f32>::from_fn(3, d, |_, _| rng.uniform(0.0, 1.0));
        let mut draw = |n| {
            let z = Matrix::<f32>::from_fn(n, 3, |_, _| rng.uniform(0.0, 2.0));
            crate::linalg::matmul(&z, crate::linalg::Op::N, &basis, crate::linalg::Op::N)
        };
        (draw(n), draw(n_valid))
    }

    fn small_cfg(iters: usize) -> AutoencoderConfig {
        AutoencoderConfig {
            iters,
            batch_size: 64,
            eval_every: 50,
            patience: None,
            ..Default::default()
        }
    }

    #[test]
    fn reconstruction_gradients_match_finite_differences_in_f64() {
        // The solver's batch gradient in f32 against central differences of the same loss
        // in f64, through the same layer calls; inputs kept away from ReLU kinks by
        // checking that the f64 and f32 paths agree.
        use crate::testutil::check_grad;
        let mut rng = Rng::new(1);
        let ae = Autoencoder::new(5, &[7, 6], 3, &mut rng).unwrap();
        let x = Matrix::<f32>::from_fn(9, 5, |_, _| rng.uniform(0.0, 1.5));
        let (_, ge, gd) = loss_grad(&ae, &x);
        let enc64 = mlp64(&ae.encoder);
        let dec64 = mlp64(&ae.decoder);
        let x64 = x.cast::<f64>();
        let loss = |e: &Mlp<f64>, d: &Mlp<f64>| {
            let y = d.forward(&e.forward(&x64).0).0;
            let n = (x64.rows() * x64.cols()) as f64;
            y.as_slice()
                .iter()
                .zip(x64.as_slice())
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
                / n
        };
        let (pe, pd) = (enc64.params().to_vec(), dec64.params().to_vec());
        let ge64: Vec<f64> = ge.iter().map(|&v| v as f64).collect();
        let gd64: Vec<f64> = gd.iter().map(|&v| v as f64).collect();
        let mut e = enc64.clone();
        let mut fe = |p: &[f64]| {
            e.set_params(p).unwrap();
            loss(&e, &dec64)
        };
        check_grad("autoencoder encoder", &mut fe, &pe, &ge64, 1e-3, 1e-6);
        let mut d = dec64.clone();
        let mut fd = |p: &[f64]| {
            d.set_params(p).unwrap();
            loss(&enc64, &d)
        };
        check_grad("autoencoder decoder", &mut fd, &pd, &gd64, 1e-3, 1e-6);
    }

    fn mlp64(m: &Mlp<f32>) -> Mlp<f64> {
        let (h, o) = m.activations();
        let mut out = Mlp::<f64>::new(&m.dims(), h, o, &mut Rng::new(0)).unwrap();
        let p: Vec<f64> = m.params().iter().map(|&v| v as f64).collect();
        out.set_params(&p).unwrap();
        out
    }

    #[test]
    fn learns_to_reconstruct_better_than_the_mean_cell() {
        let (x, v) = cells(2000, 400, 20, 2);
        let mut rng = Rng::new(4);
        let mut ae = Autoencoder::new(20, &[64, 64], 3, &mut rng).unwrap();
        let h = train(
            &mut ae,
            x.view(),
            Some(v.view()),
            &small_cfg(1500),
            &mut rng,
            &mut silent,
        )
        .unwrap();
        let err = ae.reconstruction_error(v.view()).unwrap();
        // The mean cell's error: the held-out cells' variance about the training mean.
        let mean: Vec<f64> = (0..20)
            .map(|j| (0..x.rows()).map(|i| x.get(i, j) as f64).sum::<f64>() / x.rows() as f64)
            .collect();
        let base: f64 = (0..v.rows())
            .flat_map(|i| (0..20).map(move |j| (i, j)))
            .map(|(i, j)| (v.get(i, j) as f64 - mean[j]).powi(2))
            .sum::<f64>()
            / (v.rows() * 20) as f64;
        assert!(err < 0.05 * base, "held-out error {err}, mean cell {base}");
        let best = h.valid_loss.iter().cloned().fold(f32::MAX, f32::min);
        assert!(
            ((err as f32) - best).abs() <= 1e-5 * best,
            "kept {err}, best {best}"
        );
        assert!(ae.encode(v.view()).unwrap().shape() == (400, 3));
        let y = ae.decode(ae.encode(v.view()).unwrap().view()).unwrap();
        assert!(y.as_slice().iter().all(|&t| t >= 0.0), "ReLU output");
    }

    #[test]
    fn early_stopping_stops_and_keeps_the_best() {
        let (x, v) = cells(600, 200, 10, 5);
        let mut rng = Rng::new(7);
        let mut ae = Autoencoder::new(10, &[32], 3, &mut rng).unwrap();
        let cfg = AutoencoderConfig {
            patience: Some(2),
            min_rel_improvement: 0.5,
            ..small_cfg(5000)
        };
        let h = train(
            &mut ae,
            x.view(),
            Some(v.view()),
            &cfg,
            &mut rng,
            &mut silent,
        )
        .unwrap();
        assert!(h.loss.len() < 5000, "never stopped");
        let i = h.eval_iters.iter().position(|&k| k == h.best_iter).unwrap();
        let now = ae.reconstruction_error(v.view()).unwrap() as f32;
        assert!((now - h.valid_loss[i]).abs() <= 1e-6 * now.max(1e-12));
    }

    #[test]
    fn same_model_for_any_thread_count() {
        let x = cells(500, 0, 12, 8).0;
        let run = |threads| {
            crate::parallel::with_threads(threads, || {
                let mut rng = Rng::new(9);
                let mut ae = Autoencoder::new(12, &[16, 16], 4, &mut rng).unwrap();
                train(
                    &mut ae,
                    x.view(),
                    None,
                    &small_cfg(20),
                    &mut rng,
                    &mut silent,
                )
                .unwrap();
                [ae.encoder.params(), ae.decoder.params()].concat()
            })
            .unwrap()
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(3));
    }

    #[test]
    fn bad_settings_are_named_and_the_monitor_stops() {
        let x = cells(100, 0, 4, 10).0;
        let mut rng = Rng::new(11);
        let mut ae = Autoencoder::new(4, &[8], 2, &mut rng).unwrap();
        let base = small_cfg(10);
        for (cfg, name) in [
            (
                AutoencoderConfig {
                    batch_size: 101,
                    ..base.clone()
                },
                "batch_size",
            ),
            (
                AutoencoderConfig {
                    lr: f64::NAN,
                    ..base.clone()
                },
                "lr",
            ),
            (
                AutoencoderConfig {
                    eval_every: 0,
                    ..base.clone()
                },
                "eval_every",
            ),
        ] {
            let r = train(&mut ae, x.view(), None, &cfg, &mut rng, &mut silent);
            assert!(
                matches!(r, Err(Error::InvalidArgument { name: n, .. }) if n == name),
                "{name}: {r:?}"
            );
        }
        assert!(matches!(
            Autoencoder::new(4, &[8], 0, &mut rng),
            Err(Error::InvalidArgument { name: "latent", .. })
        ));
        let mut stop = |_: &Progress| false;
        let r = train(
            &mut ae,
            x.view(),
            None,
            &small_cfg(100),
            &mut rng,
            &mut stop,
        );
        assert_eq!(r.err(), Some(Error::Interrupted));
    }
}
