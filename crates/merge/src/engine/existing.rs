//! The table's rows that a merge looks at ([`Existing`]): hashes,
//! intervals, surrogate keys and where each row lives, one vector per
//! field, never the business values.
//!
//! The current partition's rows are loaded first (their hashes and
//! intervals only: the columns of [`super::layout::phase1_columns`]), then
//! the history versions of the keys whose timeline reaches back (late
//! changes, resurrections), then, if a late change rewrites a history file,
//! that file's other rows. Each load makes room at the end of the vectors
//! with [`Existing::grow`], one part per file, and fills the parts on
//! every thread at once ([`load_existing`], one file per part). Vectors
//! of no rows yet are allocated zeroed, so their pages are first touched
//! by the threads that fill them, not by one thread up front. The type-1
//! fingerprints and the recomputed attribute hashes are kept only when
//! the layout needs them (their vectors stay empty otherwise).

use deltalake::arrow::array::RecordBatch;

use super::arrays::{attr_cols, binary_col, bool_col, int_col, ts_col};
use super::layout::Layout;
use crate::hash::{self, Hash128};
use crate::{Error, OPEN_END, Result, Spec, columns};

/// Existing rows of the table that the merge looked at.
#[derive(Default)]
pub(super) struct Existing {
    pub(super) key: Vec<Hash128>,
    pub(super) from: Vec<i64>,
    pub(super) to: Vec<i64>,
    pub(super) cmp: Vec<Hash128>,
    /// Type-1 fingerprints ([`hash::Attrs::fingerprint`]); empty when the
    /// table has no type-1 columns (all 0).
    pub(super) t1: Vec<Hash128>,
    /// The stored `attr_hash`; empty when `cmp` is that hash.
    pub(super) attr: Vec<Hash128>,
    pub(super) sk: Vec<i64>,
    pub(super) deleted: Vec<bool>,
    pub(super) inferred: Vec<bool>,
    pub(super) file: Vec<u32>,
    pub(super) row_in_file: Vec<u32>,
}

impl Existing {
    /// The `attr_hash` stored with row `r`.
    #[inline]
    pub(super) fn stored_attr(&self, r: usize) -> Hash128 {
        self.attr.get(r).copied().unwrap_or(self.cmp[r])
    }

    /// Room for rows in runs of `lens` at the end, each run's part to be
    /// filled by [`load_existing`], on any thread. A vector of no rows yet
    /// is allocated zeroed, so its pages are first touched by the threads
    /// that fill them.
    pub(super) fn grow(&mut self, lens: &[usize], layout: &Layout) -> Vec<ExistingRows<'_>> {
        fn tail<'a, T: Clone + Default>(
            v: &'a mut Vec<T>,
            n: usize,
            runs: &[std::ops::Range<usize>],
        ) -> Vec<&'a mut [T]> {
            let start = v.len();
            match start {
                0 => *v = vec![T::default(); n],
                _ => v.resize(start + n, T::default()),
            }
            parallel::split_runs(&mut v[start..], runs)
        }
        let n: usize = lens.iter().sum();
        let mut runs = Vec::with_capacity(lens.len());
        for &len in lens {
            let start = runs.last().map_or(0, |r: &std::ops::Range<usize>| r.end);
            runs.push(start..start + len);
        }
        let (t1_n, attr_n) =
            (if layout.t1_cols.is_empty() { 0 } else { n }, if layout.stored_hash_comparable { 0 } else { n });
        let parts = tail(&mut self.key, n, &runs)
            .into_iter()
            .zip(tail(&mut self.from, n, &runs))
            .zip(tail(&mut self.to, n, &runs))
            .zip(tail(&mut self.cmp, n, &runs))
            .zip(tail(&mut self.t1, t1_n, &runs))
            .zip(tail(&mut self.attr, attr_n, &runs))
            .zip(tail(&mut self.sk, n, &runs))
            .zip(tail(&mut self.deleted, n, &runs))
            .zip(tail(&mut self.inferred, n, &runs))
            .zip(tail(&mut self.file, n, &runs))
            .zip(tail(&mut self.row_in_file, n, &runs));
        parts
            .map(|((((((((((key, from), to), cmp), t1), attr), sk), deleted), inferred), file), row_in_file)| {
                ExistingRows { key, from, to, cmp, t1, attr, sk, deleted, inferred, file, row_in_file }
            })
            .collect()
    }

    /// The type-1 fingerprint of row `r` (0 without type-1 columns).
    #[inline]
    pub(super) fn t1(&self, r: usize) -> Hash128 {
        self.t1.get(r).copied().unwrap_or(0)
    }
}

/// A run of [`Existing`]'s rows, to be filled in place (see
/// [`Existing::grow`]); `t1` and `attr` are empty where `Existing`'s are.
pub(super) struct ExistingRows<'a> {
    pub(super) key: &'a mut [Hash128],
    pub(super) from: &'a mut [i64],
    pub(super) to: &'a mut [i64],
    pub(super) cmp: &'a mut [Hash128],
    pub(super) t1: &'a mut [Hash128],
    pub(super) attr: &'a mut [Hash128],
    pub(super) sk: &'a mut [i64],
    pub(super) deleted: &'a mut [bool],
    pub(super) inferred: &'a mut [bool],
    pub(super) file: &'a mut [u32],
    pub(super) row_in_file: &'a mut [u32],
}

/// Loads the rows `rows` of `b` (ascending positions; all: `None`), read
/// from table file `file`, into `part`, which has room for exactly them.
pub(super) fn load_existing(
    part: ExistingRows<'_>,
    spec: &Spec,
    layout: &Layout,
    b: &RecordBatch,
    file: u32,
    current: bool,
    rows: Option<&[u32]>,
) -> Result<()> {
    let keys = binary_col(b, columns::KEY_HASH)?;
    let attrs = binary_col(b, columns::ATTR_HASH)?;
    let from = ts_col(b, columns::VALID_FROM)?;
    let to = ts_col(b, columns::VALID_TO)?;
    let deleted = bool_col(b, columns::IS_DELETED)?;
    let inferred = bool_col(b, columns::IS_INFERRED)?;
    let sks = int_col(b, &spec.surrogate_key)?;
    let t1 = attr_cols(b, &layout.t1_cols, layout.encoding)?;
    let cmp = if layout.stored_hash_comparable { None } else { Some(attr_cols(b, &layout.cmp_cols, layout.encoding)?) };
    let n = rows.map_or(b.num_rows(), <[u32]>::len);
    if part.key.len() != n {
        return Err(Error::internal("merge", format!("room for {} rows loaded from a file, not {n}", part.key.len())));
    }
    let mut buf = Vec::new();
    for j in 0..n {
        let r = rows.map_or(j, |rows| rows[j] as usize);
        part.key[j] = hash::from_stored(keys.value(r));
        let stored = hash::from_stored(attrs.value(r));
        part.cmp[j] = match &cmp {
            None => stored,
            Some(cols) => {
                part.attr[j] = stored;
                cols.hash(r, &mut buf)
            }
        };
        // Decided by the layout, not the file: a file written before a
        // type-1 column was added lacks it, and its rows hash to 0.
        if let Some(slot) = part.t1.get_mut(j) {
            *slot = if t1.is_empty() { 0 } else { t1.fingerprint(r, &mut buf) };
        }
        part.from[j] = from.value(r);
        part.to[j] = if current { OPEN_END } else { to.value(r) };
        part.deleted[j] = deleted.value(r);
        part.inferred[j] = inferred.value(r);
        part.sk[j] = sks.value(r);
        part.file[j] = file;
        part.row_in_file[j] = r as u32;
    }
    Ok(())
}
