//! GroupSort: split each row into contiguous groups of `group_size` units and sort every
//! group in descending order. Its Jacobian is a permutation, so it is 1-Lipschitz and
//! gradient-norm preserving; the backward pass scatters through the inverse permutation.
//!
//! The reference code's argument counts *groups*; here the size of a group is explicit
//! (width 64 with 4 groups is `group_size = 16`; 2 is MaxMin; the width is a full sort).

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::linalg::{Matrix, Real};

/// Rows per parallel task; below this the sort runs on the calling thread.
const PAR_ROWS: usize = 256;

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
    let sort_row = |(i, (yr, pr)): (usize, (&mut [T], &mut [u32]))| {
        let xr = x.row(i);
        for g in (0..w).step_by(group_size) {
            let idx = &mut pr[g..g + group_size];
            idx.iter_mut()
                .enumerate()
                .for_each(|(k, v)| *v = (g + k) as u32);
            // Descending; ties keep their original order so the permutation is deterministic.
            idx.sort_by(|&a, &b| {
                xr[b as usize]
                    .partial_cmp(&xr[a as usize])
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            for k in 0..group_size {
                yr[g + k] = xr[idx[k] as usize];
            }
        }
    };
    let rows = y
        .as_mut_slice()
        .chunks_exact_mut(w)
        .zip(perm.chunks_exact_mut(w));
    if n >= 2 * PAR_ROWS {
        rows.enumerate()
            .collect::<Vec<_>>()
            .into_par_iter()
            .with_min_len(PAR_ROWS)
            .for_each(sort_row);
    } else {
        rows.enumerate().for_each(sort_row);
    }
    (y, perm)
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
