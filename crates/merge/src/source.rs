//! Snapshot files for `gold snapshot`: CSV or Parquet, read by DataFusion on
//! every core.
//!
//! A CSV file's header is read first: when the table already has every
//! column it names, the columns take the table's types and no row is read
//! to infer them. [`digest`] hashes a file's bytes with the spec, so that
//! the same file merged again into the table it produced is known to change
//! nothing without parsing a row ([`crate::applied_source`]).

use std::path::Path;

use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionConfig, SessionContext};

use crate::{Error, Result, Spec};

/// How many rows of a CSV file are read to infer the types of columns the
/// table does not have yet.
const INFER_ROWS: usize = 10_000;

/// Rows per batch read from a snapshot file. arrow-csv's decoder zeroes
/// buffers sized for a whole batch before it parses one, so fewer, larger
/// batches touch more fresh memory: at 1M rows, 512k-row batches took about
/// 220,000 page faults and 64k-row ones about 150,000, for 4-5% less CPU
/// time and 4-5% less wall time, and 20-30 MB more peak RSS.
const READ_BATCH_ROWS: usize = 64 * 1024;

/// Reads a CSV (with a header) or Parquet snapshot. Columns the table
/// already has (`known`) are read with the table's types, so a value that
/// no longer fits is an error naming the file, line and column; other
/// columns' types are inferred.
pub async fn read_snapshot(path: &Path, known: Option<&Schema>) -> Result<Vec<RecordBatch>> {
    let context = path.display().to_string();
    let fail = |e: deltalake::datafusion::error::DataFusionError| Error::DataFusion {
        context: context.clone(),
        source: Box::new(e),
    };
    if !path.is_file() {
        return Err(Error::Source { path: context.clone(), reason: "no such file".into() });
    }
    let location = path.to_str().ok_or_else(|| Error::Source { path: context.clone(), reason: "not UTF-8".into() })?;
    // Batches larger than DataFusion's default 8,192 rows: the merge holds
    // the snapshot as one batch, and gathering it from many small pieces,
    // scattered over the allocator's per-thread heaps, costs memory.
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_batch_size(READ_BATCH_ROWS));
    let is_parquet = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    let frame = if is_parquet {
        ctx.read_parquet(location, ParquetReadOptions::default()).await.map_err(fail)?
    } else {
        let options = CsvReadOptions::new().has_header(true).schema_infer_max_records(INFER_ROWS);
        // The header alone names the columns; when the table has every
        // one of them, their types are known and no row is read to infer
        // them (10,000 rows matched against every type's pattern).
        let header = ctx.read_csv(location, options.clone().schema_infer_max_records(0)).await.map_err(fail)?;
        let names = header.schema().fields();
        let all_known =
            known.is_some_and(|k| !names.is_empty() && names.iter().all(|f| k.field_with_name(f.name()).is_ok()));
        let inferred = match all_known {
            true => header,
            false => ctx.read_csv(location, options.clone()).await.map_err(fail)?,
        };
        let fields: Vec<Field> = inferred
            .schema()
            .fields()
            .iter()
            .map(|f| {
                let data_type = known
                    .and_then(|k| k.field_with_name(f.name()).ok())
                    .map_or_else(|| plain(f.data_type()), |k| k.data_type().clone());
                Field::new(f.name(), data_type, true)
            })
            .collect();
        let schema = Schema::new(fields);
        ctx.read_csv(location, options.schema(&schema)).await.map_err(fail)?
    };
    // A value that does not parse is the file's fault: a user error.
    let batches = frame.collect().await.map_err(|e| Error::Source { path: context.clone(), reason: e.to_string() })?;
    if batches.is_empty() {
        return Err(Error::Source { path: context, reason: "holds no rows".into() });
    }
    Ok(batches)
}

/// A digest of the snapshot file's bytes together with the spec it is
/// merged under, in 64 hex digits. [`crate::applied_source`] compares it
/// with the digest the table's newest version recorded under
/// [`crate::SOURCE_DIGEST`]: the same bytes merged again under the same
/// spec into the table they produced change nothing, and are known to
/// without parsing a row. The file is read once, in blocks.
pub fn digest(path: &Path, spec: &Spec) -> Result<String> {
    let context = path.display().to_string();
    if !path.is_file() {
        return Err(Error::Source { path: context, reason: "no such file".into() });
    }
    let file = std::fs::File::open(path).map_err(|e| Error::Source { path: context.clone(), reason: e.to_string() })?;
    let mut hasher = blake3::Hasher::new();
    // The spec (and the hash encoding) first: another spec over the same
    // bytes can change the table (a snapshot that now deletes), so it is
    // another digest.
    hasher.update(format!("gold.snapshot:{}:{spec:?}\0", crate::hash::ENCODING_VERSION).as_bytes());
    hasher.update_reader(file).map_err(|e| Error::Source { path: context, reason: e.to_string() })?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// Strings and binaries as plain `Utf8`/`Binary`, which every Delta reader
/// takes (an all-NULL column inferred as `Null` becomes a string).
pub(crate) fn plain(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Null => DataType::Utf8,
        other => other.clone(),
    }
}
