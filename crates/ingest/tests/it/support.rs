//! Fixtures shared by the ingestion tests.

use std::path::Path;

use chrono::NaiveDate;
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use ingest::{IngestOptions, IngestReport, SourceCatalog};
use storage::{RunClock, RunContext, RunId, RunKind, TableName, Warehouse};

pub(crate) fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

pub(crate) fn run(id: i64, day: NaiveDate) -> RunContext {
    RunContext { id: RunId(id), kind: RunKind::Build, clock: RunClock::for_date(day) }
}

pub(crate) async fn generate(dir: &Path, members: u64, days: u32) -> synth::Summary {
    let config = synth::Config { members, days, seed: 17, ..synth::Config::new(dir) };
    synth::generate(&config, &mut |_, _| {}).await.unwrap()
}

pub(crate) async fn ingest(
    warehouse: &Warehouse,
    run_id: i64,
    catalog: &SourceCatalog,
    landing: &Path,
    up_to: NaiveDate,
) -> ingest::Result<IngestReport> {
    ingest::ingest(warehouse, &run(run_id, up_to), catalog, &IngestOptions { landing, up_to }).await
}

pub(crate) async fn rows(warehouse: &Warehouse, table: &str) -> Vec<RecordBatch> {
    warehouse.scan(&TableName::new(table).unwrap(), None).await.unwrap()
}

pub(crate) fn count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// Column `name` of every batch, as optional strings.
pub(crate) fn strings(batches: &[RecordBatch], name: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for b in batches {
        let col = cast(b.column_by_name(name).unwrap_or_else(|| panic!("no column {name}")), &DataType::Utf8).unwrap();
        let col = col.as_string::<i32>();
        out.extend((0..col.len()).map(|i| col.is_valid(i).then(|| col.value(i).to_string())));
    }
    out
}

/// Latest Delta version of a table, read from its log folder.
pub(crate) fn latest_version(warehouse_dir: &Path, table: &str) -> Option<u64> {
    std::fs::read_dir(warehouse_dir.join(table).join("_delta_log"))
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".json")?.parse().ok())
        .max()
}

/// A catalog holding one source, from TOML.
pub(crate) fn catalog(toml: &str) -> SourceCatalog {
    SourceCatalog::parse(toml, "test").unwrap()
}
