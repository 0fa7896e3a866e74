//! Data parallelism over rows. Work is split into a fixed number of contiguous row
//! ranges and partial results are combined in range order, so a result depends on the
//! number of ranges but never on thread scheduling: the same seed and thread count give
//! the same model bit for bit.

use std::ops::Range;

use rayon::prelude::*;

use crate::error::{Error, Result};

/// `k` nearly equal contiguous ranges covering 0..n (fewer when n < k; none when n = 0).
pub fn row_ranges(n: usize, k: usize) -> Vec<Range<usize>> {
    let k = k.clamp(1, n.max(1));
    let (base, extra) = (n / k, n % k);
    let mut out = Vec::with_capacity(k);
    let mut start = 0;
    for i in 0..k {
        let len = base + usize::from(i < extra);
        if len > 0 {
            out.push(start..start + len);
        }
        start += len;
    }
    out
}

/// Maps `f` over the ranges in parallel; results come back in range order.
pub fn map_ranges<R: Send>(
    ranges: &[Range<usize>],
    f: impl Fn(Range<usize>) -> R + Sync + Send,
) -> Vec<R> {
    if ranges.len() <= 1 {
        return ranges.iter().cloned().map(f).collect();
    }
    ranges.par_iter().cloned().map(f).collect()
}

/// Runs `f` on a pool of `n_threads` workers (0: one per core). Training runs inside
/// such a pool so a fit never oversubscribes an application's other threads.
pub fn with_threads<R: Send>(n_threads: usize, f: impl FnOnce() -> R + Send) -> Result<R> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(n_threads)
        .build()
        .map_err(|e| Error::invalid("n_threads", format!("cannot start a thread pool: {e}")))?;
    Ok(pool.install(f))
}

/// Threads of the current pool (the one `with_threads` installed, or the global one).
pub fn current_threads() -> usize {
    rayon::current_num_threads()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_rows_once_in_order() {
        for (n, k) in [(10, 3), (2, 5), (512, 2), (1, 1), (7, 7)] {
            let r = row_ranges(n, k);
            assert_eq!(r.first().unwrap().start, 0);
            assert_eq!(r.last().unwrap().end, n);
            assert!(r.windows(2).all(|w| w[0].end == w[1].start));
            assert!(r.len() <= k && r.iter().all(|x| !x.is_empty()));
            let (lo, hi) = (
                r.iter().map(|x| x.len()).min().unwrap(),
                r.iter().map(|x| x.len()).max().unwrap(),
            );
            assert!(hi - lo <= 1);
        }
        assert!(row_ranges(0, 4).is_empty());
    }

    #[test]
    fn map_keeps_order_and_pool_sets_thread_count() {
        let r = row_ranges(100, 4);
        let starts = with_threads(3, || {
            assert_eq!(current_threads(), 3);
            map_ranges(&r, |x| x.start)
        })
        .unwrap();
        assert_eq!(starts, vec![0, 25, 50, 75]);
    }
}
