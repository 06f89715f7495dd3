//! Table content as rows of text, for comparing tables across versions and
//! warehouses: an order-independent content hash, and the rows one side has
//! and the other lacks.

use std::collections::HashMap;

use deltalake::arrow::array::Array;
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::arrow::util::display::{ArrayFormatter, FormatOptions};

/// A table's rows, each value as the text Arrow's display gives it (floats
/// in their shortest exact form), with columns in name order so that two
/// tables with the same columns in another order compare equal.
#[derive(Clone, Debug, Default)]
pub struct RowSet {
    /// The column names, sorted.
    pub columns: Vec<String>,
    /// Each row's values in the order of `columns`; `None` for NULL.
    pub rows: Vec<Vec<Option<String>>>,
}

impl RowSet {
    /// The rows of `batches`, leaving out the columns in `exclude`.
    pub fn from_batches(batches: &[RecordBatch], exclude: &[&str]) -> Result<Self, ArrowError> {
        let Some(first) = batches.first() else { return Ok(Self::default()) };
        let mut columns: Vec<String> = first
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| !exclude.contains(&n.as_str()))
            .collect();
        columns.sort();
        let options = FormatOptions::default().with_null("");
        let mut rows = Vec::new();
        for batch in batches {
            let arrays = columns
                .iter()
                .map(|c| {
                    batch
                        .column_by_name(c)
                        .ok_or_else(|| ArrowError::SchemaError(format!("column {c} is missing in a batch")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let formatters =
                arrays.iter().map(|a| ArrayFormatter::try_new(a.as_ref(), &options)).collect::<Result<Vec<_>, _>>()?;
            for i in 0..batch.num_rows() {
                rows.push(
                    arrays
                        .iter()
                        .zip(&formatters)
                        .map(|(a, f)| a.is_valid(i).then(|| f.value(i).to_string()))
                        .collect(),
                );
            }
        }
        Ok(Self { columns, rows })
    }

    /// BLAKE3 of row `i`: each column's name and value, length-prefixed,
    /// with NULL distinct from every string.
    pub fn row_digest(&self, i: usize) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        for (name, value) in self.columns.iter().zip(&self.rows[i]) {
            h.update(&(name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            match value {
                None => {
                    h.update(&[0]);
                }
                Some(v) => {
                    h.update(&[1]);
                    h.update(&(v.len() as u64).to_le_bytes());
                    h.update(v.as_bytes());
                }
            }
        }
        *h.finalize().as_bytes()
    }

    /// The content hash: BLAKE3 over the sorted row digests, so it depends
    /// on the rows (with their multiplicity) and not on their order or
    /// file layout.
    pub fn content_hash(&self) -> String {
        let mut digests: Vec<[u8; 32]> = (0..self.rows.len()).map(|i| self.row_digest(i)).collect();
        digests.sort_unstable();
        let mut h = blake3::Hasher::new();
        h.update(&(digests.len() as u64).to_le_bytes());
        for d in &digests {
            h.update(d);
        }
        h.finalize().to_hex().to_string()
    }

    /// Row `i` as a JSON object of column → text (or null).
    pub fn row_json(&self, i: usize) -> serde_json::Value {
        serde_json::Value::Object(
            self.columns
                .iter()
                .zip(&self.rows[i])
                .map(|(c, v)| (c.clone(), v.as_ref().map_or(serde_json::Value::Null, |s| s.clone().into())))
                .collect(),
        )
    }
}

/// The rows of `before` missing from `after` (removed) and of `after`
/// missing from `before` (added), as indexes, counting duplicates: a row
/// twice before and once after is removed once.
pub fn row_diff(before: &RowSet, after: &RowSet) -> (Vec<usize>, Vec<usize>) {
    let mut counts: HashMap<[u8; 32], Vec<usize>> = HashMap::new();
    for i in 0..before.rows.len() {
        counts.entry(before.row_digest(i)).or_default().push(i);
    }
    let mut added = Vec::new();
    for i in 0..after.rows.len() {
        match counts.get_mut(&after.row_digest(i)).and_then(Vec::pop) {
            Some(_) => {}
            None => added.push(i),
        }
    }
    let mut removed: Vec<usize> = counts.into_values().flatten().collect();
    removed.sort_unstable();
    (removed, added)
}
