//! Sample-based distances between two point clouds, with analytic gradients with respect to
//! the first cloud: the energy distance, and the paper's multi-scale RBF MMD. They score
//! transported batches against target batches without a discriminator.

use std::ops::Range;

use crate::linalg::{Matrix, Op, Real, dot, gemm, lane_sum};
use crate::parallel::{TRAIN_BLOCK, blocks, map_ranges, row_ranges};
use crate::simd::{LANES, widest};

/// Squared norms of the rows.
fn row_sq_norms<T: Real>(a: &Matrix<T>) -> Vec<T> {
    (0..a.rows()).map(|i| dot(a.row(i), a.row(i))).collect()
}

/// Squared Euclidean distances between the rows of `a` and of `b`, by one GEMM:
/// ||a||^2 + ||b||^2 - 2 a.b, clamped at 0 against rounding.
pub fn pairwise_sq_dists<T: Real>(a: &Matrix<T>, b: &Matrix<T>) -> Matrix<T> {
    sq_dists_with_norms(a, &row_sq_norms(a), b, &row_sq_norms(b))
}

fn sq_dists_with_norms<T: Real>(a: &Matrix<T>, na: &[T], b: &Matrix<T>, nb: &[T]) -> Matrix<T> {
    let mut d = Matrix::zeros(a.rows(), b.rows());
    gemm(-T::c(2.0), a, Op::N, b, Op::T, T::zero(), &mut d);
    let cols = b.rows().max(1);
    widest(
        #[inline(always)]
        || {
            for (row, &ni) in d.as_mut_slice().chunks_exact_mut(cols).zip(na) {
                for (v, &nj) in row.iter_mut().zip(nb) {
                    // A select rather than `max`, whose NaN rules keep it from vectorising;
                    // NaN still maps to 0 as with `max`.
                    let s = *v + ni + nj;
                    *v = if s > T::zero() { s } else { T::zero() };
                }
            }
        },
    );
    d
}

/// Sum over j of w_ij (x_i - b_j) for every i, times `scale`: (rowsum(w) x_i) - (w b)_i.
fn weighted_differences<T: Real>(
    w: &Matrix<T>,
    x: &Matrix<T>,
    b: &Matrix<T>,
    scale: T,
    out: &mut Matrix<T>,
) {
    gemm(-scale, w, Op::N, b, Op::N, T::one(), out);
    for i in 0..x.rows() {
        let s: T = lane_sum(w.row(i)) * scale;
        out.row_mut(i)
            .iter_mut()
            .zip(x.row(i))
            .for_each(|(o, &v)| *o += s * v);
    }
}

/// Below this squared distance two points count as coincident: the norm has no gradient
/// there, and its subgradient 0 is taken.
fn tiny<T: Real>() -> T {
    T::c(1e-12)
}

/// Sum of sqrt(d2) and, when `grad`, d2 overwritten with 1/sqrt(d2) (0 for coincident
/// points). Lane-wise partial sums, so the loop vectorises and its order is fixed.
#[inline(always)]
fn distance_sum_and_weights<T: Real>(d2: &mut [T], grad: bool) -> T {
    let mut acc = [T::zero(); LANES];
    let mut chunks = d2.chunks_exact_mut(LANES);
    for c in &mut chunks {
        let c: &mut [T; LANES] = c.try_into().expect("chunk length");
        let mut d = [T::zero(); LANES];
        for k in 0..LANES {
            d[k] = c[k].sqrt();
            acc[k] += d[k];
        }
        if grad {
            for k in 0..LANES {
                c[k] = distance_weight(c[k], d[k]);
            }
        }
    }
    for (a, v) in acc.iter_mut().zip(chunks.into_remainder()) {
        let d = v.sqrt();
        *a += d;
        if grad {
            *v = distance_weight(*v, d);
        }
    }
    acc.iter().copied().sum()
}

/// d||a - b|| / da = w (a - b) with w = 1 / d, and 0 for coincident points.
#[inline(always)]
fn distance_weight<T: Real>(d2: T, d: T) -> T {
    if d2 > tiny() { T::one() / d } else { T::zero() }
}

/// The pair function k of a two-sample statistic k-mean(x, y) and friends.
enum Kernel<'a, T> {
    /// k = ||a - b|| (the energy distance).
    Distance,
    /// k = mean_g exp(-g ||a - b||^2) (the multi-scale RBF MMD).
    Rbf(&'a [T]),
}

impl<T: Real> Kernel<'_, T> {
    /// Sums k over the squared distances `d2`, and overwrites them with w such that
    /// d k / d a = w (a - b) (when `grad`).
    fn sum_and_weights(&self, d2: &mut Matrix<T>, grad: bool) -> T {
        match self {
            Kernel::Distance => widest(
                #[inline(always)]
                || distance_sum_and_weights(d2.as_mut_slice(), grad),
            ),
            Kernel::Rbf(gammas) => {
                let inv_g = T::one() / T::c(gammas.len() as f64);
                let mut total = T::zero();
                for v in d2.as_mut_slice() {
                    let (mut s, mut ds) = (T::zero(), T::zero());
                    for &g in gammas.iter() {
                        let e = (-g * *v).exp();
                        s += e;
                        ds -= g * e;
                    }
                    total += s * inv_g;
                    if grad {
                        *v = T::c(2.0) * ds * inv_g;
                    }
                }
                total
            }
        }
    }
}

/// c_xy sum_ij k(x_i, y_j) + c_xx sum_ii' k(x_i, x_i') + c_yy sum_jj' k(y_j, y_j') and, when
/// `grad`, its gradient in the rows of x. The work is split into row blocks of x (and of y
/// for the constant yy term) run in parallel; a block needs only its own rows of the pair
/// matrices, so no full n x n matrix is ever built.
fn two_sample<T: Real>(
    x: &Matrix<T>,
    y: &Matrix<T>,
    kernel: &Kernel<T>,
    coef: [T; 3],
    ranges: &[Range<usize>],
    grad: bool,
) -> (T, Option<Matrix<T>>) {
    let [c_xy, c_xx, c_yy] = coef;
    let (nx, ny) = (row_sq_norms(x), row_sq_norms(y));
    // Pairs of a block `ar` (norms `nar`) with all of `b`; with `offset`, the block is rows
    // offset.. of `b` and its self-pairs get an exact zero (the GEMM form leaves residue
    // there, which the square root would magnify).
    let pairs = |ar: &Matrix<T>, nar: &[T], b: &Matrix<T>, nb: &[T], offset: Option<usize>| {
        let mut d2 = sq_dists_with_norms(ar, nar, b, nb);
        if let Some(o) = offset {
            (0..ar.rows()).for_each(|k| d2.set(k, o + k, T::zero()));
        }
        d2
    };
    let x_parts = map_ranges(ranges, |r| {
        let (xr, nr) = (x.rows_range(r.start, r.end), &nx[r.clone()]);
        let mut w_xy = pairs(&xr, nr, y, &ny, None);
        let mut w_xx = pairs(&xr, nr, x, &nx, Some(r.start));
        let value = c_xy * kernel.sum_and_weights(&mut w_xy, grad)
            + c_xx * kernel.sum_and_weights(&mut w_xx, grad);
        let g = grad.then(|| {
            let mut g = Matrix::zeros(xr.rows(), xr.cols());
            weighted_differences(&w_xy, &xr, y, c_xy, &mut g);
            // x_i meets x_i' in two terms of the xx sum.
            weighted_differences(&w_xx, &xr, x, T::c(2.0) * c_xx, &mut g);
            g
        });
        (value, g)
    });
    let y_ranges = row_ranges(y.rows(), ranges.len());
    let yy: T = map_ranges(&y_ranges, |r| {
        let yr = y.rows_range(r.start, r.end);
        let mut d2 = pairs(&yr, &ny[r.clone()], y, &ny, Some(r.start));
        kernel.sum_and_weights(&mut d2, false)
    })
    .into_iter()
    .sum();
    let mut value = c_yy * yy;
    let mut blocks = Vec::with_capacity(x_parts.len());
    for (v, g) in x_parts {
        value += v;
        blocks.extend(g);
    }
    let g = grad.then(|| Matrix::vstack(&blocks.iter().collect::<Vec<_>>()));
    (value, g)
}

fn energy_coef<T: Real>(n: usize, m: usize) -> [T; 3] {
    let (n, m) = (T::c(n as f64), T::c(m as f64));
    [
        T::c(2.0) / (n * m),
        -T::one() / (n * n),
        -T::one() / (m * m),
    ]
}

fn mmd_coef<T: Real>(n: usize, m: usize) -> [T; 3] {
    let (n, m) = (T::c(n as f64), T::c(m as f64));
    [-T::c(2.0) / (n * m), T::one() / (n * n), T::one() / (m * m)]
}

/// Energy distance 2 E||X - Y|| - E||X - X'|| - E||Y - Y'|| (V-statistics, diagonals
/// included) and its gradient with respect to the rows of `x`, over the given row blocks
/// of `x` in parallel.
pub fn energy_distance_grad<T: Real>(
    x: &Matrix<T>,
    y: &Matrix<T>,
    ranges: &[Range<usize>],
) -> (T, Matrix<T>) {
    let coef = energy_coef(x.rows(), y.rows());
    let (v, g) = two_sample(x, y, &Kernel::Distance, coef, ranges, true);
    (v, g.expect("gradient requested"))
}

/// The energy distance alone, in fixed row blocks on the current pool's threads.
pub fn energy_distance<T: Real>(x: &Matrix<T>, y: &Matrix<T>) -> T {
    let ranges = blocks(x.rows(), TRAIN_BLOCK);
    let coef = energy_coef(x.rows(), y.rows());
    two_sample(x, y, &Kernel::Distance, coef, &ranges, false).0
}

/// The reference's 50 bandwidths: gamma log-spaced from 10 down to 1e-3.
pub fn default_gammas() -> Vec<f64> {
    (0..50)
        .map(|i| 10f64.powf(1.0 - 4.0 * i as f64 / 49.0))
        .collect()
}

/// Biased multi-scale RBF MMD^2 (the paper's metric when `gammas` are [`default_gammas`]) and
/// its gradient with respect to the rows of `x`, over the given row blocks of `x` in parallel.
pub fn mmd_grad<T: Real>(
    x: &Matrix<T>,
    y: &Matrix<T>,
    gammas: &[f64],
    ranges: &[Range<usize>],
) -> (T, Matrix<T>) {
    let gammas: Vec<T> = gammas.iter().map(|&g| T::c(g)).collect();
    let coef = mmd_coef(x.rows(), y.rows());
    let (v, g) = two_sample(x, y, &Kernel::Rbf(&gammas), coef, ranges, true);
    (v, g.expect("gradient requested"))
}

/// The multi-scale RBF MMD^2 alone, in fixed row blocks on the current pool's threads.
pub fn mmd<T: Real>(x: &Matrix<T>, y: &Matrix<T>, gammas: &[f64]) -> T {
    let gammas: Vec<T> = gammas.iter().map(|&g| T::c(g)).collect();
    let ranges = blocks(x.rows(), TRAIN_BLOCK);
    let coef = mmd_coef(x.rows(), y.rows());
    two_sample(x, y, &Kernel::Rbf(&gammas), coef, &ranges, false).0
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
        let (v, g) = energy_distance_grad(&x, &y, &row_ranges(7, 1));
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
        let (v, g) = mmd_grad(&x, &y, &gammas, &row_ranges(7, 1));
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
        assert!((mmd(&x, &y, &gammas) - naive).abs() < 1e-12);
        let mut f = |p: &[f64]| {
            mmd_grad(
                &Matrix::from_vec(7, 3, p.to_vec()).unwrap(),
                &y,
                &gammas,
                &row_ranges(7, 1),
            )
            .0
        };
        check_grad("mmd", &mut f, x.as_slice(), g.as_slice(), 1e-5, 1e-9);
        assert_eq!(default_gammas().len(), 50);
        assert!(
            (default_gammas()[0] - 10.0).abs() < 1e-12
                && (default_gammas()[49] - 1e-3).abs() < 1e-15
        );
    }

    #[test]
    fn row_blocks_give_the_same_value_and_gradient() {
        let (x, y) = clouds(3);
        let blocks = row_ranges(7, 3);
        type Loss<'a> = dyn Fn(&[Range<usize>]) -> (f64, Matrix<f64>) + Sync + 'a;
        let in_pool = |f: &Loss| {
            let one = f(&row_ranges(7, 1));
            let many = crate::parallel::with_threads(3, || f(&blocks)).unwrap();
            assert!((one.0 - many.0).abs() < 1e-12, "{} vs {}", one.0, many.0);
            assert!(one.1.max_abs_diff(&many.1) < 1e-12);
        };
        in_pool(&|r| energy_distance_grad(&x, &y, r));
        in_pool(&|r| mmd_grad(&x, &y, &[0.5, 2.0], r));
    }
}
