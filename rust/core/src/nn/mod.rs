//! Layers and the two containers built from them. Each layer file holds its forward pass,
//! its hand-written backward pass and the finite-difference test of that backward pass.

pub mod activation;
pub mod bjorck;
pub mod cayley;
pub mod dense;
pub mod groupsort;
pub mod icnn;
pub mod mlp;
pub mod orthogonal;
pub mod potential;

pub use activation::Activation;
pub use icnn::{Icnn, IcnnInit};
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

use crate::error::{Error, Result};
use crate::linalg::{MatView, Real};

/// Start of each layer's block in a flat parameter vector, and its total length last.
pub(crate) fn param_offsets(sizes: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut offsets = vec![0];
    for n in sizes {
        offsets.push(offsets.last().unwrap() + n);
    }
    offsets
}

/// Copies `src` into a model's flat parameters after checking length and finiteness.
pub(crate) fn assign_params<T: Real>(dst: &mut [T], src: &[T]) -> Result<()> {
    if src.len() != dst.len() {
        return Err(Error::shape(
            "params",
            format!("({},)", dst.len()),
            format!("({},)", src.len()),
        ));
    }
    if !src.iter().all(|v| v.is_finite()) {
        return Err(Error::invalid("params", "contains NaN or infinite values"));
    }
    dst.copy_from_slice(src);
    Ok(())
}

/// A model input `x` must have `in_dim` columns.
pub(crate) fn check_input<T: Real>(x: MatView<'_, T>, in_dim: usize) -> Result<()> {
    if x.cols() != in_dim {
        return Err(Error::shape(
            "x",
            format!("(n, {in_dim})"),
            format!("({}, {})", x.rows(), x.cols()),
        ));
    }
    Ok(())
}
