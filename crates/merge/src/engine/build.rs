//! Building the batches a merge writes ([`Builder`]) from planned rows
//! ([`OutRow`]): each row's business values are gathered with one Arrow
//! `interleave` per column from the batch's pieces and the touched file as
//! read ([`FileData`]), never copied row by row.
//!
//! The gather indexes are computed once per kind of column (whether the
//! column takes an updated row's source value, and whether a matched row
//! takes it from its source row) and reused across columns. A current row
//! that a source row matched unchanged takes its key, tracked and type-1
//! values from that source row, so a file read slim supplies only the
//! other columns for every row. The hashes are never recomputed, except
//! the attribute hash of a row updated in place, which mixes two sources
//! and is hashed from what is written.

use std::collections::HashSet;
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, BinaryBuilder, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    new_null_array,
};
use deltalake::arrow::compute::{cast, interleave};
use deltalake::arrow::datatypes::{DataType, Schema, SchemaRef};

use super::arrays::{attr_cols, column};
use super::batch_at;
use super::existing::Existing;
use super::incoming::Incoming;
use super::layout::Layout;
use super::plan::OutRow;
use super::timeline::Content;
use crate::{Batch, Error, OPEN_END, Result, columns};

/// A touched file as read for its rewrite.
pub(super) struct FileData {
    /// The rows `slim_rows` of the file (`None`: every row): their
    /// `recorded_at`, `batch_id` and the business columns a matched source
    /// row cannot supply (or every column).
    pub(super) slim: RecordBatch,
    pub(super) slim_rows: Option<Vec<u32>>,
    /// The other business columns, of the rows `wide_rows` of the file
    /// (`None`: of every row).
    pub(super) wide: RecordBatch,
    pub(super) wide_rows: Option<Vec<u32>>,
}

impl FileData {
    /// A file read whole.
    pub(super) fn whole(batch: RecordBatch) -> Self {
        FileData { slim: batch.clone(), wide: batch, slim_rows: None, wide_rows: None }
    }
}

/// Builds output batches from planned rows.
pub(super) struct Builder<'a> {
    pub(super) layout: &'a Layout,
    pub(super) inc: &'a Incoming,
    pub(super) ex: &'a Existing,
    pub(super) schema: &'a SchemaRef,
    pub(super) batch: &'a Batch,
    /// The source row that left each current row unchanged (`u32::MAX`: none).
    pub(super) partner: &'a [u32],
    /// Columns a matched row takes from its source row.
    pub(super) matched: &'a HashSet<String>,
}

impl Builder<'_> {
    /// The output batch of `rows`, whose existing rows are all of `file`
    /// (`None`: no existing rows, new versions only).
    pub(super) fn build(&self, rows: &[OutRow], file: Option<&FileData>) -> Result<RecordBatch> {
        let ex_row = |r: u32| self.ex.row_in_file[r as usize] as usize;
        // Where row `r` of the file is in a batch read of the rows `read`.
        let at = |read: Option<&[u32]>, r: u32| -> Result<usize> {
            let row = ex_row(r);
            match read {
                None => Ok(row),
                Some(w) => w
                    .binary_search(&(row as u32))
                    .map_err(|_| Error::internal("merge", format!("row {row} of a rewritten file was not read"))),
            }
        };
        let (slim_rows, wide_rows) =
            (file.and_then(|d| d.slim_rows.as_deref()), file.and_then(|d| d.wide_rows.as_deref()));
        let slim_row = |r: u32| at(slim_rows, r);
        let wide_row = |r: u32| at(wide_rows, r);
        // (array, row) per output row: the batch's pieces come first, then
        // the file's slim columns, then its wide ones. `fresh`: the column takes an
        // updated row's source value (type-1 and new columns); `wide`: the
        // column is one a matched row takes from its source row.
        // A loop into a vector of the right size: collecting the results
        // through an iterator of `Result`s grew the vector a row at a time.
        let (slim_at, wide_at) = (self.inc.pieces.len(), self.inc.pieces.len() + 1);
        let refs = |fresh: bool, wide: bool| -> Result<Vec<(usize, usize)>> {
            let mut out = Vec::with_capacity(rows.len());
            for o in rows {
                out.push(match o.content {
                    Content::Incoming(i) => self.inc.at(i as usize),
                    Content::Updated { from: i, .. } if fresh => self.inc.at(i as usize),
                    Content::Existing(r) | Content::Updated { base: r, .. } if !wide => (slim_at, slim_row(r)?),
                    Content::Existing(r) | Content::Updated { base: r, .. } => match o.matched(self.partner) {
                        Some(i) if wide_rows.is_some() => self.inc.at(i),
                        _ => (wide_at, wide_row(r)?),
                    },
                });
            }
            Ok(out)
        };
        let mut memo: [Option<Vec<(usize, usize)>>; 4] = Default::default();
        let empty = RecordBatch::new_empty(Arc::new(Schema::empty()));
        let (slim, wide) = file.map_or((&empty, &empty), |d| (&d.slim, &d.wide));
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        cols.push(Arc::new(Int64Array::from_iter_values(rows.iter().map(|o| o.sk))));
        for f in &self.layout.business {
            let (name, data_type) = (f.name(), f.data_type());
            let fresh = self.layout.type1.contains(name) || !self.layout.existed.contains(name);
            let is_wide = self.matched.contains(name);
            let slot = &mut memo[usize::from(fresh) * 2 + usize::from(is_wide)];
            if slot.is_none() {
                *slot = Some(refs(fresh, is_wide)?);
            }
            let mut arrays: Vec<ArrayRef> = Vec::with_capacity(wide_at + 1);
            for piece in &self.inc.pieces {
                arrays.push(Arc::clone(column(piece, name)?));
            }
            arrays.extend([from_file(slim, name, data_type)?, from_file(wide, name, data_type)?]);
            let arrays: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
            cols.push(interleave(&arrays, slot.as_deref().unwrap_or_default()).map_err(|e| Error::arrow(name, e))?);
        }
        let business = RecordBatch::try_new(Arc::new(Schema::new(self.layout.business.clone())), cols[1..].to_vec())
            .map_err(|e| Error::arrow("business columns", e))?;
        self.hashes(rows, &business, &mut cols)?;
        self.engine_columns(rows, slim, &slim_row, &mut cols)?;
        RecordBatch::try_new(Arc::clone(self.schema), cols).map_err(|e| Error::arrow("output rows", e))
    }

    /// Appends `key_hash` and `attr_hash` of `rows` to `cols`; `business`
    /// holds the rows' business columns.
    fn hashes(&self, rows: &[OutRow], business: &RecordBatch, cols: &mut Vec<ArrayRef>) -> Result<()> {
        let n = rows.len();
        let mut key_hash = BinaryBuilder::with_capacity(n, n * 16);
        let mut attr_hash = BinaryBuilder::with_capacity(n, n * 16);
        let tracked = attr_cols(business, &self.layout.tracked, self.layout.encoding)?;
        let mut buf = Vec::new();
        for (row, o) in rows.iter().enumerate() {
            key_hash.append_value(o.key.to_le_bytes());
            // An updated row mixes two sources: its hash comes from what is written.
            let attr = match o.content {
                Content::Existing(r) => self.ex.stored_attr(r as usize),
                Content::Incoming(i) => self.inc.full(i as usize),
                Content::Updated { .. } => tracked.hash(row, &mut buf),
            };
            attr_hash.append_value(attr.to_le_bytes());
        }
        cols.push(Arc::new(key_hash.finish()));
        cols.push(Arc::new(attr_hash.finish()));
        Ok(())
    }

    /// Appends the interval, flag and bookkeeping columns of `rows` to
    /// `cols`: `recorded_at` and `batch_id` are kept (from the file's
    /// `slim` columns, row `slim_row(r)` for existing row `r`) for existing
    /// rows, and this batch's for new ones.
    fn engine_columns(
        &self,
        rows: &[OutRow],
        slim: &RecordBatch,
        slim_row: &impl Fn(u32) -> Result<usize>,
        cols: &mut Vec<ArrayRef>,
    ) -> Result<()> {
        let n = rows.len();
        let ts = |v: Vec<i64>| -> ArrayRef { Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC")) };
        cols.push(ts(rows.iter().map(|o| o.from).collect()));
        cols.push(ts(rows.iter().map(|o| o.to).collect()));
        cols.push(Arc::new(BooleanArray::from(rows.iter().map(|o| o.deleted).collect::<Vec<_>>())));
        cols.push(Arc::new(BooleanArray::from(rows.iter().map(|o| o.inferred).collect::<Vec<_>>())));
        // recorded_at and batch_id: kept for existing rows, this batch's for new ones.
        let mut meta_refs: Vec<(usize, usize)> = Vec::with_capacity(n);
        for o in rows {
            meta_refs.push(match o.content {
                Content::Existing(r) | Content::Updated { base: r, .. } => (1, slim_row(r)?),
                Content::Incoming(_) => (0, 0),
            });
        }
        let now: ArrayRef = ts(vec![batch_at(self.batch)]);
        let id: ArrayRef = Arc::new(StringArray::from(vec![self.batch.id.clone()]));
        for (name, own) in [(columns::RECORDED_AT, now), (columns::BATCH_ID, id)] {
            let kept = from_file(slim, name, own.data_type())?;
            cols.push(interleave(&[own.as_ref(), kept.as_ref()], &meta_refs).map_err(|e| Error::arrow(name, e))?);
        }
        cols.push(Arc::new(BooleanArray::from(rows.iter().map(|o| o.to == OPEN_END).collect::<Vec<_>>())));
        Ok(())
    }
}

/// Column `name` of `b` as `data_type`: NULL when the file lacks it (a
/// column new to the table).
fn from_file(b: &RecordBatch, name: &str, data_type: &DataType) -> Result<ArrayRef> {
    match b.column_by_name(name) {
        Some(c) if c.data_type() == data_type => Ok(Arc::clone(c)),
        Some(c) => cast(c, data_type).map_err(|e| Error::arrow(name, e)),
        None => Ok(new_null_array(data_type, b.num_rows())),
    }
}
