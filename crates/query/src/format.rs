//! Writing a query's rows out: as JSON objects, as CSV (nested values as
//! their text) and as a text table.

use std::sync::Arc;

use deltalake::arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::{Error, Result};

/// The rows as a JSON array of objects (column → value).
pub fn to_json(batches: &[RecordBatch]) -> Result<serde_json::Value> {
    let mut writer = deltalake::arrow::json::ArrayWriter::new(Vec::new());
    for b in batches {
        writer.write(b).map_err(Error::arrow("writing the result as JSON"))?;
    }
    writer.finish().map_err(Error::arrow("writing the result as JSON"))?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(serde_json::Value::Array(Vec::new()));
    }
    serde_json::from_slice(&bytes).map_err(Error::Json)
}

/// `batch` with every nested column (lists, structs, maps) as its text.
fn flat(batch: &RecordBatch) -> Result<RecordBatch> {
    let options = FormatOptions::default();
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if field.data_type().is_nested() {
            let f = ArrayFormatter::try_new(column.as_ref(), &options)
                .map_err(Error::arrow("a nested column of the result as text"))?;
            let text: StringArray =
                (0..column.len()).map(|i| column.is_valid(i).then(|| f.value(i).to_string())).collect();
            fields.push(Field::new(field.name(), DataType::Utf8, true));
            columns.push(Arc::new(text));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(Error::arrow("the result with nested columns as text"))
}

/// The rows as CSV with a header (nested values as their text).
pub fn to_csv(batches: &[RecordBatch]) -> Result<String> {
    let mut writer = deltalake::arrow::csv::WriterBuilder::new().with_header(true).build(Vec::new());
    for b in batches {
        writer.write(&flat(b)?).map_err(Error::arrow("writing the result as CSV"))?;
    }
    String::from_utf8(writer.into_inner()).map_err(Error::Utf8)
}

/// The rows as a text table.
pub fn pretty(batches: &[RecordBatch]) -> Result<String> {
    deltalake::arrow::util::pretty::pretty_format_batches(batches)
        .map(|t| t.to_string())
        .map_err(Error::arrow("writing the result as a table"))
}
