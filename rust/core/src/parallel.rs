//! Data parallelism over rows. Work is split into contiguous row blocks whose number
//! depends only on the row count ([`blocks`]), and partial results are combined in block
//! order, so a result never depends on the number of threads or their scheduling: the
//! same seed gives the same model bit for bit on any machine.

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

/// Rows per block of training work: small enough that a batch of 256 feeds 2-4 threads,
/// large enough that a block's fixed costs stay small.
pub const TRAIN_BLOCK: usize = 64;

/// Nearly equal blocks of about `size` rows covering 0..n; their number depends on n and
/// `size` alone, never on the thread count.
pub fn blocks(n: usize, size: usize) -> Vec<Range<usize>> {
    row_ranges(n, n.div_ceil(size.max(1)))
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

/// Threads per core beyond which [`with_threads`] starts no more: CPU-bound blocks gain
/// nothing from oversubscription, and thousands of threads cost seconds and gigabytes.
pub const MAX_THREADS_PER_CORE: usize = 4;

/// Runs `f` on a pool of `n_threads` workers (0: one per core; at most
/// [`MAX_THREADS_PER_CORE`] per core). Training runs inside such a pool so a fit never
/// oversubscribes an application's other threads. Results do not depend on the count.
pub fn with_threads<R: Send>(n_threads: usize, f: impl FnOnce() -> R + Send) -> Result<R> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(n_threads.min(MAX_THREADS_PER_CORE * cores))
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
