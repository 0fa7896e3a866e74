//! Plain multilayer perceptron: dense layers with a hidden activation and an output
//! activation (softplus for the step size eta, sigmoid for the discriminator).

use super::activation::Activation;
use super::dense::Dense;
use crate::error::{Error, Result};
use crate::linalg::{MatView, Matrix, Real};
use crate::rng::Rng;

/// Rows per chunk in inference.
const EVAL_CHUNK: usize = 8192;

#[derive(Clone, Debug)]
pub struct Mlp<T> {
    layers: Vec<Dense>,
    offsets: Vec<usize>,
    hidden_act: Activation,
    output_act: Activation,
    params: Vec<T>,
}

/// Pre-activations of every layer and its input, for the backward pass.
#[derive(Clone, Debug)]
pub struct MlpTape<T> {
    inputs: Vec<Matrix<T>>,
    pre: Vec<Matrix<T>>,
}

impl<T: Real> Mlp<T> {
    pub fn new(
        dims: &[usize],
        hidden_act: Activation,
        output_act: Activation,
        rng: &mut Rng,
    ) -> Result<Self> {
        if dims.len() < 2 || dims.contains(&0) {
            return Err(Error::invalid(
                "hidden",
                format!("layer widths must be >= 1, got {dims:?}"),
            ));
        }
        let layers: Vec<Dense> = dims.windows(2).map(|w| Dense::new(w[0], w[1])).collect();
        let offsets = super::param_offsets(layers.iter().map(|l| l.n_params()));
        let mut params = vec![T::zero(); *offsets.last().unwrap()];
        for (l, w) in layers.iter().zip(offsets.windows(2)) {
            l.init(&mut params[w[0]..w[1]], rng);
        }
        Ok(Self {
            layers,
            offsets,
            hidden_act,
            output_act,
            params,
        })
    }

    pub fn in_dim(&self) -> usize {
        self.layers[0].in_dim
    }
    pub fn out_dim(&self) -> usize {
        self.layers.last().unwrap().out_dim
    }
    pub fn dims(&self) -> Vec<usize> {
        let mut d: Vec<usize> = self.layers.iter().map(|l| l.in_dim).collect();
        d.push(self.out_dim());
        d
    }
    pub fn activations(&self) -> (Activation, Activation) {
        (self.hidden_act, self.output_act)
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

    fn layer_params(&self, i: usize) -> &[T] {
        &self.params[self.offsets[i]..self.offsets[i + 1]]
    }

    fn check_input(&self, x: MatView<'_, T>) -> Result<()> {
        super::check_input(x, self.in_dim())
    }

    pub fn forward(&self, x: &Matrix<T>) -> (Matrix<T>, MlpTape<T>) {
        let last = self.layers.len() - 1;
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut pre = Vec::with_capacity(self.layers.len());
        let mut h = x.clone();
        for (i, l) in self.layers.iter().enumerate() {
            let z = l.forward(self.layer_params(i), &h);
            let act = if i == last {
                self.output_act
            } else {
                self.hidden_act
            };
            let y = act.forward(&z);
            inputs.push(h);
            pre.push(z);
            h = y;
        }
        (h, MlpTape { inputs, pre })
    }

    /// Adds parameter gradients into `grad` when given; returns dL/dx when asked.
    pub fn backward(
        &self,
        tape: &MlpTape<T>,
        dy: &Matrix<T>,
        grad: Option<&mut [T]>,
        need_dx: bool,
    ) -> Option<Matrix<T>> {
        let last = self.layers.len() - 1;
        let mut grad = grad;
        let mut dh = dy.clone();
        for i in (0..=last).rev() {
            let act = if i == last {
                self.output_act
            } else {
                self.hidden_act
            };
            let dz = act.backward(&tape.pre[i], &dh);
            let want_dx = i > 0 || need_dx;
            let out = match grad.as_deref_mut() {
                Some(g) => self.layers[i].backward(
                    self.layer_params(i),
                    &tape.inputs[i],
                    &dz,
                    &mut g[self.offsets[i]..self.offsets[i + 1]],
                    want_dx,
                ),
                None => want_dx.then(|| {
                    let w = self.layers[i].weight(self.layer_params(i));
                    crate::linalg::matmul(&dz, crate::linalg::Op::N, &w, crate::linalg::Op::N)
                }),
            };
            if i == 0 {
                return out;
            }
            dh = out.expect("hidden layers always return dx");
        }
        unreachable!()
    }

    /// Outputs for every row, in chunks so memory stays bounded.
    pub fn predict(&self, x: MatView<'_, T>) -> Result<Matrix<T>> {
        self.check_input(x)?;
        let mut out = Vec::with_capacity(x.rows() * self.out_dim());
        for s in (0..x.rows()).step_by(EVAL_CHUNK) {
            let chunk = x.rows_range(s, (s + EVAL_CHUNK).min(x.rows()));
            out.extend_from_slice(self.forward(&chunk).0.as_slice());
        }
        Matrix::from_vec(x.rows(), self.out_dim(), out)
    }

    /// <dy, mlp(x)>: output, parameter gradient and input gradient.
    pub fn value_and_grad(
        &self,
        x: &Matrix<T>,
        dy: &Matrix<T>,
    ) -> Result<(Matrix<T>, Vec<T>, Matrix<T>)> {
        self.check_input(x.view())?;
        if dy.shape() != (x.rows(), self.out_dim()) {
            return Err(Error::shape(
                "dy",
                format!("({}, {})", x.rows(), self.out_dim()),
                format!("{:?}", dy.shape()),
            ));
        }
        let (y, tape) = self.forward(x);
        let mut grad = vec![T::zero(); self.n_params()];
        let dx = self
            .backward(&tape, dy, Some(&mut grad), true)
            .expect("dx requested");
        Ok((y, grad, dx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::dot;
    use crate::testutil::{check_grad, probe};

    #[test]
    fn whole_mlp_gradients_match_finite_differences() {
        for (h, o) in [
            (Activation::LeakyRelu(0.01), Activation::Softplus),
            (Activation::LeakyRelu(0.2), Activation::Sigmoid),
            (Activation::Relu, Activation::Identity),
        ] {
            let mut rng = Rng::new(70);
            let mut mlp = Mlp::<f64>::new(&[4, 6, 5, 2], h, o, &mut rng).unwrap();
            let x = Matrix::from_fn(5, 4, |_, _| rng.uniform(-1.0, 1.0));
            let c = probe(10, 71);
            let dy = Matrix::from_vec(5, 2, c.clone()).unwrap();
            let (_, grad, dx) = mlp.value_and_grad(&x, &dy).unwrap();
            let p0 = mlp.params().to_vec();
            let name = format!("mlp {}/{}", h.name(), o.name());
            let mut fp = |p: &[f64]| {
                mlp.set_params(p).unwrap();
                dot(mlp.forward(&x).0.as_slice(), &c)
            };
            check_grad(&format!("{name} params"), &mut fp, &p0, &grad, 1e-5, 1e-8);
            mlp.set_params(&p0).unwrap();
            let mut fx = |v: &[f64]| {
                dot(
                    mlp.forward(&Matrix::from_vec(5, 4, v.to_vec()).unwrap())
                        .0
                        .as_slice(),
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
            // The parameter-free path gives the same input gradient.
            let (_, tape) = mlp.forward(&x);
            assert!(
                mlp.backward(&tape, &dy, None, true)
                    .unwrap()
                    .max_abs_diff(&dx)
                    < 1e-12
            );
        }
    }

    #[test]
    fn output_activation_bounds_the_output() {
        let mut rng = Rng::new(72);
        let eta = Mlp::<f32>::new(
            &[3, 16, 1],
            Activation::LeakyRelu(0.01),
            Activation::Softplus,
            &mut rng,
        )
        .unwrap();
        let d = Mlp::<f32>::new(
            &[3, 16, 1],
            Activation::LeakyRelu(0.01),
            Activation::Sigmoid,
            &mut rng,
        )
        .unwrap();
        let x = Matrix::from_fn(200, 3, |_, _| rng.uniform(-50.0, 50.0));
        assert!(
            eta.predict(x.view())
                .unwrap()
                .as_slice()
                .iter()
                .all(|&v| v >= 0.0)
        );
        assert!(
            d.predict(x.view())
                .unwrap()
                .as_slice()
                .iter()
                .all(|&v| (0.0..=1.0).contains(&v))
        );
    }
}
