//! Test helpers shared by gold's crates, so that no test suite writes its
//! own: runs of a date, a table's rows, a column as text, a table's
//! content, a file written into a landing folder, and ([`stages`], with
//! the features `ingest`, `silver`, `dims` and `facts`) a generated
//! landing built through the stages ahead of the one under test.
//!
//! Every helper panics with a message naming what failed: it is for tests.
//!
//! ```
//! let run = testkit::run(3, testkit::date("2025-01-02"));
//! assert_eq!(run.id.0, 3);
//! assert_eq!(run.clock.logical_date(), testkit::date("2025-01-02"));
//! ```
#![deny(missing_docs)]

#[cfg(feature = "ingest")]
pub mod stages;

use chrono::NaiveDate;
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use storage::{RunClock, RunContext, RunId, RunKind, TableName, Warehouse};

/// A `YYYY-MM-DD` date.
#[track_caller]
pub fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_else(|e| panic!("date {s:?}: {e}"))
}

/// Build run `id` of logical date `day`, its clock at the day's midnight.
pub fn run(id: i64, day: NaiveDate) -> RunContext {
    run_of(id, RunKind::Build, day)
}

/// Run `id` of `kind` and logical date `day`.
pub fn run_of(id: i64, kind: RunKind, day: NaiveDate) -> RunContext {
    RunContext { id: RunId(id), kind, clock: RunClock::for_date(day) }
}

/// Every row of `table` at its latest version; none when it does not exist.
pub async fn rows(warehouse: &Warehouse, table: &str) -> Vec<RecordBatch> {
    let name = TableName::new(table).unwrap_or_else(|e| panic!("{table}: {e}"));
    if warehouse.load(&name).await.unwrap_or_else(|e| panic!("{table}: {e}")).is_none() {
        return Vec::new();
    }
    warehouse.scan(&name, None).await.unwrap_or_else(|e| panic!("{table}: {e}"))
}

/// The rows of `batches`.
pub fn count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// Column `name` of every batch, cast to text; `None` for NULL.
#[track_caller]
pub fn strings(batches: &[RecordBatch], name: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for b in batches {
        let column = b.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
        let col = cast(column, &DataType::Utf8).unwrap_or_else(|e| panic!("column {name} as text: {e}"));
        let col = col.as_string::<i32>();
        out.extend((0..col.len()).map(|i| col.is_valid(i).then(|| col.value(i).to_string())));
    }
    out
}

/// Column `name` of every batch as text, `""` for NULL.
#[track_caller]
pub fn texts(batches: &[RecordBatch], name: &str) -> Vec<String> {
    strings(batches, name).into_iter().map(Option::unwrap_or_default).collect()
}

/// The bucket or container named by the environment variable `var`, for a
/// test against an object-store emulator (tests/interop/emulators.sh), and
/// a prefix under it that no other run of `test` uses; `None` (the test is
/// skipped) when `var` is unset outside CI, a panic under CI.
pub fn emulator(var: &str, test: &str) -> Option<(String, String)> {
    let name = match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ if std::env::var_os("CI").is_some() => panic!("{var} must be set under CI (see tests/run.sh)"),
        _ => {
            eprintln!("skipped: set {var} (eval \"$(bash tests/interop/emulators.sh)\")");
            return None;
        }
    };
    let nanos = storage::wall_clock().timestamp_nanos_opt().unwrap_or_default();
    Some((name, format!("{test}-{}-{nanos}", std::process::id())))
}

/// Every row of `batches` as `a|b|c` text, sorted: a table's content,
/// whatever its files and row order.
pub fn content(batches: &[RecordBatch]) -> Vec<String> {
    let Some(first) = batches.first() else { return Vec::new() };
    let names: Vec<String> = first.schema().fields().iter().map(|f| f.name().clone()).collect();
    let cols: Vec<Vec<String>> = names.iter().map(|n| texts(batches, n)).collect();
    let mut out: Vec<String> =
        (0..count(batches)).map(|i| cols.iter().map(|c| c[i].as_str()).collect::<Vec<_>>().join("|")).collect();
    out.sort();
    out
}

/// Writes `text` to `dir/rel` (e.g. a landing file `2025-01-01/members.csv`),
/// creating its folders.
#[track_caller]
pub fn write(dir: &std::path::Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    let parent = path.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
