//! Björck orthonormalisation of a tall (rows >= cols) matrix: w0 = W / ||W||_F, then
//! w <- w (1.5 I - 0.5 w^T w), the first-order Taylor step towards the polar factor.
//!
//! Scaling by the Frobenius norm puts every singular value in [0, 1], and the map
//! s -> 1.5 s - 0.5 s^3 keeps [0, 1] inside [0, 1]: every iterate has spectral norm <= 1,
//! so a layer is 1-Lipschitz even before the iteration has converged.

use crate::linalg::{Matrix, Op, Real, dot, gemm, matmul};

/// Iterates kept for the backward pass (w_0 .. w_{K-1}), and the Frobenius norm of W.
#[derive(Clone, Debug)]
pub struct BjorckCache<T> {
    iterates: Vec<Matrix<T>>,
    norm: T,
}

fn step<T: Real>(w: &Matrix<T>) -> Matrix<T> {
    let s = matmul(w, Op::T, w, Op::N);
    let mut next = w.clone();
    next.scale(T::c(1.5));
    gemm(-T::c(0.5), w, Op::N, &s, Op::N, T::one(), &mut next);
    next
}

/// Largest |(w^T w - I)_ij|.
pub fn orthogonality_error<T: Real>(w: &Matrix<T>) -> T {
    matmul(w, Op::T, w, Op::N).max_abs_diff(&Matrix::identity(w.cols()))
}

/// `iters` Björck steps from W / ||W||_F, keeping what the backward pass needs.
pub fn bjorck<T: Real>(w: &Matrix<T>, iters: usize) -> (Matrix<T>, BjorckCache<T>) {
    assert!(
        w.rows() >= w.cols(),
        "bjorck expects a tall or square matrix"
    );
    let norm = w.frobenius_norm().max(T::min_positive_value());
    let mut cur = w.clone();
    cur.scale(T::one() / norm);
    let mut iterates = Vec::with_capacity(iters);
    for _ in 0..iters {
        let next = step(&cur);
        iterates.push(cur);
        cur = next;
    }
    (cur, BjorckCache { iterates, norm })
}

/// Iterates until |w^T w - I| <= tol or `max_iters` steps (inference; no cache).
pub fn bjorck_converged<T: Real>(w: &Matrix<T>, tol: T, max_iters: usize) -> Matrix<T> {
    let (mut cur, _) = bjorck(w, 0);
    for _ in 0..max_iters {
        if orthogonality_error(&cur) <= tol {
            break;
        }
        cur = step(&cur);
    }
    cur
}

/// dL/dW from dL/d(output), back through every stored iterate and the initial scaling.
pub fn bjorck_backward<T: Real>(
    cache: &BjorckCache<T>,
    w: &Matrix<T>,
    dout: &Matrix<T>,
) -> Matrix<T> {
    let mut g = dout.clone();
    for wk in cache.iterates.iter().rev() {
        // w' = 1.5 w - 0.5 w S with S = w^T w:
        // dw = 1.5 G - 0.5 (G S + w (w^T G + G^T w))
        let s = matmul(wk, Op::T, wk, Op::N);
        let mut wtg = matmul(wk, Op::T, &g, Op::N);
        wtg.axpy(T::one(), &wtg.transpose());
        let mut dw = g.clone();
        dw.scale(T::c(1.5));
        gemm(-T::c(0.5), &g, Op::N, &s, Op::N, T::one(), &mut dw);
        gemm(-T::c(0.5), wk, Op::N, &wtg, Op::N, T::one(), &mut dw);
        g = dw;
    }
    // w0 = W / n with n = ||W||_F: dW = g / n - <g, W> W / n^3
    let n = cache.norm;
    let proj = dot(g.as_slice(), w.as_slice()) / (n * n * n);
    let mut dw = g;
    dw.scale(T::one() / n);
    dw.axpy(-proj, w);
    dw
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::testutil::{check_grad, probe};

    #[test]
    fn converges_to_orthonormal_columns() {
        let mut rng = Rng::new(21);
        for &(r, c) in &[(8, 8), (64, 64), (200, 64), (64, 1)] {
            let w = Matrix::<f32>::from_fn(r, c, |_, _| rng.uniform(-1.0, 1.0));
            let q = bjorck_converged(&w, 1e-6, 200);
            let err = orthogonality_error(&q);
            assert!(err < 1e-5, "{r}x{c}: {err}");
        }
    }

    #[test]
    fn every_iterate_has_spectral_norm_at_most_one() {
        let mut rng = Rng::new(22);
        let w = Matrix::<f64>::from_fn(30, 10, |_, _| rng.uniform(-1.0, 1.0));
        for k in 0..6 {
            let (q, _) = bjorck(&w, k);
            // Power iteration on Q^T Q estimates sigma_max^2.
            let s = matmul(&q, Op::T, &q, Op::N);
            let mut v = vec![1.0; 10];
            let mut lam = 0.0;
            for _ in 0..500 {
                let sv: Vec<f64> = (0..10).map(|i| dot(s.row(i), &v)).collect();
                lam = dot(&sv, &sv).sqrt();
                v = sv.iter().map(|x| x / lam).collect();
            }
            assert!(lam <= 1.0 + 1e-9, "iterate {k}: sigma_max^2 = {lam}");
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let mut rng = Rng::new(23);
        for &(r, c) in &[(5, 5), (6, 2)] {
            let w = Matrix::<f64>::from_fn(r, c, |_, _| rng.uniform(-1.0, 1.0));
            let pc = probe(r * c, 5);
            let (_, cache) = bjorck(&w, 6);
            let dw = bjorck_backward(&cache, &w, &Matrix::from_vec(r, c, pc.clone()).unwrap());
            let mut f = |v: &[f64]| {
                dot(
                    bjorck(&Matrix::from_vec(r, c, v.to_vec()).unwrap(), 6)
                        .0
                        .as_slice(),
                    &pc,
                )
            };
            check_grad(
                &format!("bjorck {r}x{c}"),
                &mut f,
                w.as_slice(),
                dw.as_slice(),
                1e-5,
                1e-8,
            );
        }
    }
}
