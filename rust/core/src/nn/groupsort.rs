//! GroupSort: split a cell's units into contiguous groups of `group_size` and sort every
//! group in descending order. Its Jacobian is a permutation, so it is 1-Lipschitz and
//! gradient-norm preserving.
//!
//! Two layouts: [`forward`] / [`backward`] take cells as rows (ranking within each group,
//! a permutation for the backward pass; the binding exposes these), [`sort_units`] /
//! [`unsort_units`] take cells as columns (a sorting network across cells, recorded
//! exchanges for the backward pass; the potential trains with these).
//!
//! The reference code's argument counts *groups*; here the size of a group is explicit
//! (width 64 with 4 groups is `group_size = 16`; 2 is MaxMin; the width is a full sort).

use std::ops::Range;

use crate::error::{Error, Result};
use crate::linalg::{Matrix, Real};
use crate::simd::widest;

pub fn check_group_size(width: usize, group_size: usize) -> Result<()> {
    if group_size == 0 || !width.is_multiple_of(group_size) {
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
        group_size >= 1 && w.is_multiple_of(group_size),
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

/// Comparators of Batcher's odd-even merge sort for `n` inputs, in an order that sorts:
/// after (a, b), with a < b, entry a holds the larger value. Built for the next power of
/// two; comparators reaching past `n` are dropped, which is exact because the missing
/// inputs would be -inf at the end, and such a comparator never moves anything.
pub fn network(n: usize) -> Vec<(u32, u32)> {
    let size = n.next_power_of_two();
    let mut out = Vec::new();
    let mut p = 1;
    while p < size {
        let mut k = p;
        while k >= 1 {
            let mut j = k % p;
            while j + k < size {
                for i in 0..k.min(size - j - k) {
                    let (a, b) = (i + j, i + j + k);
                    if a / (2 * p) == b / (2 * p) && b < n {
                        out.push((a as u32, b as u32));
                    }
                }
                j += 2 * k;
            }
            k /= 2;
        }
        p *= 2;
    }
    out
}

/// Columns per pass of the sorting network: one group's rows of a chunk (and their
/// comparator outcomes) stay in L1 while all comparators run over them.
const CHUNK: usize = 128;

/// Outcomes of every comparator of [`sort_units`], for the backward pass.
#[derive(Clone, Debug)]
pub struct Swaps {
    group_size: usize,
    n: usize,
    net: Vec<(u32, u32)>,
    /// Index ((group * comparators + c) * n + column); 1 where the pair was exchanged.
    swapped: Vec<u8>,
}

/// Calls `f(c, row a, row b, columns)` for comparator `c` = (a, b) of `net` in every group of
/// `group_size` rows of the width x n `data`, over chunks of columns; in network order, or
/// reversed for the backward pass. `c` counts across groups, so it indexes [`Swaps`].
#[inline(always)]
fn each_comparator<T>(
    data: &mut [T],
    n: usize,
    group_size: usize,
    net: &[(u32, u32)],
    reverse: bool,
    mut f: impl FnMut(usize, &mut [T], &mut [T], Range<usize>),
) {
    let groups = data.len().checked_div(n).unwrap_or(0) / group_size;
    for g in 0..groups {
        for c0 in (0..n).step_by(CHUNK) {
            let cols = c0..(c0 + CHUNK).min(n);
            for k in 0..net.len() {
                let e = if reverse { net.len() - 1 - k } else { k };
                let (a, b) = net[e];
                let (ra, rb) = (g * group_size + a as usize, g * group_size + b as usize);
                let (lo, hi) = data.split_at_mut(rb * n);
                let row_a = &mut lo[ra * n + cols.start..ra * n + cols.end];
                f(
                    g * net.len() + e,
                    row_a,
                    &mut hi[cols.clone()],
                    cols.clone(),
                );
            }
        }
    }
}

/// GroupSort on unit-major activations: `z` is width x n, one row per unit and one column
/// per cell, and every group of `group_size` consecutive rows is sorted in place, in
/// descending order, independently in each column.
///
/// This is the layout the potential trains in: a comparator of the sorting network is then
/// one element-wise pass over two contiguous rows, which vectorises across cells, whereas
/// row-wise [`forward`] has to rank each group within a row. Ties are never exchanged.
pub fn sort_units<T: Real>(z: &mut Matrix<T>, group_size: usize) -> Swaps {
    let (w, n) = z.shape();
    assert!(
        group_size >= 1 && w.is_multiple_of(group_size),
        "group size must divide the width"
    );
    let net = network(group_size);
    let mut swapped = vec![0u8; w / group_size * net.len() * n];
    widest(
        #[inline(always)]
        || {
            each_comparator(
                z.as_mut_slice(),
                n,
                group_size,
                &net,
                false,
                |c, a, b, cols| exchange(a, b, &mut swapped[c * n + cols.start..c * n + cols.end]),
            )
        },
    );
    Swaps {
        group_size,
        n,
        net,
        swapped,
    }
}

/// Back through [`sort_units`], in place: dL/dz from dL/dy by undoing the exchanges in
/// reverse order.
pub fn unsort_units<T: Real>(dy: &mut Matrix<T>, swaps: &Swaps) {
    let (w, n) = dy.shape();
    let (gs, net) = (swaps.group_size, &swaps.net);
    assert!(
        n == swaps.n && w.is_multiple_of(gs) && swaps.swapped.len() == w / gs * net.len() * n,
        "unsort_units: shape differs from the forward pass"
    );
    widest(
        #[inline(always)]
        || {
            each_comparator(dy.as_mut_slice(), n, gs, net, true, |c, a, b, cols| {
                undo(a, b, &swaps.swapped[c * n + cols.start..c * n + cols.end])
            })
        },
    );
}

/// One comparator across cells: the larger value to `a`, recording exchanges.
#[inline(always)]
fn exchange<T: Real>(a: &mut [T], b: &mut [T], flags: &mut [u8]) {
    for ((x, y), f) in a.iter_mut().zip(b.iter_mut()).zip(flags.iter_mut()) {
        let swap = *y > *x;
        swap_if(x, y, swap);
        *f = swap as u8;
    }
}

/// The exchanges of [`exchange`] replayed on gradients (a swap is its own inverse).
#[inline(always)]
fn undo<T: Real>(a: &mut [T], b: &mut [T], flags: &[u8]) {
    for ((x, y), &f) in a.iter_mut().zip(b.iter_mut()).zip(flags) {
        swap_if(x, y, f != 0);
    }
}

/// Branch-free conditional swap. Written with `select_unpredictable` because rustc 1.95
/// (LLVM) vectorises the plain `if swap { v } else { u }` pair of stores wrongly under
/// AVX2 and AVX-512 when the condition comes from a byte array: `y` kept its old value.
/// The unit-major tests compare against the row-wise sort on vector-length inputs.
#[inline(always)]
fn swap_if<T: Real>(x: &mut T, y: &mut T, swap: bool) {
    let (u, v) = (*x, *y);
    *x = std::hint::select_unpredictable(swap, v, u);
    *y = std::hint::select_unpredictable(swap, u, v);
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
    fn network_sorts_every_zero_one_input() {
        // The 0-1 principle: a comparator network that sorts all 0-1 inputs sorts everything.
        for n in 1..=16usize {
            let net = network(n);
            for bits in 0u32..(1 << n) {
                let mut v: Vec<u32> = (0..n).map(|i| (bits >> i) & 1).collect();
                for &(a, b) in &net {
                    let (a, b) = (a as usize, b as usize);
                    if v[b] > v[a] {
                        v.swap(a, b);
                    }
                }
                assert!(v.windows(2).all(|p| p[0] >= p[1]), "n={n} input {bits:b}");
            }
        }
        assert_eq!(network(16).len(), 63);
        assert!(network(1).is_empty());
    }

    #[test]
    fn unit_major_sort_matches_the_row_sort() {
        let mut rng = Rng::new(6);
        for &(gs, w) in &[
            (1usize, 4usize),
            (2, 8),
            (3, 12),
            (16, 64),
            (64, 64),
            (5, 10),
        ] {
            for n in [1usize, 7, 300] {
                let x = Matrix::<f32>::from_fn(n, w, |_, _| rng.uniform(-1.0, 1.0));
                let (y, perm) = forward(&x, gs);
                let mut zt = x.transpose();
                let swaps = sort_units(&mut zt, gs);
                assert_eq!(zt.transpose(), y, "forward gs={gs} n={n}");
                let dy = Matrix::<f32>::from_fn(n, w, |_, _| rng.uniform(-1.0, 1.0));
                let mut dyt = dy.transpose();
                unsort_units(&mut dyt, &swaps);
                assert_eq!(
                    dyt.transpose(),
                    backward(&dy, &perm),
                    "backward gs={gs} n={n}"
                );
            }
        }
    }

    #[test]
    fn unit_major_sort_handles_ties_and_has_the_right_gradient() {
        // Ties: values from a small set; the output is still a sorted rearrangement.
        let mut rng = Rng::new(7);
        let x = Matrix::<f64>::from_fn(32, 200, |_, _| (rng.uniform::<f64>(0.0, 3.0)).floor());
        let mut y = x.clone();
        sort_units(&mut y, 8);
        for col in 0..200 {
            for g in 0..4 {
                let mut a: Vec<f64> = (0..8).map(|k| x.get(g * 8 + k, col)).collect();
                a.sort_by(|p, q| q.partial_cmp(p).unwrap());
                let b: Vec<f64> = (0..8).map(|k| y.get(g * 8 + k, col)).collect();
                assert_eq!(a, b);
            }
        }
        // Gradient by finite differences (distinct values, so the sort is differentiable).
        let x = Matrix::<f64>::from_fn(8, 3, |_, _| rng.uniform(-1.0, 1.0));
        let c = probe(24, 8);
        let mut y = x.clone();
        let swaps = sort_units(&mut y, 4);
        let mut dz = Matrix::from_vec(8, 3, c.clone()).unwrap();
        unsort_units(&mut dz, &swaps);
        let mut f = |v: &[f64]| {
            let mut m = Matrix::from_vec(8, 3, v.to_vec()).unwrap();
            sort_units(&mut m, 4);
            dot(m.as_slice(), &c)
        };
        check_grad(
            "sort_units",
            &mut f,
            x.as_slice(),
            dz.as_slice(),
            1e-6,
            1e-9,
        );
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
