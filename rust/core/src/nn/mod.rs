//! Layers and the two containers built from them. Each layer file holds its forward pass,
//! its hand-written backward pass and the finite-difference test of that backward pass.

pub mod activation;
pub mod bjorck;
pub mod cayley;
pub mod dense;
pub mod groupsort;
pub mod mlp;
pub mod orthogonal;
pub mod potential;

pub use activation::Activation;
pub use mlp::Mlp;
pub use orthogonal::{OrthoKind, OrthoLinear};
pub use potential::Potential;

/// Whether orthogonalisation runs its training-time iteration count or converges fully.
/// Only Björck distinguishes them; the Cayley transform is exact in both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}
