//! Seeded randomness: one generator type for initialisation and batch sampling, so the
//! same seed gives the same numbers on every platform (xoshiro256++ is specified bit for bit).

use rand::{Rng as _, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::linalg::Real;

#[derive(Clone, Debug)]
pub struct Rng(Xoshiro256PlusPlus);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(Xoshiro256PlusPlus::seed_from_u64(seed))
    }

    /// An independent stream derived from this one (e.g. one per model in a fit).
    pub fn fork(&mut self) -> Self {
        Rng::new(self.0.random())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.random()
    }

    /// Uniform on [lo, hi).
    pub fn uniform<T: Real>(&mut self, lo: f64, hi: f64) -> T {
        let u: f64 = self.0.random();
        T::c(lo + (hi - lo) * u)
    }

    /// Standard normal by Box-Muller (used only by tests and toy data, never in a hot loop).
    pub fn normal<T: Real>(&mut self) -> T {
        let u1: f64 = 1.0 - self.0.random::<f64>();
        let u2: f64 = self.0.random();
        T::c((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos())
    }

    /// Uniform integer in 0..n (unbiased).
    pub fn below(&mut self, n: usize) -> usize {
        self.0.random_range(0..n)
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<X>(&mut self, xs: &mut [X]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i + 1);
            xs.swap(i, j);
        }
    }

    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        self.shuffle(&mut p);
        p
    }
}

/// Epoch-style sampling without replacement, as a shuffled data loader with `drop_last`:
/// every index appears once per epoch, the last incomplete batch is dropped and a fresh
/// permutation starts the next epoch.
#[derive(Clone, Debug)]
pub struct EpochSampler {
    perm: Vec<usize>,
    pos: usize,
    batch: usize,
}

impl EpochSampler {
    /// `n` items in batches of `batch`; the caller guarantees `1 <= batch <= n`.
    pub fn new(n: usize, batch: usize, rng: &mut Rng) -> Self {
        assert!(
            batch >= 1 && batch <= n,
            "EpochSampler: need 1 <= batch <= n"
        );
        Self {
            perm: rng.permutation(n),
            pos: 0,
            batch,
        }
    }

    pub fn next_batch(&mut self, rng: &mut Rng) -> &[usize] {
        if self.pos + self.batch > self.perm.len() {
            rng.shuffle(&mut self.perm);
            self.pos = 0;
        }
        let b = &self.perm[self.pos..self.pos + self.batch];
        self.pos += self.batch;
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_different_seed_different_numbers() {
        let a: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let c: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(8);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn uniform_stays_in_range_and_has_right_mean() {
        let mut r = Rng::new(1);
        let xs: Vec<f64> = (0..20_000).map(|_| r.uniform(-2.0, 3.0)).collect();
        assert!(xs.iter().all(|&x| (-2.0..3.0).contains(&x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.05, "mean {mean}");
    }

    #[test]
    fn sampler_covers_each_index_once_per_epoch() {
        let mut r = Rng::new(3);
        let mut s = EpochSampler::new(10, 3, &mut r);
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.extend_from_slice(s.next_batch(&mut r));
        }
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 9, "an epoch must not repeat an index");
        // The fourth batch starts a new epoch (one item dropped, as drop_last does).
        assert_eq!(s.next_batch(&mut r).len(), 3);
    }
}
