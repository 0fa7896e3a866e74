//! The 1-Lipschitz Kantorovich potential: orthogonal affine layers d -> h1 -> ... -> hk -> 1
//! with GroupSort after every layer but the last. Each piece is 1-Lipschitz and gradient-
//! norm preserving, so ||grad f|| <= 1 everywhere (= 1 when every Q is exactly orthogonal
//! and the output row has unit norm).

use rayon::prelude::*;

use super::orthogonal::{OrthoKind, OrthoLinear, WeightCache};
use super::{Mode, groupsort};
use crate::error::{Error, Result};
use crate::linalg::{MatView, Matrix, Op, Real};
use crate::parallel::{map_ranges, row_ranges};
use crate::rng::Rng;

/// Rows per task when evaluating many cells: bounds the memory of activations and gives
/// every thread work.
const EVAL_BLOCK: usize = 1024;

#[derive(Clone, Debug)]
pub struct Potential<T> {
    layers: Vec<OrthoLinear>,
    offsets: Vec<usize>,
    group_size: usize,
    params: Vec<T>,
}

/// Orthonormal weights of every layer for the current parameters. Computing them is the
/// expensive, batch-independent part of a forward pass, so it is done once per step.
#[derive(Clone, Debug)]
pub struct Weights<T> {
    qs: Vec<Matrix<T>>,
    caches: Vec<WeightCache<T>>,
}

impl<T> Weights<T> {
    pub fn matrices(&self) -> &[Matrix<T>] {
        &self.qs
    }
}

/// Gradients up to the orthonormal weights: dL/dQ per layer and bias gradients.
#[derive(Clone, Debug)]
struct GradParts<T> {
    dqs: Vec<Matrix<T>>,
    bias: Vec<T>,
}

impl<T: Real> GradParts<T> {
    fn add(&mut self, other: &Self) {
        for (a, b) in self.dqs.iter_mut().zip(&other.dqs) {
            a.axpy(T::one(), b);
        }
        self.bias
            .iter_mut()
            .zip(&other.bias)
            .for_each(|(a, b)| *a += *b);
    }
}

/// What a backward pass needs from a forward pass: the unit-major activations entering
/// layers 1.. (width x n) and the GroupSort exchanges. The cells themselves are passed to
/// the backward pass again rather than copied here.
#[derive(Clone, Debug)]
pub struct Tape<T> {
    hidden: Vec<Matrix<T>>,
    swaps: Vec<groupsort::Swaps>,
}

impl<T: Real> Potential<T> {
    pub fn new(
        in_dim: usize,
        hidden: &[usize],
        group_size: usize,
        kind: OrthoKind,
        rng: &mut Rng,
    ) -> Result<Self> {
        if in_dim == 0 {
            return Err(Error::invalid("in_dim", "must be >= 1"));
        }
        if hidden.contains(&0) {
            return Err(Error::invalid(
                "hidden",
                format!("widths must be >= 1, got {hidden:?}"),
            ));
        }
        for &h in hidden {
            groupsort::check_group_size(h, group_size)?;
        }
        if let OrthoKind::Bjorck { train_iters: 0 } = kind {
            return Err(Error::invalid("bjorck_iters", "must be >= 1"));
        }
        let mut dims = vec![in_dim];
        dims.extend_from_slice(hidden);
        dims.push(1);
        let layers: Vec<OrthoLinear> = dims
            .windows(2)
            .map(|w| OrthoLinear::new(w[0], w[1], kind))
            .collect();
        let offsets = super::param_offsets(layers.iter().map(|l| l.n_params()));
        let mut params = vec![T::zero(); *offsets.last().unwrap()];
        for (l, w) in layers.iter().zip(offsets.windows(2)) {
            l.init(&mut params[w[0]..w[1]], rng);
        }
        Ok(Self {
            layers,
            offsets,
            group_size,
            params,
        })
    }

    pub fn in_dim(&self) -> usize {
        self.layers[0].in_dim
    }
    pub fn hidden(&self) -> Vec<usize> {
        self.layers[1..].iter().map(|l| l.in_dim).collect()
    }
    pub fn group_size(&self) -> usize {
        self.group_size
    }
    pub fn kind(&self) -> OrthoKind {
        self.layers[0].kind
    }
    pub fn layers(&self) -> &[OrthoLinear] {
        &self.layers
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
        super::assign_params(&mut self.params, p)
    }

    fn layer_params<'a>(&self, params: &'a [T], i: usize) -> &'a [T] {
        &params[self.offsets[i]..self.offsets[i + 1]]
    }

    /// Every layer's orthonormal weight; layers are independent, so they run in parallel.
    pub fn weights(&self, mode: Mode) -> Result<Weights<T>> {
        let per_layer: Vec<_> = (0..self.layers.len())
            .into_par_iter()
            .map(|i| self.layers[i].weight(self.layer_params(&self.params, i), mode))
            .collect::<Result<_>>()?;
        let (qs, caches) = per_layer.into_iter().unzip();
        Ok(Weights { qs, caches })
    }

    fn check_input(&self, x: MatView<'_, T>) -> Result<()> {
        super::check_input(x, self.in_dim())
    }

    /// f(x) for each row of `x`, with the tape for a backward pass. Activations are kept
    /// unit-major (one column per cell): GroupSort's comparators then run across cells.
    pub fn forward(&self, w: &Weights<T>, x: &Matrix<T>) -> (Vec<T>, Tape<T>) {
        let last = self.layers.len() - 1;
        let mut hidden = Vec::with_capacity(last);
        let mut swaps = Vec::with_capacity(last);
        let mut z = self.layers[0].apply(self.layer_params(&self.params, 0), &w.qs[0], x, Op::T);
        for i in 1..=last {
            swaps.push(groupsort::sort_units(&mut z, self.group_size));
            let next =
                self.layers[i].apply(self.layer_params(&self.params, i), &w.qs[i], &z, Op::N);
            hidden.push(z);
            z = next;
        }
        (z.into_vec(), Tape { hidden, swaps })
    }

    /// Back-propagates dL/df (one value per row of `x`, the cells of the forward pass). Adds
    /// parameter gradients into `grad` when given (weights must then come from
    /// `Mode::Train`) and returns dL/dx when asked.
    pub fn backward(
        &self,
        w: &Weights<T>,
        x: &Matrix<T>,
        tape: &Tape<T>,
        df: &[T],
        grad: Option<&mut [T]>,
        need_dx: bool,
    ) -> Option<Matrix<T>> {
        match grad {
            Some(g) => {
                let (mut parts, dx) = self.backward_parts(w, x, tape, df, true, need_dx);
                g.iter_mut().zip(&parts.bias).for_each(|(a, b)| *a += *b);
                parts.bias.iter_mut().for_each(|v| *v = T::zero());
                self.finish_grad(w, parts, g);
                dx
            }
            None => self.backward_parts(w, x, tape, df, false, need_dx).1,
        }
    }

    /// Back-propagation up to the orthonormal weights: dL/dQ per layer, bias gradients (in a
    /// full-length vector, zeros elsewhere) and dL/dx. Partial results from row blocks
    /// add up; [`Self::finish_grad`] then maps dL/dQ to the raw parameters once.
    fn backward_parts(
        &self,
        w: &Weights<T>,
        x: &Matrix<T>,
        tape: &Tape<T>,
        df: &[T],
        want_params: bool,
        need_dx: bool,
    ) -> (GradParts<T>, Option<Matrix<T>>) {
        let n = df.len();
        let last = self.layers.len() - 1;
        let mut dz = Matrix::from_vec(1, n, df.to_vec()).expect("df length");
        let mut parts = GradParts {
            dqs: Vec::new(),
            bias: if want_params {
                vec![T::zero(); self.n_params()]
            } else {
                Vec::new()
            },
        };
        let mut dqs_rev = Vec::new();
        let mut dx = None;
        for i in (0..=last).rev() {
            let l = &self.layers[i];
            let (input, op) = if i > 0 {
                (&tape.hidden[i - 1], Op::N)
            } else {
                (x, Op::T)
            };
            let want_dinput = i > 0 || need_dx;
            let out = if want_params {
                let mut dq = Matrix::zeros(l.out_dim, l.in_dim);
                let gl = &mut parts.bias[self.offsets[i]..self.offsets[i + 1]];
                let out =
                    l.apply_backward(&w.qs[i], input, op, &dz, Some((&mut dq, gl)), want_dinput);
                dqs_rev.push(dq);
                out
            } else {
                l.apply_backward(&w.qs[i], input, op, &dz, None, want_dinput)
            };
            match out {
                Some(mut d) if i > 0 => {
                    groupsort::unsort_units(&mut d, &tape.swaps[i - 1]);
                    dz = d;
                }
                other => dx = other,
            }
        }
        dqs_rev.reverse();
        parts.dqs = dqs_rev;
        (parts, dx)
    }

    /// Adds dL/d(raw parameters) into `grad` from summed [`GradParts`] (layers in parallel).
    fn finish_grad(&self, w: &Weights<T>, parts: GradParts<T>, grad: &mut [T]) {
        let per_layer: Vec<Vec<T>> = (0..self.layers.len())
            .into_par_iter()
            .map(|i| {
                let lp = self.layer_params(&self.params, i);
                let mut g = parts.bias[self.offsets[i]..self.offsets[i + 1]].to_vec();
                self.layers[i].weight_backward(lp, &w.caches[i], &parts.dqs[i], &mut g);
                g
            })
            .collect();
        for (i, g) in per_layer.iter().enumerate() {
            grad[self.offsets[i]..self.offsets[i + 1]]
                .iter_mut()
                .zip(g)
                .for_each(|(a, b)| *a += *b);
        }
    }

    /// Values f(x) and the parameter gradient of sum_i df_i f(x_i) on a training batch,
    /// split into `n_blocks` row blocks processed in parallel and summed in order.
    pub fn batch_grad(
        &self,
        w: &Weights<T>,
        x: &Matrix<T>,
        df: &[T],
        n_blocks: usize,
    ) -> (Vec<T>, Vec<T>) {
        let ranges = row_ranges(x.rows(), n_blocks);
        let parts = map_ranges(&ranges, |r| {
            let xb = x.rows_range(r.start, r.end);
            let (f, tape) = self.forward(w, &xb);
            (f, self.backward_parts(w, &xb, &tape, &df[r], true, false).0)
        });
        let mut values = Vec::with_capacity(x.rows());
        let mut total: Option<GradParts<T>> = None;
        for (f, p) in parts {
            values.extend(f);
            total = Some(match total {
                None => p,
                Some(mut t) => {
                    t.add(&p);
                    t
                }
            });
        }
        let mut grad = vec![T::zero(); self.n_params()];
        if let Some(t) = total {
            grad.iter_mut().zip(&t.bias).for_each(|(a, b)| *a += *b);
            let t = GradParts {
                bias: vec![T::zero(); self.n_params()],
                ..t
            };
            self.finish_grad(w, t, &mut grad);
        }
        (values, grad)
    }

    fn map_blocks<R: Send>(
        &self,
        x: MatView<'_, T>,
        f: impl Fn(&Matrix<T>) -> R + Sync + Send,
    ) -> Vec<R> {
        let n_blocks = x.rows().div_ceil(EVAL_BLOCK);
        map_ranges(&row_ranges(x.rows(), n_blocks), |r| {
            f(&x.rows_range(r.start, r.end))
        })
    }

    /// f(x) row by row (inference weights), in parallel row blocks.
    pub fn value(&self, x: MatView<'_, T>) -> Result<Vec<T>> {
        self.check_input(x)?;
        let w = self.weights(Mode::Eval)?;
        Ok(self.map_blocks(x, |b| self.forward(&w, b).0).concat())
    }

    /// grad_x f(x) for every row (inference weights), in parallel row blocks.
    pub fn input_gradient(&self, x: MatView<'_, T>) -> Result<Matrix<T>> {
        self.check_input(x)?;
        let w = self.weights(Mode::Eval)?;
        let blocks = self.map_blocks(x, |b| {
            let (_, tape) = self.forward(&w, b);
            let ones = vec![T::one(); b.rows()];
            self.backward(&w, b, &tape, &ones, None, true)
                .expect("dx requested")
                .into_vec()
        });
        Matrix::from_vec(x.rows(), x.cols(), blocks.concat())
    }

    /// sum_i df_i * f(x_i): its value per row, its gradient with respect to the parameters
    /// and to x (training weights). The building block of every loss on f.
    pub fn value_and_grad(&self, x: &Matrix<T>, df: &[T]) -> Result<(Vec<T>, Vec<T>, Matrix<T>)> {
        self.check_input(x.view())?;
        if df.len() != x.rows() {
            return Err(Error::shape(
                "df",
                format!("({},)", x.rows()),
                format!("({},)", df.len()),
            ));
        }
        let w = self.weights(Mode::Train)?;
        let (f, tape) = self.forward(&w, x);
        let mut grad = vec![T::zero(); self.n_params()];
        let dx = self
            .backward(&w, x, &tape, df, Some(&mut grad), true)
            .expect("dx requested");
        Ok((f, grad, dx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::dot;
    use crate::testutil::{check_grad, probe};

    fn random_potential(
        d: usize,
        hidden: &[usize],
        gs: usize,
        kind: OrthoKind,
        seed: u64,
    ) -> Potential<f64> {
        Potential::new(d, hidden, gs, kind, &mut Rng::new(seed)).unwrap()
    }

    const KINDS: [OrthoKind; 2] = [OrthoKind::Cayley, OrthoKind::Bjorck { train_iters: 6 }];

    #[test]
    fn whole_potential_gradients_match_finite_differences() {
        for kind in KINDS {
            // tall first layer (d < width) and wide first layer (d > width)
            for &(d, ref hidden) in &[(3usize, vec![8usize, 8]), (12, vec![8, 4])] {
                let mut pot = random_potential(d, hidden, 4, kind, 41);
                let mut rng = Rng::new(42);
                let x = Matrix::from_fn(5, d, |_, _| rng.uniform(-1.0, 1.0));
                let c = probe(5, 43);
                let (_, grad, dx) = pot.value_and_grad(&x, &c).unwrap();
                let p0 = pot.params().to_vec();
                let name = format!("{} potential d={d}", kind.name());
                let mut fp = |p: &[f64]| {
                    pot.set_params(p).unwrap();
                    let w = pot.weights(Mode::Train).unwrap();
                    dot(&pot.forward(&w, &x).0, &c)
                };
                check_grad(&format!("{name} params"), &mut fp, &p0, &grad, 1e-5, 1e-8);
                pot.set_params(&p0).unwrap();
                let w = pot.weights(Mode::Train).unwrap();
                let mut fx = |v: &[f64]| {
                    dot(
                        &pot.forward(&w, &Matrix::from_vec(5, d, v.to_vec()).unwrap())
                            .0,
                        &c,
                    )
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

    #[test]
    fn blocked_batch_gradient_equals_the_whole_batch_gradient() {
        for kind in KINDS {
            let pot = random_potential(6, &[8, 8], 4, kind, 44);
            let mut rng = Rng::new(45);
            let x = Matrix::from_fn(11, 6, |_, _| rng.uniform(-1.0, 1.0));
            let c = probe(11, 46);
            let (f, grad, _) = pot.value_and_grad(&x, &c).unwrap();
            let w = pot.weights(Mode::Train).unwrap();
            for blocks in [1, 2, 3, 11] {
                let (fb, gb) = pot.batch_grad(&w, &x, &c, blocks);
                let ferr = fb
                    .iter()
                    .zip(&f)
                    .fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
                assert!(ferr < 1e-12, "values with {blocks} blocks: {ferr}");
                let err = gb
                    .iter()
                    .zip(&grad)
                    .fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
                assert!(err < 1e-12, "{} with {blocks} blocks: {err}", kind.name());
            }
        }
    }

    #[test]
    fn potential_is_one_lipschitz_with_unit_gradient_norm() {
        for kind in [OrthoKind::Cayley, OrthoKind::Bjorck { train_iters: 20 }] {
            for &d in &[2usize, 64, 300] {
                let mut rng = Rng::new(50 + d as u64);
                let mut pot =
                    Potential::<f32>::new(d, &[64, 64, 64, 64], 16, kind, &mut rng).unwrap();
                // Random parameter updates: the constraint must not depend on the init.
                for p in pot.params_mut() {
                    *p += rng.uniform::<f32>(-0.2, 0.2);
                }
                let x = Matrix::from_fn(400, d, |_, _| rng.uniform(-3.0, 3.0));
                let y = Matrix::from_fn(400, d, |_, _| rng.uniform(-3.0, 3.0));
                let fx = pot.value(x.view()).unwrap();
                let fy = pot.value(y.view()).unwrap();
                for i in 0..400 {
                    let dist: f32 = x
                        .row(i)
                        .iter()
                        .zip(y.row(i))
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum::<f32>()
                        .sqrt();
                    assert!(
                        (fx[i] - fy[i]).abs() <= dist * (1.0 + 1e-4),
                        "{} d={d}",
                        kind.name()
                    );
                }
                let g = pot.input_gradient(x.view()).unwrap();
                for i in 0..400 {
                    let norm = dot(g.row(i), g.row(i)).sqrt();
                    assert!(
                        norm <= 1.0 + 1e-4,
                        "{} d={d}: ||grad f|| = {norm}",
                        kind.name()
                    );
                    // Square orthogonal layers and GroupSort preserve the norm backwards; a
                    // first layer of another shape projects part of it away.
                    if d == 64 {
                        assert!(
                            norm >= 1.0 - 1e-4,
                            "{} d={d}: ||grad f|| = {norm}",
                            kind.name()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn nearby_pairs_respect_the_lipschitz_bound() {
        // Close pairs probe the local slope, where a violation would show first.
        let mut rng = Rng::new(60);
        let pot = Potential::<f64>::new(10, &[32, 32], 4, OrthoKind::Cayley, &mut rng).unwrap();
        let x = Matrix::from_fn(500, 10, |_, _| rng.uniform(-2.0, 2.0));
        let y = Matrix::from_fn(500, 10, |i, j| {
            x.get(i, j) + rng.uniform::<f64>(-1e-3, 1e-3)
        });
        let (fx, fy) = (pot.value(x.view()).unwrap(), pot.value(y.view()).unwrap());
        let mut max_ratio = 0.0_f64;
        for i in 0..500 {
            let dist = x
                .row(i)
                .iter()
                .zip(y.row(i))
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
                .sqrt();
            max_ratio = max_ratio.max((fx[i] - fy[i]).abs() / dist);
        }
        assert!(max_ratio <= 1.0 + 1e-9, "local slope {max_ratio}");
        assert!(
            max_ratio > 0.5,
            "slope {max_ratio}: potential is suspiciously flat"
        );
    }

    #[test]
    fn rejects_bad_configuration_and_input() {
        let mut rng = Rng::new(0);
        assert!(Potential::<f32>::new(0, &[64], 16, OrthoKind::Cayley, &mut rng).is_err());
        assert!(Potential::<f32>::new(2, &[64, 0], 16, OrthoKind::Cayley, &mut rng).is_err());
        assert!(Potential::<f32>::new(2, &[64, 60], 16, OrthoKind::Cayley, &mut rng).is_err());
        let pot = Potential::<f32>::new(2, &[8], 2, OrthoKind::Cayley, &mut rng).unwrap();
        assert!(matches!(
            pot.value(Matrix::zeros(3, 5).view()),
            Err(Error::Shape { name: "x", .. })
        ));
    }
}
