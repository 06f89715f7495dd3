//! The table's columns in their roles ([`Layout`]): which business
//! columns it has after this batch, which the batch brings, which are
//! tracked and type-1, and which of them the batch and the table can be
//! compared on. Also the checks that a table was written by gold under the
//! same spec, and the schemas a merge reads and writes.
//!
//! The table stores each version's `attr_hash`; when the tracked columns
//! the batch and the table share are exactly those the stored hash covers
//! ([`Layout::stored_hash_comparable`]), a merge compares that hash and
//! reads no tracked column of the table at all ([`phase1_columns`]).

use std::collections::HashSet;
use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::Mode;
use super::arrays::ts_type;
use crate::{Deletes, Error, Result, Spec, Target, Tracked, columns, hash, io};

/// Table property: the hash encoding version the table was written in.
pub(super) const PROP_ENCODING: &str = "gold.scd2.encoding";
/// Table property: the business key columns, comma-separated.
pub(super) const PROP_KEY: &str = "gold.scd2.key";
/// Table property: the surrogate key column.
pub(super) const PROP_SK: &str = "gold.scd2.surrogate_key";

/// The columns of the table in their roles.
pub(super) struct Layout {
    /// Business columns of the table after this batch, in table order.
    pub(super) business: Vec<Field>,
    /// Business columns the table had before this batch.
    pub(super) existed: HashSet<String>,
    /// Business columns this batch brings.
    pub(super) in_source: HashSet<String>,
    pub(super) tracked: Vec<String>,
    pub(super) type1: Vec<String>,
    /// Tracked columns compared between the batch and the table (sorted).
    pub(super) cmp_cols: Vec<String>,
    /// Type-1 columns compared between the batch and the table (sorted).
    pub(super) t1_cols: Vec<String>,
    /// Whether the table's stored `attr_hash` covers exactly `cmp_cols`.
    pub(super) stored_hash_comparable: bool,
    /// The table's hash encoding version.
    pub(super) encoding: u8,
}

/// Checks that the table was written by gold under `spec`, and returns
/// the hash encoding it records (the table keeps it).
pub(super) fn check_table(target: &Target, spec: &Spec, table: &deltalake::DeltaTable) -> Result<u8> {
    let snapshot = table.snapshot().map_err(io::delta_err(target))?;
    let config = snapshot.metadata().configuration();
    let mismatch = |reason: String| Err(Error::SpecMismatch { table: target.url.to_string(), reason });
    let encoding = match config.get(PROP_ENCODING).map(String::as_str) {
        Some(v) => match hash::ENCODINGS.into_iter().find(|e| e.to_string() == v) {
            Some(e) => e,
            None => {
                let known = hash::ENCODINGS.map(|e| e.to_string()).join(", ");
                return mismatch(format!("hash encoding {v}, which this build does not merge into (it knows {known})"));
            }
        },
        None => return mismatch("not an SCD2 table written by gold (no gold.scd2.encoding property)".into()),
    };
    let key = spec.key.join(",");
    if config.get(PROP_KEY) != Some(&key) {
        return mismatch(format!("keyed on {:?}, not {key:?}", config.get(PROP_KEY).cloned().unwrap_or_default()));
    }
    if config.get(PROP_SK) != Some(&spec.surrogate_key) {
        return mismatch(format!(
            "surrogate key column is {:?}, not {:?}",
            config.get(PROP_SK).cloned().unwrap_or_default(),
            spec.surrogate_key
        ));
    }
    Ok(encoding)
}

/// The table's schema as Arrow's.
pub(super) fn table_arrow_schema(target: &Target, table: &deltalake::DeltaTable) -> Result<SchemaRef> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoArrow as _;
    let snapshot = table.snapshot().map_err(io::delta_err(target))?;
    let schema: Schema = snapshot.schema().as_ref().try_into_arrow().map_err(|e| Error::arrow("table schema", e))?;
    Ok(Arc::new(schema))
}

/// The source's pieces with one schema, views and large strings made
/// plain, empty pieces dropped.
pub(super) fn normalise(rows: Vec<RecordBatch>) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let Some(first) = rows.first() else {
        return Ok((Arc::new(Schema::empty()), Vec::new()));
    };
    let fields: Vec<Field> = first
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(crate::source::plain(f.data_type())))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    // Piece by piece, on every core; a column already of its plain type is
    // passed on as it is.
    let pieces: Vec<RecordBatch> = rows.into_iter().filter(|b| b.num_rows() > 0).collect();
    let pieces = parallel::on_threads(pieces, |piece| {
        let cols = piece
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| match c.data_type() == f.data_type() {
                true => Ok(Arc::clone(c)),
                false => cast(c, f.data_type()).map_err(|e| Error::arrow(&format!("column {:?}", f.name()), e)),
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        RecordBatch::try_new(Arc::clone(&schema), cols).map_err(|e| Error::arrow("batch", e))
    })?;
    Ok((schema, pieces.into_iter().collect::<Result<_>>()?))
}

/// Whether `name` is written by the engine (never by a source).
pub(super) fn is_engine_column(spec: &Spec, name: &str) -> bool {
    name == spec.surrogate_key || columns::ALL.contains(&name)
}

/// The columns in their roles, checked against the spec.
pub(super) fn layout(spec: &Spec, table: Option<&Schema>, source: &Schema, mode: Mode, encoding: u8) -> Result<Layout> {
    for name in source.fields().iter().map(|f| f.name()) {
        if is_engine_column(spec, name) {
            return Err(missing(name, "is written by the SCD2 engine and cannot come from the source"));
        }
    }
    let in_source: HashSet<String> = source.fields().iter().map(|f| f.name().clone()).collect();
    let mut business: Vec<Field> = Vec::new();
    let mut existed = HashSet::new();
    if let Some(table) = table {
        for f in table.fields() {
            if !is_engine_column(spec, f.name()) {
                existed.insert(f.name().clone());
                business.push(f.as_ref().clone().with_nullable(true));
            }
        }
    }
    for f in source.fields() {
        if !existed.contains(f.name()) {
            business.push(f.as_ref().clone().with_nullable(true));
        }
    }
    check_in_source(spec, mode, &in_source)?;
    let names: Vec<String> = business.iter().map(|f| f.name().clone()).collect();
    // Inferred keys may open a table before its source has sent a row.
    for column in spec.type1.iter().filter(|_| mode == Mode::Changes) {
        if !names.contains(column) {
            return Err(missing(column, "is declared type-1 but is in neither the source nor the table"));
        }
    }
    let tracked = tracked_columns(spec, mode, &names)?;
    let cmp_cols: Vec<String> = tracked
        .iter()
        .filter(|c| in_source.contains(*c) && (table.is_none() || existed.contains(*c)))
        .cloned()
        .collect();
    let table_tracked: Vec<String> = match table {
        Some(_) => tracked.iter().filter(|c| existed.contains(*c)).cloned().collect(),
        None => cmp_cols.clone(),
    };
    let mut t1_cols: Vec<String> = spec
        .type1
        .iter()
        .filter(|c| in_source.contains(*c) && (table.is_none() || existed.contains(*c)))
        .cloned()
        .collect();
    t1_cols.sort();
    Ok(Layout {
        stored_hash_comparable: table_tracked == cmp_cols,
        business,
        existed,
        in_source,
        tracked,
        type1: spec.type1.clone(),
        cmp_cols,
        t1_cols,
        encoding,
    })
}

/// A column of the spec that is not where it must be.
fn missing(column: &str, reason: &str) -> Error {
    Error::Column { column: column.to_string(), reason: reason.to_string() }
}

/// Checks that the columns a batch must bring (the key; for changes, the
/// ordering, effective-date and delete-marker columns too) are in it.
fn check_in_source(spec: &Spec, mode: Mode, in_source: &HashSet<String>) -> Result<()> {
    let needed: Vec<&String> = match mode {
        Mode::Infer => spec.key.iter().collect(),
        Mode::Changes => spec
            .key
            .iter()
            .chain(&spec.order_by)
            .chain(spec.effective_from.iter())
            .chain(match &spec.deletes {
                Deletes::Events { column, .. } => Some(column),
                _ => None,
            })
            .collect(),
    };
    for column in needed {
        if !in_source.contains(column) {
            return Err(missing(column, "is named by the SCD2 spec but is not in the source"));
        }
    }
    Ok(())
}

/// The tracked columns among the business columns `names`, sorted.
fn tracked_columns(spec: &Spec, mode: Mode, names: &[String]) -> Result<Vec<String>> {
    let mut tracked: Vec<String> = match &spec.tracked {
        Tracked::Columns(list) => {
            for c in list.iter().filter(|_| mode == Mode::Changes) {
                if !names.contains(c) {
                    return Err(missing(c, "is declared tracked but is in neither the source nor the table"));
                }
            }
            names.iter().filter(|c| list.contains(c)).cloned().collect()
        }
        Tracked::AllExcept(except) => names
            .iter()
            .filter(|c| !spec.key.contains(c) && !spec.type1.contains(c) && !except.contains(c))
            .cloned()
            .collect(),
    };
    tracked.sort();
    for c in &tracked {
        if spec.key.contains(c) || spec.type1.contains(c) {
            return Err(missing(c, "cannot be both tracked and a key or type-1 column"));
        }
    }
    Ok(tracked)
}

/// The table's schema after this batch: surrogate key, business columns,
/// engine columns.
pub(super) fn table_schema_for(spec: &Spec, layout: &Layout) -> SchemaRef {
    let mut fields = vec![Field::new(&spec.surrogate_key, DataType::Int64, false)];
    fields.extend(layout.business.iter().cloned());
    fields.extend([
        Field::new(columns::KEY_HASH, DataType::Binary, false),
        Field::new(columns::ATTR_HASH, DataType::Binary, false),
        Field::new(columns::VALID_FROM, ts_type(), false),
        Field::new(columns::VALID_TO, ts_type(), false),
        Field::new(columns::IS_DELETED, DataType::Boolean, false),
        Field::new(columns::IS_INFERRED, DataType::Boolean, false),
        Field::new(columns::RECORDED_AT, ts_type(), false),
        Field::new(columns::BATCH_ID, DataType::Utf8, false),
        Field::new(columns::IS_CURRENT, DataType::Boolean, false),
    ]);
    Arc::new(Schema::new(fields))
}

/// The columns read from current files before deciding anything.
pub(super) fn phase1_columns(spec: &Spec, layout: &Layout) -> Vec<String> {
    let mut cols: Vec<String> = [
        columns::KEY_HASH,
        columns::ATTR_HASH,
        columns::VALID_FROM,
        columns::VALID_TO,
        columns::IS_DELETED,
        columns::IS_INFERRED,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    cols.push(spec.surrogate_key.clone());
    cols.extend(layout.t1_cols.iter().cloned());
    if !layout.stored_hash_comparable {
        cols.extend(layout.cmp_cols.iter().cloned());
    }
    cols
}
