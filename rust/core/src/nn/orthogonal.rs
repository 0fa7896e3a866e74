//! Orthogonal affine layer z = Q x + b for each cell x, with Q (out x in) made orthonormal
//! from a raw weight W by the Cayley transform or by Björck iterations. Outputs are
//! unit-major (one column per cell), the layout the potential trains in. For out >= in the columns of
//! Q are orthonormal; for out < in (a wide layer) its rows are, by transforming W^T.
//!
//! Parameters, row-major: [W (out x in), b (out)] and, for Cayley, a trailing scalar alpha
//! (M = alpha W / ||W||_F, as in the reference implementation).

use super::Mode;
use super::bjorck::{BjorckCache, bjorck, bjorck_backward, bjorck_converged};
use super::cayley::{CayleyCache, cayley, cayley_backward};
use crate::error::Result;
use crate::linalg::{Matrix, Op, Real, add_col_vector, add_row_sums, dot, gemm, matmul};
use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrthoKind {
    Cayley,
    /// Björck with this many iterations in training; inference iterates to convergence.
    Bjorck {
        train_iters: usize,
    },
}

impl OrthoKind {
    pub fn name(&self) -> &'static str {
        match self {
            OrthoKind::Cayley => "cayley",
            OrthoKind::Bjorck { .. } => "bjorck",
        }
    }
}

/// Björck inference tolerance on |Q^T Q - I|, and its iteration cap.
const BJORCK_EVAL_TOL: f64 = 1e-6;
const BJORCK_EVAL_MAX_ITERS: usize = 200;

#[derive(Clone, Debug)]
pub enum WeightCache<T> {
    Cayley(CayleyCache<T>),
    Bjorck(BjorckCache<T>),
    /// Eval-mode weights carry nothing for a backward pass.
    None,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OrthoLinear {
    pub in_dim: usize,
    pub out_dim: usize,
    pub kind: OrthoKind,
}

impl OrthoLinear {
    pub fn new(in_dim: usize, out_dim: usize, kind: OrthoKind) -> Self {
        Self {
            in_dim,
            out_dim,
            kind,
        }
    }

    fn n_weight(&self) -> usize {
        self.out_dim * self.in_dim
    }

    pub fn n_params(&self) -> usize {
        self.n_weight()
            + self.out_dim
            + match self.kind {
                OrthoKind::Cayley => 1,
                OrthoKind::Bjorck { .. } => 0,
            }
    }

    fn wide(&self) -> bool {
        self.out_dim < self.in_dim
    }

    /// W ~ U(-1/sqrt(in), 1/sqrt(in)), b ~ U(-1, 1), alpha = ||W||_F (the reference's init).
    pub fn init<T: Real>(&self, params: &mut [T], rng: &mut Rng) {
        let bound = 1.0 / (self.in_dim as f64).sqrt();
        let nw = self.n_weight();
        for p in &mut params[..nw] {
            *p = rng.uniform(-bound, bound);
        }
        for p in &mut params[nw..nw + self.out_dim] {
            *p = rng.uniform(-1.0, 1.0);
        }
        if self.kind == OrthoKind::Cayley {
            let norm = dot(&params[..nw], &params[..nw]).sqrt();
            params[nw + self.out_dim] = norm;
        }
    }

    pub fn raw_weight<T: Real>(&self, params: &[T]) -> Matrix<T> {
        Matrix::from_vec(
            self.out_dim,
            self.in_dim,
            params[..self.n_weight()].to_vec(),
        )
        .expect("weight slice")
    }

    pub fn bias<'a, T: Real>(&self, params: &'a [T]) -> &'a [T] {
        &params[self.n_weight()..self.n_weight() + self.out_dim]
    }

    /// The orthonormal Q (out x in) for these parameters, and what its backward pass needs.
    pub fn weight<T: Real>(&self, params: &[T], mode: Mode) -> Result<(Matrix<T>, WeightCache<T>)> {
        let w = self.raw_weight(params);
        // Both transforms act on tall matrices; a wide layer is the transpose of a tall one.
        let tall = if self.wide() { w.transpose() } else { w };
        let (q_tall, cache) = match self.kind {
            OrthoKind::Cayley => {
                let alpha = params[self.n_weight() + self.out_dim];
                let norm = tall.frobenius_norm().max(T::min_positive_value());
                let mut m = tall;
                m.scale(alpha / norm);
                let (q, inner) = cayley(&m)?;
                (q, WeightCache::Cayley(inner))
            }
            OrthoKind::Bjorck { train_iters } => match mode {
                Mode::Train => {
                    let (q, c) = bjorck(&tall, train_iters);
                    (q, WeightCache::Bjorck(c))
                }
                Mode::Eval => (
                    bjorck_converged(&tall, T::c(BJORCK_EVAL_TOL), BJORCK_EVAL_MAX_ITERS),
                    WeightCache::None,
                ),
            },
        };
        let q = if self.wide() {
            q_tall.transpose()
        } else {
            q_tall
        };
        Ok((q, cache))
    }

    /// Accumulates dL/d(params) given dL/dQ.
    pub fn weight_backward<T: Real>(
        &self,
        params: &[T],
        cache: &WeightCache<T>,
        dq: &Matrix<T>,
        grad: &mut [T],
    ) {
        let dq_tall = if self.wide() {
            dq.transpose()
        } else {
            dq.clone()
        };
        let w = self.raw_weight(params);
        let w_tall = if self.wide() { w.transpose() } else { w };
        let dw_tall = match cache {
            WeightCache::Cayley(inner) => {
                let dm = cayley_backward(inner, &dq_tall);
                // M = alpha W / ||W||_F. With s = ||W||_F:
                // dalpha = <dM, W> / s;  dW = (alpha / s) dM - alpha <dM, W> W / s^3.
                let alpha = params[self.n_weight() + self.out_dim];
                let s = w_tall.frobenius_norm().max(T::min_positive_value());
                let dmw = dot(dm.as_slice(), w_tall.as_slice());
                grad[self.n_weight() + self.out_dim] += dmw / s;
                let mut dw = dm;
                dw.scale(alpha / s);
                dw.axpy(-alpha * dmw / (s * s * s), &w_tall);
                dw
            }
            WeightCache::Bjorck(c) => bjorck_backward(c, &w_tall, &dq_tall),
            WeightCache::None => panic!("weight_backward needs weights computed in Mode::Train"),
        };
        let dw = if self.wide() {
            dw_tall.transpose()
        } else {
            dw_tall
        };
        grad[..self.n_weight()]
            .iter_mut()
            .zip(dw.as_slice())
            .for_each(|(g, d)| *g += *d);
    }

    /// Z = Q op(input) + b 1^T, unit-major (out x n: one row per unit, one column per
    /// cell). `input` holds the n cells as rows (`Op::T`: the data entering the first layer)
    /// or as columns (`Op::N`: a previous layer's unit-major output).
    pub fn apply<T: Real>(
        &self,
        params: &[T],
        q: &Matrix<T>,
        input: &Matrix<T>,
        op: Op,
    ) -> Matrix<T> {
        let mut z = matmul(q, Op::N, input, op);
        add_col_vector(&mut z, self.bias(params));
        z
    }

    /// Back through [`Self::apply`]: accumulates dQ += dZ op(input)^T and the bias gradient
    /// when `param_grads` is given, and returns dL/d(input), in the input's own layout, when
    /// asked.
    pub fn apply_backward<T: Real>(
        &self,
        q: &Matrix<T>,
        input: &Matrix<T>,
        op: Op,
        dz: &Matrix<T>,
        param_grads: Option<(&mut Matrix<T>, &mut [T])>,
        need_dinput: bool,
    ) -> Option<Matrix<T>> {
        if let Some((dq, grad)) = param_grads {
            gemm(T::one(), dz, Op::N, input, op.flip(), T::one(), dq);
            add_row_sums(
                dz,
                &mut grad[self.n_weight()..self.n_weight() + self.out_dim],
            );
        }
        need_dinput.then(|| match op {
            Op::N => matmul(q, Op::T, dz, Op::N),
            Op::T => matmul(dz, Op::T, q, Op::N),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_grad, probe};

    const KINDS: [OrthoKind; 2] = [OrthoKind::Cayley, OrthoKind::Bjorck { train_iters: 8 }];
    // tall, square and wide layers, including the 64 -> 1 output shape
    const SHAPES: [(usize, usize); 4] = [(3, 5), (4, 4), (6, 2), (5, 1)];

    fn loss(layer: &OrthoLinear, p: &[f64], x: &Matrix<f64>, op: Op, c: &[f64]) -> f64 {
        let (q, _) = layer.weight(p, Mode::Train).unwrap();
        dot(layer.apply(p, &q, x, op).as_slice(), c)
    }

    #[test]
    fn parameter_and_input_gradients_match_finite_differences() {
        let mut rng = Rng::new(31);
        for kind in KINDS {
            for &(i, o) in &SHAPES {
                // cells as rows (the data) and as columns (a previous layer's output)
                for op in [Op::T, Op::N] {
                    let layer = OrthoLinear::new(i, o, kind);
                    let mut p = vec![0.0; layer.n_params()];
                    layer.init(&mut p, &mut rng);
                    if kind == OrthoKind::Cayley {
                        p[layer.n_params() - 1] *= 0.7; // alpha away from its initial value
                    }
                    let shape = if op == Op::T { (3, i) } else { (i, 3) };
                    let x = Matrix::from_fn(shape.0, shape.1, |_, _| rng.uniform(-1.0, 1.0));
                    let c = probe(3 * o, 7);
                    let dz = Matrix::from_vec(o, 3, c.clone()).unwrap();
                    let (q, cache) = layer.weight(&p, Mode::Train).unwrap();
                    let mut grad = vec![0.0; layer.n_params()];
                    let mut dq = Matrix::zeros(o, i);
                    let dx = layer
                        .apply_backward(&q, &x, op, &dz, Some((&mut dq, &mut grad)), true)
                        .unwrap();
                    assert_eq!(dx.shape(), x.shape());
                    layer.weight_backward(&p, &cache, &dq, &mut grad);
                    let name = format!("{} {i}->{o} {op:?}", kind.name());
                    check_grad(
                        &format!("{name} params"),
                        &mut |v| loss(&layer, v, &x, op, &c),
                        &p,
                        &grad,
                        1e-5,
                        1e-8,
                    );
                    let mut fx = |v: &[f64]| {
                        let m = Matrix::from_vec(shape.0, shape.1, v.to_vec()).unwrap();
                        loss(&layer, &p, &m, op, &c)
                    };
                    check_grad(
                        &format!("{name} input"),
                        &mut fx,
                        x.as_slice(),
                        dx.as_slice(),
                        1e-5,
                        1e-8,
                    );
                }
            }
        }
    }

    #[test]
    fn weights_stay_orthonormal_after_random_parameter_updates() {
        let mut rng = Rng::new(32);
        for kind in [OrthoKind::Cayley, OrthoKind::Bjorck { train_iters: 20 }] {
            for &(i, o) in &[(2, 64), (64, 64), (50, 64), (1000, 64), (64, 1), (64, 128)] {
                let layer = OrthoLinear::new(i, o, kind);
                let mut p = vec![0.0_f32; layer.n_params()];
                layer.init(&mut p, &mut rng);
                for _ in 0..3 {
                    p.iter_mut()
                        .for_each(|v| *v += rng.uniform::<f32>(-0.1, 0.1));
                    let (q, _) = layer.weight(&p, Mode::Eval).unwrap();
                    let (g, k) = if o >= i {
                        (matmul(&q, Op::T, &q, Op::N), i)
                    } else {
                        (matmul(&q, Op::N, &q, Op::T), o)
                    };
                    let err = g.max_abs_diff(&Matrix::identity(k));
                    assert!(err < 1e-5, "{} {i}->{o}: |Q^T Q - I| = {err}", kind.name());
                }
            }
        }
    }
}
