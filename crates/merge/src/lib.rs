//! SCD Type 2 merges into Delta tables.
//!
//! [`merge`] applies one [`Batch`] of source rows to an SCD2 table described
//! by a [`Spec`] and commits the result as one Delta version:
//!
//! - `key_hash` and `attr_hash` are BLAKE3 digests of a canonical,
//!   type-tagged, NULL-safe encoding ([`hash`]), so a value going from NULL
//!   to `""` is a change and `1.50` = `1.5` is not;
//! - every version has a surrogate key derived from its key hash and
//!   `valid_from` ([`hash::surrogate_key`]): rebuilding the same inputs gives
//!   the same keys, and a collision with any existing key is an error;
//! - several changes of one key in one batch each become a version, in
//!   `(effective time, ordering columns)` order; a change older than the
//!   version it falls into splits that interval;
//! - a delete (missing from a full snapshot, or a delete event) closes the
//!   current version, and a key that comes back opens a new one;
//! - a change only to type-1 columns updates the version in place, and a
//!   column new to the table is filled in without opening versions;
//! - the batch is recorded as Delta application transaction
//!   `(app_id, sequence)`, so re-running it is a no-op, and the SCD2
//!   invariants are checked before anything is committed.
//!
//! The table is partitioned by `is_current`: a merge reads the current rows,
//! rewrites only the current files that hold a changed key (on a table with
//! deletion vectors, [`Target::deletion_vectors`], it keeps such a file and
//! hides the changed rows instead, until more than half would be hidden),
//! and appends closed versions to the history partition, which it reads
//! only for the surrogate-key check and for the keys of late changes and
//! resurrections.
//!
//! The main types: [`Spec`] (how a table is versioned), [`Target`] (where
//! it lives), [`Batch`] (the rows), [`Outcome`] with its [`Metrics`] and
//! [`ChangedInterval`]s, and [`Error`]. [`infer`] gives facts' unknown keys
//! an inferred version, and [`source`] reads snapshot files.
//!
//! ```no_run
//! # async fn example() -> merge::Result<()> {
//! use merge::{Batch, Spec, Target};
//!
//! let target = Target {
//!     url: url::Url::parse("file:///warehouse/gold/dim_members/").expect("a URL"),
//!     storage_options: Default::default(),
//!     app_id: "gold.dims.dim_members".into(),
//!     commit_info: Vec::new(),
//!     deletion_vectors: false,
//!     table_properties: Vec::new(),
//! };
//! let spec = Spec::new(&["member_id"]);
//! let rows = merge::source::read_snapshot(std::path::Path::new("members.csv"), None).await?;
//! let clock = chrono::DateTime::from_timestamp(1_767_225_600, 0).expect("a time");
//! let batch = Batch { id: "2026-01-01".into(), sequence: 1, clock, rows };
//! let outcome = merge::merge(&target, &spec, batch).await?;
//! println!("{} new versions, {} closed", outcome.metrics.inserted, outcome.metrics.closed);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod engine;
mod error;
pub mod hash;
mod io;
pub mod source;

pub use error::{Error, Result};

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use deltalake::arrow::record_batch::RecordBatch;
use serde::Serialize;
use url::Url;

/// Column names written by the engine next to the business columns.
pub mod columns {
    /// The key hash: 16 bytes, little-endian.
    pub const KEY_HASH: &str = "key_hash";
    /// The hash of the tracked columns: 16 bytes, little-endian.
    pub const ATTR_HASH: &str = "attr_hash";
    /// Where the version starts (UTC microseconds, inclusive).
    pub const VALID_FROM: &str = "valid_from";
    /// Where the version ends (exclusive); [`crate::OPEN_END`] while current.
    pub const VALID_TO: &str = "valid_to";
    /// Whether the version is open: the partition column.
    pub const IS_CURRENT: &str = "is_current";
    /// Whether the version was closed by a delete (or is a tombstone).
    pub const IS_DELETED: &str = "is_deleted";
    /// Whether the version was inferred for a key facts point at.
    pub const IS_INFERRED: &str = "is_inferred";
    /// The clock of the batch that wrote the version.
    pub const RECORDED_AT: &str = "recorded_at";
    /// The id of the batch that wrote the version.
    pub const BATCH_ID: &str = "batch_id";
    /// Every engine column except the surrogate key, in table order.
    pub const ALL: [&str; 9] =
        [KEY_HASH, ATTR_HASH, VALID_FROM, VALID_TO, IS_DELETED, IS_INFERRED, RECORDED_AT, BATCH_ID, IS_CURRENT];
}

/// The open end of the current version: 9999-12-31T00:00:00Z, in UTC
/// microseconds.
pub const OPEN_END: i64 = 253_402_214_400_000_000;

/// Where an inferred version starts: 1900-01-01T00:00:00Z, in UTC
/// microseconds, so that it covers every fact that points at its key.
pub const INFERRED_FROM: i64 = -2_208_988_800_000_000;

/// The surrogate key of a dimension's unknown row, which facts point at
/// when their key is empty or their date falls outside every version of
/// their key. Real surrogate keys are never negative.
pub const UNKNOWN_SK: i64 = -1;

/// Which columns open a new version when they change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tracked {
    /// Exactly these columns.
    Columns(Vec<String>),
    /// Every column except the key, the type-1 columns and these.
    AllExcept(Vec<String>),
}

/// What a full snapshot does with a current key it no longer holds, or how
/// delete events are recognised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deletes {
    /// The batch is not a full snapshot: a missing key is not a delete.
    Ignore,
    /// The batch is a full snapshot; a missing key's current version is
    /// closed and flagged `is_deleted`.
    Invalidate,
    /// The batch is a full snapshot; a missing key gets a new current
    /// version flagged `is_deleted` (a tombstone, as dbt's `new_record`).
    NewRecord,
    /// Rows whose `column` holds one of `values` are delete events.
    Events {
        /// The column holding the marker.
        column: String,
        /// The values that mark a delete.
        values: Vec<String>,
    },
}

/// How a table is versioned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Business key columns.
    pub key: Vec<String>,
    /// Type-2 columns.
    pub tracked: Tracked,
    /// Type-1 columns, updated in place.
    pub type1: Vec<String>,
    /// Ordering of changes of one key that share an effective time: the
    /// sequence column first, then the tie-break columns. Rows of one key
    /// that tie on all of them and differ are refused.
    pub order_by: Vec<String>,
    /// The column holding each change's effective date or timestamp; when
    /// `None`, every change takes effect at the batch's clock.
    pub effective_from: Option<String>,
    /// How deletes are detected.
    pub deletes: Deletes,
    /// Name of the surrogate key column.
    pub surrogate_key: String,
    /// When set (UTC microseconds), a key's first version starts here
    /// rather than at its first change's effective time, so facts dated
    /// before the first state a source sent still resolve to a version (a
    /// warehouse's initial row). Versions after a delete start at their
    /// change, as always.
    pub history_from: Option<i64>,
}

impl Spec {
    /// A spec keyed on `key`, tracking every other column, with deletes
    /// from full snapshots invalidating the current version.
    pub fn new(key: &[&str]) -> Self {
        Self {
            key: key.iter().map(|k| k.to_string()).collect(),
            tracked: Tracked::AllExcept(Vec::new()),
            type1: Vec::new(),
            order_by: Vec::new(),
            effective_from: None,
            deletes: Deletes::Invalidate,
            surrogate_key: "surrogate_key".to_string(),
            history_from: None,
        }
    }
}

/// One batch of source rows.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Written into `batch_id` of every version the batch creates.
    pub id: String,
    /// Monotonic batch number for the Delta application transaction: a batch
    /// whose sequence is not above the last one applied is skipped.
    pub sequence: i64,
    /// The run clock: `recorded_at` of new rows, and the effective time of
    /// changes when the spec has no effective-date column.
    pub clock: DateTime<Utc>,
    /// The rows.
    pub rows: Vec<RecordBatch>,
}

/// Where the table lives and how the commit is labelled.
#[derive(Clone, Debug)]
pub struct Target {
    /// The table's location.
    pub url: Url,
    /// Options of the object store (credentials, endpoint, …).
    pub storage_options: std::collections::HashMap<String, String>,
    /// Application id of the Delta transaction, e.g. `gold.dims.dim_members`.
    pub app_id: String,
    /// Extra commit-info entries (run id, operation, …).
    pub commit_info: Vec<(String, serde_json::Value)>,
    /// Whether a table this merge creates takes deletion vectors. With
    /// them, a merge leaves a current file's untouched rows where they are
    /// and hides the rows it replaced, instead of rewriting the file; the
    /// table then needs a reader that knows deletion vectors (Delta reader
    /// version 3). A table that exists keeps what it was created with.
    pub deletion_vectors: bool,
    /// Delta table properties a table this merge creates is given
    /// (`delta.checkpointInterval`, …), beside the merge's own.
    pub table_properties: Vec<(String, String)>,
}

/// Counts of what a merge did, per key version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Metrics {
    /// Source rows in the batch.
    pub rows_in: u64,
    /// Exact duplicate rows dropped (same key, time, order and values).
    pub duplicates: u64,
    /// New versions written (new keys, changes, resurrections, splits).
    pub inserted: u64,
    /// Current versions closed by a change.
    pub closed: u64,
    /// Source rows that matched their version: nothing to do.
    pub unchanged: u64,
    /// Versions split by a change that arrived late.
    pub late_split: u64,
    /// Versions closed by a delete.
    pub deleted: u64,
    /// Keys that came back after a delete.
    pub resurrected: u64,
    /// Versions updated in place (type-1 columns, new columns, a
    /// correction of a version that starts at the same instant, or the
    /// real row of an inferred key).
    pub type1_updated: u64,
    /// Inferred versions created by [`infer`].
    pub inferred: u64,
}

impl Metrics {
    /// Adds `other`'s counts to these (the merges of several batches, or
    /// the runs of keys one merge plans on several cores).
    pub fn add(&mut self, other: &Metrics) {
        self.rows_in += other.rows_in;
        self.duplicates += other.duplicates;
        self.inserted += other.inserted;
        self.closed += other.closed;
        self.unchanged += other.unchanged;
        self.late_split += other.late_split;
        self.deleted += other.deleted;
        self.resurrected += other.resurrected;
        self.type1_updated += other.type1_updated;
        self.inferred += other.inferred;
    }
}

/// One version that a merge created, whose interval it changed, or whose
/// inferred values it replaced with a real row. Facts whose date falls in
/// `[valid_from, valid_to)` of `key_hash` re-key to `surrogate_key`. A
/// version updated in place over the same interval is not listed: no fact
/// changes key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChangedInterval {
    /// The key hash as stored in `key_hash` (16 bytes, little-endian).
    pub key_hash: hash::Hash128,
    /// The version's surrogate key.
    pub surrogate_key: i64,
    /// Where the version starts.
    pub valid_from: DateTime<Utc>,
    /// Where the version ends ([`OPEN_END`] while current).
    pub valid_to: DateTime<Utc>,
}

/// The result of [`merge`].
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// The Delta version written, or `None` when nothing changed or the
    /// batch had already been applied.
    pub version: Option<u64>,
    /// The batch's sequence was already recorded: nothing was read or written.
    pub already_applied: bool,
    /// Counts of what the merge did.
    pub metrics: Metrics,
    /// Columns the table did not have before this batch.
    pub columns_added: Vec<String>,
    /// The versions facts must re-key to.
    pub changed: Vec<ChangedInterval>,
    /// Rows in the table's current partition after the merge.
    pub current_rows: u64,
    /// Milliseconds per phase, for the benchmark.
    pub timings_ms: BTreeMap<&'static str, u64>,
}

/// Applies `batch` to the SCD2 table at `target` and commits it as one
/// Delta version (or none, when nothing changed).
pub async fn merge(target: &Target, spec: &Spec, batch: Batch) -> Result<Outcome> {
    engine::run(target, spec, batch, engine::Mode::Changes).await
}

/// Gives every key in `keys` (the key columns only) that the table has
/// never held an inferred version: business columns NULL, `is_inferred`
/// true, valid from [`INFERRED_FROM`] and open, so every fact of the key
/// resolves to it. A row whose key columns are all NULL becomes the
/// table's unknown row, with surrogate key [`UNKNOWN_SK`]. Keys the table
/// holds, current or not, are left alone.
///
/// When the key's real row later arrives through [`merge`], it replaces
/// the inferred version's values in place, so facts keep the surrogate key;
/// a full snapshot never deletes an inferred key.
pub async fn infer(
    target: &Target,
    spec: &Spec,
    keys: RecordBatch,
    id: &str,
    sequence: i64,
    clock: DateTime<Utc>,
) -> Result<Outcome> {
    use deltalake::arrow::array::new_null_array;
    use deltalake::arrow::compute::cast;
    let schema = match business_schema(target, spec).await? {
        Some(s) => s,
        None => keys.schema().as_ref().clone(),
    };
    let n = keys.num_rows();
    let mut fields = Vec::new();
    let mut cols = Vec::new();
    for f in schema.fields() {
        let col = match keys.column_by_name(f.name()) {
            Some(c) => cast(c, f.data_type()).map_err(|e| Error::arrow(&format!("key column {:?}", f.name()), e))?,
            None => new_null_array(f.data_type(), n),
        };
        fields.push(f.as_ref().clone().with_nullable(true));
        cols.push(col);
    }
    let rows = RecordBatch::try_new(std::sync::Arc::new(deltalake::arrow::datatypes::Schema::new(fields)), cols)
        .map_err(|e| Error::arrow("inferred keys", e))?;
    let batch = Batch { id: id.to_string(), sequence, clock, rows: vec![rows] };
    engine::run(target, spec, batch, engine::Mode::Infer).await
}

/// The business columns (no engine columns) of the SCD2 table at
/// `target`, or `None` when there is no table yet.
pub async fn business_schema(target: &Target, spec: &Spec) -> Result<Option<deltalake::arrow::datatypes::Schema>> {
    engine::business_schema(target, spec).await
}

/// The commit-info key under which a merge records its source's
/// [`source::digest`], when the caller puts it in [`Target::commit_info`].
pub const SOURCE_DIGEST: &str = "gold.source_digest";

/// The table's newest version, if that version was written by a merge of
/// a source with this `digest` (recorded under [`SOURCE_DIGEST`]). The
/// same source merged again under the same spec is then a no-op: the
/// table is exactly what that source made it, and re-applying a batch to
/// its own result changes nothing. Any later commit (another batch, a
/// restore, an optimize) makes this `None`, and the source is merged.
pub async fn applied_source(target: &Target, digest: &str) -> Result<Option<u64>> {
    let Some(table) = io::open(target).await? else { return Ok(None) };
    let Some((version, info)) = io::newest_commit_info(&table, target).await? else { return Ok(None) };
    Ok((info.get(SOURCE_DIGEST).and_then(|v| v.as_str()) == Some(digest)).then_some(version))
}

/// Formats a key hash as the 32 hex digits stored in `key_hash`.
pub fn key_hash_hex(hash: hash::Hash128) -> String {
    format!("{hash:032x}")
}
