//! Run-time choice of the vector unit for hot element-wise loops.
//!
//! The wheel targets baseline x86-64 (SSE2), but most machines it runs on have AVX2 or
//! AVX-512. [`widest`] runs a closure compiled for the widest unit the CPU reports, so loops
//! written over fixed-size lane arrays vectorise to 8 or 16 lanes there. Kernels called this
//! way must be `#[inline(always)]` so that they are compiled inside the wide wrapper, and
//! must not depend on the lane width for their results (IEEE sqrt and division are exact in
//! every width, and the kernels fix their own summation order), so every machine computes
//! the same bits.

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
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let avx2 = has!("avx2") && has!("fma");
        if avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512vl") {
            // SAFETY: the CPU has every feature the wrapper enables (checked just above).
            return unsafe { run_avx512(f) };
        }
        if avx2 {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { run_avx2(f) };
        }
    }
    f()
}

/// Lanes of the partial sums in the wide kernels: 16 fill an AVX-512 register of f32.
pub const LANES: usize = 16;
