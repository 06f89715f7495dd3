//! Fixtures shared by the ingestion tests: testkit's helpers, plus the
//! ones only these tests need.

use std::path::Path;

use chrono::NaiveDate;
use ingest::{IngestOptions, IngestReport, SourceCatalog};
use storage::Warehouse;

pub(crate) use testkit::stages::generate;
pub(crate) use testkit::{count, date, rows, strings};

/// The seed of every landing these tests generate.
pub(crate) const SEED: u64 = 17;

/// Ingests `landing` up to `up_to` with `catalog`, as run `run_id`.
pub(crate) async fn ingest(
    warehouse: &Warehouse,
    run_id: i64,
    catalog: &SourceCatalog,
    landing: &Path,
    up_to: NaiveDate,
) -> ingest::Result<IngestReport> {
    ingest::ingest(warehouse, &testkit::run(run_id, up_to), catalog, &IngestOptions { landing, up_to }).await
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
