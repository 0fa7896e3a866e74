//! Run-time choice of the vector unit for hot element-wise loops.
//!
//! The wheel targets baseline x86-64 (SSE2), but most machines it runs on have AVX2 or
//! AVX-512. [`widest`] runs a closure compiled for the widest unit the CPU reports, so loops
//! written over fixed-size lane arrays vectorise to 8 or 16 lanes there. Kernels called this
//! way must be `#[inline(always)]` so that they are compiled inside the wide wrapper, and
//! must not depend on the lane width for their results (IEEE sqrt and division are exact in
//! every width, and the kernels fix their own summation order), so every machine computes
//! the same bits.

use std::cell::Cell;

/// Vector units [`widest`] may use, narrowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Baseline,
    Avx2,
    Avx512,
}

thread_local! {
    static CAP: Cell<Level> = const { Cell::new(Level::Avx512) };
}

/// Runs `f` with [`widest`] on this thread limited to `level`, so that tests can compare
/// the paths on one machine.
pub fn with_cap<R>(level: Level, f: impl FnOnce() -> R) -> R {
    let old = CAP.replace(level);
    let out = f();
    CAP.set(old);
    out
}

/// The widest unit this CPU has, within this thread's cap.
pub fn level() -> Level {
    let cap = CAP.get();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let avx2 = has!("avx2") && has!("fma");
        if cap >= Level::Avx512 && avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512vl") {
            return Level::Avx512;
        }
        if cap >= Level::Avx2 && avx2 {
            return Level::Avx2;
        }
    }
    let _ = cap;
    Level::Baseline
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Calls `f` compiled for AVX-512 or AVX2 where the CPU has them, else for the baseline.
#[inline(always)]
pub fn widest<R>(f: impl FnOnce() -> R) -> R {
    match level() {
        // SAFETY: `level` returns Avx512 only when the CPU has every feature the wrapper
        // enables, and Avx2 only when it has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => unsafe { run_avx512(f) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => unsafe { run_avx2(f) },
        _ => f(),
    }
}

/// Lanes of the partial sums in the wide kernels: 16 fill an AVX-512 register of f32.
pub const LANES: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::{Matrix, inverse};
    use crate::losses::energy_distance_grad;
    use crate::nn::groupsort::{sort_units, unsort_units};
    use crate::optim::{Adam, AdamConfig};
    use crate::rng::Rng;

    /// Everything the wide kernels compute, as bits.
    fn kernels() -> Vec<u32> {
        let mut rng = Rng::new(3);
        // 37 rows: a remainder after the 16-lane chunks in every kernel.
        let x = Matrix::<f32>::from_fn(37, 5, |_, _| rng.normal());
        let y = Matrix::<f32>::from_fn(29, 5, |_, _| rng.normal());
        // One block: it runs on this thread, under its cap.
        let (e, g) = energy_distance_grad(&x, &y, &crate::parallel::row_ranges(37, 1));
        let mut z = Matrix::<f32>::from_fn(32, 300, |_, _| rng.normal());
        let swaps = sort_units(&mut z, 16);
        let mut dz = Matrix::<f32>::from_fn(32, 300, |_, _| rng.normal());
        unsort_units(&mut dz, &swaps);
        let mut adam = Adam::new(1001, AdamConfig::default()).unwrap();
        let mut p: Vec<f32> = (0..1001).map(|_| rng.normal()).collect();
        let grads: Vec<f32> = (0..1001).map(|_| rng.normal()).collect();
        adam.step(&mut p, &grads, 1e-2);
        adam.step(&mut p, &grads, 1e-2);
        // 37 columns: the row updates of the inverse have a remainder too.
        let k = Matrix::<f32>::from_fn(37, 37, |_, _| rng.uniform(-1.0, 1.0));
        let mut a = k.transpose();
        a.axpy(-1.0, &k);
        (0..37).for_each(|i| a.set(i, i, 1.0));
        let inv = inverse(&a).unwrap();
        std::iter::once(e)
            .chain(g.into_vec())
            .chain(z.into_vec())
            .chain(dz.into_vec())
            .chain(p)
            .chain(inv.into_vec())
            .map(f32::to_bits)
            .collect()
    }

    #[test]
    fn every_vector_unit_gives_the_same_bits() {
        let base = with_cap(Level::Baseline, || {
            assert_eq!(level(), Level::Baseline);
            kernels()
        });
        for cap in [Level::Avx2, Level::Avx512] {
            let (got, used) = with_cap(cap, || (kernels(), level()));
            assert!(used <= cap);
            assert!(got == base, "{used:?} differs from the baseline");
        }
    }
}
