//! Latest-wins de-duplication of incoming rows against each other and
//! against the rows silver already holds.
//!
//! Rows are compared through Arrow's row format, so NULLs, decimals, lists
//! and structs compare by value, the same way for every type.

use std::cmp::Ordering;
use std::collections::HashMap;

use deltalake::arrow::array::{ArrayRef, RecordBatch};
use deltalake::arrow::compute::SortOptions;
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

/// A 128-bit BLAKE3 digest of each row's content in Arrow's row format:
/// equal content, equal digest, in 16 bytes a row rather than the whole
/// row. Rows are encoded a slice at a time.
fn content_hashes(batch: &RecordBatch, columns: &[usize]) -> Result<Vec<[u8; 16]>, ArrowError> {
    const SLICE: usize = 64 * 1024;
    let fields = columns.iter().map(|&c| SortField::new(batch.column(c).data_type().clone())).collect();
    let converter = RowConverter::new(fields)?;
    let mut out = Vec::with_capacity(batch.num_rows());
    let mut offset = 0;
    while offset < batch.num_rows() {
        let len = SLICE.min(batch.num_rows() - offset);
        let arrays: Vec<ArrayRef> = columns.iter().map(|&c| batch.column(c).slice(offset, len)).collect();
        let rows = converter.convert_columns(&arrays)?;
        for i in 0..len {
            let digest = blake3::hash(rows.row(i).data());
            let mut h = [0u8; 16];
            h.copy_from_slice(&digest.as_bytes()[..16]);
            out.push(h);
        }
        offset += len;
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
    let contents = content_hashes(combined, content)?;
    // Descending, NULLs last: ascending bytes put the latest first.
    let orders = rows(combined, order, true)?;
    let ties = rows(combined, tie, false)?;

    let mut index: HashMap<&[u8], usize> = HashMap::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for i in (n_state..n).filter(|&i| kept[i - n_state]) {
        let g = *index.entry(bytes(&keys, i)).or_insert_with(|| {
            members.push(Vec::new());
            members.len() - 1
        });
        members[g].push(i);
    }
    let mut state_of = vec![None; members.len()];
    let mut untouched = Vec::new();
    for s in 0..n_state {
        match index.get(bytes(&keys, s)) {
            Some(&g) => state_of[g] = Some(s),
            None => untouched.push(s),
        }
    }

    let mut fate = vec![Fate::Accepted; n - n_state];
    let mut groups = Vec::with_capacity(members.len());
    for (mut rows_of, state) in members.into_iter().zip(state_of) {
        rows_of.extend(state);
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
        let mut accepted: Vec<usize> = Vec::new();
        for r in rows_of {
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
