//! Training loops. They report through a [`Monitor`] so a caller (the Python binding) can
//! show progress and stop a fit between iterations.

pub mod autoencoder;
pub mod w1;
pub mod w2;

use crate::error::{Error, Result};
use crate::linalg::MatView;

/// A snapshot handed to the monitor every `report_every` iterations and at the end.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    pub stage: &'static str,
    pub iteration: usize,
    pub total: usize,
    pub loss: f64,
    /// The stage's held-out statistic (the dual W1 estimate for the potential).
    pub valid: Option<f64>,
}

/// Returns `false` to stop training (the fit then ends with `Error::Interrupted`).
pub type Monitor<'a> = dyn FnMut(&Progress) -> bool + 'a;

/// A monitor that never stops and shows nothing.
pub fn silent(_: &Progress) -> bool {
    true
}

/// How often the monitor is called (iterations); also bounds how quickly Ctrl-C is seen.
pub const REPORT_EVERY: usize = 25;

/// Hands the monitor a snapshot every [`REPORT_EVERY`] iterations, at the last one and right
/// after an evaluation (`evaluated`); a monitor that returns false stops the fit.
pub(crate) fn report(
    monitor: &mut Monitor<'_>,
    stage: &'static str,
    (done, total): (usize, usize),
    loss: f64,
    valid: Option<f64>,
    evaluated: bool,
) -> Result<()> {
    if done % REPORT_EVERY == 0 || done == total || evaluated {
        let p = Progress {
            stage,
            iteration: done,
            total,
            loss,
            valid,
        };
        if !monitor(&p) {
            return Err(Error::Interrupted);
        }
    }
    Ok(())
}

pub(crate) fn check_data(name: &'static str, x: MatView<'_, f32>, d: usize) -> Result<()> {
    if x.rows() == 0 {
        return Err(Error::invalid(name, "has no cells"));
    }
    if x.cols() != d {
        return Err(Error::shape(
            name,
            format!("(n, {d})"),
            format!("({}, {})", x.rows(), x.cols()),
        ));
    }
    crate::nn::check_magnitude(name, x.as_slice())
}

/// Held-out cells, checked like the training cells (named as the binding's arguments).
pub(crate) fn check_valid(
    valid: Option<(MatView<'_, f32>, MatView<'_, f32>)>,
    d: usize,
) -> Result<()> {
    if let Some((vs, vt)) = valid {
        check_data("valid_source", vs, d)?;
        check_data("valid_target", vt, d)?;
    }
    Ok(())
}

/// The most iterations a stage may run: 1e8 is days of training and 400 MB of history.
pub const MAX_ITERS: usize = 100_000_000;

pub(crate) fn check_iters(iters: usize) -> Result<()> {
    if iters > MAX_ITERS {
        return Err(Error::invalid(
            "iters",
            format!("must be at most {MAX_ITERS}, got {iters}"),
        ));
    }
    Ok(())
}

/// A history vector's initial capacity: a huge iteration count must fail as an error (or
/// run), not abort the process by reserving memory up front.
pub(crate) fn history_capacity(iters: usize) -> usize {
    iters.min(1 << 16)
}

pub(crate) fn check_batch(batch: usize, n_train: usize, side: &str) -> Result<()> {
    if batch == 0 {
        return Err(Error::invalid("batch_size", "must be >= 1"));
    }
    if batch > n_train {
        return Err(Error::invalid(
            "batch_size",
            format!(
                "{batch} exceeds the {n_train} {side} cells available for training; lower batch_size or supply more cells"
            ),
        ));
    }
    Ok(())
}

pub(crate) fn mean(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64
}

/// Opt-in early stopping on a held-out score (higher is better). The best parameters seen
/// are kept; training stops after `patience` evaluations without a relative gain of
/// `min_rel` over the score of the last such gain, so slow drifts upwards do not keep it
/// going, while the parameters restored are still the best ones evaluated.
pub(crate) struct EarlyStop {
    patience: usize,
    min_rel: f64,
    anchor: Option<f64>,
    stale: usize,
    best: Option<(f64, Vec<f32>, usize)>,
}

impl EarlyStop {
    pub(crate) fn new(patience: usize, min_rel: f64) -> Self {
        Self {
            patience,
            min_rel,
            anchor: None,
            stale: 0,
            best: None,
        }
    }

    /// Records the score at iteration `iter`; true when training should stop.
    pub(crate) fn update(&mut self, score: f64, params: &[f32], iter: usize) -> bool {
        if self.best.as_ref().is_none_or(|(b, _, _)| score > *b) {
            self.best = Some((score, params.to_vec(), iter));
        }
        if self
            .anchor
            .is_none_or(|a| score > a + self.min_rel * a.abs())
        {
            self.anchor = Some(score);
            self.stale = 0;
        } else {
            self.stale += 1;
        }
        self.stale >= self.patience
    }

    pub(crate) fn into_best(self) -> Option<(Vec<f32>, usize)> {
        self.best.map(|(_, p, it)| (p, it))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_stop_keeps_the_best_and_counts_only_significant_gains() {
        let mut stop = EarlyStop::new(2, 1e-3);
        // Gains below 0.1% do not reset the count, but the best score is still the one kept.
        assert!(!stop.update(1.0, &[1.0], 10));
        assert!(!stop.update(1.0005, &[2.0], 20));
        assert!(stop.update(1.0008, &[3.0], 30));
        assert_eq!(stop.into_best(), Some((vec![3.0], 30)));
        let mut stop = EarlyStop::new(2, 1e-3);
        assert!(!stop.update(-5.0, &[1.0], 1));
        assert!(!stop.update(-4.0, &[2.0], 2));
        assert!(!stop.update(-4.5, &[3.0], 3));
        assert!(!stop.update(-3.0, &[4.0], 4));
        assert!(!stop.update(-3.5, &[5.0], 5));
        assert!(stop.update(-3.1, &[6.0], 6));
        assert_eq!(stop.into_best(), Some((vec![4.0], 4)));
    }
}
