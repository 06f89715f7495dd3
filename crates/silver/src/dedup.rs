//! Latest-wins de-duplication of incoming rows against each other and
//! against the rows silver already holds.
//!
//! Rows are compared through Arrow's row format, so NULLs, decimals, lists
//! and structs compare by value, the same way for every type.

use std::cmp::Ordering;

use deltalake::arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use deltalake::arrow::compute::{SortOptions, take};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::row::{RowConverter, Rows, SortField};

/// What became of an incoming row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// It is the silver row, or an older version that contributed to it.
    Accepted,
    /// Same content as a row already accepted: counted, not kept.
    Duplicate,
    /// Same key and ordering value as an accepted row, different content:
    /// quarantined as `conflicting_duplicate`.
    Conflict,
}

/// One business key touched by the incoming rows.
#[derive(Debug)]
pub(crate) struct Group {
    /// The row silver held for the key, if any.
    pub(crate) state: Option<usize>,
    /// Accepted rows (the state row included), latest first: `accepted[0]`
    /// is the winner.
    pub(crate) accepted: Vec<usize>,
}

impl Group {
    /// Whether an incoming row was accepted (so the silver row changes).
    pub(crate) fn changed(&self) -> bool {
        self.accepted.iter().any(|&i| Some(i) != self.state)
    }
}

#[derive(Debug)]
pub(crate) struct Dedup {
    /// Per incoming row (combined row `n_state + i`).
    pub(crate) fate: Vec<Fate>,
    /// The touched keys, in the order their first incoming row came.
    pub(crate) groups: Vec<Group>,
    /// State rows whose key no incoming row has.
    pub(crate) untouched: Vec<usize>,
}

fn rows(batch: &RecordBatch, columns: &[usize], descending: bool) -> Result<Option<Rows>, ArrowError> {
    if columns.is_empty() {
        return Ok(None);
    }
    let options = SortOptions { descending, nulls_first: false };
    let fields =
        columns.iter().map(|&c| SortField::new_with_options(batch.column(c).data_type().clone(), options)).collect();
    let arrays: Vec<ArrayRef> = columns.iter().map(|&c| batch.column(c).clone()).collect();
    RowConverter::new(fields)?.convert_columns(&arrays).map(Some)
}

/// A row's content digest: the first 16 bytes of its BLAKE3 hash.
type Digest = [u8; 16];

/// A 128-bit BLAKE3 digest of the content of each row in `wanted`
/// (ascending row numbers), in Arrow's row format: equal content, equal
/// digest, in 16 bytes a row rather than the whole row. Other rows get
/// zeros: they are never compared. Rows are encoded a chunk at a time, the
/// chunks shared between the cores.
fn content_hashes(batch: &RecordBatch, columns: &[usize], wanted: &[usize]) -> Result<Vec<Digest>, ArrowError> {
    const CHUNK: usize = 64 * 1024;
    let mut out = vec![[0u8; 16]; batch.num_rows()];
    if wanted.is_empty() {
        return Ok(out);
    }
    let threads = parallel::threads().min(wanted.len().div_ceil(CHUNK));
    let per_thread = wanted.len().div_ceil(threads);
    // One thread's rows, a chunk at a time: their digests, in order.
    let hash_rows = |mine: &[usize]| -> Result<Vec<Digest>, ArrowError> {
        let fields = columns.iter().map(|&c| SortField::new(batch.column(c).data_type().clone())).collect();
        let converter = RowConverter::new(fields)?;
        let mut digests = Vec::with_capacity(mine.len());
        for rows_of in mine.chunks(CHUNK) {
            let (first, last) = (rows_of[0], rows_of[rows_of.len() - 1]);
            // A contiguous run is a slice; scattered rows are gathered.
            let arrays: Vec<ArrayRef> = if last - first + 1 == rows_of.len() {
                columns.iter().map(|&col| batch.column(col).slice(first, rows_of.len())).collect()
            } else {
                let idx = UInt32Array::from_iter_values(rows_of.iter().map(|&r| r as u32));
                columns.iter().map(|&col| take(batch.column(col), &idx, None)).collect::<Result<_, _>>()?
            };
            let rows = converter.convert_columns(&arrays)?;
            digests.extend((0..rows_of.len()).map(|i| {
                let mut h = [0u8; 16];
                h.copy_from_slice(&blake3::hash(rows.row(i).data()).as_bytes()[..16]);
                h
            }));
        }
        Ok(digests)
    };
    // One run of rows per thread, each on its own.
    let parts = parallel::on_threads(wanted.chunks(per_thread).collect(), hash_rows)
        .map_err(|_| ArrowError::ComputeError("a hashing thread panicked".into()))?;
    for (part, mine) in parts.into_iter().zip(wanted.chunks(per_thread)) {
        for (&row, h) in mine.iter().zip(part?) {
            out[row] = h;
        }
    }
    Ok(out)
}

fn bytes(rows: &Option<Rows>, i: usize) -> &[u8] {
    rows.as_ref().map_or(&[], |r| r.row(i).data())
}

/// De-duplicates `combined`: rows `0..n_state` are silver's current rows
/// (one per key), the rest are incoming, of which only those `kept` (one
/// flag per incoming row) take part. Columns are given by index: the
/// key, the content compared for exact duplicates, the ordering (latest
/// wins) and the tie-break (first wins).
pub(crate) fn dedup(
    combined: &RecordBatch,
    n_state: usize,
    kept: &[bool],
    key: &[usize],
    content: &[usize],
    order: &[usize],
    tie: &[usize],
) -> Result<Dedup, ArrowError> {
    let n = combined.num_rows();
    let keys = rows(combined, key, false)?;
    // Descending, NULLs last: ascending bytes put the latest first.
    let orders = rows(combined, order, true)?;
    let ties = rows(combined, tie, false)?;

    // Each kept incoming row's group (its key's), groups numbered in the
    // order their first row came; then the rows of each group, in row
    // order, laid out one group after another.
    let mut index: hashbrown::HashMap<&[u8], usize> = hashbrown::HashMap::with_capacity(n - n_state);
    let mut incoming: Vec<(usize, usize)> = Vec::with_capacity(n - n_state);
    for i in (n_state..n).filter(|&i| kept[i - n_state]) {
        let next = index.len();
        let g = *index.entry(bytes(&keys, i)).or_insert(next);
        incoming.push((g, i));
    }
    let n_groups = index.len();
    let mut starts = vec![0usize; n_groups + 1];
    for &(g, _) in &incoming {
        starts[g + 1] += 1;
    }
    for g in 0..n_groups {
        starts[g + 1] += starts[g];
    }
    let mut members = vec![0usize; incoming.len()];
    let mut fill = starts.clone();
    for (g, i) in incoming {
        members[fill[g]] = i;
        fill[g] += 1;
    }
    drop(fill);
    let rows_of_group = |g: usize| &members[starts[g]..starts[g + 1]];
    let mut state_of = vec![None; n_groups];
    let mut untouched = Vec::new();
    for s in 0..n_state {
        match index.get(bytes(&keys, s)) {
            Some(&g) => state_of[g] = Some(s),
            None => untouched.push(s),
        }
    }
    drop(index);

    // Content is compared only within a key of two rows or more: a new
    // key's only row is accepted without it.
    let mut compared: Vec<usize> = (0..n_groups)
        .filter(|&g| rows_of_group(g).len() + usize::from(state_of[g].is_some()) > 1)
        .flat_map(|g| rows_of_group(g).iter().copied().chain(state_of[g]))
        .collect();
    compared.sort_unstable();
    let contents = content_hashes(combined, content, &compared)?;
    drop(compared);

    let mut fate = vec![Fate::Accepted; n - n_state];
    let mut groups = Vec::with_capacity(n_groups);
    let mut rows_of: Vec<usize> = Vec::new();
    for (g, &state) in state_of.iter().enumerate() {
        rows_of.clear();
        rows_of.extend_from_slice(rows_of_group(g));
        rows_of.extend(state);
        if rows_of.len() > 1 {
            rows_of.sort_by(|&a, &b| {
                bytes(&orders, a)
                    .cmp(bytes(&orders, b))
                    .then_with(|| match (Some(a) == state, Some(b) == state) {
                        (true, false) => Ordering::Less,
                        (false, true) => Ordering::Greater,
                        _ => Ordering::Equal,
                    })
                    .then_with(|| bytes(&ties, a).cmp(bytes(&ties, b)))
                    .then(a.cmp(&b))
            });
        }
        let mut accepted: Vec<usize> = Vec::with_capacity(1);
        for &r in &rows_of {
            let is_state = Some(r) == state;
            if !is_state && accepted.iter().any(|&a| contents[a] == contents[r]) {
                fate[r - n_state] = Fate::Duplicate;
                continue;
            }
            if !is_state && accepted.last().is_some_and(|&a| bytes(&orders, a) == bytes(&orders, r)) {
                fate[r - n_state] = Fate::Conflict;
                continue;
            }
            accepted.push(r);
        }
        groups.push(Group { state, accepted });
    }
    Ok(Dedup { fate, groups, untouched })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{Int64Array, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(rows: &[(&str, Option<i64>, &str)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("ts", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(rows.iter().map(|r| Some(r.0)).collect::<StringArray>()),
                Arc::new(rows.iter().map(|r| r.1).collect::<Int64Array>()),
                Arc::new(rows.iter().map(|r| Some(r.2)).collect::<StringArray>()),
            ],
        )
        .unwrap()
    }

    #[test]
    fn content_hashes_of_scattered_rows_match_those_of_every_row_and_equal_content_hashes_equal() {
        // Enough rows for several chunks on every core, with repeats.
        let rows: Vec<(String, Option<i64>, String)> =
            (0..150_000).map(|i| (format!("k{}", i % 1000), Some(i % 7), format!("v{}", i % 13))).collect();
        let refs: Vec<(&str, Option<i64>, &str)> = rows.iter().map(|r| (r.0.as_str(), r.1, r.2.as_str())).collect();
        let b = batch(&refs);
        let every: Vec<usize> = (0..b.num_rows()).collect();
        let all = content_hashes(&b, &[0, 1, 2], &every).unwrap();
        let scattered: Vec<usize> = (0..b.num_rows()).filter(|i| i % 3 != 1).collect();
        let some = content_hashes(&b, &[0, 1, 2], &scattered).unwrap();
        for i in 0..b.num_rows() {
            if i % 3 != 1 {
                assert_eq!(some[i], all[i], "row {i}");
            } else {
                assert_eq!(some[i], [0u8; 16], "row {i} was not asked for");
            }
        }
        // Rows 0 and 91,000 have the same key, ordering value and content.
        assert_eq!(all[0], all[91_000]);
        assert_ne!(all[0], all[1]);
    }

    #[test]
    fn latest_wins_duplicates_are_counted_and_conflicts_found() {
        // State: a@1=x. Incoming: a@2=y, a@2=y (exact duplicate), a@2=z
        // (conflict), a@1=x (duplicate of the state), b@NULL=q, b@3=r.
        let b = batch(&[
            ("a", Some(1), "x"),
            ("a", Some(2), "y"),
            ("a", Some(2), "y"),
            ("a", Some(2), "z"),
            ("a", Some(1), "x"),
            ("b", None, "q"),
            ("b", Some(3), "r"),
        ]);
        let d = dedup(&b, 1, &[true; 6], &[0], &[0, 1, 2], &[1], &[]).unwrap();
        assert_eq!(
            d.fate,
            vec![Fate::Accepted, Fate::Duplicate, Fate::Conflict, Fate::Duplicate, Fate::Accepted, Fate::Accepted]
        );
        assert_eq!(d.groups.len(), 2);
        assert_eq!(d.groups[0].accepted, vec![1, 0]);
        assert_eq!(d.groups[1].accepted, vec![6, 5], "a NULL ordering value is the oldest");
        assert!(d.untouched.is_empty());
    }
}
