//! The worker threads that hash and read a source's files.
//!
//! Files are shared out over [`parallel::threads`] workers by striding:
//! worker `w` of `n` takes files `w`, `w + n`, `w + 2n`, … A landing's
//! files of a source are of similar sizes day to day, so striding keeps
//! the workers evenly loaded without a queue, and each worker fills one
//! bronze builder of its own (and streams to a lane of its own), so the
//! workers share nothing while they read.

use crate::{Error, Result};

/// Runs `work(worker, workers)` on one thread per worker, as many workers
/// as [`parallel::threads`] (at most `items`, at least one); each worker's
/// result in worker order, or the first error.
pub(crate) fn on_workers<T: Send>(items: usize, work: impl Fn(usize, usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    let workers = parallel::threads().min(items).max(1);
    // One item per worker: `on_threads` gives each its own thread.
    parallel::on_threads((0..workers).collect(), |w| work(w, workers)).map_err(Error::Panicked)?.into_iter().collect()
}

/// The items of `items` that worker `w` of `workers` takes, with their
/// positions.
pub(crate) fn stride<T>(items: &[T], w: usize, workers: usize) -> impl Iterator<Item = (usize, &T)> {
    items.iter().enumerate().skip(w).step_by(workers)
}
