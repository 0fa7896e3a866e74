//! The Cayley transform of a tall (rows >= cols) matrix, as in the reference code:
//! with U the first c rows and V the rest, Z = U - U^T + V^T V, B = (I + Z)^{-1} and
//! Q = [B (I - Z); -2 V B] = [2B - I; -2 V B]. Q^T Q = I exactly: the symmetric part of
//! I + Z is I + V^T V, so I + Z is always invertible.

use crate::error::Result;
use crate::linalg::{Matrix, Op, Real, gemm, inverse, matmul};

/// What the backward pass needs from the forward pass.
#[derive(Clone, Debug)]
pub struct CayleyCache<T> {
    b: Matrix<T>,
    v: Matrix<T>,
}

/// Q = cayley(M) for a tall or square `m` (r x c, r >= c).
pub fn cayley<T: Real>(m: &Matrix<T>) -> Result<(Matrix<T>, CayleyCache<T>)> {
    let (r, c) = m.shape();
    assert!(r >= c, "cayley expects a tall or square matrix");
    let u = m.rows_range(0, c);
    let v = m.rows_range(c, r);
    // Z = U - U^T + V^T V
    let mut z = u.clone();
    z.axpy(-T::one(), &u.transpose());
    gemm(T::one(), &v, Op::T, &v, Op::N, T::one(), &mut z);
    let mut a = z;
    for i in 0..c {
        a.set(i, i, a.get(i, i) + T::one());
    }
    let b = inverse(&a)?;
    // Q1 = 2B - I, Q2 = -2 V B
    let mut q1 = b.clone();
    q1.scale(T::c(2.0));
    for i in 0..c {
        q1.set(i, i, q1.get(i, i) - T::one());
    }
    let mut q2 = matmul(&v, Op::N, &b, Op::N);
    q2.scale(T::c(-2.0));
    Ok((Matrix::vstack(&[&q1, &q2]), CayleyCache { b, v }))
}

/// dL/dM from dL/dQ.
pub fn cayley_backward<T: Real>(cache: &CayleyCache<T>, dq: &Matrix<T>) -> Matrix<T> {
    let c = cache.b.rows();
    let r = dq.rows();
    let dq1 = dq.rows_range(0, c);
    let dq2 = dq.rows_range(c, r);
    // dB = 2 dQ1 - 2 V^T dQ2
    let mut db = dq1;
    db.scale(T::c(2.0));
    gemm(-T::c(2.0), &cache.v, Op::T, &dq2, Op::N, T::one(), &mut db);
    // B = A^{-1}: dA = -B^T dB B^T, and dZ = dA.
    let tmp = matmul(&cache.b, Op::T, &db, Op::N);
    let mut dz = matmul(&tmp, Op::N, &cache.b, Op::T);
    dz.scale(-T::one());
    let dzt = dz.transpose();
    // Z = U - U^T + V^T V
    let mut du = dz.clone();
    du.axpy(-T::one(), &dzt);
    let mut sym = dz;
    sym.axpy(T::one(), &dzt);
    // dV = -2 dQ2 B^T + V (dZ + dZ^T)
    let mut dv = matmul(&cache.v, Op::N, &sym, Op::N);
    gemm(-T::c(2.0), &dq2, Op::N, &cache.b, Op::T, T::one(), &mut dv);
    Matrix::vstack(&[&du, &dv])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::dot;
    use crate::rng::Rng;
    use crate::testutil::{check_grad, probe};

    #[test]
    fn orthonormal_columns_for_square_and_tall() {
        let mut rng = Rng::new(11);
        for &(r, c) in &[(1, 1), (5, 5), (9, 4), (64, 64), (300, 64), (64, 1)] {
            let m = Matrix::<f32>::from_fn(r, c, |_, _| rng.uniform(-2.0, 2.0));
            let (q, _) = cayley(&m).unwrap();
            let qtq = matmul(&q, Op::T, &q, Op::N);
            let err = qtq.max_abs_diff(&Matrix::identity(c));
            assert!(err < 1e-5, "{r}x{c}: |Q^T Q - I| = {err}");
        }
    }

    #[test]
    fn square_skew_input_gives_classical_cayley() {
        // For V empty and U skew, Q = (I + U)^{-1} (I - U), the classical transform.
        let u = Matrix::from_vec(2, 2, vec![0.0, 0.5, -0.5, 0.0_f64]).unwrap();
        let (q, _) = cayley(&u).unwrap();
        // Z = U - U^T = 2U, so Q is a rotation by angle 2 atan(1): 90 degrees.
        let expect = Matrix::from_vec(2, 2, vec![0.0, -1.0, 1.0, 0.0]).unwrap();
        assert!(q.max_abs_diff(&expect) < 1e-12, "{q:?}");
    }

    #[test]
    fn backward_matches_finite_differences() {
        let mut rng = Rng::new(12);
        for &(r, c) in &[(4, 4), (7, 3), (5, 1)] {
            let m = Matrix::<f64>::from_fn(r, c, |_, _| rng.uniform(-1.0, 1.0));
            let probe_c = probe(r * c, 3);
            let (_, cache) = cayley(&m).unwrap();
            let dm = cayley_backward(&cache, &Matrix::from_vec(r, c, probe_c.clone()).unwrap());
            let mut f = |v: &[f64]| {
                let (q, _) = cayley(&Matrix::from_vec(r, c, v.to_vec()).unwrap()).unwrap();
                dot(q.as_slice(), &probe_c)
            };
            check_grad(
                &format!("cayley {r}x{c}"),
                &mut f,
                m.as_slice(),
                dm.as_slice(),
                1e-5,
                1e-8,
            );
        }
    }
}
