//! Quick per-iteration timing of both W1 stages:
//! `cargo run --release --example timing -- D ITERS [energy|gan|mmd]`.

use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use w1ot_core::linalg::Matrix;
use w1ot_core::nn::Potential;
use w1ot_core::rng::Rng;
use w1ot_core::solvers::{silent, w1};

fn main() {
    let d: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let iters: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let loss = match std::env::args().nth(3).as_deref() {
        Some("gan") => w1::StepLoss::Gan,
        Some("mmd") => w1::StepLoss::Mmd,
        _ => w1::StepLoss::Energy,
    };
    let mut rng = Rng::new(0);
    let z = Matrix::<f32>::from_fn(512, 64, |_, _| rng.normal());
    for gs in [16usize] {
        let t = Instant::now();
        for _ in 0..1000 {
            std::hint::black_box(w1ot_core::nn::groupsort::forward(&z, gs));
        }
        println!(
            "groupsort 512x64 gs={gs}: {:.1} us",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    {
        let a = Matrix::<f32>::from_fn(256, d, |_, _| rng.normal());
        let b = Matrix::<f32>::from_fn(256, d, |_, _| rng.normal());
        let ranges = w1ot_core::parallel::row_ranges(256, rayon::current_num_threads());
        let t = Instant::now();
        for _ in 0..100 {
            std::hint::black_box(w1ot_core::losses::energy_distance_grad(&a, &b, &ranges));
        }
        println!(
            "energy distance + gradient 256x256, d={d}: {:.3} ms",
            t.elapsed().as_secs_f64() * 10.0
        );
    }
    let x = Matrix::<f32>::from_fn(5000, d, |_, _| rng.normal());
    let y = Matrix::<f32>::from_fn(5000, d, |_, j| {
        rng.normal::<f32>() + if j == 0 { 2.0 } else { 0.0 }
    });
    let pcfg = w1::PotentialConfig {
        iters,
        ..Default::default()
    };
    let mut pot = Potential::new(d, &pcfg.hidden, pcfg.group_size, pcfg.kind, &mut rng).unwrap();
    let t = Instant::now();
    w1::train_potential(
        &mut pot,
        x.view(),
        y.view(),
        None,
        &pcfg,
        &mut rng,
        &mut silent,
    )
    .unwrap();
    let tp = t.elapsed().as_secs_f64() / iters as f64;
    let scfg = w1::StepConfig {
        iters,
        loss,
        ..Default::default()
    };
    let (mut eta, mut disc) = w1::step_networks(d, &scfg, &mut rng).unwrap();
    let t = Instant::now();
    let u = w1::directions(&pot, x.view()).unwrap();
    let tdir = t.elapsed().as_secs_f64();
    let t = Instant::now();
    w1::train_step(
        &mut eta,
        &mut disc,
        x.view(),
        &u,
        y.view(),
        None,
        &scfg,
        &mut rng,
        &mut silent,
    )
    .unwrap();
    let ts = t.elapsed().as_secs_f64() / iters as f64;
    println!(
        "d={d} threads={} potential {:.3} ms/iter, directions(5000) {:.1} ms, {loss:?} step {:.3} ms/iter",
        rayon::current_num_threads(),
        tp * 1e3,
        tdir * 1e3,
        ts * 1e3
    );
}
