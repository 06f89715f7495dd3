//! `_gold_ingest_files`: what each source has ingested, so that every file
//! lands in bronze exactly once and SQL sources resume at their watermark.
//!
//! A source's bronze commit and its checkpoint commit both carry the Delta
//! application transaction `gold.ingest.<source>` with the batch sequence
//! number, and the bronze commit lists its files in its commit info. If a
//! run stops between the two commits, the next run finds the bronze
//! transaction ahead of the checkpoint and completes the checkpoint from
//! that commit info, instead of reading the files again.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};
use serde::{Deserialize, Serialize};
use storage::{Commit, RunContext, TableName, Warehouse};

use crate::{Error, Result};

/// The checkpoint table.
pub const CHECKPOINT_TABLE: &str = "_gold_ingest_files";

/// One ingested file (or SQL read) of one batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The source's name.
    pub source: String,
    /// The batch's sequence number within its source (1, 2, …).
    pub batch_seq: i64,
    /// The batch's id, `<source>-<seq>`, as in bronze's `_batch_id`.
    pub batch_id: String,
    /// The run that ingested it.
    pub run_id: i64,
    /// A file's path relative to the landing root, or `sql:<table>`.
    pub path: String,
    /// A file's size in bytes (none for a SQL read).
    pub size: Option<i64>,
    /// The BLAKE3 hash of a file's bytes, or of a SQL read's values.
    pub hash: Option<String>,
    /// The rows it gave.
    pub rows: i64,
    /// SQL sources: the largest watermark value read.
    pub watermark: Option<String>,
}

/// Everything ingested so far.
#[derive(Debug, Default)]
pub(crate) struct Checkpoint {
    /// (source, path) → content hash, as of the newest batch that read it.
    pub(crate) files: HashMap<(String, String), Option<String>>,
    /// (source, path) → that batch's sequence number.
    file_seq: HashMap<(String, String), i64>,
    /// source → last batch sequence.
    pub(crate) last_seq: HashMap<String, i64>,
    /// source → last watermark.
    pub(crate) watermark: HashMap<String, String>,
}

pub(crate) fn app_id(source: &str) -> String {
    format!("gold.ingest.{source}")
}

fn table() -> TableName {
    TableName::new(CHECKPOINT_TABLE).expect("valid name")
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("batch_seq", DataType::Int64, false),
        Field::new("batch_id", DataType::Utf8, false),
        Field::new("run_id", DataType::Int64, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("size", DataType::Int64, true),
        Field::new("hash", DataType::Utf8, true),
        Field::new("rows", DataType::Int64, false),
        Field::new("watermark", DataType::Utf8, true),
        Field::new("ingested_at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
    ]))
}

impl Checkpoint {
    pub(crate) async fn load(warehouse: &Warehouse) -> Result<Self> {
        let mut cp = Self::default();
        if warehouse.load(&table()).await?.is_none() {
            return Ok(cp);
        }
        for batch in warehouse.scan(&table(), None).await? {
            let text = |name: &str| -> Result<StringArray> {
                let col = batch
                    .column_by_name(name)
                    .ok_or_else(|| Error::Internal(format!("{CHECKPOINT_TABLE} lacks {name}")))?;
                let text = cast(col, &DataType::Utf8)
                    .map_err(|e| Error::arrow(format!("{CHECKPOINT_TABLE}: {name} as text"), e))?;
                Ok(text.as_string::<i32>().clone())
            };
            let (source, path, hash, watermark) = (text("source")?, text("path")?, text("hash")?, text("watermark")?);
            let seq = batch
                .column_by_name("batch_seq")
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
                .ok_or_else(|| Error::Internal("batch_seq".into()))?;
            for i in 0..batch.num_rows() {
                let s = source.value(i).to_string();
                let key = (s.clone(), path.value(i).to_string());
                if cp.file_seq.get(&key).is_none_or(|seen| *seen <= seq.value(i)) {
                    cp.file_seq.insert(key.clone(), seq.value(i));
                    cp.files.insert(key, hash.is_valid(i).then(|| hash.value(i).to_string()));
                }
                let last = cp.last_seq.entry(s.clone()).or_insert(0);
                if seq.value(i) >= *last {
                    *last = seq.value(i);
                    if watermark.is_valid(i) {
                        cp.watermark.insert(s, watermark.value(i).to_string());
                    }
                }
            }
        }
        Ok(cp)
    }

    /// Records `entries` (one source, one batch) in one commit.
    pub(crate) async fn record(
        &mut self,
        warehouse: &Warehouse,
        run: &RunContext,
        source: &str,
        batch_seq: i64,
        entries: &[Entry],
    ) -> Result<i64> {
        let now = run.clock.now().timestamp_micros();
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from_iter_values(entries.iter().map(|e| e.source.as_str()))),
                Arc::new(Int64Array::from_iter_values(entries.iter().map(|e| e.batch_seq))),
                Arc::new(StringArray::from_iter_values(entries.iter().map(|e| e.batch_id.as_str()))),
                Arc::new(Int64Array::from_iter_values(entries.iter().map(|e| e.run_id))),
                Arc::new(StringArray::from_iter_values(entries.iter().map(|e| e.path.as_str()))),
                Arc::new(Int64Array::from_iter(entries.iter().map(|e| e.size))),
                Arc::new(StringArray::from_iter(entries.iter().map(|e| e.hash.as_deref()))),
                Arc::new(Int64Array::from_iter_values(entries.iter().map(|e| e.rows))),
                Arc::new(StringArray::from_iter(entries.iter().map(|e| e.watermark.as_deref()))),
                Arc::new(TimestampMicrosecondArray::from_value(now, entries.len()).with_timezone("UTC")),
            ],
        )
        .map_err(|e| Error::arrow(CHECKPOINT_TABLE, e))?;
        let commit = Commit::new(run, "ingest.checkpoint")
            .with_txn(&app_id(source), batch_seq)
            .with_metadata("source", serde_json::json!(source));
        let version = warehouse.append(&table(), vec![batch], &commit).await?;
        for e in entries {
            self.file_seq.insert((e.source.clone(), e.path.clone()), e.batch_seq);
            self.files.insert((e.source.clone(), e.path.clone()), e.hash.clone());
            if let Some(w) = &e.watermark {
                self.watermark.insert(e.source.clone(), w.clone());
            }
        }
        self.last_seq.insert(source.to_string(), batch_seq);
        Ok(version)
    }

    /// Completes the checkpoint of a source whose bronze commits were not
    /// all checkpointed: a run stopped between a batch's two commits (then
    /// only that batch is missing), or the checkpoint table was lost. Each
    /// missing batch is recorded from the file list its bronze commit
    /// carries, oldest first. Returns the last checkpoint version written.
    pub(crate) async fn recover(
        &mut self,
        warehouse: &Warehouse,
        run: &RunContext,
        source: &str,
        bronze: &TableName,
    ) -> Result<Option<i64>> {
        let app = app_id(source);
        let bronze_seq = warehouse.txn_version(bronze, &app).await?.unwrap_or(0);
        let checkpoint_seq = warehouse.txn_version(&table(), &app).await?.unwrap_or(0);
        if bronze_seq <= checkpoint_seq {
            return Ok(None);
        }
        // Bronze holds one commit per batch, plus the odd maintenance one.
        let missing = usize::try_from(bronze_seq - checkpoint_seq).unwrap_or(usize::MAX);
        let infos = warehouse.commit_metadata(bronze, missing.saturating_add(20)).await?;
        let mut batches: Vec<(i64, Vec<Entry>)> = Vec::new();
        for info in &infos {
            let Some(seq) = info.get("gold.batch_seq").and_then(|v| v.as_i64()) else { continue };
            if seq <= checkpoint_seq || seq > bronze_seq {
                continue;
            }
            let entries: Vec<Entry> = info
                .get("gold.files")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .ok_or_else(|| Error::Internal(format!("{bronze}: batch {seq} of {source} is committed but its file list is missing from the commit info")))?;
            batches.push((seq, entries));
        }
        if !batches.iter().any(|(seq, _)| *seq == bronze_seq) {
            return Err(Error::Internal(format!(
                "{bronze}: batch {bronze_seq} of {source} is committed but its commit info is not in the table's history"
            )));
        }
        batches.sort_by_key(|(seq, _)| *seq);
        let mut version = None;
        for (seq, entries) in batches {
            tracing::warn!(
                source,
                batch_seq = seq,
                files = entries.len(),
                "completing the checkpoint of a batch an earlier run committed to bronze"
            );
            version = Some(self.record(warehouse, run, source, seq, &entries).await?);
        }
        Ok(version)
    }
}
