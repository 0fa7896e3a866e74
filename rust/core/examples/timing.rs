//! Per-call and per-iteration timings of the hot kernels and of both W1 stages, without
//! Python: `cargo run --release --example timing -- D ITERS [energy|gan|mmd]`.
//! Every figure is the best of several repeats, which is steadier than a mean on a busy
//! machine.

use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use w1ot_core::linalg::{Matrix, inverse};
use w1ot_core::nn::{Mode, Potential, groupsort};
use w1ot_core::parallel::row_ranges;
use w1ot_core::rng::Rng;
use w1ot_core::solvers::{silent, w1};

const REPEATS: usize = 5;

/// Best time of `REPEATS` runs of `calls` calls to `f`, in milliseconds per call.
fn best_ms(calls: usize, mut f: impl FnMut()) -> f64 {
    (0..REPEATS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..calls {
                f();
            }
            t.elapsed().as_secs_f64() * 1e3 / calls as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args()
        .nth(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // Inside a pool, as the Python binding runs training: parallel regions then start from
    // a worker instead of waking the pool from outside.
    w1ot_core::parallel::with_threads(0, run).unwrap();
}

fn run() {
    let d: usize = arg(1, 50);
    let iters: usize = arg(2, 300);
    let loss = match std::env::args().nth(3).as_deref() {
        Some("gan") => w1::StepLoss::Gan,
        Some("mmd") => w1::StepLoss::Mmd,
        _ => w1::StepLoss::Energy,
    };
    let threads = rayon::current_num_threads();
    let mut rng = Rng::new(0);

    let z = Matrix::<f32>::from_fn(512, 64, |_, _| rng.normal());
    let (y, perm) = groupsort::forward(&z, 16);
    let ms = best_ms(1000, || {
        std::hint::black_box(groupsort::forward(&z, 16));
    });
    println!("groupsort forward 512x64, groups of 16: {:.1} us", ms * 1e3);
    let ms = best_ms(1000, || {
        std::hint::black_box(groupsort::backward(&y, &perm));
    });
    println!("groupsort backward 512x64: {:.1} us", ms * 1e3);
    let zt = z.transpose();
    let mut yt = zt.clone();
    let swaps = groupsort::sort_units(&mut yt, 16);
    let ms = best_ms(1000, || {
        let mut m = zt.clone();
        std::hint::black_box(groupsort::sort_units(&mut m, 16));
    });
    println!(
        "groupsort unit-major forward 64x512 (with a copy): {:.1} us",
        ms * 1e3
    );
    let ms = best_ms(1000, || {
        let mut m = yt.clone();
        groupsort::unsort_units(&mut m, &swaps);
        std::hint::black_box(m);
    });
    println!(
        "groupsort unit-major backward 64x512 (with a copy): {:.1} us",
        ms * 1e3
    );

    let pcfg = w1::PotentialConfig {
        iters,
        ..Default::default()
    };
    let pot = Potential::<f32>::new(d, &pcfg.hidden, pcfg.group_size, pcfg.kind, &mut rng).unwrap();
    let ms = best_ms(200, || {
        std::hint::black_box(pot.weights(Mode::Train).unwrap());
    });
    println!(
        "orthonormal weights of the default potential, d={d}: {:.1} us",
        ms * 1e3
    );
    let a = Matrix::<f32>::from_fn(
        64,
        64,
        |i, j| {
            if i == j { 2.0 } else { rng.uniform(-0.1, 0.1) }
        },
    );
    let ms = best_ms(500, || {
        std::hint::black_box(inverse(&a).unwrap());
    });
    println!("inverse 64x64: {:.1} us", ms * 1e3);

    let a = Matrix::<f32>::from_fn(256, d, |_, _| rng.normal());
    let b = Matrix::<f32>::from_fn(256, d, |_, _| rng.normal());
    let ranges = row_ranges(256, threads);
    let ms = best_ms(100, || {
        std::hint::black_box(w1ot_core::losses::energy_distance_grad(&a, &b, &ranges));
    });
    println!("energy distance + gradient 256x256, d={d}: {ms:.3} ms");

    let x = Matrix::<f32>::from_fn(5000, d, |_, _| rng.normal());
    let y = Matrix::<f32>::from_fn(5000, d, |_, j| {
        rng.normal::<f32>() + if j == 0 { 2.0 } else { 0.0 }
    });
    let mut pot = pot;
    let tp = best_ms(1, || {
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
    }) / iters as f64;
    let u = w1::directions(&pot, x.view()).unwrap();
    let tdir = best_ms(1, || {
        std::hint::black_box(w1::directions(&pot, x.view()).unwrap());
    });
    let scfg = w1::StepConfig {
        iters,
        loss,
        ..Default::default()
    };
    let ts = best_ms(1, || {
        let (mut eta, mut disc) = w1::step_networks(d, &scfg, &mut rng).unwrap();
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
    }) / iters as f64;
    println!(
        "d={d} threads={threads} potential {tp:.3} ms/iter, directions(5000) {tdir:.1} ms, \
         {loss:?} step {ts:.3} ms/iter"
    );
}
