//! Bronze ingestion: every declared source into `bronze_<name>`, exactly
//! once, with nothing lost.
//!
//! Sources are declared in `models/sources.toml` ([`SourceCatalog`]): CSV,
//! newline-delimited JSON (flat or nested) and SQL tables. [`ingest`] reads
//! every landing day folder up to a date, skips files it has already
//! ingested (by path and BLAKE3 content hash, in `_gold_ingest_files`),
//! refuses files that changed under the same name, and writes one Delta
//! commit per source and day folder (one batch each, oldest day first, so
//! that silver can replay a catch-up day by day) with the run id and an
//! application transaction. Every
//! physical row becomes a bronze row with `_batch_id`, `_ingested_at`,
//! `_source_file`, `_source_row`, `_rescued_data` and `_error`; bronze
//! tables are partitioned by `_ingest_date`.
//!
//! ```no_run
//! # async fn run(run: &storage::RunContext) -> ingest::Result<()> {
//! let warehouse = storage::Warehouse::open("./warehouse")?;
//! let catalog = ingest::SourceCatalog::default_catalog()?;
//! let options = ingest::IngestOptions { landing: std::path::Path::new("landing"), up_to: run.clock.logical_date() };
//! let report = ingest::ingest(&warehouse, run, &catalog, &options).await?;
//! for s in &report.sources {
//!     println!("{}: {} rows read, {} written, {} rescued", s.source, s.rows_read, s.rows_written, s.rows_rescued);
//! }
//! # Ok(())
//! # }
//! ```

mod bronze;
mod checkpoint;
mod files;
mod model;
mod sql;

use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::Serialize;
use storage::{Commit, RunContext, TableName, Warehouse};

pub use bronze::METADATA_COLUMNS;
pub use checkpoint::{CHECKPOINT_TABLE, Entry};
pub use model::{ColumnDef, ColumnType, DEFAULT_SOURCES, DriftPolicy, LoadMode, SourceCatalog, SourceDef, SourceKind};

use crate::bronze::{BatchMeta, BronzeBuilder};
use crate::checkpoint::{Checkpoint, app_id};

/// Errors of ingestion.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `sources.toml` is invalid.
    #[error("{origin}: {reason}")]
    Model { origin: String, reason: String },
    /// A landing file cannot be ingested as declared.
    #[error("{file}: {reason}")]
    BadFile { file: String, reason: String },
    /// Files already ingested have different contents now.
    #[error("{} already ingested file(s) changed under the same name, so nothing was ingested: {}", files.len(), files.join(", "))]
    ChangedFiles { files: Vec<String> },
    /// A SQL source cannot be read. The location has no password.
    #[error("source {source_name} ({location}): {reason}")]
    Source { source_name: String, location: String, reason: String },
    /// A landing path cannot be read.
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// A source's database did not answer (a transient failure: the build
    /// retries it).
    #[error("source {source_name} ({location}): {source}")]
    Unavailable {
        source_name: String,
        location: String,
        #[source]
        source: sqldb::Error,
    },
    /// The warehouse failed.
    #[error(transparent)]
    Storage(#[from] storage::Error),
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether the user can fix this (bad model, bad or changed file,
    /// unreachable source), as opposed to a storage fault or a bug.
    /// Whether trying again later may succeed: a source's database did not
    /// answer.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    pub fn is_user_error(&self) -> bool {
        match self {
            Self::Model { .. }
            | Self::BadFile { .. }
            | Self::ChangedFiles { .. }
            | Self::Source { .. }
            | Self::Unavailable { .. }
            | Self::Io { .. } => true,
            Self::Storage(e) => e.is_user_error(),
            Self::Internal(_) => false,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where and how far to ingest.
#[derive(Clone, Copy, Debug)]
pub struct IngestOptions<'a> {
    /// The landing root, holding `YYYY-MM-DD/` day folders (and `legacy.db`).
    pub landing: &'a Path,
    /// The last day folder to read.
    pub up_to: NaiveDate,
}

/// What one source did in a run.
#[derive(Clone, Debug, Serialize)]
pub struct SourceReport {
    pub source: String,
    pub table: String,
    pub kind: SourceKind,
    /// Files (or `sql:<table>`) read in this run.
    pub read: Vec<String>,
    /// Files already ingested by an earlier run, skipped.
    pub already_ingested: usize,
    pub rows_read: u64,
    pub rows_written: u64,
    /// Rows kept with `_rescued_data` or `_error`.
    pub rows_rescued: u64,
    /// The last batch written in this run.
    pub batch_id: Option<String>,
    /// Every batch written in this run, one per day folder read (a SQL
    /// source writes one).
    pub batch_ids: Vec<String>,
    pub bronze_version: Option<i64>,
    pub checkpoint_version: Option<i64>,
    pub warnings: Vec<String>,
}

/// What a run ingested.
#[derive(Clone, Debug, Serialize)]
pub struct IngestReport {
    /// The day folders considered.
    pub days: Vec<NaiveDate>,
    pub sources: Vec<SourceReport>,
}

impl IngestReport {
    /// (table, version, rows written) for every table this run committed to.
    pub fn table_versions(&self) -> Vec<(String, i64, i64)> {
        let mut out = Vec::new();
        for s in &self.sources {
            if let Some(v) = s.bronze_version {
                out.push((s.table.clone(), v, s.rows_written as i64));
            }
        }
        if let Some(v) = self.sources.iter().filter_map(|s| s.checkpoint_version).max() {
            out.push((
                CHECKPOINT_TABLE.to_string(),
                v,
                self.sources.iter().filter(|s| s.checkpoint_version.is_some()).map(|s| s.read.len() as i64).sum(),
            ));
        }
        out
    }

    /// Rows read, written and rescued over all sources.
    pub fn totals(&self) -> (u64, u64, u64) {
        self.sources.iter().fold((0, 0, 0), |(r, w, x), s| (r + s.rows_read, w + s.rows_written, x + s.rows_rescued))
    }
}

/// The day folders of `landing` up to `up_to`, oldest first.
pub fn day_folders(landing: &Path, up_to: NaiveDate) -> Result<Vec<(NaiveDate, PathBuf)>> {
    let io = |source| Error::Io { path: landing.display().to_string(), source };
    let mut days = Vec::new();
    for entry in std::fs::read_dir(landing).map_err(io)? {
        let entry = entry.map_err(io)?;
        let Some(date) = entry.file_name().to_str().and_then(|n| NaiveDate::parse_from_str(n, "%Y-%m-%d").ok()) else {
            continue;
        };
        if date <= up_to && entry.path().is_dir() {
            days.push((date, entry.path()));
        }
    }
    days.sort();
    Ok(days)
}

/// A new file of a source: where it is and what it holds.
#[derive(Clone)]
struct NewFile {
    /// The day folder it is in.
    day: NaiveDate,
    path: PathBuf,
    rel: String,
    size: u64,
    hash: String,
}

/// The files of one source: new ones, and how many were seen before.
struct FilePlan {
    new: Vec<NewFile>,
    already: usize,
    /// Days on which no file matched.
    missing_on: Vec<NaiveDate>,
}

fn plan_files(
    source: &SourceDef,
    days: &[(NaiveDate, PathBuf)],
    landing: &Path,
    checkpoint: &Checkpoint,
    changed: &mut Vec<String>,
) -> Result<FilePlan> {
    let pattern = source.location.as_deref().unwrap_or_default();
    let mut plan = FilePlan { new: Vec::new(), already: 0, missing_on: Vec::new() };
    let mut found: Vec<PathBuf> = Vec::new();
    let mut found_on: Vec<NaiveDate> = Vec::new();
    for (date, dir) in days {
        let full = format!("{}/{}", glob::Pattern::escape(&dir.display().to_string()), pattern);
        let paths = glob::glob(&full).map_err(|e| Error::Model {
            origin: format!("source {}", source.name),
            reason: format!("location {pattern:?}: {e}"),
        })?;
        let before = found.len();
        for path in paths {
            let path = path.map_err(|e| Error::Io {
                path: e.path().display().to_string(),
                source: std::io::Error::other(e.to_string()),
            })?;
            if path.is_file() {
                found.push(path);
                found_on.push(*date);
            }
        }
        if found.len() == before {
            plan.missing_on.push(*date);
        }
    }
    for ((path, day), (size, hash)) in found.iter().zip(found_on).zip(fingerprint_all(&found)?) {
        let rel = path.strip_prefix(landing).unwrap_or(path).display().to_string();
        match checkpoint.files.get(&(source.name.clone(), rel.clone())) {
            Some(Some(old)) if *old == hash => plan.already += 1,
            Some(_) => changed.push(rel),
            None => plan.new.push(NewFile { day, path: path.clone(), rel, size, hash }),
        }
    }
    Ok(plan)
}

/// The cores to read and write on.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Runs `work(worker, workers)` on one thread per core (at most `items`
/// threads) and returns each worker's result, in worker order. A worker
/// takes every `workers`-th item from its own index on.
fn on_every_core<T: Send>(items: usize, work: impl Fn(usize, usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    let workers = cores().min(items).max(1);
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers).map(|w| scope.spawn(move || work(w, workers))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::Internal("an ingest worker panicked".into()))))
            .collect()
    })
}

/// Size and hash of every file, on every core, in `paths` order.
fn fingerprint_all(paths: &[PathBuf]) -> Result<Vec<(u64, String)>> {
    let parts = on_every_core(paths.len(), |w, workers| {
        paths
            .iter()
            .enumerate()
            .skip(w)
            .step_by(workers)
            .map(|(i, p)| files::fingerprint(p).map(|f| (i, f)))
            .collect::<Result<Vec<_>>>()
    })?;
    let mut all: Vec<_> = parts.into_iter().flatten().collect();
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, f)| f).collect())
}

/// One file's outcome: its notes and the rows it gave.
struct FileRead {
    notes: files::FileNotes,
    rows: u64,
}

/// What reading a source's files gave: the batches, each file's outcome
/// (by its position in the file list) and the rows rescued.
struct FilesRead {
    batches: Vec<deltalake::arrow::array::RecordBatch>,
    reads: Vec<(usize, FileRead)>,
    rescued: u64,
}

/// Reads the new files of a source on every core: each worker fills its own
/// builder with every n-th file, streaming its batches to lane `w` of
/// `lanes` when there are lanes, else keeping them. Returns the kept
/// batches, each file's outcome (in `files` order) and the rows rescued.
fn read_files(source: &SourceDef, files: &[NewFile], meta: &BatchMeta, lanes: &[storage::Lane]) -> Result<FilesRead> {
    let parts = on_every_core(files.len(), |w, workers| {
        let mut builder = BronzeBuilder::new(source, meta.clone())?;
        if !lanes.is_empty() {
            builder = builder.streaming_to(lanes[w % lanes.len()].clone());
        }
        let mut reads = Vec::new();
        for (i, file) in files.iter().enumerate().skip(w).step_by(workers) {
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
    Keep(Vec<deltalake::arrow::array::RecordBatch>),
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

/// Writes a source's batches: each one to bronze in one commit, then to
/// the checkpoint, with the next batch sequence of the source.
struct BatchWriter<'a> {
    warehouse: &'a Warehouse,
    run: &'a RunContext,
    source: &'a SourceDef,
    table: &'a TableName,
    checkpoint: &'a mut Checkpoint,
}

impl BatchWriter<'_> {
    /// The identity of the batch `ahead` batches after the next one, and
    /// where its rows go while they are read.
    fn open(&self, ahead: i64) -> Result<(i64, BatchMeta, Output)> {
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
            Output::Stream(Box::new(self.warehouse.streaming_append(self.table, schema, &["_ingest_date"], cores())?))
        };
        Ok((seq, meta, output))
    }

    /// A few batches of new files, one per day folder, read at the same
    /// time (a day often has one file of a source, which one core reads),
    /// then committed one after the other in day order. On an error, the
    /// batches before it stay committed and nothing after it is.
    async fn files_batches(&mut self, days: &[&[NewFile]], report: &mut SourceReport) -> Result<()> {
        let mut opened = Vec::new();
        for ahead in 0..days.len() {
            match self.open(ahead as i64) {
                Ok(batch) => opened.push(batch),
                Err(e) => return Err(abort_all(opened.into_iter().map(|(_, _, o)| o), e).await),
            }
        }
        let reading = std::time::Instant::now();
        // Read on blocking threads, so that the writers' tasks run while
        // the readers wait for room in their lanes.
        let reads: Vec<_> = opened
            .iter()
            .zip(days)
            .map(|((_, meta, output), files)| {
                let (src, new, m, lanes) = (self.source.clone(), files.to_vec(), meta.clone(), output.lanes());
                tokio::task::spawn_blocking(move || read_files(&src, &new, &m, &lanes))
            })
            .collect();
        let mut results = Vec::new();
        for read in reads {
            let read = read.await.map_err(|e| Error::Internal(format!("an ingest reader failed: {e}")));
            results.push(read.and_then(|r| r));
        }
        let mut batches = opened.into_iter().zip(days).zip(results);
        while let Some((((seq, meta, output), files), read)) = batches.next() {
            let rest = batches.by_ref().map(|(((_, _, o), _), _)| o);
            let read = match read {
                Ok(read) => read,
                Err(e) => return Err(abort_all(std::iter::once(output).chain(rest), e).await),
            };
            let seconds = reading.elapsed().as_secs_f64();
            if let Err(e) = self.files_batch(seq, &meta, output, files, read, seconds, report).await {
                return Err(abort_all(rest, e).await);
            }
        }
        Ok(())
    }

    /// Commits one day folder's batch of files, read into `output`.
    #[allow(clippy::too_many_arguments)]
    async fn files_batch(
        &mut self,
        seq: i64,
        meta: &BatchMeta,
        mut output: Output,
        files: &[NewFile],
        read: FilesRead,
        read_seconds: f64,
        report: &mut SourceReport,
    ) -> Result<()> {
        let source = self.source;
        if let Output::Keep(kept) = &mut output {
            kept.extend(read.batches);
        }
        let mut rows_read = 0;
        let mut entries = Vec::new();
        for (file, (_, FileRead { notes, rows })) in files.iter().zip(read.reads) {
            rows_read += rows;
            if !notes.missing_columns.is_empty() {
                report.warnings.push(format!(
                    "{}: missing declared column(s) {}, ingested as NULL",
                    file.rel,
                    notes.missing_columns.join(", ")
                ));
            }
            if !notes.extra_columns.is_empty() {
                let policy = match source.drift {
                    DriftPolicy::Rescue => "kept in _rescued_data",
                    DriftPolicy::AddColumn => "added to the table",
                    DriftPolicy::Fail => "refused",
                };
                report.warnings.push(format!(
                    "{}: undeclared column(s) {}, {policy}",
                    file.rel,
                    notes.extra_columns.join(", ")
                ));
            }
            if rows == 0 {
                report.warnings.push(format!("{}: no rows", file.rel));
            }
            report.read.push(file.rel.clone());
            entries.push(Entry {
                source: source.name.clone(),
                batch_seq: seq,
                batch_id: meta.batch_id.clone(),
                run_id: self.run.id.0,
                path: file.rel.clone(),
                size: Some(file.size as i64),
                hash: Some(file.hash.clone()),
                rows: rows as i64,
                watermark: None,
            });
        }
        self.commit(seq, meta, output, entries, (rows_read, read.rescued), read_seconds, report).await
    }

    /// The source's SQL table: the rows after the watermark, or all of
    /// them unless unchanged since the last load, as one batch.
    async fn sql_batch(&mut self, landing: &Path, report: &mut SourceReport) -> Result<()> {
        let source = self.source;
        let (seq, meta, mut output) = self.open(0)?;
        let reading = std::time::Instant::now();
        let lanes = output.lanes();
        let url = match source.url_env.as_deref().and_then(|v| std::env::var(v).ok()).filter(|v| !v.is_empty()) {
            Some(url) => url,
            None => {
                let db = landing.join("legacy.db");
                if !db.is_file() {
                    let reason = format!(
                        "no database: set {} or generate a landing with legacy.db",
                        source.url_env.as_deref().unwrap_or("url_env")
                    );
                    let error =
                        Error::Source { source_name: source.name.clone(), location: db.display().to_string(), reason };
                    return Err(abort_all([output], error).await);
                }
                format!("sqlite://{}?mode=ro", db.display())
            }
        };
        let since = (source.load == LoadMode::Incremental)
            .then(|| self.checkpoint.watermark.get(&source.name).cloned())
            .flatten();
        let mut builder = BronzeBuilder::new(source, meta.clone())?;
        let read = match sql::read_table(source, &url, since.as_deref(), &mut builder, &lanes).await {
            Ok(read) => read,
            Err(e) => return Err(abort_all([output], e).await),
        };
        let counts = (builder.rows, builder.rescued_rows);
        let rest = builder.finish()?;
        match &mut output {
            Output::Keep(kept) => kept.extend(rest),
            Output::Stream(_) => {
                if let Err(e) = sql::send_all(&lanes, rest).await {
                    return Err(abort_all([output], e).await);
                }
            }
        }
        let path = format!("sql:{}", source.table.as_deref().unwrap_or_default());
        // A full load of an unchanged table is nothing new.
        let unchanged = source.load == LoadMode::Full
            && self.checkpoint.files.get(&(source.name.clone(), path.clone()))
                == Some(&Some(read.content_hash.clone()));
        if unchanged {
            if let Some(e) = output.abort().await {
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
                batch_seq: seq,
                batch_id: meta.batch_id.clone(),
                run_id: self.run.id.0,
                path,
                size: None,
                hash: Some(read.content_hash.clone()),
                rows: read.rows as i64,
                watermark: read.watermark,
            });
        }
        tracing::debug!(source = %source.name, url = %read.shown_url, rows = read.rows, "read sql source");
        self.commit(seq, &meta, output, entries, counts, reading.elapsed().as_secs_f64(), report).await
    }

    /// Commits one batch of `(rows read, rows rescued)` to bronze, then its
    /// files to the checkpoint; a batch of no files commits nothing.
    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &mut self,
        seq: i64,
        meta: &BatchMeta,
        output: Output,
        entries: Vec<Entry>,
        (rows_read, rescued): (u64, u64),
        read_seconds: f64,
        report: &mut SourceReport,
    ) -> Result<()> {
        let source = self.source;
        report.rows_read += rows_read;
        report.rows_rescued += rescued;
        if entries.is_empty() {
            return match output.abort().await {
                Some(e) => Err(e),
                None => Ok(()),
            };
        }
        let mut commit = Commit::new(self.run, "ingest")
            .with_txn(&app_id(&source.name), seq)
            .with_metadata("source", serde_json::json!(source.name))
            .with_metadata("batch_seq", serde_json::json!(seq))
            .with_metadata("batch_id", serde_json::json!(meta.batch_id))
            .with_metadata("files", serde_json::to_value(&entries).map_err(|e| Error::Internal(e.to_string()))?)
            .partitioned_by(&["_ingest_date"]);
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

/// Ingests every active source of `catalog` from the day folders up to
/// `options.up_to`. Validation (changed files, unreadable days) happens
/// before any commit; then each source commits once per day folder with
/// new files (a SQL source once).
pub async fn ingest(
    warehouse: &Warehouse,
    run: &RunContext,
    catalog: &SourceCatalog,
    options: &IngestOptions<'_>,
) -> Result<IngestReport> {
    // Files are checkpointed by their path under the landing root, so the
    // root is made canonical: `./landing`, `landing` and `/abs/landing` are
    // one landing, and a file is read once however the root is spelled.
    let canonical = std::fs::canonicalize(options.landing).unwrap_or_else(|_| options.landing.to_path_buf());
    let options = &IngestOptions { landing: &canonical, up_to: options.up_to };
    let days = day_folders(options.landing, options.up_to)?;
    let mut checkpoint = Checkpoint::load(warehouse).await?;
    let active: Vec<&SourceDef> = catalog.active().collect();
    for source in &active {
        let bronze = TableName::new(&source.bronze_table())?;
        checkpoint.recover(warehouse, run, &source.name, &bronze).await?;
    }

    let planning = std::time::Instant::now();
    let mut changed = Vec::new();
    let mut plans = Vec::new();
    for source in &active {
        plans.push(match source.kind {
            SourceKind::Sql => None,
            _ => Some(plan_files(source, &days, options.landing, &checkpoint, &mut changed)?),
        });
    }
    tracing::debug!(seconds = planning.elapsed().as_secs_f64(), "listed and fingerprinted the landing files");
    if !changed.is_empty() {
        return Err(Error::ChangedFiles { files: changed });
    }
    // A source missing from a day is worth a warning on the run that reads
    // that day, not on every later run.
    let new_days: std::collections::HashSet<String> = plans
        .iter()
        .flatten()
        .flat_map(|p| &p.new)
        .filter_map(|f| f.rel.split('/').next().map(str::to_string))
        .collect();

    let mut reports = Vec::new();
    for (source, plan) in active.into_iter().zip(plans) {
        let table = TableName::new(&source.bronze_table())?;
        let mut report = SourceReport {
            source: source.name.clone(),
            table: source.bronze_table(),
            kind: source.kind,
            read: Vec::new(),
            already_ingested: 0,
            rows_read: 0,
            rows_written: 0,
            rows_rescued: 0,
            batch_id: None,
            batch_ids: Vec::new(),
            bronze_version: None,
            checkpoint_version: None,
            warnings: Vec::new(),
        };
        let mut writer = BatchWriter { warehouse, run, source, table: &table, checkpoint: &mut checkpoint };
        match plan {
            Some(plan) => {
                report.already_ingested = plan.already;
                let location = source.location.as_deref().unwrap_or_default();
                report.warnings = plan
                    .missing_on
                    .iter()
                    .filter(|d| new_days.contains(&d.to_string()))
                    .map(|d| format!("{d}: no file matches {location}"))
                    .collect();
                // One batch per day folder, oldest first, so that silver can
                // replay a catch-up day by day, as the nightly runs would have.
                let days: Vec<&[NewFile]> = plan.new.chunk_by(|a, b| a.day == b.day).collect();
                for group in days.chunks(cores()) {
                    writer.files_batches(group, &mut report).await?;
                }
            }
            None => writer.sql_batch(options.landing, &mut report).await?,
        }
        reports.push(report);
    }
    Ok(IngestReport { days: days.into_iter().map(|(d, _)| d).collect(), sources: reports })
}
