//! Element-wise activations with their derivatives.

use crate::linalg::{Matrix, Real};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Identity,
    Relu,
    LeakyRelu(f64),
    Softplus,
    Sigmoid,
}

impl Activation {
    pub fn name(&self) -> String {
        match self {
            Activation::Identity => "identity".into(),
            Activation::Relu => "relu".into(),
            Activation::LeakyRelu(s) => format!("leaky_relu({s})"),
            Activation::Softplus => "softplus".into(),
            Activation::Sigmoid => "sigmoid".into(),
        }
    }

    #[inline]
    pub fn apply<T: Real>(&self, x: T) -> T {
        match *self {
            Activation::Identity => x,
            Activation::Relu => x.max(T::zero()),
            Activation::LeakyRelu(s) => {
                if x >= T::zero() {
                    x
                } else {
                    T::c(s) * x
                }
            }
            // log(1 + e^x) without overflow: max(x, 0) + log1p(e^-|x|).
            Activation::Softplus => x.max(T::zero()) + (-x.abs()).exp().ln_1p(),
            Activation::Sigmoid => sigmoid(x),
        }
    }

    /// Derivative at the pre-activation `x`.
    #[inline]
    pub fn derivative<T: Real>(&self, x: T) -> T {
        match *self {
            Activation::Identity => T::one(),
            Activation::Relu => {
                if x > T::zero() {
                    T::one()
                } else {
                    T::zero()
                }
            }
            Activation::LeakyRelu(s) => {
                if x >= T::zero() {
                    T::one()
                } else {
                    T::c(s)
                }
            }
            Activation::Softplus => sigmoid(x),
            Activation::Sigmoid => {
                let s = sigmoid(x);
                s * (T::one() - s)
            }
        }
    }

    pub fn forward<T: Real>(&self, x: &Matrix<T>) -> Matrix<T> {
        let mut y = x.clone();
        if *self != Activation::Identity {
            y.as_mut_slice()
                .iter_mut()
                .for_each(|v| *v = self.apply(*v));
        }
        y
    }

    /// Gradient with respect to the pre-activation `x`, given the gradient `dy` of the output.
    pub fn backward<T: Real>(&self, x: &Matrix<T>, dy: &Matrix<T>) -> Matrix<T> {
        let mut dx = dy.clone();
        if *self != Activation::Identity {
            dx.as_mut_slice()
                .iter_mut()
                .zip(x.as_slice())
                .for_each(|(d, &v)| *d *= self.derivative(v));
        }
        dx
    }
}

/// Logistic function, stable for large |x|.
#[inline]
pub fn sigmoid<T: Real>(x: T) -> T {
    if x >= T::zero() {
        T::one() / (T::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::one() + e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::check_grad;

    const ALL: [Activation; 5] = [
        Activation::Identity,
        Activation::Relu,
        Activation::LeakyRelu(0.01),
        Activation::Softplus,
        Activation::Sigmoid,
    ];

    #[test]
    fn derivatives_match_finite_differences() {
        // Points away from the kinks at 0 so central differences are valid.
        let xs: [f64; 6] = [-30.0, -2.5, -0.3, 0.2, 1.7, 40.0];
        for act in ALL {
            for &x0 in &xs {
                let g = act.derivative(x0);
                let mut f = |v: &[f64]| act.apply(v[0]);
                if act == Activation::Relu && x0 < 0.0
                    || (act == Activation::Sigmoid || act == Activation::Softplus)
                        && x0.abs() > 20.0
                {
                    // zero or saturated derivative: compare directly
                    let fd = (act.apply(x0 + 1e-6) - act.apply(x0 - 1e-6)) / 2e-6;
                    assert!((fd - g).abs() < 1e-6, "{act:?} at {x0}");
                    continue;
                }
                check_grad(&act.name(), &mut f, &[x0], &[g], 1e-6, 1e-9);
            }
        }
    }

    #[test]
    fn softplus_and_sigmoid_are_stable_at_extremes() {
        assert_eq!(Activation::Softplus.apply(1000.0_f32), 1000.0);
        assert!(Activation::Softplus.apply(-1000.0_f32) >= 0.0);
        assert_eq!(sigmoid(-1000.0_f32), 0.0);
        assert_eq!(sigmoid(1000.0_f32), 1.0);
        assert!(Activation::Softplus.apply(-1000.0_f64).is_finite());
    }

    #[test]
    fn matrix_backward_is_elementwise_chain_rule() {
        let x = Matrix::from_vec(2, 2, vec![-1.0, 0.5, 2.0, -3.0]).unwrap();
        let dy = Matrix::from_vec(2, 2, vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let dx = Activation::LeakyRelu(0.1).backward(&x, &dy);
        assert_eq!(dx.as_slice(), &[0.1, 2.0, 3.0, 4.0 * 0.1]);
    }
}
