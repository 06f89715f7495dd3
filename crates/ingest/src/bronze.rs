//! Building bronze record batches: the declared columns, typed, plus the
//! metadata columns every bronze row carries.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use deltalake::arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder,
    RecordBatch, StringBuilder, TimestampMicrosecondBuilder, new_null_array,
};
use deltalake::arrow::compute::kernels::cast_utils::parse_decimal;
use deltalake::arrow::datatypes::{DataType, Date32Type, Decimal128Type, Field, Schema, SchemaRef, TimeUnit};
use deltalake::arrow::json::reader::{Decoder, ReaderBuilder};
use serde_json::Value;

use crate::model::{ColumnType, SourceDef};
use crate::{Error, Result};

/// Rows per record batch.
const BATCH_ROWS: usize = 65_536;

/// The metadata columns, in order, after the declared ones.
pub const METADATA_COLUMNS: [&str; 7] =
    ["_batch_id", "_ingested_at", "_source_file", "_source_row", "_rescued_data", "_error", "_ingest_date"];

fn metadata_fields() -> Vec<Field> {
    vec![
        Field::new("_batch_id", DataType::Utf8, false),
        Field::new("_ingested_at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        Field::new("_source_file", DataType::Utf8, false),
        Field::new("_source_row", DataType::Int64, false),
        Field::new("_rescued_data", DataType::Utf8, true),
        Field::new("_error", DataType::Utf8, true),
        Field::new("_ingest_date", DataType::Date32, false),
    ]
}

/// A declared scalar column, filled from text.
enum Text {
    Str(StringBuilder),
    Int(Int64Builder),
    Double(Float64Builder),
    Decimal(Decimal128Builder, u8, i8),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
}

/// `YYYY-MM-DD` read straight from the bytes (the common case, several
/// times faster than a format string), else `None`.
fn fast_date(s: &[u8]) -> Option<NaiveDate> {
    if s.len() != 10 || s[4] != b'-' || s[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        s[r].iter().try_fold(0u32, |acc, b| b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0')))
    };
    NaiveDate::from_ymd_opt(i32::try_from(num(0..4)?).ok()?, num(5..7)?, num(8..10)?)
}

/// Parses a date as `YYYY-MM-DD`.
pub(crate) fn parse_date(s: &str) -> Option<NaiveDate> {
    fast_date(s.as_bytes()).or_else(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
}

/// Parses a timestamp as senders write it: RFC 3339, or a naive
/// `YYYY-MM-DD[ T]HH:MM:SS[.f]` taken as UTC.
pub(crate) fn parse_timestamp(s: &str) -> Option<i64> {
    // The common shapes, `YYYY-MM-DD HH:MM:SS` and `YYYY-MM-DDTHH:MM:SSZ`,
    // read straight from the bytes.
    let b = s.as_bytes();
    if (b.len() == 19 || (b.len() == 20 && b[19] == b'Z'))
        && (b[10] == b' ' || b[10] == b'T')
        && b[13] == b':'
        && b[16] == b':'
    {
        let num = |r: std::ops::Range<usize>| {
            b[r].iter().try_fold(0u32, |acc, c| c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0')))
        };
        if let (Some(d), Some(h), Some(m), Some(sec)) = (fast_date(&b[..10]), num(11..13), num(14..16), num(17..19))
            && let Some(t) = d.and_hms_opt(h, m, sec)
        {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|t| t.and_utc().timestamp_micros())
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "t" | "1" | "1.0" | "yes" | "y" => Some(true),
        "false" | "f" | "0" | "0.0" | "no" | "n" => Some(false),
        _ => None,
    }
}

impl Text {
    fn new(t: &ColumnType) -> Self {
        match t {
            ColumnType::Int => Self::Int(Int64Builder::with_capacity(BATCH_ROWS)),
            ColumnType::Double => Self::Double(Float64Builder::with_capacity(BATCH_ROWS)),
            ColumnType::Decimal(p, s) => Self::Decimal(Decimal128Builder::with_capacity(BATCH_ROWS), *p, *s),
            ColumnType::Boolean => Self::Bool(BooleanBuilder::with_capacity(BATCH_ROWS)),
            ColumnType::Date => Self::Date(Date32Builder::with_capacity(BATCH_ROWS)),
            ColumnType::Timestamp => Self::Timestamp(TimestampMicrosecondBuilder::with_capacity(BATCH_ROWS)),
            _ => Self::Str(StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 16)),
        }
    }

    fn append_null(&mut self) {
        match self {
            Self::Str(b) => b.append_null(),
            Self::Int(b) => b.append_null(),
            Self::Double(b) => b.append_null(),
            Self::Decimal(b, ..) => b.append_null(),
            Self::Bool(b) => b.append_null(),
            Self::Date(b) => b.append_null(),
            Self::Timestamp(b) => b.append_null(),
        }
    }

    /// Appends `s`; a value that does not parse appends NULL and returns false.
    /// An empty value is NULL for every type but string.
    fn append(&mut self, s: &str) -> bool {
        if s.is_empty() {
            match self {
                Self::Str(b) => b.append_value(""),
                other => other.append_null(),
            }
            return true;
        }
        let parsed = match self {
            Self::Str(b) => {
                b.append_value(s);
                return true;
            }
            Self::Int(b) => s.trim().parse::<i64>().ok().map(|v| b.append_value(v)),
            Self::Double(b) => s.trim().parse::<f64>().ok().filter(|v| v.is_finite()).map(|v| b.append_value(v)),
            Self::Decimal(b, p, sc) => {
                parse_decimal::<Decimal128Type>(s.trim(), *p, *sc).ok().map(|v| b.append_value(v))
            }
            Self::Bool(b) => parse_bool(s.trim()).map(|v| b.append_value(v)),
            Self::Date(b) => NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                .ok()
                .map(|d| b.append_value(Date32Type::from_naive_date(d))),
            Self::Timestamp(b) => parse_timestamp(s.trim()).map(|v| b.append_value(v)),
        };
        if parsed.is_none() {
            self.append_null();
        }
        parsed.is_some()
    }

    fn finish(&mut self, data_type: &DataType) -> ArrayRef {
        match self {
            Self::Str(b) => Arc::new(b.finish()),
            Self::Int(b) => Arc::new(b.finish()),
            Self::Double(b) => Arc::new(b.finish()),
            Self::Decimal(b, ..) => Arc::new(b.finish().with_data_type(data_type.clone())),
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
            Self::Timestamp(b) => Arc::new(b.finish().with_timezone("UTC")),
        }
    }
}

/// A declared nested column (list or struct), filled from JSON values.
struct Nested {
    name: String,
    column_type: ColumnType,
    decoder: Decoder,
    pending: Vec<Value>,
}

/// Does `v` have the shape of `t`? Values that fit are decoded by Arrow;
/// values that do not are rescued.
fn fits(v: &Value, t: &ColumnType) -> bool {
    match (t, v) {
        (_, Value::Null) => true,
        (ColumnType::String, Value::String(_)) => true,
        (ColumnType::Int, Value::Number(n)) => n.is_i64(),
        (ColumnType::Double | ColumnType::Decimal(..), Value::Number(_)) => true,
        (ColumnType::Boolean, Value::Bool(_)) => true,
        (ColumnType::Date, Value::String(s)) => parse_date(s).is_some(),
        (ColumnType::Timestamp, Value::String(s)) => parse_timestamp(s).is_some(),
        (ColumnType::List(inner), Value::Array(items)) => items.iter().all(|i| fits(i, inner)),
        (ColumnType::Struct(fields), Value::Object(map)) => {
            map.keys().all(|k| fields.iter().any(|(n, _)| n == k))
                && fields.iter().all(|(n, ft)| map.get(n).is_none_or(|x| fits(x, ft)))
        }
        _ => false,
    }
}

enum Column {
    Text(Text),
    Nested(Box<Nested>),
}

/// Per-batch identity written into every row.
#[derive(Clone, Debug)]
pub(crate) struct BatchMeta {
    pub(crate) batch_id: String,
    pub(crate) ingested_at_micros: i64,
    pub(crate) ingest_date: i32,
}

/// Builds one source's bronze batches row by row.
pub(crate) struct BronzeBuilder {
    table: String,
    schema: SchemaRef,
    declared: usize,
    columns: Vec<Column>,
    /// Columns added by `add-column` drift: name and builder.
    extra: Vec<(String, StringBuilder)>,
    meta: BatchMeta,
    source_file: StringBuilder,
    source_row: Int64Builder,
    rescued: StringBuilder,
    error: StringBuilder,
    in_batch: usize,
    batches: Vec<RecordBatch>,
    /// Where full batches go as they are cut, when streaming; else they
    /// are kept in `batches`.
    sink: Option<storage::Lane>,
    pub(crate) rows: u64,
    pub(crate) rescued_rows: u64,
}

impl BronzeBuilder {
    pub(crate) fn new(source: &SourceDef, meta: BatchMeta) -> Result<Self> {
        let mut fields: Vec<Field> =
            source.columns.iter().map(|c| Field::new(&c.name, c.column_type().arrow(), true)).collect();
        fields.extend(metadata_fields());
        let mut columns = Vec::new();
        for c in &source.columns {
            let t = c.column_type();
            columns.push(if t.is_scalar() {
                Column::Text(Text::new(t))
            } else {
                let schema = Arc::new(Schema::new(vec![Field::new(&c.name, t.arrow(), true)]));
                let decoder = ReaderBuilder::new(schema)
                    .with_batch_size(BATCH_ROWS)
                    .build_decoder()
                    .map_err(|e| Error::arrow(format!("decoder for {}", c.name), e))?;
                Column::Nested(Box::new(Nested {
                    name: c.name.clone(),
                    column_type: t.clone(),
                    decoder,
                    pending: Vec::with_capacity(BATCH_ROWS),
                }))
            });
        }
        Ok(Self {
            table: source.bronze_table(),
            schema: Arc::new(Schema::new(fields)),
            declared: source.columns.len(),
            columns,
            extra: Vec::new(),
            meta,
            source_file: StringBuilder::new(),
            source_row: Int64Builder::new(),
            rescued: StringBuilder::new(),
            error: StringBuilder::new(),
            in_batch: 0,
            batches: Vec::new(),
            sink: None,
            rows: 0,
            rescued_rows: 0,
        })
    }

    /// Sends every batch, as it is cut, to `lane` (from a thread outside
    /// the async runtime) instead of keeping it.
    pub(crate) fn streaming_to(mut self, lane: storage::Lane) -> Self {
        self.sink = Some(lane);
        self
    }

    /// The schema of the batches, before any `add-column` extra column.
    pub(crate) fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The batches cut so far and not yet taken (none when streaming).
    pub(crate) fn take_batches(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.batches)
    }

    /// Declares the extra (`add-column`) columns of the rows that follow.
    pub(crate) fn set_extra_columns(&mut self, names: &[String]) {
        for n in names {
            if !self.extra.iter().any(|(e, _)| e == n) {
                let mut b = StringBuilder::new();
                b.append_nulls(self.in_batch);
                self.extra.push((n.clone(), b));
            }
        }
    }

    /// Sets declared column `col` from text; false if it did not parse.
    pub(crate) fn text(&mut self, col: usize, value: Option<&str>) -> bool {
        match (&mut self.columns[col], value) {
            (Column::Text(t), Some(v)) => t.append(v),
            (Column::Text(t), None) => {
                t.append_null();
                true
            }
            (Column::Nested(n), v) => {
                // Nested columns never arrive as text: only NULL is accepted.
                n.pending.push(Value::Object(Default::default()));
                v.is_none()
            }
        }
    }

    /// Sets declared column `col` from a JSON value; false if it does not
    /// fit the declared type (the column is then NULL).
    pub(crate) fn json(&mut self, col: usize, value: Option<Value>) -> bool {
        match &mut self.columns[col] {
            Column::Text(t) => match value {
                None | Some(Value::Null) => {
                    t.append_null();
                    true
                }
                Some(Value::String(s)) => t.append(&s),
                Some(Value::Number(n)) => t.append(&n.to_string()),
                Some(Value::Bool(b)) => t.append(if b { "true" } else { "false" }),
                Some(_) => {
                    t.append_null();
                    false
                }
            },
            Column::Nested(n) => {
                let ok = value.as_ref().is_none_or(|v| fits(v, &n.column_type));
                let mut row = serde_json::Map::new();
                if let (true, Some(v)) = (ok, value) {
                    row.insert(n.name.clone(), v);
                }
                n.pending.push(Value::Object(row));
                ok
            }
        }
    }

    /// Sets every declared column to NULL (a row that could not be read).
    pub(crate) fn null_row(&mut self) {
        for col in 0..self.declared {
            self.text(col, None);
        }
    }

    /// Sets an extra column (after [`Self::set_extra_columns`]).
    pub(crate) fn extra(&mut self, name: &str, value: Option<&str>) {
        if let Some((_, b)) = self.extra.iter_mut().find(|(n, _)| n == name) {
            b.append_option(value);
        }
    }

    /// Finishes a row whose declared columns (and extra columns) are set.
    pub(crate) fn end_row(&mut self, file: &str, row: u64, rescued: Option<&str>, error: Option<&str>) -> Result<()> {
        let filled = self.extra.iter().map(|(_, b)| b.len()).collect::<Vec<_>>();
        for ((_, b), len) in self.extra.iter_mut().zip(filled) {
            if len == self.in_batch {
                b.append_null();
            }
        }
        self.source_file.append_value(file);
        self.source_row.append_value(row as i64);
        self.rescued.append_option(rescued);
        self.error.append_option(error);
        self.rows += 1;
        if rescued.is_some() || error.is_some() {
            self.rescued_rows += 1;
        }
        self.in_batch += 1;
        if self.in_batch >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.in_batch == 0 {
            return Ok(());
        }
        let n = self.in_batch;
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len() + self.extra.len());
        for (i, col) in self.columns.iter_mut().enumerate() {
            let field = self.schema.field(i);
            arrays.push(match col {
                Column::Text(t) => t.finish(field.data_type()),
                Column::Nested(nested) => {
                    let decode_err = |e: deltalake::arrow::error::ArrowError| {
                        Error::arrow(format!("{}: decoding {}", self.table, nested.name), e)
                    };
                    nested.decoder.serialize(&nested.pending).map_err(decode_err)?;
                    nested.pending.clear();
                    let batch = nested.decoder.flush().map_err(decode_err)?;
                    match batch {
                        Some(b) => b.column(0).clone(),
                        None => new_null_array(field.data_type(), n),
                    }
                }
            });
        }
        let m = &self.meta;
        let mut batch_id = StringBuilder::with_capacity(n, n * m.batch_id.len());
        for _ in 0..n {
            batch_id.append_value(&m.batch_id);
        }
        arrays.push(Arc::new(batch_id.finish()));
        arrays.push(Arc::new(
            deltalake::arrow::array::TimestampMicrosecondArray::from_value(m.ingested_at_micros, n)
                .with_timezone("UTC"),
        ));
        arrays.push(Arc::new(self.source_file.finish()));
        arrays.push(Arc::new(self.source_row.finish()));
        arrays.push(Arc::new(self.rescued.finish()));
        arrays.push(Arc::new(self.error.finish()));
        arrays.push(Arc::new(deltalake::arrow::array::Date32Array::from_value(m.ingest_date, n)));
        let mut fields: Vec<Field> = self.schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        for (name, b) in &mut self.extra {
            fields.push(Field::new(name.as_str(), DataType::Utf8, true));
            arrays.push(Arc::new(b.finish()));
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
            .map_err(|e| Error::arrow(self.table.clone(), e))?;
        self.in_batch = 0;
        match &self.sink {
            Some(lane) => lane.blocking_send(batch)?,
            None => self.batches.push(batch),
        }
        Ok(())
    }

    /// The batches built so far and not taken or streamed (each batch has
    /// the columns known when it was cut; see [`unify`]).
    pub(crate) fn finish(mut self) -> Result<Vec<RecordBatch>> {
        self.flush()?;
        Ok(self.batches)
    }
}

/// Gives all batches one schema: batches from before an extra column
/// appeared (or from another reader) get it as NULLs.
pub(crate) fn unify(batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    let Some(widest) = batches.iter().map(|b| b.schema()).max_by_key(|s| s.fields().len()) else {
        return Ok(Vec::new());
    };
    batches
        .into_iter()
        .map(|b| {
            if b.schema().fields().len() == widest.fields().len() {
                return Ok(b);
            }
            let columns = widest
                .fields()
                .iter()
                .map(|f| {
                    b.column_by_name(f.name()).cloned().unwrap_or_else(|| new_null_array(f.data_type(), b.num_rows()))
                })
                .collect();
            RecordBatch::try_new(widest.clone(), columns).map_err(|e| Error::arrow("widening a batch", e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{parse_date, parse_timestamp};

    #[test]
    fn fast_paths_agree_with_chrono() {
        for s in ["2025-01-01", "1999-12-31", "2024-02-29"] {
            assert_eq!(parse_date(s), chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok(), "{s}");
        }
        for s in ["2023-02-29", "2025-13-01", "01/02/2025", "abcd-ef-gh"] {
            assert_eq!(parse_date(s), None, "{s}");
        }
        let slow = |s: &str| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").ok().map(|t| t.and_utc().timestamp_micros())
        };
        assert_eq!(parse_timestamp("2024-12-29 10:15:23"), slow("2024-12-29 10:15:23"));
        assert_eq!(parse_timestamp("2024-12-29T10:15:23Z"), slow("2024-12-29 10:15:23"));
        assert_eq!(parse_timestamp("2024-12-29T10:15:23+01:00"), slow("2024-12-29 09:15:23"));
        assert_eq!(parse_timestamp("2024-12-29 10:15:23.5"), slow("2024-12-29 10:15:23").map(|t| t + 500_000));
        assert_eq!(parse_timestamp("2024-12-29 25:15:23"), None);
    }
}
