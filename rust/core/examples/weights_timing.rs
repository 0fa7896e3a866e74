//! Time of the orthonormal weights of the default potential (the per-step, batch-independent
//! cost): `cargo run --release --example weights_timing -- D`.

use std::time::Instant;
use w1ot_core::linalg::{Matrix, inverse};
use w1ot_core::nn::{Mode, OrthoKind, Potential};
use w1ot_core::rng::Rng;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let d: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let mut rng = Rng::new(0);
    let pot = Potential::<f32>::new(d, &[64; 4], 16, OrthoKind::Cayley, &mut rng).unwrap();
    let reps = 500;
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(pot.weights(Mode::Train).unwrap());
    }
    println!(
        "weights (5 Cayley layers, d={d}): {:.1} us",
        t.elapsed().as_secs_f64() * 1e6 / reps as f64
    );
    let a = Matrix::<f32>::from_fn(
        64,
        64,
        |i, j| if i == j { 2.0 } else { rng.uniform(-0.1, 0.1) },
    );
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(inverse(&a).unwrap());
    }
    println!(
        "inverse 64x64: {:.1} us",
        t.elapsed().as_secs_f64() * 1e6 / reps as f64
    );
}
