//! Sample-based distances between two point clouds, with analytic gradients with respect to
//! the first cloud: the energy distance, and the paper's multi-scale RBF MMD. They score
//! transported batches against target batches without a discriminator.

use crate::linalg::{Matrix, Op, Real, gemm};

/// Squared Euclidean distances between the rows of `a` and of `b`, by one GEMM:
/// ||a||^2 + ||b||^2 - 2 a.b, clamped at 0 against rounding.
pub fn pairwise_sq_dists<T: Real>(a: &Matrix<T>, b: &Matrix<T>) -> Matrix<T> {
    let na: Vec<T> = (0..a.rows())
        .map(|i| a.row(i).iter().map(|v| *v * *v).sum())
        .collect();
    let nb: Vec<T> = (0..b.rows())
        .map(|j| b.row(j).iter().map(|v| *v * *v).sum())
        .collect();
    let mut d = Matrix::zeros(a.rows(), b.rows());
    gemm(-T::c(2.0), a, Op::N, b, Op::T, T::zero(), &mut d);
    for (i, &ni) in na.iter().enumerate() {
        for (v, &nj) in d.row_mut(i).iter_mut().zip(&nb) {
            *v = (*v + ni + nj).max(T::zero());
        }
    }
    d
}

/// As [`pairwise_sq_dists`] of `a` with itself, with an exact zero diagonal (the GEMM form
/// leaves rounding residue there, which the square root would magnify).
fn self_sq_dists<T: Real>(a: &Matrix<T>) -> Matrix<T> {
    let mut d = pairwise_sq_dists(a, a);
    for i in 0..a.rows() {
        d.set(i, i, T::zero());
    }
    d
}

/// Sum over j of w_ij (x_i - b_j) for every i: (rowsum(w) x_i) - (w b)_i.
fn weighted_differences<T: Real>(
    w: &Matrix<T>,
    x: &Matrix<T>,
    b: &Matrix<T>,
    scale: T,
    out: &mut Matrix<T>,
) {
    gemm(-scale, w, Op::N, b, Op::N, T::one(), out);
    for i in 0..x.rows() {
        let s: T = w.row(i).iter().copied().sum::<T>() * scale;
        let xi = x.row(i).to_vec();
        out.row_mut(i)
            .iter_mut()
            .zip(xi)
            .for_each(|(o, v)| *o += s * v);
    }
}

/// Below this squared distance two points count as coincident: the norm has no gradient
/// there, and its subgradient 0 is taken.
fn tiny<T: Real>() -> T {
    T::c(1e-12)
}

/// Turns squared distances into distances, and into the gradient weights 1 / distance.
fn dist_and_inv<T: Real>(mut d2: Matrix<T>) -> (Matrix<T>, T) {
    let mut total = T::zero();
    for v in d2.as_mut_slice() {
        let d = v.sqrt();
        total += d;
        *v = if d * d > tiny() {
            T::one() / d
        } else {
            T::zero()
        };
    }
    (d2, total)
}

/// Energy distance 2 E||X - Y|| - E||X - X'|| - E||Y - Y'|| (V-statistics, diagonals
/// included) and its gradient with respect to the rows of `x`.
pub fn energy_distance_grad<T: Real>(x: &Matrix<T>, y: &Matrix<T>) -> (T, Matrix<T>) {
    let (n, m) = (T::c(x.rows() as f64), T::c(y.rows() as f64));
    let (inv_xy, s_xy) = dist_and_inv(pairwise_sq_dists(x, y));
    let (inv_xx, s_xx) = dist_and_inv(self_sq_dists(x));
    let s_yy: T = self_sq_dists(y).as_slice().iter().map(|v| v.sqrt()).sum();
    let value = T::c(2.0) * s_xy / (n * m) - s_xx / (n * n) - s_yy / (m * m);
    // d/dx_i: (2 / nm) sum_j (x_i - y_j) / |x_i - y_j| - (2 / n^2) sum_i' (x_i - x_i') / |x_i - x_i'|
    let mut g = Matrix::zeros(x.rows(), x.cols());
    weighted_differences(&inv_xy, x, y, T::c(2.0) / (n * m), &mut g);
    weighted_differences(&inv_xx, x, x, -T::c(2.0) / (n * n), &mut g);
    (value, g)
}

pub fn energy_distance<T: Real>(x: &Matrix<T>, y: &Matrix<T>) -> T {
    let s = |d2: Matrix<T>| -> T { d2.as_slice().iter().map(|v| v.sqrt()).sum() };
    let (n, m) = (T::c(x.rows() as f64), T::c(y.rows() as f64));
    T::c(2.0) * s(pairwise_sq_dists(x, y)) / (n * m)
        - s(self_sq_dists(x)) / (n * n)
        - s(self_sq_dists(y)) / (m * m)
}

/// The reference's 50 bandwidths: gamma log-spaced from 10 down to 1e-3.
pub fn default_gammas() -> Vec<f64> {
    (0..50)
        .map(|i| 10f64.powf(1.0 - 4.0 * i as f64 / 49.0))
        .collect()
}

/// Multi-scale kernel mean (1/G) sum_g exp(-gamma_g d2) and its derivative in d2.
fn kernel_and_slope<T: Real>(d2: &Matrix<T>, gammas: &[T]) -> (Matrix<T>, Matrix<T>) {
    let mut k = d2.clone();
    let mut dk = d2.clone();
    let inv_g = T::one() / T::c(gammas.len() as f64);
    for (kv, dv) in k.as_mut_slice().iter_mut().zip(dk.as_mut_slice()) {
        let d = *kv;
        let (mut s, mut ds) = (T::zero(), T::zero());
        for &g in gammas {
            let e = (-g * d).exp();
            s += e;
            ds -= g * e;
        }
        *kv = s * inv_g;
        *dv = ds * inv_g;
    }
    (k, dk)
}

/// Biased multi-scale RBF MMD^2 (the paper's metric when `gammas` are [`default_gammas`]) and
/// its gradient with respect to the rows of `x`.
pub fn mmd_grad<T: Real>(x: &Matrix<T>, y: &Matrix<T>, gammas: &[f64]) -> (T, Matrix<T>) {
    let gammas: Vec<T> = gammas.iter().map(|&g| T::c(g)).collect();
    let (n, m) = (T::c(x.rows() as f64), T::c(y.rows() as f64));
    let (k_xy, dk_xy) = kernel_and_slope(&pairwise_sq_dists(x, y), &gammas);
    let (k_xx, dk_xx) = kernel_and_slope(&self_sq_dists(x), &gammas);
    let (k_yy, _) = kernel_and_slope(&self_sq_dists(y), &gammas);
    let sum = |k: &Matrix<T>| -> T { k.as_slice().iter().copied().sum() };
    let value = sum(&k_xx) / (n * n) + sum(&k_yy) / (m * m) - T::c(2.0) * sum(&k_xy) / (n * m);
    // d k(d2) / d x_i = k'(d2) * 2 (x_i - b): both kernel sums contribute.
    let mut g = Matrix::zeros(x.rows(), x.cols());
    weighted_differences(&dk_xx, x, x, T::c(4.0) / (n * n), &mut g);
    weighted_differences(&dk_xy, x, y, -T::c(4.0) / (n * m), &mut g);
    (value, g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::testutil::check_grad;

    fn clouds(seed: u64) -> (Matrix<f64>, Matrix<f64>) {
        let mut r = Rng::new(seed);
        let x = Matrix::from_fn(7, 3, |_, _| r.uniform(-1.0, 1.0));
        let y = Matrix::from_fn(5, 3, |_, _| r.uniform(-0.5, 1.5));
        (x, y)
    }

    fn naive_energy(x: &Matrix<f64>, y: &Matrix<f64>) -> f64 {
        let d = |a: &[f64], b: &[f64]| {
            a.iter()
                .zip(b)
                .map(|(p, q)| (p - q) * (p - q))
                .sum::<f64>()
                .sqrt()
        };
        let mean = |a: &Matrix<f64>, b: &Matrix<f64>| {
            let mut s = 0.0;
            for i in 0..a.rows() {
                for j in 0..b.rows() {
                    s += d(a.row(i), b.row(j));
                }
            }
            s / (a.rows() * b.rows()) as f64
        };
        2.0 * mean(x, y) - mean(x, x) - mean(y, y)
    }

    #[test]
    fn energy_distance_matches_definition_and_finite_differences() {
        let (x, y) = clouds(1);
        let (v, g) = energy_distance_grad(&x, &y);
        assert!(
            (v - naive_energy(&x, &y)).abs() < 1e-10,
            "{v} vs {}",
            naive_energy(&x, &y)
        );
        assert!((energy_distance(&x, &y) - v).abs() < 1e-12);
        let mut f = |p: &[f64]| energy_distance(&Matrix::from_vec(7, 3, p.to_vec()).unwrap(), &y);
        check_grad("energy", &mut f, x.as_slice(), g.as_slice(), 1e-5, 1e-8);
        assert!(energy_distance(&x, &x).abs() < 1e-9);
    }

    #[test]
    fn mmd_matches_definition_and_finite_differences() {
        let (x, y) = clouds(2);
        let gammas = [0.3, 1.0, 4.0];
        let (v, g) = mmd_grad(&x, &y, &gammas);
        let k = |a: &[f64], b: &[f64]| {
            let d2: f64 = a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum();
            gammas.iter().map(|g| (-g * d2).exp()).sum::<f64>() / 3.0
        };
        let mean = |a: &Matrix<f64>, b: &Matrix<f64>| {
            let mut s = 0.0;
            for i in 0..a.rows() {
                for j in 0..b.rows() {
                    s += k(a.row(i), b.row(j));
                }
            }
            s / (a.rows() * b.rows()) as f64
        };
        let naive = mean(&x, &x) + mean(&y, &y) - 2.0 * mean(&x, &y);
        assert!((v - naive).abs() < 1e-12, "{v} vs {naive}");
        let mut f =
            |p: &[f64]| mmd_grad(&Matrix::from_vec(7, 3, p.to_vec()).unwrap(), &y, &gammas).0;
        check_grad("mmd", &mut f, x.as_slice(), g.as_slice(), 1e-5, 1e-9);
        assert_eq!(default_gammas().len(), 50);
        assert!(
            (default_gammas()[0] - 10.0).abs() < 1e-12
                && (default_gammas()[49] - 1e-3).abs() < 1e-15
        );
    }
}
