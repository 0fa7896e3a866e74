//! Adam (PyTorch semantics, L2-style weight decay) and the cosine-annealing schedule.

use crate::error::{Error, Result};
use crate::linalg::Real;
use crate::simd::widest;

/// NaN-rejecting range checks for hyper-parameters.
fn positive(x: f64) -> bool {
    x > 0.0 && x.is_finite()
}

fn non_negative(x: f64) -> bool {
    x >= 0.0 && x.is_finite()
}

#[derive(Clone, Debug, PartialEq)]
pub struct AdamConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl AdamConfig {
    pub fn validate(&self) -> Result<()> {
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::invalid(name, format!("must be in [0, 1), got {b}")));
            }
        }
        if !positive(self.eps) {
            return Err(Error::invalid(
                "eps",
                format!("must be > 0, got {}", self.eps),
            ));
        }
        if !non_negative(self.weight_decay) {
            return Err(Error::invalid(
                "weight_decay",
                format!("must be >= 0, got {}", self.weight_decay),
            ));
        }
        Ok(())
    }
}

/// First and second moment estimates over one flat parameter vector.
#[derive(Clone, Debug)]
pub struct Adam<T> {
    pub config: AdamConfig,
    m: Vec<T>,
    v: Vec<T>,
    t: u64,
}

impl<T: Real> Adam<T> {
    pub fn new(n_params: usize, config: AdamConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            m: vec![T::zero(); n_params],
            v: vec![T::zero(); n_params],
            t: 0,
        })
    }

    pub fn steps(&self) -> u64 {
        self.t
    }

    /// Number of parameters this optimiser tracks.
    pub fn len(&self) -> usize {
        self.m.len()
    }

    pub fn is_empty(&self) -> bool {
        self.m.is_empty()
    }

    /// One update: g += wd p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    /// p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
    pub fn step(&mut self, params: &mut [T], grads: &[T], lr: f64) {
        assert_eq!(params.len(), self.m.len(), "Adam: parameter count changed");
        assert_eq!(grads.len(), self.m.len(), "Adam: gradient length");
        self.t += 1;
        let c = &self.config;
        // 1 - beta in f64 first: in f32, 1 - 0.999 is off by 1e-5 relative.
        let (b1, b2) = (T::c(c.beta1), T::c(c.beta2));
        let (one_b1, one_b2) = (T::c(1.0 - c.beta1), T::c(1.0 - c.beta2));
        let bc1 = 1.0 - c.beta1.powi(self.t as i32);
        let bc2 = 1.0 - c.beta2.powi(self.t as i32);
        let step = T::c(lr / bc1);
        let inv_sqrt_bc2 = T::c(1.0 / bc2.sqrt());
        let (eps, wd) = (T::c(c.eps), T::c(c.weight_decay));
        let (ms, vs) = (&mut self.m, &mut self.v);
        // Element-wise with exact sqrt and division, so the wide build gives the same bits.
        widest(
            #[inline(always)]
            || {
                for (((p, &g), m), v) in params.iter_mut().zip(grads).zip(ms).zip(vs) {
                    let g = g + wd * *p;
                    *m = b1 * *m + one_b1 * g;
                    *v = b2 * *v + one_b2 * g * g;
                    *p -= step * *m / (v.sqrt() * inv_sqrt_bc2 + eps);
                }
            },
        );
    }
}

/// lr_k = lr_min + (lr_max - lr_min) (1 + cos(pi k / K)) / 2, for k = 0..=K
/// (PyTorch's CosineAnnealingLR with T_max = K and eta_min = lr_min).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineSchedule {
    pub lr_max: f64,
    pub lr_min: f64,
    pub total: usize,
}

impl CosineSchedule {
    pub fn new(lr_max: f64, lr_min: f64, total: usize) -> Result<Self> {
        if !positive(lr_max) {
            return Err(Error::invalid(
                "lr",
                format!("must be a positive number, got {lr_max}"),
            ));
        }
        if !non_negative(lr_min) || lr_min > lr_max {
            return Err(Error::invalid(
                "lr_min",
                format!("must be in [0, lr], got {lr_min}"),
            ));
        }
        Ok(Self {
            lr_max,
            lr_min,
            total,
        })
    }

    pub fn at(&self, k: usize) -> f64 {
        if self.total == 0 {
            return self.lr_max;
        }
        let frac = (k.min(self.total)) as f64 / self.total as f64;
        self.lr_min
            + (self.lr_max - self.lr_min) * (1.0 + (std::f64::consts::PI * frac).cos()) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_first_steps_match_hand_computation() {
        // Two steps on p = [1.0, -2.0] with constant gradients g = [0.5, -1.0],
        // betas (0.5, 0.5), eps 1e-8, weight decay 0.1, lr 0.01 - worked out by hand:
        // step 1: g' = g + 0.1 p = [0.6, -1.2]; m = 0.5 g' = [0.3, -0.6]; v = 0.5 g'^2 = [0.18, 0.72]
        //   m_hat = m / 0.5 = g'; v_hat = v / 0.5 = g'^2 -> update = lr * sign(g') (up to eps)
        //   p = [0.99, -1.99]
        // step 2: g' = [0.5 + 0.099, -1.0 - 0.199] = [0.599, -1.199]
        //   m = 0.5*0.3 + 0.5*0.599 = 0.4495; v = 0.5*0.18 + 0.5*0.358801 = 0.2694005
        //   m_hat = 0.4495/0.75 = 0.599333..; v_hat = 0.2694005/0.75 = 0.359200666..
        //   p0 = 0.99 - 0.01 * 0.599333/sqrt(0.3592006667)
        let cfg = AdamConfig {
            beta1: 0.5,
            beta2: 0.5,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let mut adam = Adam::<f64>::new(2, cfg).unwrap();
        let mut p = vec![1.0, -2.0];
        let g = [0.5, -1.0];
        adam.step(&mut p, &g, 0.01);
        assert!(
            (p[0] - 0.99).abs() < 1e-9 && (p[1] + 1.99).abs() < 1e-9,
            "{p:?}"
        );
        adam.step(&mut p, &g, 0.01);
        // Redo step 2 by hand from the exact step-1 value (eps makes it 0.99 + 1.7e-10).
        let p1: f64 = 1.0 - 0.01 * 0.6 / (0.6 + 1e-8);
        let g2 = 0.5 + 0.1 * p1;
        let m_hat = (0.5 * 0.3 + 0.5 * g2) / 0.75;
        let v_hat = (0.5 * 0.18 + 0.5 * g2 * g2) / 0.75;
        let expect0 = p1 - 0.01 * m_hat / (v_hat.sqrt() + 1e-8);
        assert!((p[0] - expect0).abs() < 1e-14, "{} vs {}", p[0], expect0);
        assert!((p[0] - 0.98).abs() < 1e-6, "two unit-sign steps of 0.01");
        assert_eq!(adam.steps(), 2);
    }

    #[test]
    fn adam_minimises_a_quadratic() {
        let mut adam = Adam::<f32>::new(3, AdamConfig::default()).unwrap();
        let mut p = vec![3.0_f32, -2.0, 0.5];
        for _ in 0..3000 {
            let g: Vec<f32> = p.iter().map(|x| 2.0 * (x - 1.0)).collect();
            adam.step(&mut p, &g, 0.01);
        }
        assert!(p.iter().all(|x| (x - 1.0).abs() < 1e-2), "{p:?}");
    }

    #[test]
    fn cosine_schedule_matches_formula_at_known_points() {
        let s = CosineSchedule::new(1e-2, 1e-4, 100).unwrap();
        assert!((s.at(0) - 1e-2).abs() < 1e-15);
        assert!((s.at(50) - (1e-4 + (1e-2 - 1e-4) * 0.5)).abs() < 1e-15);
        assert!(
            (s.at(25) - (1e-4 + (1e-2 - 1e-4) * (1.0 + (std::f64::consts::PI / 4.0).cos()) / 2.0))
                .abs()
                < 1e-15
        );
        assert!((s.at(100) - 1e-4).abs() < 1e-15);
        assert!((s.at(1000) - 1e-4).abs() < 1e-15, "clamped past the end");
    }

    #[test]
    fn rejects_bad_hyperparameters() {
        assert!(CosineSchedule::new(-1.0, 0.0, 10).is_err());
        assert!(CosineSchedule::new(1e-3, 1e-2, 10).is_err());
        let bad = AdamConfig {
            beta1: 1.0,
            ..AdamConfig::default()
        };
        assert!(matches!(
            Adam::<f32>::new(1, bad),
            Err(Error::InvalidArgument { name: "beta1", .. })
        ));
    }
}
