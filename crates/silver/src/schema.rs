//! The schemas of the tables silver writes (the silver table, its
//! quarantine, the `_lineage` entries), and the Arrow helpers that bring
//! batches to them.

use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, RecordBatch, new_null_array};
use deltalake::arrow::compute::{cast, concat_batches};
use deltalake::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use crate::error::arrow_err;
use crate::{Error, Result};

/// A table's typed columns: the model's columns with one type each, and
/// the schema of the typed rows (those columns, then `_batch_id`,
/// `_source_file` and `_source_row`).
pub(crate) struct Typed {
    pub(crate) fields: Vec<Field>,
    pub(crate) schema: SchemaRef,
}

impl Typed {
    pub(crate) fn new(fields: Vec<Field>) -> Self {
        let mut f = fields.clone();
        f.push(Field::new("_batch_id", DataType::Utf8, true));
        f.push(Field::new("_source_file", DataType::Utf8, true));
        f.push(Field::new("_source_row", DataType::Int64, true));
        Self { fields, schema: Arc::new(Schema::new(f)) }
    }
}

/// The fields of a `_lineage` entry.
pub(crate) fn lineage_fields() -> Fields {
    Fields::from(vec![
        Field::new("batch_id", DataType::Utf8, true),
        Field::new("source_file", DataType::Utf8, true),
        Field::new("source_row", DataType::Int64, true),
        Field::new("warnings", list_of(DataType::Utf8), true),
    ])
}

/// A list of `t`.
pub(crate) fn list_of(t: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(t, true)))
}

/// Microseconds in UTC.
pub(crate) fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The silver table's schema: the model's columns, then the metadata.
pub(crate) fn state_schema(typed: &[Field]) -> SchemaRef {
    let mut fields = typed.to_vec();
    fields.extend([
        Field::new("_dq_warnings", list_of(DataType::Utf8), true),
        Field::new("_is_deleted", DataType::Boolean, true),
        Field::new("_batch_id", DataType::Utf8, true),
        Field::new("_source_file", DataType::Utf8, true),
        Field::new("_source_row", DataType::Int64, true),
        Field::new("_lineage", list_of(DataType::Struct(lineage_fields())), true),
        Field::new("_updated_at", timestamp_type(), true),
    ]);
    Arc::new(Schema::new(fields))
}

/// The quarantine table's schema.
pub(crate) fn quarantine_schema(typed: &[Field]) -> SchemaRef {
    let mut fields = typed.to_vec();
    fields.extend([
        Field::new("_failed_rules", list_of(DataType::Utf8), true),
        Field::new("_bronze_table", DataType::Utf8, true),
        Field::new("_batch_id", DataType::Utf8, true),
        Field::new("_source_file", DataType::Utf8, true),
        Field::new("_source_row", DataType::Int64, true),
        Field::new("_raw", DataType::Utf8, true),
        Field::new("_quarantined_at", timestamp_type(), true),
        Field::new("_released_at", timestamp_type(), true),
    ]);
    Arc::new(Schema::new(fields))
}

/// `batches` with plain (not view or dictionary) columns, as one batch;
/// `None` when there are none.
pub(crate) fn concat_plain(table: &str, batches: &[RecordBatch]) -> Result<Option<RecordBatch>> {
    let plain: Vec<RecordBatch> =
        batches.iter().map(|b| storage::plain_batch(b).map_err(arrow_err(table))).collect::<Result<_>>()?;
    let Some(first) = plain.first() else { return Ok(None) };
    concat_batches(&first.schema(), &plain).map(Some).map_err(arrow_err(table))
}

/// A column of `batch` brought to `t`, or all NULL when absent.
fn column_as(table: &str, batch: &RecordBatch, name: &str, t: &DataType) -> Result<ArrayRef> {
    match batch.column_by_name(name) {
        Some(c) if c.data_type() == t => Ok(c.clone()),
        Some(c) => cast(c, t).map_err(|source| Error::Cast {
            table: table.to_string(),
            column: name.to_string(),
            from: c.data_type().clone(),
            to: t.clone(),
            source: Box::new(source),
        }),
        None => Ok(new_null_array(t, batch.num_rows())),
    }
}

/// `batch` brought to `schema`: its columns by name, each cast to the
/// schema's type, NULL where it has none.
pub(crate) fn project(table: &str, batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns =
        schema.fields().iter().map(|f| column_as(table, batch, f.name(), f.data_type())).collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(arrow_err(table))
}
