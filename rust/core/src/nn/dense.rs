//! Dense affine layer y = x W^T + b, parameters laid out as [W (out x in, row-major), b].

use crate::linalg::{Matrix, Op, Real, add_col_sums, add_row_vector, gemm, matmul};
use crate::rng::Rng;

#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    pub in_dim: usize,
    pub out_dim: usize,
}

impl Dense {
    pub fn new(in_dim: usize, out_dim: usize) -> Self {
        Self { in_dim, out_dim }
    }

    pub fn n_params(&self) -> usize {
        self.out_dim * self.in_dim + self.out_dim
    }

    /// PyTorch's default: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    pub fn init<T: Real>(&self, params: &mut [T], rng: &mut Rng) {
        let bound = 1.0 / (self.in_dim as f64).sqrt();
        params
            .iter_mut()
            .for_each(|p| *p = rng.uniform(-bound, bound));
    }

    pub fn weight<T: Real>(&self, params: &[T]) -> Matrix<T> {
        Matrix::from_vec(
            self.out_dim,
            self.in_dim,
            params[..self.out_dim * self.in_dim].to_vec(),
        )
        .expect("dense weight slice")
    }

    pub fn forward<T: Real>(&self, params: &[T], x: &Matrix<T>) -> Matrix<T> {
        let w = self.weight(params);
        let mut y = matmul(x, Op::N, &w, Op::T);
        add_row_vector(&mut y, &params[self.out_dim * self.in_dim..]);
        y
    }

    /// Accumulates parameter gradients into `grad` and returns dL/dx when asked.
    pub fn backward<T: Real>(
        &self,
        params: &[T],
        x: &Matrix<T>,
        dy: &Matrix<T>,
        grad: &mut [T],
        need_dx: bool,
    ) -> Option<Matrix<T>> {
        let nw = self.out_dim * self.in_dim;
        let (gw, gb) = grad.split_at_mut(nw);
        let mut dw = Matrix::from_vec(self.out_dim, self.in_dim, gw.to_vec()).expect("dense grad");
        gemm(T::one(), dy, Op::T, x, Op::N, T::one(), &mut dw);
        gw.copy_from_slice(dw.as_slice());
        add_col_sums(dy, gb);
        need_dx.then(|| matmul(dy, Op::N, &self.weight(params), Op::N))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::dot;
    use crate::testutil::{check_grad, probe};

    #[test]
    fn gradients_match_finite_differences() {
        let layer = Dense::new(5, 3);
        let mut rng = Rng::new(0);
        let mut p = vec![0.0_f64; layer.n_params()];
        layer.init(&mut p, &mut rng);
        let x = Matrix::from_fn(4, 5, |_, _| rng.uniform(-1.0, 1.0));
        let c = probe(4 * 3, 9);
        let dy = Matrix::from_vec(4, 3, c.clone()).unwrap();
        let mut g = vec![0.0; layer.n_params()];
        let dx = layer.backward(&p, &x, &dy, &mut g, true).unwrap();

        let mut fp = |q: &[f64]| dot(layer.forward(q, &x).as_slice(), &c);
        check_grad("dense params", &mut fp, &p, &g, 1e-6, 1e-9);
        let mut fx = |xv: &[f64]| {
            let xm = Matrix::from_vec(4, 5, xv.to_vec()).unwrap();
            dot(layer.forward(&p, &xm).as_slice(), &c)
        };
        check_grad(
            "dense input",
            &mut fx,
            x.as_slice(),
            dx.as_slice(),
            1e-6,
            1e-9,
        );
    }

    #[test]
    fn init_respects_fan_in_bound() {
        let layer = Dense::new(16, 8);
        let mut p = vec![0.0_f32; layer.n_params()];
        layer.init(&mut p, &mut Rng::new(1));
        assert!(p.iter().all(|v| v.abs() <= 0.25));
        assert!(p.iter().any(|v| v.abs() > 0.2));
    }
}
