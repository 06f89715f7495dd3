//! Writing a source's batches: one Delta commit to bronze per batch (one
//! day folder of files, or one SQL read), then its files to the
//! checkpoint, each batch with the next sequence number of its source.
//!
//! A few day folders are read at the same time (a day often has one file
//! of a source, which one worker reads), on blocking threads so that the
//! writers' tasks run while the readers wait for room in their lanes;
//! then they are committed one after the other in day order. Rows stream
//! straight into new files of the bronze table through the lanes of a
//! [`storage::StreamingAppend`], so memory holds a batch or two per lane
//! whatever the source's size; only a source whose schema may widen
//! (`drift = "add-column"`) is kept in memory and appended at the end.
//! Every row read is committed or nothing is: the writers' count is
//! checked against the readers' before the commit.

use std::path::Path;

use deltalake::arrow::array::RecordBatch;
use storage::{Commit, RunContext, TableName, Warehouse};

use crate::bronze::{self, BatchMeta, BronzeBuilder};
use crate::checkpoint::{Checkpoint, Entry, app_id};
use crate::files::{self, FileNotes};
use crate::model::{DriftPolicy, LoadMode, SourceDef, SourceKind};
use crate::plan::NewFile;
use crate::workers::{on_workers, stride};
use crate::{Error, Result, SourceReport, sql};

/// One file's outcome: its notes and the rows it gave.
struct FileRead {
    notes: FileNotes,
    rows: u64,
}

/// What reading a source's files gave: the batches, each file's outcome
/// (by its position in the file list) and the rows rescued.
struct FilesRead {
    batches: Vec<RecordBatch>,
    reads: Vec<(usize, FileRead)>,
    rescued: u64,
}

/// Reads the new files of a source on every worker: each worker fills its
/// own builder with every n-th file, streaming its batches to lane `w` of
/// `lanes` when there are lanes, else keeping them. Returns the kept
/// batches, each file's outcome (in `files` order) and the rows rescued.
fn read_files(source: &SourceDef, files: &[NewFile], meta: &BatchMeta, lanes: &[storage::Lane]) -> Result<FilesRead> {
    let parts = on_workers(files.len(), |w, workers| {
        let mut builder = BronzeBuilder::new(source, meta.clone())?;
        if !lanes.is_empty() {
            builder = builder.streaming_to(lanes[w % lanes.len()].clone());
        }
        let mut reads = Vec::new();
        for (i, file) in stride(files, w, workers) {
            let before = builder.rows;
            let notes = match source.kind {
                SourceKind::Csv => files::read_csv(&file.path, &file.rel, source, &mut builder)?,
                _ => files::read_ndjson(&file.path, &file.rel, source, &mut builder)?,
            };
            reads.push((i, FileRead { notes, rows: builder.rows - before }));
        }
        let rescued = builder.rescued_rows;
        Ok(FilesRead { batches: builder.finish()?, reads, rescued })
    })?;
    let mut all = FilesRead { batches: Vec::new(), reads: Vec::new(), rescued: 0 };
    for part in parts {
        all.batches.extend(part.batches);
        all.reads.extend(part.reads);
        all.rescued += part.rescued;
    }
    all.reads.sort_by_key(|(i, _)| *i);
    Ok(all)
}

/// Where a source's bronze rows go while they are read.
enum Output {
    /// Straight into new files of the bronze table, committed at the end.
    Stream(Box<storage::StreamingAppend>),
    /// Kept in memory and appended at the end, for sources whose schema
    /// may widen as they are read (`drift = "add-column"`): delta-rs
    /// evolves a partitioned table's schema only in a whole-batch write.
    Keep(Vec<RecordBatch>),
}

impl Output {
    fn lanes(&self) -> Vec<storage::Lane> {
        match self {
            Self::Stream(s) => s.lanes().to_vec(),
            Self::Keep(_) => Vec::new(),
        }
    }

    /// Nothing is committed: streamed files are deleted. Returns the
    /// writer's own error, the cause to report if a send failed.
    async fn abort(self) -> Option<Error> {
        match self {
            Self::Stream(s) => s.abort().await.map(Error::from),
            Self::Keep(_) => None,
        }
    }
}

/// `error`, after every output is aborted (a writer's own error instead,
/// when one stopped first).
async fn abort_all(outputs: impl IntoIterator<Item = Output>, error: Error) -> Error {
    let mut first = None;
    for output in outputs {
        if let Some(e) = output.abort().await {
            first.get_or_insert(e);
        }
    }
    first.unwrap_or(error)
}

/// A batch opened for writing: its sequence number, its identity, and
/// where its rows go while they are read.
struct Batch {
    seq: i64,
    meta: BatchMeta,
    output: Output,
}

/// Writes a source's batches: each one to bronze in one commit, then to
/// the checkpoint, with the next batch sequence of the source.
pub(crate) struct BatchWriter<'a> {
    pub(crate) warehouse: &'a Warehouse,
    pub(crate) run: &'a RunContext,
    pub(crate) source: &'a SourceDef,
    pub(crate) table: &'a TableName,
    /// The table's partition columns: none for a new table.
    pub(crate) partition_by: &'a [String],
    pub(crate) checkpoint: &'a mut Checkpoint,
}

impl BatchWriter<'_> {
    /// The table's partition columns.
    fn partitions(&self) -> Vec<&str> {
        self.partition_by.iter().map(String::as_str).collect()
    }

    /// The batch `ahead` batches after the next one.
    fn open(&self, ahead: i64) -> Result<Batch> {
        let source = self.source;
        let seq = self.checkpoint.last_seq.get(&source.name).copied().unwrap_or(0) + 1 + ahead;
        let meta = BatchMeta {
            batch_id: format!("{}-{seq:06}", source.name),
            ingested_at_micros: self.run.clock.now().timestamp_micros(),
            ingest_date: deltalake::arrow::datatypes::Date32Type::from_naive_date(self.run.clock.logical_date()),
        };
        let output = if source.drift == DriftPolicy::AddColumn {
            Output::Keep(Vec::new())
        } else {
            let schema = BronzeBuilder::new(source, meta.clone())?.schema();
            let lanes = parallel::threads();
            Output::Stream(Box::new(self.warehouse.streaming_append(self.table, schema, &self.partitions(), lanes)?))
        };
        Ok(Batch { seq, meta, output })
    }

    /// A few batches of new files, one per day folder, read at the same
    /// time, then committed one after the other in day order. On an error,
    /// the batches before it stay committed and nothing after it is.
    pub(crate) async fn files_batches(&mut self, days: &[&[NewFile]], report: &mut SourceReport) -> Result<()> {
        let mut opened = Vec::new();
        for ahead in 0..days.len() {
            match self.open(ahead as i64) {
                Ok(batch) => opened.push(batch),
                Err(e) => return Err(abort_all(opened.into_iter().map(|b| b.output), e).await),
            }
        }
        let reading = std::time::Instant::now();
        // Read on blocking threads, so that the writers' tasks run while
        // the readers wait for room in their lanes.
        let reads: Vec<_> = opened
            .iter()
            .zip(days)
            .map(|(batch, files)| {
                let (src, new, m, lanes) =
                    (self.source.clone(), files.to_vec(), batch.meta.clone(), batch.output.lanes());
                tokio::task::spawn_blocking(move || read_files(&src, &new, &m, &lanes))
            })
            .collect();
        let mut results = Vec::new();
        for read in reads {
            results.push(read.await.map_err(Error::Reader).and_then(|r| r));
        }
        let mut batches = opened.into_iter().zip(days).zip(results);
        while let Some(((batch, files), read)) = batches.next() {
            let rest = batches.by_ref().map(|((b, _), _)| b.output);
            let read = match read {
                Ok(read) => read,
                Err(e) => return Err(abort_all(std::iter::once(batch.output).chain(rest), e).await),
            };
            let seconds = reading.elapsed().as_secs_f64();
            if let Err(e) = self.files_batch(batch, files, read, seconds, report).await {
                return Err(abort_all(rest, e).await);
            }
        }
        Ok(())
    }

    /// Commits one day folder's batch of files, read into its output.
    async fn files_batch(
        &mut self,
        mut batch: Batch,
        files: &[NewFile],
        read: FilesRead,
        read_seconds: f64,
        report: &mut SourceReport,
    ) -> Result<()> {
        let source = self.source;
        if let Output::Keep(kept) = &mut batch.output {
            kept.extend(read.batches);
        }
        let mut rows_read = 0;
        let mut entries = Vec::new();
        for (file, (_, FileRead { notes, rows })) in files.iter().zip(read.reads) {
            rows_read += rows;
            warn_of(source, &file.rel, &notes, rows, report);
            report.read.push(file.rel.clone());
            entries.push(Entry {
                source: source.name.clone(),
                batch_seq: batch.seq,
                batch_id: batch.meta.batch_id.clone(),
                run_id: self.run.id.0,
                path: file.rel.clone(),
                size: Some(file.size as i64),
                hash: Some(file.hash.clone()),
                rows: rows as i64,
                watermark: None,
            });
        }
        self.commit(batch, entries, (rows_read, read.rescued), read_seconds, report).await
    }

    /// The source's SQL table: the rows after the watermark, or all of
    /// them unless unchanged since the last load, as one batch.
    pub(crate) async fn sql_batch(&mut self, landing: &Path, report: &mut SourceReport) -> Result<()> {
        let source = self.source;
        let mut batch = self.open(0)?;
        let reading = std::time::Instant::now();
        let lanes = batch.output.lanes();
        let url = match sql_url(source, landing) {
            Ok(url) => url,
            Err(e) => return Err(abort_all([batch.output], e).await),
        };
        let since = (source.load == LoadMode::Incremental)
            .then(|| self.checkpoint.watermark.get(&source.name).cloned())
            .flatten();
        let mut builder = BronzeBuilder::new(source, batch.meta.clone())?;
        let read = match sql::read_table(source, &url, since.as_deref(), &mut builder, &lanes).await {
            Ok(read) => read,
            Err(e) => return Err(abort_all([batch.output], e).await),
        };
        let counts = (builder.rows, builder.rescued_rows);
        let rest = builder.finish()?;
        match &mut batch.output {
            Output::Keep(kept) => kept.extend(rest),
            Output::Stream(_) => {
                if let Err(e) = sql::send_all(&lanes, rest).await {
                    return Err(abort_all([batch.output], e).await);
                }
            }
        }
        let path = format!("sql:{}", source.table.as_deref().unwrap_or_default());
        // A full load of an unchanged table is nothing new.
        let unchanged = source.load == LoadMode::Full
            && self.checkpoint.files.get(&(source.name.clone(), path.clone()))
                == Some(&Some(read.content_hash.clone()));
        if unchanged {
            if let Some(e) = batch.output.abort().await {
                return Err(e);
            }
            report.already_ingested = 1;
            return Ok(());
        }
        let mut entries = Vec::new();
        if read.rows > 0 {
            report.read.push(path.clone());
            entries.push(Entry {
                source: source.name.clone(),
                batch_seq: batch.seq,
                batch_id: batch.meta.batch_id.clone(),
                run_id: self.run.id.0,
                path,
                size: None,
                hash: Some(read.content_hash.clone()),
                rows: read.rows as i64,
                watermark: read.watermark,
            });
        }
        tracing::debug!(source = %source.name, url = %read.shown_url, rows = read.rows, "read sql source");
        self.commit(batch, entries, counts, reading.elapsed().as_secs_f64(), report).await
    }

    /// Commits one batch of `(rows read, rows rescued)` to bronze, then its
    /// files to the checkpoint; a batch of no files commits nothing.
    async fn commit(
        &mut self,
        batch: Batch,
        entries: Vec<Entry>,
        (rows_read, rescued): (u64, u64),
        read_seconds: f64,
        report: &mut SourceReport,
    ) -> Result<()> {
        let source = self.source;
        let Batch { seq, meta, output } = batch;
        report.rows_read += rows_read;
        report.rows_rescued += rescued;
        if entries.is_empty() {
            return match output.abort().await {
                Some(e) => Err(e),
                None => Ok(()),
            };
        }
        let files =
            serde_json::to_value(&entries).map_err(|source| Error::Json { context: "a batch's file list", source })?;
        let mut commit = Commit::new(self.run, "ingest")
            .with_txn(&app_id(&source.name), seq)
            .with_metadata("source", serde_json::json!(source.name))
            .with_metadata("batch_seq", serde_json::json!(seq))
            .with_metadata("batch_id", serde_json::json!(meta.batch_id))
            .with_metadata("files", files)
            .partitioned_by(&self.partitions());
        let writing = std::time::Instant::now();
        // Every row read is committed, or nothing is: the writers' count
        // is checked against the readers' before the commit.
        let written = match output {
            Output::Stream(append) => append.commit(&commit, rows_read).await?,
            Output::Keep(kept) => {
                commit = commit.merging_schema();
                let batches = bronze::unify(kept)?;
                let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                if rows as u64 != rows_read {
                    return Err(Error::Internal(format!("{}: read {rows_read} rows but built {rows}", source.name)));
                }
                match rows {
                    0 => None,
                    _ => Some((self.warehouse.append(self.table, batches, &commit).await?, rows as u64)),
                }
            }
        };
        if let Some((version, rows)) = written {
            tracing::debug!(source = %source.name, rows, read_seconds, write_seconds = writing.elapsed().as_secs_f64(), "committed to bronze");
            report.bronze_version = Some(version);
            report.rows_written += rows;
        }
        report.batch_id = Some(meta.batch_id.clone());
        report.batch_ids.push(meta.batch_id.clone());
        report.checkpoint_version =
            Some(self.checkpoint.record(self.warehouse, self.run, &source.name, seq, &entries).await?);
        Ok(())
    }
}

/// The warnings a file's read gives: declared columns it lacks, columns
/// it has that are not declared (and what the drift policy did with them),
/// and no rows at all.
fn warn_of(source: &SourceDef, rel: &str, notes: &FileNotes, rows: u64, report: &mut SourceReport) {
    if !notes.missing_columns.is_empty() {
        report
            .warnings
            .push(format!("{rel}: missing declared column(s) {}, ingested as NULL", notes.missing_columns.join(", ")));
    }
    if !notes.extra_columns.is_empty() {
        let policy = match source.drift {
            DriftPolicy::Rescue => "kept in _rescued_data",
            DriftPolicy::AddColumn => "added to the table",
            DriftPolicy::Fail => "refused",
        };
        report.warnings.push(format!("{rel}: undeclared column(s) {}, {policy}", notes.extra_columns.join(", ")));
    }
    if rows == 0 {
        report.warnings.push(format!("{rel}: no rows"));
    }
}

/// The URL of a SQL source's database: its `url_env` variable when set,
/// else the landing's `legacy.db`.
fn sql_url(source: &SourceDef, landing: &Path) -> Result<String> {
    if let Some(url) = source.url_env.as_deref().and_then(|v| std::env::var(v).ok()).filter(|v| !v.is_empty()) {
        return Ok(url);
    }
    let db = landing.join("legacy.db");
    if !db.is_file() {
        let reason = format!(
            "no database: set {} or generate a landing with legacy.db",
            source.url_env.as_deref().unwrap_or("url_env")
        );
        return Err(Error::Source { source_name: source.name.clone(), location: db.display().to_string(), reason });
    }
    Ok(format!("sqlite://{}?mode=ro", db.display()))
}
