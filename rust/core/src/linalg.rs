//! The only module that talks to the linear-algebra crate (faer). Everything else in the
//! core sees row-major [`Matrix`] values and the few kernels below, so the backend can be
//! swapped without touching a layer.

use crate::error::{Error, Result};
use faer::dyn_stack::{MemBuffer, MemStack, StackReq};
use faer::linalg::lu::partial_pivoting::factor::{lu_in_place, lu_in_place_scratch};
use faer::linalg::lu::partial_pivoting::inverse::{inverse as lu_inverse, inverse_scratch};
use faer::{Accum, MatMut, MatRef, Par};
use std::fmt::{Debug, Display};

/// The floating-point types the core is generic over: f32 for training, f64 for tests.
pub trait Real:
    faer::traits::RealField
    + num_traits::Float
    + num_traits::FromPrimitive
    + num_traits::NumAssign
    + Copy
    + Send
    + Sync
    + Default
    + Debug
    + Display
    + std::iter::Sum
    + 'static
{
    /// Lossy conversion from f64 (constants, hyper-parameters).
    fn c(x: f64) -> Self;
    fn as_f64(self) -> f64;
}

impl Real for f32 {
    #[inline(always)]
    fn c(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self as f64
    }
}

impl Real for f64 {
    #[inline(always)]
    fn c(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self
    }
}

/// Dense row-major matrix. Rows are samples (cells) throughout the core, as in NumPy.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Matrix<T> {
    rows: usize,
    cols: usize,
    data: Vec<T>,
}

impl<T: Real> Matrix<T> {
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![T::zero(); rows * cols],
        }
    }

    pub fn identity(n: usize) -> Self {
        let mut m = Self::zeros(n, n);
        for i in 0..n {
            m.data[i * n + i] = T::one();
        }
        m
    }

    /// Wraps a row-major buffer; fails if its length is not `rows * cols`.
    pub fn from_vec(rows: usize, cols: usize, data: Vec<T>) -> Result<Self> {
        if data.len() != rows * cols {
            return Err(Error::shape(
                "data",
                format!("{} values ({rows} x {cols})", rows * cols),
                format!("{} values", data.len()),
            ));
        }
        Ok(Self { rows, cols, data })
    }

    pub fn from_fn(rows: usize, cols: usize, mut f: impl FnMut(usize, usize) -> T) -> Self {
        let mut data = Vec::with_capacity(rows * cols);
        for i in 0..rows {
            for j in 0..cols {
                data.push(f(i, j));
            }
        }
        Self { rows, cols, data }
    }

    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }
    #[inline]
    pub fn cols(&self) -> usize {
        self.cols
    }
    #[inline]
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
    #[inline]
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.data
    }
    pub fn into_vec(self) -> Vec<T> {
        self.data
    }
    #[inline]
    pub fn row(&self, i: usize) -> &[T] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
    #[inline]
    pub fn row_mut(&mut self, i: usize) -> &mut [T] {
        &mut self.data[i * self.cols..(i + 1) * self.cols]
    }
    #[inline]
    pub fn get(&self, i: usize, j: usize) -> T {
        self.data[i * self.cols + j]
    }
    #[inline]
    pub fn set(&mut self, i: usize, j: usize, v: T) {
        self.data[i * self.cols + j] = v;
    }

    pub fn transpose(&self) -> Self {
        let mut t = Self::zeros(self.cols, self.rows);
        for i in 0..self.rows {
            for j in 0..self.cols {
                t.data[j * self.rows + i] = self.data[i * self.cols + j];
            }
        }
        t
    }

    pub fn view(&self) -> MatView<'_, T> {
        MatView {
            rows: self.rows,
            cols: self.cols,
            data: &self.data,
        }
    }

    /// Rows `start..end` as a new matrix.
    pub fn rows_range(&self, start: usize, end: usize) -> Self {
        self.view().rows_range(start, end)
    }

    /// Gathers the given rows (batch sampling).
    pub fn select_rows(&self, idx: &[usize]) -> Self {
        self.view().select_rows(idx)
    }

    /// Stacks the parts top to bottom (same column count; at least one part).
    pub fn vstack(parts: &[&Self]) -> Self {
        let cols = parts[0].cols;
        assert!(
            parts.iter().all(|p| p.cols == cols),
            "vstack: column counts differ"
        );
        let mut data = Vec::with_capacity(parts.iter().map(|p| p.data.len()).sum());
        parts.iter().for_each(|p| data.extend_from_slice(&p.data));
        Self {
            rows: parts.iter().map(|p| p.rows).sum(),
            cols,
            data,
        }
    }

    pub fn frobenius_norm(&self) -> T {
        dot(&self.data, &self.data).sqrt()
    }

    pub fn all_finite(&self) -> bool {
        self.data.iter().all(|v| v.is_finite())
    }

    /// Adds `alpha * other` in place.
    pub fn axpy(&mut self, alpha: T, other: &Self) {
        assert_eq!(self.shape(), other.shape(), "axpy: shapes differ");
        axpy(alpha, &other.data, &mut self.data);
    }

    pub fn scale(&mut self, alpha: T) {
        self.data.iter_mut().for_each(|v| *v *= alpha);
    }

    /// Largest absolute entry of `self - other`.
    pub fn max_abs_diff(&self, other: &Self) -> T {
        assert_eq!(self.shape(), other.shape(), "max_abs_diff: shapes differ");
        self.data
            .iter()
            .zip(&other.data)
            .fold(T::zero(), |m, (a, b)| m.max((*a - *b).abs()))
    }

    pub fn cast<U: Real>(&self) -> Matrix<U> {
        Matrix {
            rows: self.rows,
            cols: self.cols,
            data: self.data.iter().map(|v| U::c(v.as_f64())).collect(),
        }
    }
}

/// Borrowed row-major matrix: caller-owned data (a NumPy buffer) read without copying.
#[derive(Clone, Copy, Debug)]
pub struct MatView<'a, T> {
    rows: usize,
    cols: usize,
    data: &'a [T],
}

impl<'a, T: Real> MatView<'a, T> {
    pub fn new(rows: usize, cols: usize, data: &'a [T]) -> Result<Self> {
        if data.len() != rows * cols {
            return Err(Error::shape(
                "data",
                format!("{} values ({rows} x {cols})", rows * cols),
                format!("{} values", data.len()),
            ));
        }
        Ok(Self { rows, cols, data })
    }

    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }
    #[inline]
    pub fn cols(&self) -> usize {
        self.cols
    }
    #[inline]
    pub fn as_slice(&self) -> &'a [T] {
        self.data
    }
    #[inline]
    pub fn row(&self, i: usize) -> &'a [T] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    pub fn rows_range(&self, start: usize, end: usize) -> Matrix<T> {
        Matrix {
            rows: end - start,
            cols: self.cols,
            data: self.data[start * self.cols..end * self.cols].to_vec(),
        }
    }

    pub fn select_rows(&self, idx: &[usize]) -> Matrix<T> {
        let mut data = Vec::with_capacity(idx.len() * self.cols);
        for &i in idx {
            data.extend_from_slice(self.row(i));
        }
        Matrix {
            rows: idx.len(),
            cols: self.cols,
            data,
        }
    }

    pub fn to_matrix(&self) -> Matrix<T> {
        self.rows_range(0, self.rows)
    }
}

/// Dot product with eight independent partial sums, so that the compiler can vectorise it
/// (a single running sum is a serial dependency chain).
#[inline]
pub fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::zero(); 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: T = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .fold(T::zero(), |s, (x, y)| s + *x * *y);
    for (ca, cb) in ac.zip(bc) {
        for k in 0..8 {
            acc[k] += ca[k] * cb[k];
        }
    }
    acc.iter().fold(tail, |s, v| s + *v)
}

#[inline]
pub fn axpy<T: Real>(alpha: T, x: &[T], y: &mut [T]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += alpha * *x);
}

/// Whether an operand enters a product as is or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    N,
    T,
}

impl Op {
    /// The other one: op(a)^T is flip(op)(a).
    pub fn flip(self) -> Self {
        match self {
            Op::N => Op::T,
            Op::T => Op::N,
        }
    }
}

/// Products below this many multiply-adds run on one thread: splitting them costs more in
/// synchronisation than it saves. Inside a parallel region (a rayon worker) products are
/// always sequential: the models parallelise over rows at a coarser grain instead.
const PAR_MIN_FLOPS: usize = 1 << 22;

fn view<T: Real>(m: &Matrix<T>, op: Op) -> MatRef<'_, T> {
    let v = MatRef::from_row_major_slice(&m.data, m.rows, m.cols);
    match op {
        Op::N => v,
        Op::T => v.transpose(),
    }
}

fn op_shape<T>(m: &Matrix<T>, op: Op) -> (usize, usize) {
    match op {
        Op::N => (m.rows, m.cols),
        Op::T => (m.cols, m.rows),
    }
}

/// `c = alpha * op(a) op(b) + beta * c`. Shapes are the caller's contract (a programming
/// error, not user input), so a mismatch panics.
pub fn gemm<T: Real>(
    alpha: T,
    a: &Matrix<T>,
    ta: Op,
    b: &Matrix<T>,
    tb: Op,
    beta: T,
    c: &mut Matrix<T>,
) {
    let shape = (c.rows, c.cols);
    gemm_into(alpha, a, ta, b, tb, beta, &mut c.data, shape);
}

/// [`gemm`] into a row-major `m x n` slice, such as one layer's block of a flat parameter
/// gradient, so that it needs no copy.
#[allow(clippy::too_many_arguments)]
pub fn gemm_into<T: Real>(
    alpha: T,
    a: &Matrix<T>,
    ta: Op,
    b: &Matrix<T>,
    tb: Op,
    beta: T,
    c: &mut [T],
    (m, n): (usize, usize),
) {
    let (m2, k) = op_shape(a, ta);
    let (k2, n2) = op_shape(b, tb);
    assert_eq!(k, k2, "gemm: inner dimensions differ");
    assert_eq!((m2, n2), (m, n), "gemm: output shape");
    assert_eq!(c.len(), m * n, "gemm: output length");
    if m == 0 || n == 0 {
        return;
    }
    let accum = if beta == T::zero() {
        Accum::Replace
    } else {
        if beta != T::one() {
            c.iter_mut().for_each(|v| *v *= beta);
        }
        Accum::Add
    };
    if k == 0 {
        if accum == Accum::Replace {
            c.iter_mut().for_each(|v| *v = T::zero());
        }
        return;
    }
    let par = if m * n * k >= PAR_MIN_FLOPS
        && rayon::current_thread_index().is_none()
        && rayon::current_num_threads() > 1
    {
        Par::rayon(0)
    } else {
        Par::Seq
    };
    let dst = MatMut::from_row_major_slice_mut(c, m, n);
    faer::linalg::matmul::matmul(dst, accum, view(a, ta), view(b, tb), alpha, par);
}

/// `op(a) op(b)` as a new matrix.
pub fn matmul<T: Real>(a: &Matrix<T>, ta: Op, b: &Matrix<T>, tb: Op) -> Matrix<T> {
    let (m, _) = op_shape(a, ta);
    let (_, n) = op_shape(b, tb);
    let mut c = Matrix::zeros(m, n);
    gemm(T::one(), a, ta, b, tb, T::zero(), &mut c);
    c
}

/// Largest matrix [`inverse`] inverts by its own Gauss-Jordan rather than faer's LU.
const GAUSS_JORDAN_MAX: usize = 256;

/// Inverts the row-major n x n `m` in place by Gauss-Jordan with partial pivoting, the row
/// updates on the widest vector unit; false if a pivot is zero or NaN (singular).
#[inline(always)]
fn gauss_jordan<T: Real>(m: &mut [T], row: &mut [T], swaps: &mut [usize], n: usize) -> bool {
    for k in 0..n {
        let mut piv = k;
        for i in k + 1..n {
            if m[i * n + k].abs() > m[piv * n + k].abs() {
                piv = i;
            }
        }
        let p = m[piv * n + k];
        if p.is_nan() || p == T::zero() {
            return false;
        }
        swaps[k] = piv;
        if piv != k {
            let (head, tail) = m.split_at_mut(piv * n);
            head[k * n..(k + 1) * n].swap_with_slice(&mut tail[..n]);
        }
        let inv = T::one() / p;
        row.iter_mut()
            .zip(&m[k * n..(k + 1) * n])
            .for_each(|(v, &x)| *v = x * inv);
        // Column k of the inverse is built in place: 1/p in the pivot row, -m[i][k]/p below.
        row[k] = inv;
        for (i, r) in m.chunks_exact_mut(n).enumerate() {
            if i == k {
                continue;
            }
            let f = r[k];
            r.iter_mut().zip(row.iter()).for_each(|(x, &y)| *x -= f * y);
            // Written after the vector stores: a scalar store into the row just before its
            // vector loads stalls store forwarding (three times slower at 64 x 64).
            r[k] = -(f * inv);
        }
        m[k * n..(k + 1) * n].copy_from_slice(row);
    }
    // Row k was exchanged before step k, so the inverse has columns k and swaps[k]
    // exchanged; undo in reverse order.
    for k in (0..n).rev() {
        if swaps[k] != k {
            m.chunks_exact_mut(n).for_each(|r| r.swap(k, swaps[k]));
        }
    }
    true
}

/// Inverse of a square matrix with partial pivoting. Up to 256 x 256 (every Cayley system
/// of a default potential is at most 64 x 64) by an in-place Gauss-Jordan with vectorised row
/// updates, 17 us at 64 x 64 against 41-45 us for faer's LU and triangular inverses,
/// which are built for larger sizes; above that by faer.
pub fn inverse<T: Real>(a: &Matrix<T>) -> Result<Matrix<T>> {
    assert_eq!(a.rows, a.cols, "inverse: matrix must be square");
    if !a.all_finite() {
        return Err(Error::Singular("inverse"));
    }
    let n = a.rows;
    if n <= GAUSS_JORDAN_MAX {
        let mut out = a.clone();
        let (mut row, mut swaps) = (vec![T::zero(); n], vec![0; n]);
        let ok = crate::simd::widest(
            #[inline(always)]
            || gauss_jordan(&mut out.data, &mut row, &mut swaps, n),
        );
        if !ok || !out.all_finite() {
            return Err(Error::Singular("inverse"));
        }
        return Ok(out);
    }
    lu_inverse_faer(a)
}

/// Inverse by faer's LU with partial pivoting.
fn lu_inverse_faer<T: Real>(a: &Matrix<T>) -> Result<Matrix<T>> {
    let n = a.rows;
    // faer's high-level solvers follow its global parallelism, which forks rayon tasks even
    // for small systems (ten times slower than sequential at 64 x 64), and the callers already
    // run one inverse per thread, so call the kernels with an explicit sequential setting.
    let par = Par::Seq;
    let mut lu = view(a, Op::N).to_owned();
    let (mut fwd, mut bwd) = (vec![0usize; n], vec![0usize; n]);
    let mut buf = MemBuffer::new(StackReq::any_of(&[
        lu_in_place_scratch::<usize, T>(n, n, par, Default::default()),
        inverse_scratch::<usize, T>(n, par),
    ]));
    let stack = MemStack::new(&mut buf);
    let (_, perm) = lu_in_place(
        lu.as_mut(),
        &mut fwd,
        &mut bwd,
        par,
        stack,
        Default::default(),
    );
    let mut out = Matrix::zeros(n, n);
    // The unit-lower inverse reads only the strict lower triangle, so L and U share `lu`.
    lu_inverse(
        MatMut::from_row_major_slice_mut(&mut out.data, n, n),
        lu.as_ref(),
        lu.as_ref(),
        perm,
        par,
        stack,
    );
    if !out.all_finite() {
        return Err(Error::Singular("inverse"));
    }
    Ok(out)
}

/// Adds the column sums of `dy` into `out` (bias gradients).
pub fn add_col_sums<T: Real>(dy: &Matrix<T>, out: &mut [T]) {
    assert_eq!(out.len(), dy.cols);
    for i in 0..dy.rows {
        axpy(T::one(), dy.row(i), out);
    }
}

/// Adds the row sums of `dy` into `out` (bias gradients of unit-major activations).
pub fn add_row_sums<T: Real>(dy: &Matrix<T>, out: &mut [T]) {
    assert_eq!(out.len(), dy.rows);
    for (o, r) in out.iter_mut().zip(dy.data.chunks_exact(dy.cols.max(1))) {
        *o += lane_sum(r);
    }
}

/// Adds `b[i]` to every entry of row i of `y` (bias of unit-major activations).
pub fn add_col_vector<T: Real>(y: &mut Matrix<T>, b: &[T]) {
    assert_eq!(b.len(), y.rows);
    let cols = y.cols.max(1);
    for (r, &bi) in y.data.chunks_exact_mut(cols).zip(b) {
        r.iter_mut().for_each(|v| *v += bi);
    }
}

/// Sum with eight partial sums, so that it vectorises (like [`dot`]).
pub fn lane_sum<T: Real>(x: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += v;
    }
    acc.iter().copied().sum()
}

/// Adds `b` to every row of `y` (bias).
pub fn add_row_vector<T: Real>(y: &mut Matrix<T>, b: &[T]) {
    assert_eq!(b.len(), y.cols);
    let cols = y.cols;
    y.data
        .chunks_exact_mut(cols)
        .for_each(|r| axpy(T::one(), b, r));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &Matrix<f64>, ta: Op, b: &Matrix<f64>, tb: Op) -> Matrix<f64> {
        let a = if ta == Op::T {
            a.transpose()
        } else {
            a.clone()
        };
        let b = if tb == Op::T {
            b.transpose()
        } else {
            b.clone()
        };
        Matrix::from_fn(a.rows(), b.cols(), |i, j| {
            (0..a.cols()).map(|k| a.get(i, k) * b.get(k, j)).sum()
        })
    }

    #[test]
    fn gemm_matches_naive_for_all_transpositions() {
        let mut rng = crate::rng::Rng::new(1);
        for &(ta, tb) in &[
            (Op::N, Op::N),
            (Op::T, Op::N),
            (Op::N, Op::T),
            (Op::T, Op::T),
        ] {
            let a0 = Matrix::from_fn(7, 5, |_, _| rng.uniform(-1.0, 1.0));
            let b0 = Matrix::from_fn(if ta == Op::N { 5 } else { 7 }, 3, |_, _| {
                rng.uniform(-1.0, 1.0)
            });
            let b0 = if tb == Op::T { b0.transpose() } else { b0 };
            let expect = naive(&a0, ta, &b0, tb);
            let mut c = Matrix::from_fn(expect.rows(), expect.cols(), |i, j| (i + j) as f64);
            let c0 = c.clone();
            gemm(2.0, &a0, ta, &b0, tb, 0.5, &mut c);
            for i in 0..c.rows() {
                for j in 0..c.cols() {
                    let e = 2.0 * expect.get(i, j) + 0.5 * c0.get(i, j);
                    assert!((c.get(i, j) - e).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn large_gemm_runs_in_parallel_and_matches() {
        let mut rng = crate::rng::Rng::new(2);
        let a = Matrix::from_fn(300, 120, |_, _| rng.uniform(-1.0, 1.0));
        let b = Matrix::from_fn(120, 90, |_, _| rng.uniform(-1.0, 1.0));
        let c = matmul(&a, Op::N, &b, Op::N);
        assert!(c.max_abs_diff(&naive(&a, Op::N, &b, Op::N)) < 1e-10);
    }

    #[test]
    fn gauss_jordan_matches_faer_lu() {
        let mut rng = crate::rng::Rng::new(4);
        for &(n, skew) in &[
            (1, 1.0),
            (7, 1.0),
            (64, 1.0),
            (64, 300.0),
            (50, 5.0),
            (256, 3.0),
        ] {
            // I + V^T V + K with K skew, as the Cayley transform inverts, and a random matrix
            // that needs row exchanges.
            let v = Matrix::from_fn(n / 2 + 1, n, |_, _| rng.uniform::<f64>(-0.5, 0.5));
            let mut a = matmul(&v, Op::T, &v, Op::N);
            for i in 0..n {
                a.set(i, i, a.get(i, i) + 1.0);
                for j in 0..i {
                    let k = skew * rng.uniform::<f64>(-1.0, 1.0) / (n as f64).sqrt();
                    a.set(i, j, a.get(i, j) + k);
                    a.set(j, i, a.get(j, i) - k);
                }
            }
            let g = Matrix::from_fn(n, n, |_, _| rng.uniform::<f64>(-1.0, 1.0));
            for a in [a, g] {
                let inv = inverse(&a).unwrap();
                let lu = lu_inverse_faer(&a).unwrap();
                let scale = lu.data.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                assert!(inv.max_abs_diff(&lu) < 1e-9 * scale, "n={n} skew={skew}");
                let err = matmul(&a, Op::N, &inv, Op::N).max_abs_diff(&Matrix::identity(n));
                assert!(err < 1e-9, "n={n} skew={skew}: |A A^-1 - I| = {err}");
            }
        }
        // A zero leading entry needs the row exchange.
        let a = Matrix::from_fn(3, 3, |i, j| {
            [[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 5.0]][i][j]
        });
        let inv = inverse(&a).unwrap();
        assert!(matmul(&a, Op::N, &inv, Op::N).max_abs_diff(&Matrix::identity(3)) < 1e-12);
        let singular = Matrix::from_fn(3, 3, |i, j| (i + j) as f64);
        assert_eq!(inverse(&singular), Err(Error::Singular("inverse")));
        assert_eq!(
            inverse(&Matrix::<f64>::zeros(300, 300)),
            Err(Error::Singular("inverse"))
        );
        // Above GAUSS_JORDAN_MAX, faer's LU answers.
        let big = Matrix::from_fn(300, 300, |i, j| {
            rng.uniform::<f64>(-1.0, 1.0) + if i == j { 20.0 } else { 0.0 }
        });
        let err = matmul(&big, Op::N, &inverse(&big).unwrap(), Op::N)
            .max_abs_diff(&Matrix::identity(300));
        assert!(err < 1e-9, "300 x 300: {err}");
    }

    #[test]
    fn inverse_is_inverse_and_rejects_nan() {
        let mut rng = crate::rng::Rng::new(3);
        let a = Matrix::from_fn(
            6,
            6,
            |i, j| if i == j { 3.0 } else { rng.uniform(-1.0, 1.0) },
        );
        let inv = inverse(&a).unwrap();
        assert!(matmul(&a, Op::N, &inv, Op::N).max_abs_diff(&Matrix::identity(6)) < 1e-12);
        let mut bad = a.clone();
        bad.set(0, 0, f64::NAN);
        assert_eq!(inverse(&bad), Err(Error::Singular("inverse")));
    }
}
