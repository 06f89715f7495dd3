//! Fixtures shared by the silver tests: a build with hand-written sources
//! and models, and readers of silver's list and `_lineage` columns. Runs,
//! dates, table rows and columns as text come from `testkit`.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::NaiveDate;
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use ingest::{IngestOptions, SourceCatalog};
use silver::{SilverCatalog, SilverReport};
use storage::Warehouse;
use testkit::{rows, run, strings};

/// Ingests the landing up to `day`, then builds silver, as run `id`.
pub(crate) async fn build(
    warehouse: &Warehouse,
    id: i64,
    sources: &SourceCatalog,
    silver: &SilverCatalog,
    landing: &Path,
    day: NaiveDate,
) -> silver::Result<SilverReport> {
    let run = run(id, day);
    ingest::ingest(warehouse, &run, sources, &IngestOptions { landing, up_to: day }).await.unwrap();
    silver::build_silver(warehouse, &run, silver).await
}

/// A list-of-strings column, row by row.
pub(crate) fn lists(batches: &[RecordBatch], name: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for b in batches {
        let col = b.column_by_name(name).unwrap_or_else(|| panic!("no column {name}")).as_list::<i32>().clone();
        for i in 0..col.len() {
            let v = col.value(i);
            out.push(v.as_string::<i32>().iter().flatten().map(str::to_string).collect());
        }
    }
    out
}

/// One `_lineage` entry: batch, file, row and the row's warnings.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entry {
    pub(crate) batch: String,
    pub(crate) file: String,
    pub(crate) row: i64,
    pub(crate) warnings: Vec<String>,
}

/// Every `_lineage` entry of every row.
pub(crate) fn lineage(batches: &[RecordBatch]) -> Vec<Entry> {
    let mut out = Vec::new();
    for b in batches {
        let col = b.column_by_name("_lineage").expect("_lineage").as_list::<i32>().clone();
        for i in 0..col.len() {
            let v = col.value(i);
            let s = v.as_struct();
            let (bs, fs) = (s.column(0).as_string::<i32>(), s.column(1).as_string::<i32>());
            let rs = s.column(2).as_primitive::<deltalake::arrow::datatypes::Int64Type>();
            let ws = s.column(3).as_list::<i32>();
            for j in 0..s.len() {
                out.push(Entry {
                    batch: bs.value(j).to_string(),
                    file: fs.value(j).to_string(),
                    row: rs.value(j),
                    warnings: ws.value(j).as_string::<i32>().iter().flatten().map(str::to_string).collect(),
                });
            }
        }
    }
    out
}

/// Rows of `bronze` per `_batch_id`.
pub(crate) async fn bronze_per_batch(warehouse: &Warehouse, bronze: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for b in strings(&rows(warehouse, bronze).await, "_batch_id").into_iter().flatten() {
        *out.entry(b).or_default() += 1;
    }
    out
}

/// Latest Delta version of every table in the warehouse folder.
pub(crate) fn versions(dir: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let latest = std::fs::read_dir(entry.path().join("_delta_log"))
            .ok()
            .and_then(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".json")?.parse().ok()).max());
        if let Some(v) = latest {
            out.insert(name, v);
        }
    }
    out
}
