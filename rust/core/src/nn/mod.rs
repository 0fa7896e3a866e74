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

/// The largest input magnitude the models accept: squared distances and the ICNN's squared
/// first layer of such values stay far inside float32's range (3.4e38).
pub const MAX_INPUT: f64 = 1e12;

/// Checks that every value is finite and at most [`MAX_INPUT`] in magnitude, naming `name`.
pub fn check_magnitude<T: Real>(name: &'static str, values: &[T]) -> Result<()> {
    let limit = T::c(MAX_INPUT);
    if let Some(v) = values.iter().find(|v| !v.is_finite() || v.abs() > limit) {
        let what = if v.is_finite() {
            let v = num_traits::ToPrimitive::to_f64(v).unwrap_or(f64::INFINITY);
            format!(
                "has values of magnitude {v:.3e}; at most {MAX_INPUT:e} is accepted: rescale the data"
            )
        } else {
            "contains NaN or infinite values".to_string()
        };
        return Err(Error::invalid(name, what));
    }
    Ok(())
}

/// A model input `x` must have `in_dim` columns of finite values of moderate magnitude.
pub(crate) fn check_input<T: Real>(x: MatView<'_, T>, in_dim: usize) -> Result<()> {
    if x.cols() != in_dim {
        return Err(Error::shape(
            "x",
            format!("(n, {in_dim})"),
            format!("({}, {})", x.rows(), x.cols()),
        ));
    }
    check_magnitude("x", x.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magnitude_check_names_the_input_and_refuses_overflowing_values() {
        assert!(check_magnitude::<f32>("x", &[0.0, -1e12, 1e12]).is_ok());
        for bad in [3e38f32, -1e13, f32::NAN, f32::INFINITY] {
            let err = check_magnitude("x", &[1.0, bad]).unwrap_err().to_string();
            assert!(err.contains("x"), "{err}");
        }
        let err = check_magnitude::<f32>("source", &[2e12])
            .unwrap_err()
            .to_string();
        assert!(err.contains("source") && err.contains("rescale"), "{err}");
    }
}
