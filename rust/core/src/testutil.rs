//! Finite-difference gradient checking shared by the layer tests (f64 throughout).

/// Central differences of `f` at `x`, compared with `grad` entry by entry:
/// |fd - g| <= atol + rtol * max(|fd|, |g|).
pub fn check_grad(
    name: &str,
    f: &mut dyn FnMut(&[f64]) -> f64,
    x: &[f64],
    grad: &[f64],
    rtol: f64,
    atol: f64,
) {
    assert_eq!(x.len(), grad.len(), "{name}: gradient length");
    let eps = 1e-6;
    let mut xp = x.to_vec();
    let mut worst = 0.0_f64;
    for i in 0..x.len() {
        xp[i] = x[i] + eps;
        let fp = f(&xp);
        xp[i] = x[i] - eps;
        let fm = f(&xp);
        xp[i] = x[i];
        let fd = (fp - fm) / (2.0 * eps);
        let err = (fd - grad[i]).abs();
        let tol = atol + rtol * fd.abs().max(grad[i].abs());
        assert!(
            err <= tol,
            "{name}: d/dx[{i}] analytic {} vs finite-difference {fd} (err {err:e})",
            grad[i]
        );
        worst = worst.max(err);
    }
    // A check that compares nothing proves nothing.
    assert!(
        grad.iter().any(|g| g.abs() > 1e-8),
        "{name}: gradient is identically zero"
    );
    let _ = worst;
}

/// A fixed random linear functional <c, y> used to reduce a matrix output to a scalar.
pub fn probe(n: usize, seed: u64) -> Vec<f64> {
    let mut r = crate::rng::Rng::new(seed);
    (0..n).map(|_| r.uniform(-1.0, 1.0)).collect()
}
