//! Training loops. They report through a [`Monitor`] so a caller (the Python binding) can
//! show progress and stop a fit between iterations.

pub mod w1;

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
