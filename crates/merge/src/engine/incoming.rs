//! The batch's rows as the merge sees them ([`Incoming`]): in the table's
//! business layout, hashed, with each row's effective time and delete
//! flag, and then sorted and grouped by key.
//!
//! [`prepare_incoming`] takes the source's pieces as they were read (64k
//! rows of a CSV) and keeps them so: joining them into one batch would copy
//! every value once more. A row of the batch is found by its piece's first
//! row ([`locate`], [`located`]); only a column read across the batch (an
//! ordering, effective-date or delete-marker column) is joined, on its own.
//! The hashes are computed on every thread, each run of rows into its own
//! part of the vectors ([`parallel::split_runs`]), and a hash vector that
//! would repeat another (every tracked column being compared, no type-1
//! columns) is left empty.
//!
//! [`sort_incoming`] sorts the rows not settled on the fast path as
//! `(key, time, row)` tuples in place rather than through the row index,
//! so a million rows sort without a cache miss per comparison, and refuses
//! two rows of one key that tie on time and order but differ; [`group`]
//! cuts them into one run per key, dropping exact duplicates.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use deltalake::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, TimestampMicrosecondArray, new_null_array};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Schema, SchemaRef};
use deltalake::arrow::row::{RowConverter, SortField};

use super::arrays::{attr_cols, column, ts_type, whole_column};
use super::layout::Layout;
use super::{Mode, batch_at};
use crate::hash::{Attrs, Col, Hash128, encode_key, hash128};
use crate::{Batch, Deletes, Error, Metrics, Result, Spec};

/// Per-row facts about the incoming batch.
pub(super) struct Incoming {
    /// The rows in the table's business layout, in the pieces they were
    /// read in; row `i` of the batch is found by [`Incoming::at`].
    pub(super) pieces: Vec<RecordBatch>,
    /// The batch's first row of each piece.
    pub(super) starts: Vec<usize>,
    /// The pieces' schema: the business layout.
    pub(super) schema: SchemaRef,
    pub(super) key: Vec<Hash128>,
    pub(super) cmp: Vec<Hash128>,
    /// Hashes of every tracked column the source has; empty when those
    /// are exactly the compared ones (`cmp`).
    pub(super) full: Vec<Hash128>,
    /// Type-1 fingerprints; empty without type-1 columns (all 0).
    pub(super) t1: Vec<Hash128>,
    pub(super) eff: Vec<i64>,
    pub(super) delete: Vec<bool>,
    /// The key hash of a row whose key is all NULL (inferring only).
    pub(super) unknown_key: Option<Hash128>,
}

impl Incoming {
    /// The piece holding row `i` of the batch, and the row within it.
    #[inline]
    pub(super) fn at(&self, i: usize) -> (usize, usize) {
        locate(&self.starts, i)
    }

    /// Column `name` of every row, as one array: for the few columns read
    /// across the batch (ordering columns).
    pub(super) fn column(&self, name: &str) -> Result<ArrayRef> {
        whole_column(&self.schema, &self.pieces, name)
    }

    /// The hash of every tracked column the source has, of row `i`.
    #[inline]
    pub(super) fn full(&self, i: usize) -> Hash128 {
        self.full.get(i).copied().unwrap_or(self.cmp[i])
    }

    /// The type-1 fingerprint of row `i` (0 without type-1 columns).
    #[inline]
    pub(super) fn t1(&self, i: usize) -> Hash128 {
        self.t1.get(i).copied().unwrap_or(0)
    }
}

/// The piece of `starts` (each piece's first row) holding row `i`, and
/// the row within it.
#[inline]
pub(super) fn locate(starts: &[usize], i: usize) -> (usize, usize) {
    let p = starts.partition_point(|&s| s <= i).saturating_sub(1);
    (p, i - starts.get(p).copied().unwrap_or(0))
}

/// The rows `rows` of the batch as (piece, row in it), `starts` being
/// each piece's first row.
pub(super) fn located(starts: &[usize], rows: std::ops::Range<usize>) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut p = locate(starts, rows.start).0;
    rows.map(move |i| {
        while starts.get(p + 1).is_some_and(|&s| s <= i) {
            p += 1;
        }
        (p, i - starts[p])
    })
}

/// Each piece's columns as the hashes read them.
struct Views<'a> {
    key: Vec<Col<'a>>,
    cmp: Attrs<'a>,
    full: Attrs<'a>,
    t1: Attrs<'a>,
}

/// The batch's rows in the table's business layout, hashed, with their
/// effective times and delete flags.
pub(super) fn prepare_incoming(
    spec: &Spec,
    layout: &Layout,
    source: Vec<RecordBatch>,
    batch: &Batch,
    mode: Mode,
) -> Result<Incoming> {
    let schema = Arc::new(Schema::new(layout.business.clone()));
    let pieces = to_layout(layout, &schema, source)?;
    let mut starts = Vec::with_capacity(pieces.len());
    let mut n = 0;
    for piece in &pieces {
        starts.push(n);
        n += piece.num_rows();
    }

    let tracked_in_source: Vec<String> =
        layout.tracked.iter().filter(|c| layout.in_source.contains(*c)).cloned().collect();
    let views = pieces
        .iter()
        .map(|p| {
            Ok(Views {
                key: spec.key.iter().map(|k| Col::new(k, column(p, k)?)).collect::<Result<Vec<_>>>()?,
                cmp: attr_cols(p, &layout.cmp_cols, layout.encoding)?,
                full: attr_cols(p, &tracked_in_source, layout.encoding)?,
                t1: attr_cols(p, &layout.t1_cols, layout.encoding)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    check_keys(spec, mode, &views, &starts, n)?;
    let eff = match mode {
        Mode::Changes => effective_times(spec, &schema, &pieces, n, batch)?,
        Mode::Infer => vec![crate::INFERRED_FROM; n],
    };
    let delete = match &spec.deletes {
        Deletes::Events { column: c, values } => {
            let text = cast(&whole_column(&schema, &pieces, c)?, &DataType::Utf8).map_err(|e| Error::arrow(c, e))?;
            let text = text.as_string::<i32>();
            (0..n).map(|r| text.is_valid(r) && values.iter().any(|v| v == text.value(r))).collect()
        }
        _ => vec![false; n],
    };
    let (key, cmp, full, t1) = hash_rows(&views, &starts, n)?;
    let unknown_row = (mode == Mode::Infer)
        .then(|| every_row(&views, &starts, n).position(|(v, r)| v.key.iter().all(|c| c.is_null(r))));
    drop(views);
    Ok(Incoming {
        unknown_key: unknown_row.flatten().map(|r| key[r]),
        pieces,
        starts,
        schema,
        key,
        cmp,
        full,
        t1,
        eff,
        delete,
    })
}

/// Each piece in the table's business layout (`schema`): table types, NULL
/// for columns the source lacks. Piece by piece, on every thread.
fn to_layout(layout: &Layout, schema: &SchemaRef, source: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    let to_layout = |piece: RecordBatch| -> Result<RecordBatch> {
        let mut cols = Vec::with_capacity(layout.business.len());
        for f in &layout.business {
            let col = match piece.column_by_name(f.name()) {
                Some(c) if c.data_type() == f.data_type() => Arc::clone(c),
                Some(c) => {
                    let cast_options = deltalake::arrow::compute::CastOptions { safe: false, ..Default::default() };
                    deltalake::arrow::compute::cast_with_options(c, f.data_type(), &cast_options).map_err(|e| {
                        Error::Column {
                            column: f.name().clone(),
                            reason: format!("does not convert to the table's type {}: {e}", f.data_type()),
                        }
                    })?
                }
                None => new_null_array(f.data_type(), piece.num_rows()),
            };
            cols.push(col);
        }
        RecordBatch::try_new(Arc::clone(schema), cols).map_err(|e| Error::arrow("batch", e))
    };
    parallel::on_threads(source, to_layout)?.into_iter().collect()
}

/// Every row of the batch as (its piece's views, row in the piece).
fn every_row<'v, 'a>(
    views: &'v [Views<'a>],
    starts: &'v [usize],
    n: usize,
) -> impl Iterator<Item = (&'v Views<'a>, usize)> + 'v {
    located(starts, 0..n).map(|(p, r)| (&views[p], r))
}

/// Changes need every key column; inferred keys are whole or all NULL
/// (the unknown row).
fn check_keys(spec: &Spec, mode: Mode, views: &[Views<'_>], starts: &[usize], n: usize) -> Result<()> {
    if mode == Mode::Changes {
        for (j, k) in spec.key.iter().enumerate() {
            if let Some(row) = every_row(views, starts, n).position(|(v, r)| v.key[j].is_null(r)) {
                return Err(Error::Row { row: row + 1, reason: format!("key column {k:?} is empty") });
            }
        }
    } else if let Some(row) = every_row(views, starts, n).position(|(v, r)| {
        let nulls = v.key.iter().filter(|c| c.is_null(r)).count();
        nulls > 0 && nulls < v.key.len()
    }) {
        return Err(Error::Row {
            row: row + 1,
            reason: "a key is partly empty; only the unknown row's is all NULL".into(),
        });
    }
    Ok(())
}

/// The hashes of every row: key, compared tracked columns, every tracked
/// column (empty when the same as the compared ones) and type-1 columns
/// (empty without any). On every thread, each run into its own part of
/// the vectors.
#[allow(clippy::type_complexity)]
fn hash_rows(
    views: &[Views<'_>],
    starts: &[usize],
    n: usize,
) -> Result<(Vec<Hash128>, Vec<Hash128>, Vec<Hash128>, Vec<Hash128>)> {
    let (full_n, t1_n) = match views.first() {
        Some(v) => (if v.full.len() != v.cmp.len() { n } else { 0 }, if v.t1.is_empty() { 0 } else { n }),
        None => (0, 0),
    };
    let (mut key, mut cmp, mut full_hash, mut t1) = (vec![0; n], vec![0; n], vec![0; full_n], vec![0; t1_n]);
    let runs = parallel::runs(n);
    let parts = runs
        .iter()
        .cloned()
        .zip(parallel::split_runs(&mut key, &runs))
        .zip(parallel::split_runs(&mut cmp, &runs))
        .zip(parallel::split_runs(&mut full_hash, &runs))
        .zip(parallel::split_runs(&mut t1, &runs))
        .collect();
    parallel::on_threads(parts, |((((rows, key), cmp), full), t1)| {
        let mut buf = Vec::with_capacity(256);
        for (j, (p, r)) in located(starts, rows).enumerate() {
            let v = &views[p];
            encode_key(&v.key, r, &mut buf);
            key[j] = hash128(&buf);
            cmp[j] = v.cmp.hash(r, &mut buf);
            if let Some(slot) = full.get_mut(j) {
                *slot = v.full.hash(r, &mut buf);
            }
            if let Some(slot) = t1.get_mut(j) {
                *slot = v.t1.fingerprint(r, &mut buf);
            }
        }
    })?;
    Ok((key, cmp, full_hash, t1))
}

/// Each row's effective time in UTC microseconds.
fn effective_times(spec: &Spec, schema: &Schema, pieces: &[RecordBatch], n: usize, batch: &Batch) -> Result<Vec<i64>> {
    let Some(name) = &spec.effective_from else { return Ok(vec![batch_at(batch); n]) };
    let col = &whole_column(schema, pieces, name)?;
    let bad = |row: usize, reason: String| Error::Row { row: row + 1, reason: format!("column {name:?}: {reason}") };
    let micros: ArrayRef = match col.data_type() {
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _) => {
            cast(col, &ts_type()).map_err(|e| bad(0, e.to_string()))?
        }
        DataType::Utf8 => {
            let text = col.as_string::<i32>();
            let mut out = Vec::with_capacity(n);
            for r in 0..n {
                if text.is_null(r) {
                    return Err(bad(r, "the effective date is empty".into()));
                }
                out.push(
                    parse_time(text.value(r))
                        .ok_or_else(|| bad(r, format!("{:?} is not a date or an RFC 3339 timestamp", text.value(r))))?,
                );
            }
            Arc::new(TimestampMicrosecondArray::from(out))
        }
        other => return Err(bad(0, format!("type {other} is not a date or timestamp"))),
    };
    let micros = micros.as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>();
    if let Some(r) = (0..n).find(|&r| micros.is_null(r)) {
        return Err(bad(r, "the effective date is empty".into()));
    }
    Ok(micros.values().to_vec())
}

fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_micros());
    }
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc).timestamp_micros())
}

/// The rows of `subset` sorted by (key, effective time, ordering columns,
/// position).
pub(super) fn sort_incoming(spec: &Spec, inc: &Incoming, subset: Vec<u32>) -> Result<Vec<u32>> {
    let rows = if spec.order_by.is_empty() {
        None
    } else {
        let cols: Vec<ArrayRef> = spec.order_by.iter().map(|c| inc.column(c)).collect::<Result<Vec<_>>>()?;
        let fields = cols.iter().map(|c| SortField::new(c.data_type().clone())).collect();
        let converter = RowConverter::new(fields).map_err(|e| Error::arrow("ordering columns", e))?;
        Some(converter.convert_columns(&cols).map_err(|e| Error::arrow("ordering columns", e))?)
    };
    // Sorted as (key, time, row) in place rather than through the row
    // index: a million rows sort without a cache miss per comparison.
    let mut keyed: Vec<(Hash128, i64, u32)> =
        subset.into_iter().map(|i| (inc.key[i as usize], inc.eff[i as usize], i)).collect();
    keyed.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then(a.1.cmp(&b.1))
            .then_with(|| match &rows {
                Some(rows) => rows.row(a.2 as usize).cmp(&rows.row(b.2 as usize)),
                None => std::cmp::Ordering::Equal,
            })
            .then(a.2.cmp(&b.2))
    });
    let order: Vec<u32> = keyed.into_iter().map(|k| k.2).collect();
    // Rows of one key that tie on time and order must be exact duplicates.
    let tie = |a: usize, b: usize| {
        inc.key[a] == inc.key[b]
            && inc.eff[a] == inc.eff[b]
            && rows.as_ref().is_none_or(|rows| rows.row(a) == rows.row(b))
    };
    for w in order.windows(2) {
        let (a, b) = (w[0] as usize, w[1] as usize);
        if tie(a, b) && (inc.full(a) != inc.full(b) || inc.t1(a) != inc.t1(b) || inc.delete[a] != inc.delete[b]) {
            return Err(Error::Row {
                row: b + 1,
                reason: format!(
                    "conflicts with row {} for the same key at the same effective time and order{}; \
                     declare an ordering or tie-break column that tells them apart",
                    a + 1,
                    if spec.order_by.is_empty() { String::new() } else { format!(" ({})", spec.order_by.join(", ")) }
                ),
            });
        }
    }
    Ok(order)
}

/// Splits the sorted rows into one run per key, dropping exact duplicates:
/// `order` keeps the rows that count and each range indexes into it.
pub(super) fn group(inc: &Incoming, order: &mut Vec<u32>, metrics: &mut Metrics) -> Vec<std::ops::Range<usize>> {
    let mut kept: Vec<u32> = Vec::with_capacity(order.len());
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    for &i in order.iter() {
        let r = i as usize;
        match kept.last().map(|&p| p as usize) {
            Some(p) if inc.key[p] == inc.key[r] => {
                if inc.eff[p] == inc.eff[r]
                    && inc.full(p) == inc.full(r)
                    && inc.t1(p) == inc.t1(r)
                    && inc.delete[p] == inc.delete[r]
                {
                    metrics.duplicates += 1;
                    continue;
                }
                kept.push(i);
                if let Some(g) = groups.last_mut() {
                    g.end = kept.len();
                }
            }
            _ => {
                kept.push(i);
                groups.push(kept.len() - 1..kept.len());
            }
        }
    }
    *order = kept;
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_of_a_batch_read_in_pieces_is_found_in_its_piece() {
        // Pieces of 3, 4 and 2 rows.
        let starts = [0, 3, 7];
        assert_eq!(locate(&starts, 0), (0, 0));
        assert_eq!(locate(&starts, 2), (0, 2));
        assert_eq!(locate(&starts, 3), (1, 0));
        assert_eq!(locate(&starts, 6), (1, 3));
        assert_eq!(locate(&starts, 8), (2, 1));
        let every: Vec<(usize, usize)> = (0..9).map(|i| locate(&starts, i)).collect();
        assert_eq!(located(&starts, 0..9).collect::<Vec<_>>(), every);
        assert_eq!(located(&starts, 2..8).collect::<Vec<_>>(), every[2..8]);
        assert_eq!(located(&[], 0..0).count(), 0);
    }
}
