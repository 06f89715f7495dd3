//! Reading silver: a table's live rows in one batch, and its columns as
//! the typed vectors the facts are built from.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, RecordBatch, StringArray, UInt32Array,
};
use deltalake::arrow::compute::{cast, concat_batches, filter_record_batch, take_record_batch};
use deltalake::arrow::datatypes::{DataType, Date32Type, Schema, TimeUnit, TimestampMicrosecondType};
use storage::{TableName, Warehouse};

use crate::{Error, Result, UNKNOWN_DATE_KEY, date};

/// Microseconds in a day.
pub(crate) const DAY_MICROS: i64 = 86_400_000_000;

/// Column `name` of `b`, a column of `table`.
pub(crate) fn col<'a>(table: &str, b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    b.column_by_name(name).ok_or_else(|| Error::column(table, name, "is missing"))
}

/// Column `name` of `b` cast to `t`.
pub(crate) fn cast_to(table: &str, b: &RecordBatch, name: &str, t: &DataType) -> Result<ArrayRef> {
    cast(col(table, b, name)?, t).map_err(|e| Error::arrow(table, e))
}

/// Column `name` of `b` as text.
pub(crate) fn string_col(table: &str, b: &RecordBatch, name: &str) -> Result<StringArray> {
    Ok(cast_to(table, b, name, &DataType::Utf8)?.as_string::<i32>().clone())
}

/// Column `name` of `b` as dates (days since 1970-01-01).
pub(crate) fn days_col(table: &str, b: &RecordBatch, name: &str) -> Result<Vec<Option<i32>>> {
    let a = cast_to(table, b, name, &DataType::Date32)?;
    Ok(a.as_primitive::<Date32Type>().iter().collect())
}

/// Column `name` of `b` as timestamps (micros since 1970-01-01 UTC).
pub(crate) fn micros_col(table: &str, b: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>> {
    let a = cast_to(table, b, name, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    Ok(a.as_primitive::<TimestampMicrosecondType>().iter().collect())
}

/// A date (days since 1970-01-01) as the micros of its 00:00 UTC.
pub(crate) fn day_start(days: Option<i32>) -> Option<i64> {
    days.map(|d| i64::from(d) * DAY_MICROS)
}

/// The `yyyymm` partition of a date, `-1` without one.
pub(crate) fn month_of(days: Option<i32>) -> i32 {
    let key = date::date_key_of_days(days);
    if key < 0 { -1 } else { key / 100 }
}

/// The rows of a silver table (those not `_is_deleted`), in one batch, or
/// `None` when the table does not exist.
pub(crate) async fn silver(warehouse: &Warehouse, table: &str, columns: &[&str]) -> Result<Option<RecordBatch>> {
    silver_where(warehouse, table, columns, None).await
}

/// [`silver`]'s rows that match the SQL predicate `filter`, if given.
/// Columns whose names start with `_` may be absent; any other missing
/// column is an error.
async fn silver_where(
    warehouse: &Warehouse,
    table: &str,
    columns: &[&str],
    filter: Option<&str>,
) -> Result<Option<RecordBatch>> {
    let name = TableName::new(table)?;
    let Some(delta) = warehouse.load(&name).await? else { return Ok(None) };
    let present: HashSet<String> = delta
        .snapshot()
        .map_err(|e| storage::Error::Delta { table: table.to_string(), source: Box::new(e) })?
        .schema()
        .fields()
        .map(|f| f.name().clone())
        .collect();
    let mut wanted: Vec<&str> = columns.iter().copied().filter(|c| present.contains(*c)).collect();
    for c in columns {
        if !present.contains(*c) && !c.starts_with('_') {
            return Err(Error::column(table, c, "is missing"));
        }
    }
    let has_deleted = present.contains("_is_deleted");
    if has_deleted {
        wanted.push("_is_deleted");
    }
    let batches = match filter {
        Some(f) => warehouse.scan_columns_where(&name, None, &wanted, f).await?,
        None => warehouse.scan_columns(&name, None, &wanted).await?,
    };
    let schema = match batches.first() {
        Some(b) => b.schema(),
        None => return Ok(Some(RecordBatch::new_empty(Arc::new(Schema::empty())))),
    };
    let mut one = concat_batches(&schema, &batches).map_err(|e| Error::arrow(table, e))?;
    if has_deleted {
        let d = one.column_by_name("_is_deleted").map(|c| c.as_boolean().clone());
        if let Some(d) = d {
            let live: BooleanArray = (0..d.len()).map(|i| Some(!(d.is_valid(i) && d.value(i)))).collect();
            one = filter_record_batch(&one, &live).map_err(|e| Error::arrow(table, e))?;
        }
    }
    Ok(Some(one))
}

/// Columns `columns` of the live rows of silver `table` whose key column
/// `id` is one of `ids` (unique keys), in the order of `ids`. `days` are
/// those rows' dates in column `date` (as [`days_col`] reads them): the
/// files whose statistics hold only earlier dates are not read, so a
/// night that rebuilds recent rows reads recent files.
pub(crate) async fn silver_rows_of(
    warehouse: &Warehouse,
    table: &str,
    columns: &[&str],
    (id, ids): (&str, &StringArray),
    (date, days): (&str, &[Option<i32>]),
) -> Result<RecordBatch> {
    let name = TableName::new(table)?;
    let no_table = || Error::from(storage::Error::NoSuchTable { table: table.to_string() });
    if ids.is_empty() {
        // No rows: the columns as the table holds them.
        let schema = warehouse.arrow_schema(&name).await?.ok_or_else(no_table)?;
        let fields: Vec<_> = columns.iter().filter_map(|c| schema.field_with_name(c).ok().cloned()).collect();
        return Ok(RecordBatch::new_empty(Arc::new(Schema::new(fields))));
    }
    let filter = match days.iter().flatten().min() {
        Some(&d) => {
            let day = chrono::NaiveDate::from_num_days_from_ce_opt(d + 719_163).map(|d| d.to_string());
            let day = day.ok_or_else(|| Error::column(table, date, "holds a date out of range"))?;
            format!("{date} >= DATE '{day}' OR {date} IS NULL")
        }
        None => format!("{date} IS NULL"),
    };
    let rows = silver_where(warehouse, table, columns, Some(&filter)).await?.ok_or_else(no_table)?;
    let changed = || Error::column(table, id, "changed while the facts were built");
    if rows.num_columns() == 0 {
        return Err(changed());
    }
    let found = string_col(table, &rows, id)?;
    let at: HashMap<&str, u32> =
        (0..found.len()).filter(|&i| found.is_valid(i)).map(|i| (found.value(i), i as u32)).collect();
    let take = (0..ids.len())
        .map(|i| ids.is_valid(i).then(|| at.get(ids.value(i)).copied()).flatten().ok_or_else(changed))
        .collect::<Result<Vec<u32>>>()?;
    take_record_batch(&rows, &UInt32Array::from(take)).map_err(|e| Error::arrow(table, e))
}

/// The year of a date inside `dim_date`'s range, else `None`.
pub(crate) fn year_of(days: &i32) -> Option<i32> {
    let key = date::date_key_of_days(Some(*days));
    (key != UNKNOWN_DATE_KEY).then_some(key / 10_000)
}

/// `values` as a `decimal(18, 2)` column.
pub(crate) fn decimal(table: &str, values: Vec<Option<i128>>) -> Result<ArrayRef> {
    Ok(Arc::new(Decimal128Array::from(values).with_precision_and_scale(18, 2).map_err(|e| Error::arrow(table, e))?))
}
