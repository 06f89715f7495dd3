//! Writing a table's rows grouped by month (`cluster_by`): each month's
//! rows go to files of their own, in date order, so that a night's
//! changes to recent rows rewrite the files of recent months and leave
//! the files of settled months alone.
//!
//! A table updated by key rewrites every file that holds one of the
//! night's keys. Without grouping, the untouched rows of those files
//! would be written back together, into a file that mixes every month and
//! that the next night touches again: the rows rewritten each night would
//! grow with the table's history.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate};
use deltalake::arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use deltalake::arrow::compute::{CastOptions, cast, cast_with_options, take_record_batch};
use deltalake::arrow::datatypes::{DataType, Date32Type};

use crate::Result;
use crate::error::arrow_err;
use crate::schema::concat_plain;

/// The days since 1970-01-01 of column `column` of `batch` (NULL where it
/// is NULL or not a date).
fn days(t: &str, batch: &RecordBatch, column: &str) -> Result<Vec<Option<i32>>> {
    let Some(c) = batch.column_by_name(column) else { return Ok(vec![None; batch.num_rows()]) };
    let safe = CastOptions { safe: true, ..Default::default() };
    let d = cast_with_options(c, &DataType::Date32, &safe).map_err(arrow_err(t))?;
    Ok(d.as_primitive::<Date32Type>().iter().collect())
}

/// The `yyyymm` of a day, or -1 without one.
fn month(day: Option<i32>) -> i32 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");
    day.and_then(|d| epoch.checked_add_signed(chrono::Duration::days(i64::from(d))))
        .map_or(-1, |d| d.year() * 100 + d.month() as i32)
}

/// `batch`'s rows as one batch per month of `day` (a day per row), months
/// ascending and rows of no date first, each month's rows by day. A batch
/// of no rows stays one (empty) batch: a write needs its schema.
fn split(t: &str, batch: &RecordBatch, day: &[Option<i32>]) -> Result<Vec<RecordBatch>> {
    if batch.num_rows() == 0 {
        return Ok(vec![batch.clone()]);
    }
    let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
    order.sort_by_key(|&i| day[i as usize]);
    let mut out = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let m = month(day[order[start] as usize]);
        let end = start + order[start..].iter().take_while(|&&i| month(day[i as usize]) == m).count();
        let rows = UInt32Array::from(order[start..end].to_vec());
        out.push(take_record_batch(batch, &rows).map_err(arrow_err(t))?);
        start = end;
    }
    Ok(out)
}

/// The rows of `batches` (of table `t`) regrouped by the month of their
/// date column `column`.
pub(crate) fn by_month(t: &str, batches: &[RecordBatch], column: &str) -> Result<Vec<RecordBatch>> {
    let Some(all) = concat_plain(t, batches)? else { return Ok(Vec::new()) };
    split(t, &all, &days(t, &all, column)?)
}

/// The date column of the parent rows, by their key (as text): the month
/// a derived row is written in is its parent's.
pub(crate) struct ParentDays {
    /// The key column, which the derived rows carry too.
    key: String,
    days: HashMap<String, i32>,
}

impl ParentDays {
    /// The days in column `column` of `batches`' rows, by their key column
    /// `key`.
    pub(crate) fn of(t: &str, batches: &[RecordBatch], key: &str, column: &str) -> Result<Self> {
        let mut map = HashMap::new();
        for b in batches {
            let Some(k) = b.column_by_name(key) else { continue };
            let k = cast(k, &DataType::Utf8).map_err(arrow_err(t))?;
            let k = k.as_string::<i32>();
            for (i, d) in days(t, b, column)?.into_iter().enumerate() {
                if let (true, Some(d)) = (k.is_valid(i), d) {
                    map.insert(k.value(i).to_string(), d);
                }
            }
        }
        Ok(Self { key: key.to_string(), days: map })
    }

    /// The rows of `batches` (of derived table `t`, which carries the
    /// parent's key) regrouped by the month of their parent (rows of an
    /// unknown parent first).
    pub(crate) fn by_month(&self, t: &str, batches: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
        let Some(all) = concat_plain(t, batches)? else { return Ok(Vec::new()) };
        let Some(k) = all.column_by_name(&self.key) else { return Ok(vec![all]) };
        let k = cast(k, &DataType::Utf8).map_err(arrow_err(t))?;
        let k = k.as_string::<i32>();
        let day: Vec<Option<i32>> =
            (0..all.num_rows()).map(|i| k.is_valid(i).then(|| self.days.get(k.value(i)).copied()).flatten()).collect();
        split(t, &all, &day)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{Date32Array, Int64Array, StringArray};

    use super::*;

    fn day(y: i32, m: u32, d: u32) -> i32 {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        (NaiveDate::from_ymd_opt(y, m, d).unwrap() - epoch).num_days() as i32
    }

    #[test]
    fn rows_are_grouped_by_month_in_date_order_and_none_is_lost() {
        let dates =
            vec![Some(day(2025, 3, 9)), None, Some(day(2025, 1, 31)), Some(day(2025, 3, 1)), Some(day(2025, 1, 2))];
        let b = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(vec![0, 1, 2, 3, 4])) as _),
            ("claim_date", Arc::new(Date32Array::from(dates)) as _),
        ])
        .unwrap();
        let out = by_month("t", std::slice::from_ref(&b), "claim_date").unwrap();
        let ids: Vec<Vec<i64>> = out
            .iter()
            .map(|b| b.column(0).as_primitive::<deltalake::arrow::datatypes::Int64Type>().values().to_vec())
            .collect();
        assert_eq!(ids, vec![vec![1], vec![4, 2], vec![3, 0]]);

        // A derived row goes with its parent's month.
        let parents = ParentDays::of("t", std::slice::from_ref(&b), "id", "claim_date").unwrap();
        let d = RecordBatch::try_from_iter([
            ("id", Arc::new(StringArray::from(vec!["0", "4", "9", "0"])) as _),
            ("code", Arc::new(StringArray::from(vec!["a", "b", "c", "d"])) as _),
        ])
        .unwrap();
        let out = parents.by_month("d", &[d]).unwrap();
        let codes: Vec<Vec<&str>> =
            out.iter().map(|b| b.column(1).as_string::<i32>().iter().flatten().collect()).collect();
        assert_eq!(codes, vec![vec!["c"], vec!["b"], vec!["a", "d"]]);

        // No rows: one empty batch, with the columns a write needs.
        let none = by_month("t", &[b.slice(0, 0)], "claim_date").unwrap();
        assert_eq!((none.len(), none[0].num_rows(), none[0].num_columns()), (1, 0, 2));
    }
}
