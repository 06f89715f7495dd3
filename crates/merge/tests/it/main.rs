//! The merge crate's integration tests: real Delta tables in temporary
//! folders, read back through DataFusion as any user would.

mod behaviour;
mod properties;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::datafusion::prelude::SessionContext;
use merge::{Batch, Outcome, Spec, Target};

/// A fresh table location in a temporary folder.
pub(crate) struct Table {
    _dir: tempfile::TempDir,
    pub(crate) target: Target,
}

impl Table {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = url::Url::from_directory_path(dir.path().join("dim")).expect("file url");
        Self {
            _dir: dir,
            target: Target {
                url,
                storage_options: Default::default(),
                app_id: "gold.test".into(),
                commit_info: vec![("gold.operation".into(), serde_json::json!("test"))],
                deletion_vectors: true,
                table_properties: Vec::new(),
            },
        }
    }

    /// A copy of the table under `tests/fixtures/{name}`.
    pub(crate) fn from_fixture(name: &str) -> Self {
        let t = Self::new();
        let to = t.target.url.to_file_path().expect("a folder");
        copy_folder(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name), &to);
        t
    }

    /// The table's `gold.scd2.encoding` property.
    pub(crate) async fn encoding(&self) -> Option<String> {
        let table = deltalake::open_table(self.target.url.clone()).await.expect("open table");
        table.snapshot().expect("snapshot").metadata().configuration().get("gold.scd2.encoding").cloned()
    }

    pub(crate) async fn merge(&self, spec: &Spec, batch: Batch) -> Outcome {
        match merge::merge(&self.target, spec, batch).await {
            Ok(outcome) => outcome,
            Err(e) => panic!("merge failed: {e}"),
        }
    }

    /// Every row of the table, sorted by (key columns, valid_from).
    pub(crate) async fn rows(&self, key: &str) -> Vec<Row> {
        let table = deltalake::open_table(self.target.url.clone()).await.expect("open table");
        let ctx = SessionContext::new();
        let provider = table.table_provider().await.expect("provider");
        let batches = ctx.read_table(provider).expect("read").collect().await.expect("collect");
        let mut rows = Vec::new();
        for b in &batches {
            let text = |name: &str| -> Vec<Option<String>> {
                let col = deltalake::arrow::compute::cast(b.column_by_name(name).expect(name), &DataType::Utf8)
                    .expect("as text");
                let col = col.as_string::<i32>();
                (0..b.num_rows()).map(|r| col.is_valid(r).then(|| col.value(r).to_string())).collect()
            };
            let ts = |name: &str| -> Vec<i64> {
                let col = b.column_by_name(name).expect(name);
                let col = col.as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>();
                col.values().to_vec()
            };
            let flag = |name: &str| -> Vec<bool> {
                let col = b.column_by_name(name).expect(name);
                let col = deltalake::arrow::compute::cast(col, &DataType::Boolean).expect("bool");
                (0..b.num_rows()).map(|r| col.as_boolean().value(r)).collect()
            };
            let keys = text(key);
            let values = text("value");
            let (from, to) = (ts("valid_from"), ts("valid_to"));
            let (current, deleted) = (flag("is_current"), flag("is_deleted"));
            let sk = b.column_by_name("surrogate_key").expect("sk");
            let sk = sk.as_primitive::<deltalake::arrow::datatypes::Int64Type>();
            let extra = b.column_by_name("extra").map(|_| text("extra"));
            for r in 0..b.num_rows() {
                rows.push(Row {
                    key: keys[r].clone().unwrap_or_default(),
                    value: values[r].clone(),
                    from: from[r],
                    to: to[r],
                    current: current[r],
                    deleted: deleted[r],
                    sk: sk.value(r),
                    extra: extra.as_ref().and_then(|e| e[r].clone()),
                });
            }
        }
        rows.sort_by(|a, b| (&a.key, a.from).cmp(&(&b.key, b.from)));
        rows
    }

    pub(crate) async fn version(&self) -> Option<u64> {
        deltalake::open_table(self.target.url.clone()).await.ok().and_then(|t| t.version())
    }
}

fn copy_folder(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create folder");
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{from:?}: {e}")) {
        let path = entry.expect("an entry").path();
        let dest = to.join(path.file_name().expect("a name"));
        if path.is_dir() {
            copy_folder(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        }
    }
}

/// One row of a test table, as a user would look at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) key: String,
    pub(crate) value: Option<String>,
    pub(crate) from: i64,
    pub(crate) to: i64,
    pub(crate) current: bool,
    pub(crate) deleted: bool,
    pub(crate) sk: i64,
    pub(crate) extra: Option<String>,
}

pub(crate) fn day(d: u32) -> DateTime<Utc> {
    Utc.from_utc_datetime(&NaiveDate::from_ymd_opt(2025, 1, d).expect("date").and_hms_opt(0, 0, 0).expect("time"))
}

pub(crate) fn micros(d: u32) -> i64 {
    day(d).timestamp_micros()
}

/// A batch of `(key, value)` rows with optional extra columns.
pub(crate) fn batch(id: &str, sequence: i64, clock: DateTime<Utc>, columns: Vec<(&str, ArrayRef)>) -> Batch {
    let fields: Vec<Field> = columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect();
    let arrays: Vec<ArrayRef> = columns.into_iter().map(|(_, a)| a).collect();
    let rows = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("batch");
    Batch { id: id.into(), sequence, clock, rows: vec![rows] }
}

pub(crate) fn strings(values: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

pub(crate) fn dates(days: &[u32]) -> ArrayRef {
    let values: Vec<i64> = days.iter().map(|d| micros(*d)).collect();
    Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
}

pub(crate) fn ints(values: &[i64]) -> ArrayRef {
    Arc::new(Int64Array::from(values.to_vec()))
}

pub(crate) fn bools(values: &[bool]) -> ArrayRef {
    Arc::new(BooleanArray::from(values.to_vec()))
}

/// Checks the SCD2 invariants on a table's rows: one current row per live
/// key, no overlap, `valid_from < valid_to`, unique surrogate keys.
pub(crate) fn assert_invariants(rows: &[Row]) {
    let mut by_key: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        by_key.entry(&r.key).or_default().push(r);
    }
    for (key, versions) in &by_key {
        let current = versions.iter().filter(|r| r.current).count();
        assert!(current <= 1, "key {key}: {current} current rows");
        for w in versions.windows(2) {
            assert!(w[0].to <= w[1].from, "key {key}: overlapping versions {w:?}");
        }
        for v in versions {
            assert!(v.from < v.to, "key {key}: empty interval {v:?}");
            assert_eq!(v.current, v.to == merge::OPEN_END, "key {key}: is_current disagrees with valid_to {v:?}");
        }
    }
    let mut sks: Vec<i64> = rows.iter().map(|r| r.sk).collect();
    sks.sort_unstable();
    let n = sks.len();
    sks.dedup();
    assert_eq!(sks.len(), n, "surrogate keys are not unique");
}
