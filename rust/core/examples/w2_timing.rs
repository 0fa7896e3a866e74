//! Milliseconds per W2 outer iteration (10 g steps and one f step, batch 256) without
//! Python: `cargo run --release --example w2_timing -- ITERS D...` (best of 3 runs).

use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use w1ot_core::linalg::Matrix;
use w1ot_core::rng::Rng;
use w1ot_core::solvers::{silent, w2};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let iters: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let dims: Vec<usize> = if args.len() > 2 {
        args[2..].iter().filter_map(|s| s.parse().ok()).collect()
    } else {
        vec![2, 10, 50, 250, 1000]
    };
    for threads in [1, 2] {
        for &d in &dims {
            let ms = w1ot_core::parallel::with_threads(threads, || time(d, iters)).unwrap();
            let gflop = w2::outer_iteration_flops(d, &[64; 4], 256, 10) as f64 / 1e9;
            println!(
                "threads {threads} d {d:5}: {ms:7.2} ms per outer iteration, {gflop:.3} GFLOP, {:.1} GFLOP/s",
                gflop / ms * 1e3
            );
        }
    }
}

fn time(d: usize, iters: usize) -> f64 {
    let mut rng = Rng::new(0);
    let x = Matrix::<f32>::from_fn(2000, d, |_, _| rng.normal());
    let y = Matrix::<f32>::from_fn(2000, d, |_, _| rng.normal::<f32>() + 1.0);
    let cfg = w2::W2Config {
        iters,
        ..Default::default()
    };
    (0..3)
        .map(|_| {
            let (mut f, mut g) = w2::networks(d, &cfg, &mut rng).unwrap();
            let t = Instant::now();
            w2::train(
                &mut f,
                &mut g,
                x.view(),
                y.view(),
                None,
                &cfg,
                &mut rng,
                &mut silent,
            )
            .unwrap();
            t.elapsed().as_secs_f64() * 1e3 / iters as f64
        })
        .fold(f64::INFINITY, f64::min)
}
