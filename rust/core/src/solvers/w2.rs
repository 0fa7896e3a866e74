//! The W2 baseline (Makkuva et al. 2020, as CellOT configures it): two input-convex
//! potentials f and g, the map T(x) = grad_x g(x), and the min-max game
//!
//!   g minimises mean[f(T x) - <x, T x>] + sum_k ||relu(-W_k^g)||_F,
//!   f minimises mean[f(y) - f(T x)], then W^f is clamped at 0.
//!
//! Each outer iteration draws one target batch, takes `inner_iters` g steps on fresh source
//! batches, then one f step on a fresh source batch. In the f step T(x) is a constant, so
//! no gradient of g is computed there (CellOT builds and discards it).
//!
//! Batches are split into row blocks of a fixed size, processed in parallel and summed in
//! block order, so the model does not depend on the number of threads.

use crate::error::{Error, Result};
use crate::linalg::{MatView, Matrix, dot};
use crate::losses::mmd;
use crate::nn::icnn::{Icnn, IcnnInit, IcnnWeights};
use crate::optim::{Adam, AdamConfig};
use crate::parallel::{map_ranges, row_ranges};
use crate::rng::{EpochSampler, Rng};

use super::{EarlyStop, Monitor, check_batch, check_data, report};

/// Rows per parallel block of a training batch: fixed, so results do not depend on threads.
const TRAIN_BLOCK: usize = 128;
/// The most g steps per outer iteration (CellOT takes 10).
pub const MAX_INNER_ITERS: usize = 1000;
/// Held-out cells per side scored by the MMD at each evaluation.
pub const VALID_MMD_CELLS: usize = 1024;

#[derive(Clone, Debug, PartialEq)]
pub struct W2Config {
    pub hidden: Vec<usize>,
    pub negative_slope: f64,
    pub init: IcnnInit,
    /// Outer iterations.
    pub iters: usize,
    /// g steps per outer iteration.
    pub inner_iters: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub adam: AdamConfig,
    /// Weight of g's negative-weight penalty.
    pub penalty: f64,
    pub eval_every: usize,
    /// CellOT's model selection: keep the parameters with the lowest held-out MMD.
    pub select_best: bool,
    /// Opt-in early stop after this many evaluations without a relative fall of
    /// `min_rel_improvement` in the held-out MMD.
    pub patience: Option<usize>,
    pub min_rel_improvement: f64,
    /// Bandwidths of the held-out MMD (CellOT's).
    pub mmd_gammas: Vec<f64>,
}

impl Default for W2Config {
    fn default() -> Self {
        Self {
            hidden: vec![64; 4],
            negative_slope: 0.2,
            init: IcnnInit::Uniform(0.1),
            iters: 100_000,
            inner_iters: 10,
            batch_size: 256,
            lr: 1e-4,
            adam: AdamConfig {
                beta1: 0.5,
                beta2: 0.9,
                eps: 1e-8,
                weight_decay: 0.0,
            },
            penalty: 1.0,
            eval_every: 250,
            select_best: true,
            patience: None,
            min_rel_improvement: 1e-2,
            mmd_gammas: vec![2.0, 1.0, 0.5, 0.1, 0.01, 0.005],
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct W2History {
    /// g's loss on its last inner batch of each outer iteration (penalty included).
    pub g_loss: Vec<f32>,
    /// f's loss mean f(y) - mean f(T x) of each outer iteration.
    pub f_loss: Vec<f32>,
    pub eval_iters: Vec<usize>,
    /// Held-out estimate of W2^2 / 2 (CellOT's convention).
    pub w2_valid: Vec<f32>,
    /// Held-out MMD between transported source and target cells.
    pub mmd_valid: Vec<f32>,
    /// Iteration whose parameters were kept (the last, or the best by held-out MMD).
    pub best_iter: usize,
}

/// The two potentials (f, g) as the configuration builds them.
pub fn networks(d: usize, cfg: &W2Config, rng: &mut Rng) -> Result<(Icnn<f32>, Icnn<f32>)> {
    let f = Icnn::new(d, &cfg.hidden, cfg.negative_slope, cfg.init, rng)?;
    let g = Icnn::new(d, &cfg.hidden, cfg.negative_slope, cfg.init, rng)?;
    Ok((f, g))
}

fn blocks(n: usize) -> Vec<std::ops::Range<usize>> {
    row_ranges(n, n.div_ceil(TRAIN_BLOCK))
}

/// Sums per-block (loss, gradient) pairs in block order.
fn reduce(parts: Vec<(f32, Vec<f32>)>, n_params: usize) -> (f32, Vec<f32>) {
    let mut grad = vec![0.0f32; n_params];
    let mut loss = 0.0f32;
    for (l, g) in parts {
        loss += l;
        grad.iter_mut().zip(&g).for_each(|(a, b)| *a += *b);
    }
    (loss, grad)
}

/// T(x) = grad g(x) on one block.
fn map_block(g: &Icnn<f32>, gw: &IcnnWeights<f32>, x: &Matrix<f32>) -> Matrix<f32> {
    let (_, tape) = g.forward(gw, x);
    g.input_grad(gw, &g.adjoints(gw, &tape, &vec![1.0; x.rows()]))
}

/// g's loss mean[f(T x) - <x, T x>] on a batch and its gradient in g's parameters (the
/// second-order backward; f's gradient is not needed).
fn g_loss_grad(f: &Icnn<f32>, g: &Icnn<f32>, x: &Matrix<f32>) -> (f32, Vec<f32>) {
    let (fw, gw) = (f.weights(), g.weights());
    let inv_n = 1.0 / x.rows() as f32;
    let parts = map_ranges(&blocks(x.rows()), |r| {
        let xb = x.rows_range(r.start, r.end);
        let (_, tape_g) = g.forward(&gw, &xb);
        let adj_g = g.adjoints(&gw, &tape_g, &vec![1.0; xb.rows()]);
        let t = g.input_grad(&gw, &adj_g);
        let (ft, tape_f) = f.forward(&fw, &t);
        // dL/dT = (grad f(T) - x) / n.
        let mut v = f.input_grad(&fw, &f.adjoints(&fw, &tape_f, &vec![inv_n; xb.rows()]));
        v.axpy(-inv_n, &xb);
        let loss = (ft.iter().sum::<f32>() - dot(xb.as_slice(), t.as_slice())) * inv_n;
        let mut grad = vec![0.0; g.n_params()];
        g.input_grad_param_grad(&gw, &xb, &tape_g, &adj_g, &v, &mut grad);
        (loss, grad)
    });
    reduce(parts, g.n_params())
}

/// f's loss mean f(y) - mean f(T x) and its gradient in f's parameters, T held constant.
fn f_loss_grad(f: &Icnn<f32>, g: &Icnn<f32>, x: &Matrix<f32>, y: &Matrix<f32>) -> (f32, Vec<f32>) {
    let (fw, gw) = (f.weights(), g.weights());
    let inv_n = 1.0 / x.rows() as f32;
    let parts = map_ranges(&blocks(x.rows()), |r| {
        let t = map_block(g, &gw, &x.rows_range(r.start, r.end));
        let yb = y.rows_range(r.start, r.end);
        let mut grad = vec![0.0; f.n_params()];
        let mut loss = 0.0;
        for (cells, w) in [(&yb, inv_n), (&t, -inv_n)] {
            let (fv, tape) = f.forward(&fw, cells);
            f.param_grad(
                cells,
                &tape,
                &f.adjoints(&fw, &tape, &vec![w; cells.rows()]),
                &mut grad,
            );
            loss += w * fv.iter().sum::<f32>();
        }
        (loss, grad)
    });
    reduce(parts, f.n_params())
}

fn diverged(k: usize, msg: String) -> Error {
    Error::Diverged {
        stage: "w2",
        iteration: k,
        msg,
    }
}

/// Applies one Adam step and checks that the loss and parameters stay finite.
fn update(
    net: &mut Icnn<f32>,
    opt: &mut Adam<f32>,
    (loss, grad): (f32, Vec<f32>),
    lr: f64,
    (k, name): (usize, &str),
) -> Result<f32> {
    if !loss.is_finite() {
        return Err(diverged(k, format!("{name}'s loss is {loss}")));
    }
    opt.step(net.params_mut(), &grad, lr);
    if !net.params().iter().all(|v| v.is_finite()) {
        return Err(diverged(
            k,
            format!("a parameter of {name} became non-finite"),
        ));
    }
    Ok(loss)
}

/// One g step on a source batch, with the negative-weight penalty.
fn g_step(
    f: &Icnn<f32>,
    g: &mut Icnn<f32>,
    opt: &mut Adam<f32>,
    x: &Matrix<f32>,
    cfg: &W2Config,
    k: usize,
) -> Result<f32> {
    let (loss, mut grad) = g_loss_grad(f, g, x);
    let pen = g.negative_weight_penalty(cfg.penalty as f32, &mut grad);
    update(g, opt, (loss + pen, grad), cfg.lr, (k, "g"))
}

/// One f step against the target batch, then the projection onto convex f.
fn f_step(
    f: &mut Icnn<f32>,
    g: &Icnn<f32>,
    opt: &mut Adam<f32>,
    x: &Matrix<f32>,
    y: &Matrix<f32>,
    cfg: &W2Config,
    k: usize,
) -> Result<f32> {
    let lg = f_loss_grad(f, g, x, y);
    let loss = update(f, opt, lg, cfg.lr, (k, "f"))?;
    f.clamp_weights();
    Ok(loss)
}

/// The held-out estimate of W2^2 / 2: mean[f(T x) - <x, T x> + |x|^2 / 2] over the source
/// plus mean[|y|^2 / 2 - f(y)] over the target (CellOT's `compute_w2_distance`).
pub fn w2_estimate(
    f: &Icnn<f32>,
    g: &Icnn<f32>,
    source: MatView<'_, f32>,
    target: MatView<'_, f32>,
) -> Result<f64> {
    let t = transport(g, source)?;
    // A map that sends cells beyond the range f accepts comes from an unstable fit; say so
    // rather than blame the caller's cells.
    let limit = crate::nn::MAX_INPUT as f32;
    if t.as_slice()
        .iter()
        .any(|v| !v.is_finite() || v.abs() > limit)
    {
        return Err(Error::invalid(
            "model",
            format!(
                "the fitted map sends cells beyond magnitude {:e} (or to NaN): the fit is unstable; refit with a lower lr",
                crate::nn::MAX_INPUT
            ),
        ));
    }
    let ft = f.value(t.view())?;
    let fy = f.value(target)?;
    let d = source.cols();
    let mut sx = 0.0f64;
    for (i, &fv) in ft.iter().enumerate() {
        let (x, tx) = (source.row(i), t.row(i));
        let (xt, xx): (f64, f64) = (0..d).fold((0.0, 0.0), |(a, b), j| {
            let xj = x[j] as f64;
            (a + xj * tx[j] as f64, b + xj * xj)
        });
        sx += fv as f64 - xt + 0.5 * xx;
    }
    let mut sy = 0.0f64;
    for (i, &fv) in fy.iter().enumerate() {
        let yy: f64 = target.row(i).iter().map(|&v| (v as f64) * (v as f64)).sum();
        sy += 0.5 * yy - fv as f64;
    }
    Ok(sx / source.rows() as f64 + sy / target.rows() as f64)
}

/// The held-out MMD of transported source cells against target cells (at most
/// [`VALID_MMD_CELLS`] of each).
fn valid_mmd(
    g: &Icnn<f32>,
    source: MatView<'_, f32>,
    target: MatView<'_, f32>,
    gammas: &[f64],
) -> Result<f64> {
    let (ns, nt) = (
        source.rows().min(VALID_MMD_CELLS),
        target.rows().min(VALID_MMD_CELLS),
    );
    let t = transport(g, source.rows_range(0, ns).view())?;
    Ok(mmd(
        &t.cast::<f64>(),
        &target.rows_range(0, nt).cast::<f64>(),
        gammas,
    ))
}

fn validate(
    cfg: &W2Config,
    source: MatView<'_, f32>,
    target: MatView<'_, f32>,
    d: usize,
) -> Result<()> {
    check_data("source", source, d)?;
    check_data("target", target, d)?;
    check_batch(cfg.batch_size, source.rows(), "source")?;
    check_batch(cfg.batch_size, target.rows(), "target")?;
    super::check_iters(cfg.iters)?;
    if cfg.eval_every == 0 {
        return Err(Error::invalid("eval_every", "must be >= 1"));
    }
    // Ctrl-C and the callback are seen between outer iterations: bound the time between.
    if cfg.inner_iters == 0 || cfg.inner_iters > MAX_INNER_ITERS {
        return Err(Error::invalid(
            "inner_iters",
            format!("must be in [1, {MAX_INNER_ITERS}], got {}", cfg.inner_iters),
        ));
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return Err(Error::invalid(
            "lr",
            format!("must be a positive number, got {}", cfg.lr),
        ));
    }
    if !(cfg.penalty.is_finite() && cfg.penalty >= 0.0) {
        return Err(Error::invalid(
            "penalty",
            format!("must be a finite number >= 0, got {}", cfg.penalty),
        ));
    }
    if cfg.mmd_gammas.is_empty() || cfg.mmd_gammas.iter().any(|g| !(g.is_finite() && *g > 0.0)) {
        return Err(Error::invalid(
            "mmd_gammas",
            "must be a non-empty list of positive numbers",
        ));
    }
    cfg.adam.validate()
}

/// Trains f and g in place on `source` and `target` (training cells); `valid` (held-out
/// source and target cells) drives the recorded W2 estimate and MMD, model selection and
/// the early stop.
#[allow(clippy::too_many_arguments)]
pub fn train(
    f: &mut Icnn<f32>,
    g: &mut Icnn<f32>,
    source: MatView<'_, f32>,
    target: MatView<'_, f32>,
    valid: Option<(MatView<'_, f32>, MatView<'_, f32>)>,
    cfg: &W2Config,
    rng: &mut Rng,
    monitor: &mut Monitor<'_>,
) -> Result<W2History> {
    let d = g.in_dim();
    validate(cfg, source, target, d)?;
    super::check_valid(valid, d)?;
    let (mut opt_f, mut opt_g) = (
        Adam::<f32>::new(f.n_params(), cfg.adam.clone())?,
        Adam::<f32>::new(g.n_params(), cfg.adam.clone())?,
    );
    let mut s_sampler = EpochSampler::new(source.rows(), cfg.batch_size, rng);
    let mut t_sampler = EpochSampler::new(target.rows(), cfg.batch_size, rng);
    let mut hist = W2History {
        g_loss: Vec::with_capacity(super::history_capacity(cfg.iters)),
        f_loss: Vec::with_capacity(super::history_capacity(cfg.iters)),
        ..Default::default()
    };
    let selecting = cfg.select_best || cfg.patience.is_some();
    let mut stop = (valid.is_some() && selecting)
        .then(|| EarlyStop::new(cfg.patience.unwrap_or(usize::MAX), cfg.min_rel_improvement));
    let n_f = f.n_params();
    for k in 0..cfg.iters {
        let y = target.select_rows(t_sampler.next_batch(rng));
        let mut lg = 0.0;
        for _ in 0..cfg.inner_iters {
            let x = source.select_rows(s_sampler.next_batch(rng));
            lg = g_step(f, g, &mut opt_g, &x, cfg, k)?;
        }
        let x = source.select_rows(s_sampler.next_batch(rng));
        let lf = f_step(f, g, &mut opt_f, &x, &y, cfg, k)?;
        hist.g_loss.push(lg);
        hist.f_loss.push(lf);

        let last = k + 1 == cfg.iters;
        let mut valid_now = None;
        if let Some((vs, vt)) = valid
            && ((k + 1) % cfg.eval_every == 0 || last)
        {
            // Held-out cells were checked: an error here is the map's own outputs.
            let as_divergence = |e: Error| diverged(k, format!("on held-out cells: {e}"));
            let w2 = w2_estimate(f, g, vs, vt).map_err(as_divergence)?;
            let m = valid_mmd(g, vs, vt, &cfg.mmd_gammas).map_err(as_divergence)?;
            hist.eval_iters.push(k + 1);
            hist.w2_valid.push(w2 as f32);
            hist.mmd_valid.push(m as f32);
            valid_now = Some(w2);
            if let Some(stop) = &mut stop
                && stop.update(-m, &[f.params(), g.params()].concat(), k + 1)
            {
                break;
            }
        }
        let shown = valid_now.or_else(|| hist.w2_valid.last().map(|&v| v as f64));
        let evaluated = valid_now.is_some();
        report(
            monitor,
            "w2",
            (k + 1, cfg.iters),
            lg as f64,
            shown,
            evaluated,
        )?;
    }
    hist.best_iter = hist.g_loss.len();
    if let Some((params, it)) = stop.and_then(EarlyStop::into_best) {
        f.set_params(&params[..n_f])?;
        g.set_params(&params[n_f..])?;
        hist.best_iter = it;
    }
    Ok(hist)
}

/// Floating-point operations (2 per multiply-add of the matrix products, which dominate) of
/// one outer iteration as implemented here: `inner` g steps (g forward, input gradient, f
/// forward and input gradient at T, the second-order backward) and one f step (T, then f's
/// forward and parameter backward on both batches).
pub fn outer_iteration_flops(d: usize, hidden: &[usize], batch: usize, inner: usize) -> u64 {
    let h_sum: usize = hidden.iter().sum();
    let a = (h_sum + 1) * d; // every A_k x
    let w: usize = hidden.windows(2).map(|p| p[0] * p[1]).sum::<usize>() + hidden[hidden.len() - 1];
    let g_step = 5 * a + (h_sum + hidden[0]) * d + 6 * w;
    let f_step = 6 * a + 8 * w;
    2 * (batch * (inner * g_step + f_step)) as u64
}

/// T(x) = grad g(x) for every row.
pub fn transport(g: &Icnn<f32>, x: MatView<'_, f32>) -> Result<Matrix<f32>> {
    g.gradient(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solvers::{Progress, silent};

    fn gaussians(n: usize, d: usize, shift: &[f32], seed: u64) -> (Matrix<f32>, Matrix<f32>) {
        let mut rng = Rng::new(seed);
        let x = Matrix::from_fn(n, d, |_, _| rng.normal());
        let y = Matrix::from_fn(n, d, |_, j| rng.normal::<f32>() + shift[j]);
        (x, y)
    }

    fn fit(
        x: &Matrix<f32>,
        y: &Matrix<f32>,
        valid: Option<(&Matrix<f32>, &Matrix<f32>)>,
        cfg: &W2Config,
        seed: u64,
    ) -> (Icnn<f32>, Icnn<f32>, W2History) {
        let mut rng = Rng::new(seed);
        let (mut f, mut g) = networks(x.cols(), cfg, &mut rng).unwrap();
        let h = train(
            &mut f,
            &mut g,
            x.view(),
            y.view(),
            valid.map(|(a, b)| (a.view(), b.view())),
            cfg,
            &mut rng,
            &mut silent,
        )
        .unwrap();
        (f, g, h)
    }

    #[test]
    fn g_gradient_matches_finite_differences_in_f64() {
        // The solver runs in f32; its loss pieces are checked here in f64 through the
        // same layer calls.
        use crate::testutil::check_grad;
        let mut rng = Rng::new(1);
        let f = Icnn::<f64>::new(3, &[5, 4], 0.2, IcnnInit::Torch, &mut rng).unwrap();
        let mut g = Icnn::<f64>::new(3, &[5, 4], 0.2, IcnnInit::Torch, &mut rng).unwrap();
        let x = Matrix::from_fn(6, 3, |_, _| rng.uniform(-1.5, 1.5));
        let loss = |g: &Icnn<f64>| {
            let gw = g.weights();
            let (_, tape) = g.forward(&gw, &x);
            let t = g.input_grad(&gw, &g.adjoints(&gw, &tape, &[1.0; 6]));
            let ft = f.value(t.view()).unwrap();
            (ft.iter().sum::<f64>() - dot(x.as_slice(), t.as_slice())) / 6.0
        };
        let (fw, gw) = (f.weights(), g.weights());
        let (_, tape_g) = g.forward(&gw, &x);
        let adj_g = g.adjoints(&gw, &tape_g, &[1.0; 6]);
        let t = g.input_grad(&gw, &adj_g);
        let (_, tape_f) = f.forward(&fw, &t);
        let mut v = f.input_grad(&fw, &f.adjoints(&fw, &tape_f, &[1.0 / 6.0; 6]));
        v.axpy(-1.0 / 6.0, &x);
        let mut grad = vec![0.0; g.n_params()];
        g.input_grad_param_grad(&gw, &x, &tape_g, &adj_g, &v, &mut grad);
        let p0 = g.params().to_vec();
        let mut fp = |p: &[f64]| {
            g.set_params(p).unwrap();
            loss(&g)
        };
        check_grad("w2 g loss", &mut fp, &p0, &grad, 1e-6, 1e-9);
    }

    #[test]
    fn learns_a_shift_and_its_w2() {
        let shift = [2.0f32, -1.0];
        let (x, y) = gaussians(4000, 2, &shift, 2);
        let (xv, yv) = gaussians(1000, 2, &shift, 3);
        let cfg = W2Config {
            iters: 1500,
            ..Default::default()
        };
        let (f, g, h) = fit(&x, &y, Some((&xv, &yv)), &cfg, 4);
        assert!(f.is_convex());
        let t = transport(&g, xv.view()).unwrap();
        let mut err = 0.0f64;
        for i in 0..xv.rows() {
            let e: f64 = (0..2)
                .map(|j| ((t.get(i, j) - xv.get(i, j) - shift[j]) as f64).powi(2))
                .sum();
            err += e.sqrt() / xv.rows() as f64;
        }
        let norm = (5.0f64).sqrt();
        assert!(
            err < 0.1 * norm,
            "mean map error {err} against |shift| {norm}"
        );
        let best = h.eval_iters.iter().position(|&i| i == h.best_iter).unwrap();
        let w2 = h.w2_valid[best] as f64;
        assert!((w2 - 2.5).abs() < 0.25, "held-out W2^2/2 {w2}, exact 2.5");
        assert_eq!(h.g_loss.len(), 1500);
        assert!(h.mmd_valid[best] <= h.mmd_valid.iter().cloned().fold(f32::MAX, f32::min));
    }

    #[test]
    fn same_model_for_any_thread_count() {
        let (x, y) = gaussians(600, 3, &[1.0, 0.0, 0.5], 5);
        let cfg = W2Config {
            iters: 5,
            inner_iters: 3,
            ..Default::default()
        };
        let run = |threads| {
            crate::parallel::with_threads(threads, || {
                let (f, g, _) = fit(&x, &y, None, &cfg, 6);
                [f.params(), g.params()].concat()
            })
            .unwrap()
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(3));
    }

    #[test]
    fn early_stop_and_selection_keep_the_best_mmd() {
        let (x, y) = gaussians(1500, 2, &[3.0, 0.0], 7);
        let (xv, yv) = gaussians(400, 2, &[3.0, 0.0], 8);
        let cfg = W2Config {
            iters: 3000,
            eval_every: 50,
            patience: Some(3),
            ..Default::default()
        };
        let (_, g, h) = fit(&x, &y, Some((&xv, &yv)), &cfg, 9);
        assert!(h.g_loss.len() < 3000, "never stopped");
        let best = h.mmd_valid.iter().cloned().fold(f32::MAX, f32::min);
        let kept = h.mmd_valid[h.eval_iters.iter().position(|&i| i == h.best_iter).unwrap()];
        assert_eq!(kept, best);
        let now = valid_mmd(&g, xv.view(), yv.view(), &cfg.mmd_gammas).unwrap() as f32;
        assert!(
            (now - kept).abs() <= 1e-5 * kept.abs().max(1e-6),
            "restored {now}, recorded {kept}"
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let (x, y) = gaussians(300, 2, &[1.0, 0.0], 10);
        let mut rng = Rng::new(1);
        let base = W2Config::default();
        let (mut f, mut g) = networks(2, &base, &mut rng).unwrap();
        for (cfg, name) in [
            (
                W2Config {
                    batch_size: 400,
                    ..base.clone()
                },
                "batch_size",
            ),
            (
                W2Config {
                    inner_iters: 0,
                    ..base.clone()
                },
                "inner_iters",
            ),
            (
                W2Config {
                    lr: -1.0,
                    ..base.clone()
                },
                "lr",
            ),
            (
                W2Config {
                    penalty: f64::NAN,
                    ..base.clone()
                },
                "penalty",
            ),
        ] {
            let r = train(
                &mut f,
                &mut g,
                x.view(),
                y.view(),
                None,
                &cfg,
                &mut rng,
                &mut silent,
            );
            assert!(
                matches!(r, Err(Error::InvalidArgument { name: n, .. }) if n == name),
                "{name}: {r:?}"
            );
        }
        let mut calls = 0;
        let mut stop = |_: &Progress| {
            calls += 1;
            false
        };
        let cfg = W2Config {
            iters: 100,
            inner_iters: 1,
            ..base
        };
        let r = train(
            &mut f,
            &mut g,
            x.view(),
            y.view(),
            None,
            &cfg,
            &mut rng,
            &mut stop,
        );
        assert_eq!(r, Err(Error::Interrupted));
        assert_eq!(calls, 1);
    }
}
