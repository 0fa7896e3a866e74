//! Input-convex neural network (Amos et al. 2017) as the W2 baseline (Makkuva et al. 2020,
//! CellOT) builds its two potentials, hidden widths h_0..h_{K-1}:
//!
//!   z_1 = lrelu(A_0 x + b_0)^2,   z_{k+1} = lrelu(W_k z_k + A_k x + b_k),
//!   y = W_K z_K + A_K x + b_K.
//!
//! y is convex in x when every W_k >= 0: lrelu is convex and non-decreasing, and its square
//! is convex. The W2 map is T(x) = grad_x g(x), so training g needs the parameter gradient of
//! a loss of grad_x g: [`Icnn::input_grad_param_grad`] is that second-order backward, written
//! by hand. The leaky-ReLU masks are piecewise constant, so only the squared first layer has
//! curvature and the second pass costs about as much as the first.
//!
//! Parameters, flat: for k = 0..=K, A_k (rows x d, row-major) then b_k; then W_1..W_K.
//! A_K and W_K have one row (the output).

use super::{assign_params, check_input};
use crate::error::{Error, Result};
use crate::linalg::{MatView, Matrix, Op, Real, add_col_sums, add_row_vector, gemm, gemm_into};
use crate::parallel::{map_ranges, row_ranges};
use crate::rng::Rng;

/// Rows per task when evaluating many cells.
const EVAL_BLOCK: usize = 1024;

/// How the weights start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum IcnnInit {
    /// CellOT's `kernel_init_fxn: uniform, b`: every A and W weight U(0, b), A biases 0.
    Uniform(f64),
    /// PyTorch's `nn.Linear` default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and
    /// biases (what the paper's own W2 code ran).
    Torch,
}

#[derive(Clone, Debug)]
pub struct Icnn<T> {
    in_dim: usize,
    hidden: Vec<usize>,
    slope: f64,
    /// Offsets of A_k, b_k (k = 0..=K) and W_k (k = 1..=K, at index k - 1).
    a_off: Vec<usize>,
    b_off: Vec<usize>,
    w_off: Vec<usize>,
    params: Vec<T>,
}

/// The layers as matrices, copied once from the flat parameters per training step.
#[derive(Clone, Debug)]
pub struct IcnnWeights<T> {
    a: Vec<Matrix<T>>,
    b: Vec<Vec<T>>,
    /// `w[k - 1]` is W_k.
    w: Vec<Matrix<T>>,
}

/// What the forward pass keeps for the backward passes.
#[derive(Clone, Debug)]
pub struct Tape<T> {
    /// lrelu(a_0).
    s0: Matrix<T>,
    /// lrelu'(a_k) (1 or the slope), k = 0..K-1.
    masks: Vec<Matrix<T>>,
    /// z_1..z_K (`z[k - 1]` = z_k), the inputs of W_k.
    z: Vec<Matrix<T>>,
}

/// The adjoints of the input-gradient pass for output weights `dy`: gamma_k = d(sum dy y)/dz_k
/// (`gamma[k - 1]`, k = 1..=K) and e_k = d(sum dy y)/d(pre-activation k) (k = 0..K-1).
#[derive(Clone, Debug)]
pub struct Adjoints<T> {
    dy: Vec<T>,
    gamma: Vec<Matrix<T>>,
    e: Vec<Matrix<T>>,
}

fn map_in_place<T: Real>(m: &mut Matrix<T>, other: &Matrix<T>, f: impl Fn(T, T) -> T) {
    debug_assert_eq!(m.shape(), other.shape());
    m.as_mut_slice()
        .iter_mut()
        .zip(other.as_slice())
        .for_each(|(a, &b)| *a = f(*a, b));
}

/// n x 1 column of `v`.
fn column<T: Real>(v: &[T]) -> Matrix<T> {
    Matrix::from_vec(v.len(), 1, v.to_vec()).expect("column length")
}

impl<T: Real> Icnn<T> {
    pub fn new(
        in_dim: usize,
        hidden: &[usize],
        slope: f64,
        init: IcnnInit,
        rng: &mut Rng,
    ) -> Result<Self> {
        if in_dim == 0 {
            return Err(Error::invalid("dim", "must be >= 1"));
        }
        if hidden.is_empty() || hidden.contains(&0) {
            return Err(Error::invalid(
                "hidden",
                format!("needs at least one layer, every width >= 1, got {hidden:?}"),
            ));
        }
        if !(0.0..1.0).contains(&slope) {
            return Err(Error::invalid(
                "negative_slope",
                format!("must be in [0, 1), got {slope}"),
            ));
        }
        if let IcnnInit::Uniform(b) = init
            && !(b.is_finite() && b > 0.0)
        {
            return Err(Error::invalid(
                "init",
                format!("the uniform bound must be > 0, got {b}"),
            ));
        }
        let k = hidden.len();
        let rows = |i: usize| if i < k { hidden[i] } else { 1 };
        let (mut a_off, mut b_off, mut w_off) = (vec![], vec![], vec![]);
        let mut at = 0;
        for i in 0..=k {
            a_off.push(at);
            at += rows(i) * in_dim;
            b_off.push(at);
            at += rows(i);
        }
        for i in 1..=k {
            w_off.push(at);
            at += rows(i) * hidden[i - 1];
        }
        let mut net = Self {
            in_dim,
            hidden: hidden.to_vec(),
            slope,
            a_off,
            b_off,
            w_off,
            params: vec![T::zero(); at],
        };
        net.init(init, rng);
        Ok(net)
    }

    fn init(&mut self, init: IcnnInit, rng: &mut Rng) {
        let k = self.hidden.len();
        let d = self.in_dim;
        for i in 0..=k {
            let (a, b) = (self.a_off[i], self.b_off[i]);
            let end = b + (b - a) / d;
            match init {
                IcnnInit::Uniform(hi) => {
                    self.params[a..b]
                        .iter_mut()
                        .for_each(|p| *p = rng.uniform(0.0, hi));
                }
                IcnnInit::Torch => {
                    let bound = 1.0 / (d as f64).sqrt();
                    self.params[a..end]
                        .iter_mut()
                        .for_each(|p| *p = rng.uniform(-bound, bound));
                }
            }
        }
        for i in 1..=k {
            let (start, len) = (self.w_off[i - 1], self.rows(i) * self.hidden[i - 1]);
            let w = &mut self.params[start..start + len];
            match init {
                IcnnInit::Uniform(hi) => w.iter_mut().for_each(|p| *p = rng.uniform(0.0, hi)),
                IcnnInit::Torch => {
                    let bound = 1.0 / (self.hidden[i - 1] as f64).sqrt();
                    w.iter_mut().for_each(|p| *p = rng.uniform(-bound, bound));
                }
            }
        }
    }

    /// Output rows of layer k (hidden width, or 1 for the output).
    fn rows(&self, k: usize) -> usize {
        self.hidden.get(k).copied().unwrap_or(1)
    }
    fn depth(&self) -> usize {
        self.hidden.len()
    }
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }
    pub fn hidden(&self) -> &[usize] {
        &self.hidden
    }
    pub fn negative_slope(&self) -> f64 {
        self.slope
    }
    pub fn n_params(&self) -> usize {
        self.params.len()
    }
    pub fn params(&self) -> &[T] {
        &self.params
    }
    pub fn params_mut(&mut self) -> &mut [T] {
        &mut self.params
    }
    pub fn set_params(&mut self, p: &[T]) -> Result<()> {
        assign_params(&mut self.params, p)
    }

    /// Flat ranges of W_1..W_K, the weights that must stay non-negative for convexity.
    fn w_ranges(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        (1..=self.depth()).map(|i| {
            let s = self.w_off[i - 1];
            s..s + self.rows(i) * self.hidden[i - 1]
        })
    }

    pub fn weights(&self) -> IcnnWeights<T> {
        let (k, d) = (self.depth(), self.in_dim);
        let p = &self.params;
        let a = (0..=k)
            .map(|i| {
                let s = self.a_off[i];
                Matrix::from_vec(self.rows(i), d, p[s..s + self.rows(i) * d].to_vec())
                    .expect("A block")
            })
            .collect();
        let b = (0..=k)
            .map(|i| p[self.b_off[i]..self.b_off[i] + self.rows(i)].to_vec())
            .collect();
        let w = (1..=k)
            .zip(self.w_ranges())
            .map(|(i, r)| {
                Matrix::from_vec(self.rows(i), self.hidden[i - 1], p[r].to_vec()).expect("W")
            })
            .collect();
        IcnnWeights { a, b, w }
    }

    /// In place lrelu of `a`; returns the mask lrelu'(a).
    fn leaky(&self, a: &mut Matrix<T>) -> Matrix<T> {
        let s = T::c(self.slope);
        let mut m = Matrix::zeros(a.rows(), a.cols());
        for (v, mv) in a.as_mut_slice().iter_mut().zip(m.as_mut_slice()) {
            if *v >= T::zero() {
                *mv = T::one();
            } else {
                *mv = s;
                *v *= s;
            }
        }
        m
    }

    /// x A_k^T + b_k.
    fn affine(w: &IcnnWeights<T>, k: usize, x: &Matrix<T>) -> Matrix<T> {
        let mut out = Matrix::zeros(x.rows(), w.a[k].rows());
        gemm(T::one(), x, Op::N, &w.a[k], Op::T, T::zero(), &mut out);
        add_row_vector(&mut out, &w.b[k]);
        out
    }

    pub fn forward(&self, w: &IcnnWeights<T>, x: &Matrix<T>) -> (Vec<T>, Tape<T>) {
        let k = self.depth();
        let mut s0 = Self::affine(w, 0, x);
        let mut masks = vec![self.leaky(&mut s0)];
        let mut z1 = s0.clone();
        map_in_place(&mut z1, &s0, |a, b| a * b);
        let mut z = vec![z1];
        for i in 1..=k {
            let mut a = Self::affine(w, i, x);
            gemm(
                T::one(),
                &z[i - 1],
                Op::N,
                &w.w[i - 1],
                Op::T,
                T::one(),
                &mut a,
            );
            if i == k {
                return (a.into_vec(), Tape { s0, masks, z });
            }
            masks.push(self.leaky(&mut a));
            z.push(a);
        }
        unreachable!("the output layer returns")
    }

    /// The adjoints of sum_i dy_i y_i: one pass down the layers.
    pub fn adjoints(&self, w: &IcnnWeights<T>, tape: &Tape<T>, dy: &[T]) -> Adjoints<T> {
        let k = self.depth();
        let wk = w.w[k - 1].as_slice();
        let mut gamma_k = Matrix::zeros(dy.len(), wk.len());
        for (r, &d) in gamma_k.as_mut_slice().chunks_exact_mut(wk.len()).zip(dy) {
            r.iter_mut().zip(wk).for_each(|(g, &wv)| *g = d * wv);
        }
        let mut gamma = vec![gamma_k];
        let mut e = Vec::with_capacity(k);
        for i in (1..k).rev() {
            let mut ei = gamma.last().expect("gamma_{i+1}").clone();
            map_in_place(&mut ei, &tape.masks[i], |g, m| g * m);
            let mut gi = Matrix::zeros(ei.rows(), self.hidden[i - 1]);
            gemm(T::one(), &ei, Op::N, &w.w[i - 1], Op::N, T::zero(), &mut gi);
            e.push(ei);
            gamma.push(gi);
        }
        let mut e0 = gamma.last().expect("gamma_1").clone();
        for ((v, &s), &m) in e0
            .as_mut_slice()
            .iter_mut()
            .zip(tape.s0.as_slice())
            .zip(tape.masks[0].as_slice())
        {
            *v *= T::c(2.0) * s * m;
        }
        e.push(e0);
        e.reverse();
        gamma.reverse();
        Adjoints {
            dy: dy.to_vec(),
            gamma,
            e,
        }
    }

    /// d(sum_i dy_i y_i)/dx = dy A_K + sum_k e_k A_k.
    pub fn input_grad(&self, w: &IcnnWeights<T>, adj: &Adjoints<T>) -> Matrix<T> {
        let k = self.depth();
        let mut dx = Matrix::zeros(adj.dy.len(), self.in_dim);
        gemm(
            T::one(),
            &column(&adj.dy),
            Op::N,
            &w.a[k],
            Op::N,
            T::zero(),
            &mut dx,
        );
        for (i, ei) in adj.e.iter().enumerate() {
            gemm(T::one(), ei, Op::N, &w.a[i], Op::N, T::one(), &mut dx);
        }
        dx
    }

    fn a_block<'g>(&self, grad: &'g mut [T], i: usize) -> &'g mut [T] {
        &mut grad[self.a_off[i]..self.b_off[i]]
    }
    fn b_block<'g>(&self, grad: &'g mut [T], i: usize) -> &'g mut [T] {
        &mut grad[self.b_off[i]..self.b_off[i] + self.rows(i)]
    }
    fn w_block<'g>(&self, grad: &'g mut [T], i: usize) -> &'g mut [T] {
        let s = self.w_off[i - 1];
        &mut grad[s..s + self.rows(i) * self.hidden[i - 1]]
    }

    /// Adds the parameter gradient of sum_i dy_i y_i into `grad`.
    pub fn param_grad(&self, x: &Matrix<T>, tape: &Tape<T>, adj: &Adjoints<T>, grad: &mut [T]) {
        let (k, d) = (self.depth(), self.in_dim);
        let dy = column(&adj.dy);
        let one = T::one();
        gemm_into(
            one,
            &dy,
            Op::T,
            x,
            Op::N,
            one,
            self.a_block(grad, k),
            (1, d),
        );
        self.b_block(grad, k)[0] += adj.dy.iter().copied().sum::<T>();
        let h = self.hidden[k - 1];
        gemm_into(
            one,
            &dy,
            Op::T,
            &tape.z[k - 1],
            Op::N,
            one,
            self.w_block(grad, k),
            (1, h),
        );
        for (i, ei) in adj.e.iter().enumerate() {
            let r = self.rows(i);
            gemm_into(one, ei, Op::T, x, Op::N, one, self.a_block(grad, i), (r, d));
            add_col_sums(ei, self.b_block(grad, i));
            if i >= 1 {
                let shape = (r, self.hidden[i - 1]);
                let wg = self.w_block(grad, i);
                gemm_into(one, ei, Op::T, &tape.z[i - 1], Op::N, one, wg, shape);
            }
        }
    }

    /// Adds the parameter gradient of sum_i <v_i, d(sum_j dy_j y_j)/dx_i> into `grad`: the
    /// second-order backward through [`Self::adjoints`] and [`Self::input_grad`].
    pub fn input_grad_param_grad(
        &self,
        w: &IcnnWeights<T>,
        x: &Matrix<T>,
        tape: &Tape<T>,
        adj: &Adjoints<T>,
        v: &Matrix<T>,
        grad: &mut [T],
    ) {
        let (k, d, n) = (self.depth(), self.in_dim, x.rows());
        let one = T::one();
        // dx = dy A_K + sum_k e_k A_k: A's gradients, and the adjoints of the e_k.
        gemm_into(
            one,
            &column(&adj.dy),
            Op::T,
            v,
            Op::N,
            one,
            self.a_block(grad, k),
            (1, d),
        );
        let mut e_bar = Vec::with_capacity(k);
        for (i, ei) in adj.e.iter().enumerate() {
            let r = self.rows(i);
            gemm_into(one, ei, Op::T, v, Op::N, one, self.a_block(grad, i), (r, d));
            let mut eb = Matrix::zeros(n, r);
            gemm(one, v, Op::N, &w.a[i], Op::T, T::zero(), &mut eb);
            e_bar.push(eb);
        }
        // e_0 = gamma_1 * 2 s_0 * m_0: the only smooth dependence on the forward pass.
        let two = T::c(2.0);
        let (s0, m0, g1) = (&tape.s0, &tape.masks[0], &adj.gamma[0]);
        let mut gamma_bar = e_bar[0].clone();
        let mut a0_bar = e_bar[0].clone();
        for (((gb, ab), (&s, &m)), &g) in gamma_bar
            .as_mut_slice()
            .iter_mut()
            .zip(a0_bar.as_mut_slice())
            .zip(s0.as_slice().iter().zip(m0.as_slice()))
            .zip(g1.as_slice())
        {
            *gb *= two * s * m;
            *ab *= two * g * m * m;
        }
        let r0 = self.rows(0);
        gemm_into(
            one,
            &a0_bar,
            Op::T,
            x,
            Op::N,
            one,
            self.a_block(grad, 0),
            (r0, d),
        );
        add_col_sums(&a0_bar, self.b_block(grad, 0));
        // Up the chain gamma_k = e_k W_k, e_k = gamma_{k+1} * m_k.
        for (i, mut eb) in e_bar.into_iter().enumerate().skip(1) {
            gemm(one, &gamma_bar, Op::N, &w.w[i - 1], Op::T, one, &mut eb);
            let shape = (self.rows(i), self.hidden[i - 1]);
            let wg = self.w_block(grad, i);
            gemm_into(one, &adj.e[i], Op::T, &gamma_bar, Op::N, one, wg, shape);
            map_in_place(&mut eb, &tape.masks[i], |a, m| a * m);
            gamma_bar = eb;
        }
        // gamma_K = dy W_K.
        let h = self.hidden[k - 1];
        gemm_into(
            one,
            &column(&adj.dy),
            Op::T,
            &gamma_bar,
            Op::N,
            one,
            self.w_block(grad, k),
            (1, h),
        );
    }

    /// sum_k ||relu(-W_k)||_F (CellOT's penalty on g's negative weights, not squared), and
    /// its gradient added into `grad` (scaled by `weight`).
    pub fn negative_weight_penalty(&self, weight: T, grad: &mut [T]) -> T {
        let mut total = T::zero();
        for r in self.w_ranges().collect::<Vec<_>>() {
            let norm = self.params[r.clone()]
                .iter()
                .map(|&v| if v < T::zero() { v * v } else { T::zero() })
                .sum::<T>()
                .sqrt();
            total += norm;
            if norm > T::zero() {
                for (g, &p) in grad[r.clone()].iter_mut().zip(&self.params[r]) {
                    if p < T::zero() {
                        *g += weight * p / norm;
                    }
                }
            }
        }
        weight * total
    }

    /// W_k <- max(W_k, 0): the projection that keeps f convex.
    pub fn clamp_weights(&mut self) {
        for r in self.w_ranges().collect::<Vec<_>>() {
            self.params[r]
                .iter_mut()
                .for_each(|v| *v = v.max(T::zero()));
        }
    }

    /// Whether every W_k >= 0 (then the network is convex in x).
    pub fn is_convex(&self) -> bool {
        self.w_ranges()
            .all(|r| self.params[r].iter().all(|&v| v >= T::zero()))
    }

    fn map_blocks<R: Send>(
        &self,
        x: MatView<'_, T>,
        f: impl Fn(&Matrix<T>) -> R + Sync + Send,
    ) -> Result<Vec<R>> {
        check_input(x, self.in_dim)?;
        let n_blocks = x.rows().div_ceil(EVAL_BLOCK);
        Ok(map_ranges(&row_ranges(x.rows(), n_blocks), |r| {
            f(&x.rows_range(r.start, r.end))
        }))
    }

    /// y(x) for every row, in parallel blocks.
    pub fn value(&self, x: MatView<'_, T>) -> Result<Vec<T>> {
        let w = self.weights();
        Ok(self.map_blocks(x, |b| self.forward(&w, b).0)?.concat())
    }

    /// grad_x y(x) for every row (the W2 map when this network is g).
    pub fn gradient(&self, x: MatView<'_, T>) -> Result<Matrix<T>> {
        let w = self.weights();
        let blocks = self.map_blocks(x, |b| {
            let (_, tape) = self.forward(&w, b);
            self.input_grad(&w, &self.adjoints(&w, &tape, &vec![T::one(); b.rows()]))
        })?;
        Ok(Matrix::vstack(&blocks.iter().collect::<Vec<_>>()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::dot;
    use crate::testutil::{check_grad, probe};

    fn net(init: IcnnInit, seed: u64) -> Icnn<f64> {
        Icnn::new(3, &[5, 4, 6], 0.2, init, &mut Rng::new(seed)).unwrap()
    }

    /// A point cloud and, for the Torch init, negative weights too: every branch is used.
    fn setup(seed: u64) -> (Icnn<f64>, Matrix<f64>, Vec<f64>) {
        let icnn = net(IcnnInit::Torch, seed);
        let mut rng = Rng::new(seed + 100);
        let x = Matrix::from_fn(7, 3, |_, _| rng.uniform(-2.0, 2.0));
        (icnn, x, probe(7, seed + 200))
    }

    fn weighted_output(icnn: &Icnn<f64>, x: &Matrix<f64>, c: &[f64]) -> f64 {
        dot(&icnn.forward(&icnn.weights(), x).0, c)
    }

    fn weighted_input_grad(icnn: &Icnn<f64>, x: &Matrix<f64>, dy: &[f64]) -> Matrix<f64> {
        let w = icnn.weights();
        let (_, tape) = icnn.forward(&w, x);
        icnn.input_grad(&w, &icnn.adjoints(&w, &tape, dy))
    }

    #[test]
    fn input_gradient_matches_finite_differences() {
        for seed in [1, 2] {
            let (icnn, x, c) = setup(seed);
            let dx = weighted_input_grad(&icnn, &x, &c);
            let mut f = |v: &[f64]| {
                weighted_output(&icnn, &Matrix::from_vec(7, 3, v.to_vec()).unwrap(), &c)
            };
            check_grad(
                "icnn input",
                &mut f,
                x.as_slice(),
                dx.as_slice(),
                1e-6,
                1e-9,
            );
        }
    }

    #[test]
    fn parameter_gradient_matches_finite_differences() {
        for seed in [3, 4] {
            let (mut icnn, x, c) = setup(seed);
            let w = icnn.weights();
            let (_, tape) = icnn.forward(&w, &x);
            let mut g = vec![0.0; icnn.n_params()];
            icnn.param_grad(&x, &tape, &icnn.adjoints(&w, &tape, &c), &mut g);
            let p0 = icnn.params().to_vec();
            let mut f = |p: &[f64]| {
                icnn.set_params(p).unwrap();
                weighted_output(&icnn, &x, &c)
            };
            check_grad("icnn params", &mut f, &p0, &g, 1e-6, 1e-9);
        }
    }

    #[test]
    fn second_order_backward_matches_finite_differences_of_the_input_gradient() {
        // L(theta) = sum_i <v_i, d(sum_j c_j y_j)/dx_i>, differentiated numerically through
        // the hand-written input gradient.
        for (seed, init) in [
            (5, IcnnInit::Torch),
            (6, IcnnInit::Torch),
            (7, IcnnInit::Uniform(0.1)),
        ] {
            let (mut icnn, x, c) = setup(seed);
            if let IcnnInit::Uniform(_) = init {
                icnn = net(init, seed);
            }
            let v = Matrix::from_vec(7, 3, probe(21, seed + 300)).unwrap();
            let w = icnn.weights();
            let (_, tape) = icnn.forward(&w, &x);
            let adj = icnn.adjoints(&w, &tape, &c);
            let mut g = vec![0.0; icnn.n_params()];
            icnn.input_grad_param_grad(&w, &x, &tape, &adj, &v, &mut g);
            let p0 = icnn.params().to_vec();
            let mut f = |p: &[f64]| {
                icnn.set_params(p).unwrap();
                dot(weighted_input_grad(&icnn, &x, &c).as_slice(), v.as_slice())
            };
            check_grad("icnn second order", &mut f, &p0, &g, 1e-6, 1e-9);
        }
    }

    #[test]
    fn penalty_gradient_matches_finite_differences_and_clamping_makes_it_convex() {
        let mut icnn = net(IcnnInit::Torch, 8);
        assert!(!icnn.is_convex(), "the Torch init has negative W");
        let mut g = vec![0.0; icnn.n_params()];
        let pen = icnn.negative_weight_penalty(1.0, &mut g);
        assert!(pen > 0.0);
        let p0 = icnn.params().to_vec();
        let mut f = |p: &[f64]| {
            icnn.set_params(p).unwrap();
            icnn.negative_weight_penalty(1.0, &mut vec![0.0; p.len()])
        };
        check_grad("icnn penalty", &mut f, &p0, &g, 1e-6, 1e-9);
        icnn.set_params(&p0).unwrap();
        icnn.clamp_weights();
        assert!(icnn.is_convex());
        assert_eq!(icnn.negative_weight_penalty(1.0, &mut g), 0.0);
        // Midpoint convexity along random chords, away from the origin and near it.
        let mut rng = Rng::new(9);
        for scale in [0.1, 3.0] {
            let a = Matrix::from_fn(200, 3, |_, _| rng.uniform(-scale, scale));
            let b = Matrix::from_fn(200, 3, |_, _| rng.uniform(-scale, scale));
            let mut mid = a.clone();
            mid.axpy(1.0, &b);
            mid.scale(0.5);
            let (fa, fb, fm) = (
                icnn.value(a.view()).unwrap(),
                icnn.value(b.view()).unwrap(),
                icnn.value(mid.view()).unwrap(),
            );
            for i in 0..200 {
                assert!(
                    fm[i] <= 0.5 * (fa[i] + fb[i]) + 1e-12,
                    "not convex at chord {i}"
                );
            }
        }
    }

    #[test]
    fn cellot_init_is_uniform_non_negative_with_zero_biases() {
        let icnn =
            Icnn::<f32>::new(10, &[64; 4], 0.2, IcnnInit::Uniform(0.1), &mut Rng::new(1)).unwrap();
        assert!(icnn.is_convex());
        let p = icnn.params();
        assert!(p.iter().all(|&v| (0.0..0.1).contains(&v)));
        for i in 0..=4 {
            assert!(
                p[icnn.b_off[i]..icnn.b_off[i] + icnn.rows(i)]
                    .iter()
                    .all(|&v| v == 0.0)
            );
        }
        assert!(p[icnn.a_off[0]..icnn.b_off[0]].iter().any(|&v| v > 0.09));
        // 4 x (64 x 10 + 64) + (10 + 1) + 3 x 64 x 64 + 64
        assert_eq!(icnn.n_params(), 4 * (640 + 64) + 11 + 3 * 4096 + 64);
        assert!(Icnn::<f32>::new(3, &[], 0.2, IcnnInit::Torch, &mut Rng::new(1)).is_err());
        assert!(Icnn::<f32>::new(3, &[4], 1.5, IcnnInit::Torch, &mut Rng::new(1)).is_err());
    }

    #[test]
    fn batched_gradient_is_the_per_row_gradient() {
        let (icnn, x, _) = setup(10);
        let all = icnn.gradient(x.view()).unwrap();
        for i in 0..x.rows() {
            let row = x.rows_range(i, i + 1);
            let gi = weighted_input_grad(&icnn, &row, &[1.0]);
            assert!(gi.max_abs_diff(&all.rows_range(i, i + 1)) < 1e-12);
        }
    }
}
