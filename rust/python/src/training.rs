//! Runs a core training loop off the Python thread: the GIL is released, progress reaches a
//! Python callback, and Ctrl-C (seen only on the main thread) stops the fit between
//! iterations with KeyboardInterrupt.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyBool;
use w1ot_core::parallel::with_threads;
use w1ot_core::solvers::Progress;
use w1ot_core::{Error, Result};

use crate::errors::{internal_error, to_py};

/// How often the waiting Python thread looks for signals.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// `job` runs on a worker thread inside a pool of `n_threads`; it receives the monitor to
/// pass to the core. `callback(stage, iteration, total, loss, valid)` may return False to
/// stop (KeyboardInterrupt); an exception it raises ends the fit and propagates.
pub fn run<R: Send>(
    py: Python<'_>,
    n_threads: usize,
    callback: Option<&Py<PyAny>>,
    job: impl FnOnce(&mut dyn FnMut(&Progress) -> bool) -> Result<R> + Send,
) -> PyResult<R> {
    if let Some(cb) = callback
        && !cb.bind(py).is_callable()
    {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "callback must be callable, got {}",
            cb.bind(py).repr()?
        )));
    }
    let stop = AtomicBool::new(false);
    let callback_error: Mutex<Option<PyErr>> = Mutex::new(None);
    let (tx, rx) = mpsc::channel();
    // detach() needs a Sync capture; the Mutex is uncontended (one waiter).
    let rx = Mutex::new(rx);
    let mut interrupt: Option<PyErr> = None;

    let outcome = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut monitor = |p: &Progress| -> bool {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                let Some(cb) = callback else { return true };
                Python::attach(|py| {
                    let args = (p.stage, p.iteration, p.total, p.loss, p.valid);
                    match cb.call1(py, args) {
                        Ok(r) => !r.bind(py).is(PyBool::new(py, false).as_any()),
                        Err(e) => {
                            *callback_error.lock().expect("callback error lock") = Some(e);
                            false
                        }
                    }
                })
            };
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                with_threads(n_threads, || job(&mut monitor)).and_then(|r| r)
            }));
            let _ = tx.send(r);
        });
        loop {
            match py.detach(|| rx.lock().expect("result channel").recv_timeout(SIGNAL_POLL)) {
                Ok(r) => break r,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if interrupt.is_none()
                        && let Err(e) = py.check_signals()
                    {
                        interrupt = Some(e);
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Ok(Err(Error::invalid(
                        "training",
                        "worker thread ended without a result",
                    )));
                }
            }
        }
    });

    let result = outcome.map_err(internal_error)?;
    if let Some(e) = callback_error.into_inner().expect("callback error lock") {
        return Err(e);
    }
    match result {
        Err(Error::Interrupted) => Err(interrupt.unwrap_or_else(|| to_py(Error::Interrupted))),
        other => other.map_err(to_py),
    }
}
