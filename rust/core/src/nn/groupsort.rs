//! GroupSort: split each row into contiguous groups of `group_size` units and sort every
//! group in descending order. Its Jacobian is a permutation, so it is 1-Lipschitz and
//! gradient-norm preserving; the backward pass scatters through the inverse permutation.
//!
//! The reference code's argument counts *groups*; here the size of a group is explicit
//! (width 64 with 4 groups is `group_size = 16`; 2 is MaxMin; the width is a full sort).

use crate::error::{Error, Result};
use crate::linalg::{Matrix, Real};
use crate::simd::widest;

pub fn check_group_size(width: usize, group_size: usize) -> Result<()> {
    if group_size == 0 || width % group_size != 0 {
        return Err(Error::invalid(
            "group_size",
            format!("must be >= 1 and divide the layer width {width}, got {group_size}"),
        ));
    }
    Ok(())
}

/// Sorted output and, for each output entry, the column it came from.
pub fn forward<T: Real>(x: &Matrix<T>, group_size: usize) -> (Matrix<T>, Vec<u32>) {
    let (n, w) = x.shape();
    assert!(
        group_size >= 1 && w % group_size == 0,
        "group size must divide the width"
    );
    let mut y = Matrix::zeros(n, w);
    let mut perm = vec![0u32; n * w];
    // Sequential: callers parallelise over row blocks at a coarser grain. With the group
    // compiled for AVX2 or AVX-512 the ranking loop is two or four times as wide.
    widest(
        #[inline(always)]
        || sort_rows(x.as_slice(), y.as_mut_slice(), &mut perm, w, group_size),
    );
    (y, perm)
}

#[inline(always)]
fn sort_rows<T: Real>(x: &[T], y: &mut [T], perm: &mut [u32], w: usize, group_size: usize) {
    for ((xr, yr), pr) in x
        .chunks_exact(w)
        .zip(y.chunks_exact_mut(w))
        .zip(perm.chunks_exact_mut(w))
    {
        for g in (0..w).step_by(group_size) {
            sort_group(
                &xr[g..g + group_size],
                &mut yr[g..g + group_size],
                &mut pr[g..g + group_size],
                g as u32,
            );
        }
    }
}

/// Sorts one group descending by ranking: an entry's output position is the number of
/// entries before it in sorted order (larger, or equal with a smaller index, so ties keep
/// their order and the permutation is deterministic). Branch-free; with the group size
/// known at compile time the inner loop is one SIMD compare per entry, which beats a
/// comparison sort on the small groups used here.
#[inline(always)]
fn sort_group<T: Real>(x: &[T], y: &mut [T], perm: &mut [u32], offset: u32) {
    match x.len() {
        2 => {
            let (a, b) = if x[1] > x[0] { (1, 0) } else { (0, 1) };
            y[0] = x[a];
            y[1] = x[b];
            perm[0] = offset + a as u32;
            perm[1] = offset + b as u32;
        }
        4 => sort_fixed::<T, 4>(x, y, perm, offset),
        8 => sort_fixed::<T, 8>(x, y, perm, offset),
        16 => sort_fixed::<T, 16>(x, y, perm, offset),
        32 => sort_fixed::<T, 32>(x, y, perm, offset),
        _ => {
            let mut idx: Vec<u32> = (0..x.len() as u32).collect();
            idx.sort_by(|&a, &b| {
                x[b as usize]
                    .partial_cmp(&x[a as usize])
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            for (k, &i) in idx.iter().enumerate() {
                y[k] = x[i as usize];
                perm[k] = offset + i;
            }
        }
    }
}

#[inline(always)]
fn sort_fixed<T: Real, const G: usize>(x: &[T], y: &mut [T], perm: &mut [u32], offset: u32) {
    let x: &[T; G] = x.try_into().expect("group length");
    let mut rank = [0u32; G];
    for j in 0..G {
        let xj = x[j];
        for i in 0..G {
            rank[i] += ((xj > x[i]) | ((xj == x[i]) & (j < i))) as u32;
        }
    }
    for i in 0..G {
        // Ranks are a permutation for finite input; the clamp only guards NaN.
        let r = (rank[i] as usize).min(G - 1);
        y[r] = x[i];
        perm[r] = offset + i as u32;
    }
}

/// dL/dx from dL/dy: each output's gradient goes back to the column it came from.
pub fn backward<T: Real>(dy: &Matrix<T>, perm: &[u32]) -> Matrix<T> {
    let (n, w) = dy.shape();
    assert_eq!(perm.len(), n * w);
    let mut dx = Matrix::zeros(n, w);
    dx.as_mut_slice()
        .chunks_exact_mut(w)
        .zip(dy.as_slice().chunks_exact(w).zip(perm.chunks_exact(w)))
        .for_each(|(dxr, (dyr, pr))| {
            for k in 0..w {
                dxr[pr[k] as usize] = dyr[k];
            }
        });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::dot;
    use crate::rng::Rng;
    use crate::testutil::{check_grad, probe};

    #[test]
    fn output_is_a_descending_permutation_within_each_group() {
        let mut rng = Rng::new(4);
        for &gs in &[1usize, 2, 4, 16, 64] {
            let x = Matrix::<f32>::from_fn(600, 64, |_, _| rng.uniform(-1.0, 1.0));
            let (y, perm) = forward(&x, gs);
            for i in 0..x.rows() {
                for g in (0..64).step_by(gs) {
                    let mut a: Vec<f32> = x.row(i)[g..g + gs].to_vec();
                    let b = &y.row(i)[g..g + gs];
                    a.sort_by(|p, q| q.partial_cmp(p).unwrap());
                    assert_eq!(a.as_slice(), b, "group {g} of row {i}");
                    for k in 0..gs {
                        let src = perm[i * 64 + g + k] as usize;
                        assert!(src >= g && src < g + gs, "permutation leaves its group");
                        assert_eq!(x.get(i, src), y.get(i, g + k));
                    }
                }
            }
        }
    }

    #[test]
    fn backward_is_the_inverse_permutation() {
        let mut rng = Rng::new(5);
        let x = Matrix::<f64>::from_fn(3, 8, |_, _| rng.uniform(-1.0, 1.0));
        let (y, perm) = forward(&x, 4);
        // Feeding the output back through the inverse permutation recovers the input.
        assert_eq!(backward(&y, &perm), x);
        let c = probe(24, 1);
        let dx = backward(&Matrix::from_vec(3, 8, c.clone()).unwrap(), &perm);
        let mut f = |v: &[f64]| {
            dot(
                forward(&Matrix::from_vec(3, 8, v.to_vec()).unwrap(), 4)
                    .0
                    .as_slice(),
                &c,
            )
        };
        check_grad("groupsort", &mut f, x.as_slice(), dx.as_slice(), 1e-6, 1e-9);
    }

    #[test]
    fn rejects_group_size_that_does_not_divide_width() {
        assert!(check_group_size(64, 16).is_ok());
        assert!(matches!(
            check_group_size(64, 5),
            Err(Error::InvalidArgument {
                name: "group_size",
                ..
            })
        ));
        assert!(check_group_size(64, 0).is_err());
    }
}
