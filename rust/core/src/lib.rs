//! w1ot-core: the hand-written, autodiff-free numerical core of w1ot.
//!
//! Everything here is plain Rust with no Python dependency: it builds and tests with
//! `cargo test`. Layers keep their parameters in one flat slice owned by the model, so
//! optimisers, serialisation and the Python binding all see a single `&[T]`.
//!
//! Gradients are written by hand; every backward pass has a finite-difference test in f64.

pub mod error;
pub mod linalg;
pub mod losses;
pub mod nn;
pub mod optim;
pub mod parallel;
pub mod rng;
pub mod simd;
pub mod solvers;

#[cfg(test)]
pub(crate) mod testutil;

pub use error::{Error, Result};
pub use linalg::{MatView, Matrix, Real};
