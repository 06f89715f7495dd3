//! gold's one thread policy, and the scoped-thread helpers that share CPU
//! work over it.
//!
//! [`threads`] says how many threads any stage uses for CPU work: one per
//! core, at most [`MAX_THREADS`], or `GOLD_THREADS` when it is set (a
//! nightly job that shares its machine). Every helper here runs its work
//! on that many scoped threads and returns the results in input order, so
//! a result never depends on the number of threads.
//!
//! ```
//! let squares = parallel::on_threads((0..10u64).collect(), |i| i * i).unwrap();
//! assert_eq!(squares, (0..10u64).map(|i| i * i).collect::<Vec<_>>());
//! let sums = parallel::on_every_core(1000, |rows| rows.sum::<usize>()).unwrap();
//! assert_eq!(sums.iter().sum::<usize>(), 499_500);
//! ```
#![deny(missing_docs)]

use std::ops::Range;

/// The most threads a stage uses, however many cores there are: beyond
/// this, memory bandwidth, not cores, bounds gold's work.
pub const MAX_THREADS: usize = 8;

/// The environment variable that sets the thread count (1 or more).
pub const THREADS_VAR: &str = "GOLD_THREADS";

/// A worker thread panicked; its work is lost.
#[derive(Debug, thiserror::Error)]
#[error("a worker thread panicked")]
pub struct Panicked;

/// How many threads CPU work is shared over: `GOLD_THREADS` when it holds
/// a whole number of 1 or more, else one per core, at most
/// [`MAX_THREADS`].
pub fn threads() -> usize {
    if let Some(n) = std::env::var(THREADS_VAR).ok().and_then(|v| v.trim().parse::<usize>().ok()).filter(|&n| n > 0) {
        return n;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_THREADS)
}

/// `0..n` cut into one run of consecutive items per thread (fewer when
/// `n` is small; none when it is 0).
pub fn runs(n: usize) -> Vec<Range<usize>> {
    let chunk = n.div_ceil(threads()).max(1);
    (0..n).step_by(chunk).map(|start| start..(start + chunk).min(n)).collect()
}

/// `f` on each item, the items shared out over the threads in consecutive
/// runs, each run on its own thread; the results in item order.
pub fn on_threads<I: Send, T: Send>(items: Vec<I>, f: impl Fn(I) -> T + Sync) -> Result<Vec<T>, Panicked> {
    let threads = threads();
    let per_run = items.len().div_ceil(threads).max(1);
    let mut items = items.into_iter().peekable();
    let mut runs: Vec<Vec<I>> = Vec::with_capacity(threads);
    while items.peek().is_some() {
        runs.push(items.by_ref().take(per_run).collect());
    }
    let parts: Vec<Option<Vec<T>>> = std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> =
            runs.into_iter().map(|run| s.spawn(move || run.into_iter().map(f).collect::<Vec<T>>())).collect();
        handles.into_iter().map(|h| h.join().ok()).collect()
    });
    let mut out = Vec::new();
    for part in parts {
        out.extend(part.ok_or(Panicked)?);
    }
    Ok(out)
}

/// `f` over `0..n`, cut into one run of consecutive rows per thread
/// ([`runs`]), each run on its own thread; the runs' results in row order.
pub fn on_every_core<T: Send>(n: usize, f: impl Fn(Range<usize>) -> T + Sync) -> Result<Vec<T>, Panicked> {
    on_threads(runs(n), f)
}

/// `out` cut at `runs` (consecutive, from 0): one part per run. An empty
/// `out` (a column of results not needed) gives an empty part for each.
pub fn split_runs<'a, T>(mut out: &'a mut [T], runs: &[Range<usize>]) -> Vec<&'a mut [T]> {
    runs.iter()
        .map(|run| match out.is_empty() {
            true => &mut [][..],
            false => {
                let (part, rest) = std::mem::take(&mut out).split_at_mut(run.len());
                out = rest;
                part
            }
        })
        .collect()
}

/// `out` filled on every thread, each run of rows in place: `f` gets the
/// first row of its run and the run's part of `out`.
pub fn fill_on_every_core<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) -> Result<(), Panicked> {
    let runs = runs(out.len());
    let parts = runs.iter().map(|r| r.start).zip(split_runs(out, &runs)).collect();
    on_threads(parts, |(start, part)| f(start, part)).map(drop)
}

/// Runs `jobs` of uneven sizes on the threads, each thread taking the
/// next job when it is free; the results in the jobs' order.
pub fn in_parallel<'a, T: Send>(jobs: Vec<Box<dyn FnOnce() -> T + Send + 'a>>) -> Result<Vec<T>, Panicked> {
    let threads = threads().min(jobs.len()).max(1);
    let queue = std::sync::Mutex::new(jobs.into_iter().enumerate().collect::<Vec<_>>());
    let parts: Vec<Option<Vec<(usize, T)>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        // A poisoned queue only means another job panicked;
                        // that panic is reported by its join below.
                        let next = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
                        let Some((i, job)) = next else { break };
                        out.push((i, job()));
                    }
                    out
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().ok()).collect()
    });
    let mut done = Vec::new();
    for part in parts {
        done.extend(part.ok_or(Panicked)?);
    }
    done.sort_by_key(|(i, _)| *i);
    Ok(done.into_iter().map(|(_, t)| t).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_input_order_and_every_item_is_seen_once() {
        for n in [0, 1, 2, 3, 7, 100, 1001] {
            let rows = runs(n);
            assert_eq!(rows.iter().map(|r| r.len()).sum::<usize>(), n);
            assert!(rows.windows(2).all(|w| w[0].end == w[1].start));
            let items: Vec<usize> = (0..n).collect();
            assert_eq!(on_threads(items.clone(), |i| i + 1).unwrap(), items.iter().map(|i| i + 1).collect::<Vec<_>>());
            let mut out = vec![0; n];
            fill_on_every_core(&mut out, |start, part| {
                for (j, slot) in part.iter_mut().enumerate() {
                    *slot = start + j;
                }
            })
            .unwrap();
            assert_eq!(out, items);
            let jobs: Vec<Box<dyn FnOnce() -> usize + Send>> =
                items.iter().map(|&i| Box::new(move || i * 2) as Box<dyn FnOnce() -> usize + Send>).collect();
            assert_eq!(in_parallel(jobs).unwrap(), items.iter().map(|i| i * 2).collect::<Vec<_>>());
        }
    }

    #[test]
    fn split_runs_gives_each_run_its_part_and_an_unneeded_vector_empty_parts() {
        let mut v: Vec<u32> = (0..10).collect();
        let parts = split_runs(&mut v, &[0..3, 3..4, 4..10]);
        assert_eq!(
            parts.iter().map(|p| p.to_vec()).collect::<Vec<_>>(),
            vec![vec![0, 1, 2], vec![3], vec![4, 5, 6, 7, 8, 9]]
        );
        let mut empty: Vec<u32> = Vec::new();
        assert!(split_runs(&mut empty, &[0..3, 3..5]).iter().all(|p| p.is_empty()));
    }

    #[test]
    fn a_panicking_worker_is_an_error_not_a_crash() {
        let out = on_threads(vec![1, 2, 3], |i| if i == 2 { panic!("boom") } else { i });
        assert!(out.is_err());
    }
}
