//! Reading Arrow columns by name, as the types the engine stores them in:
//! a column missing from a table file, or of another type, is an error
//! naming the column, rather than a panic.

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Int64Array, RecordBatch, TimestampMicrosecondArray,
};
use deltalake::arrow::compute::concat;
use deltalake::arrow::datatypes::{DataType, Schema, TimeUnit};

use crate::hash::{Attrs, Col};
use crate::{Error, Result};

/// The engine's timestamp type: UTC microseconds.
pub(super) fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The column `name` of `pieces` (of `schema`) as one array.
pub(super) fn whole_column(schema: &Schema, pieces: &[RecordBatch], name: &str) -> Result<ArrayRef> {
    let parts = pieces.iter().map(|p| column(p, name).map(|c| c.as_ref())).collect::<Result<Vec<&dyn Array>>>()?;
    match parts.as_slice() {
        [] => {
            let field = schema.field_with_name(name).map_err(|e| Error::arrow(name, e))?;
            Ok(deltalake::arrow::array::new_empty_array(field.data_type()))
        }
        [one] => Ok(one.slice(0, one.len())),
        _ => concat(&parts).map_err(|e| Error::arrow(name, e)),
    }
}

/// The column `name` of `b`.
pub(super) fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    b.column_by_name(name)
        .ok_or_else(|| Error::Column { column: name.to_string(), reason: "is missing from a table file".into() })
}

pub(super) fn binary_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a BinaryArray> {
    column(b, name)?
        .as_binary_opt::<i32>()
        .ok_or_else(|| Error::Column { column: name.to_string(), reason: "is not binary in the table".into() })
}

pub(super) fn int_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a Int64Array> {
    column(b, name)?
        .as_primitive_opt::<deltalake::arrow::datatypes::Int64Type>()
        .ok_or_else(|| Error::Column { column: name.to_string(), reason: "is not a 64-bit integer".into() })
}

pub(super) fn ts_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a TimestampMicrosecondArray> {
    column(b, name)?
        .as_primitive_opt::<deltalake::arrow::datatypes::TimestampMicrosecondType>()
        .ok_or_else(|| Error::Column { column: name.to_string(), reason: "is not a microsecond timestamp".into() })
}

pub(super) fn bool_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a BooleanArray> {
    column(b, name)?
        .as_boolean_opt()
        .ok_or_else(|| Error::Column { column: name.to_string(), reason: "is not boolean".into() })
}

/// Attribute columns of `b` named in `names` (absent ones are skipped: an
/// absent column hashes as NULL).
pub(super) fn attr_cols<'a>(b: &'a RecordBatch, names: &'a [String], encoding: u8) -> Result<Attrs<'a>> {
    let cols = names
        .iter()
        .filter_map(|n| b.column_by_name(n).map(|c| (n.as_str(), c)))
        .map(|(n, c)| Ok((n, Col::new(n, c)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Attrs::new(cols, encoding))
}
